"""The official `openai` Python client against a running `mistral-cli serve`
(crates/mistral-server/tests/openai_client.rs starts the server and runs
this script).

Usage:
    python -m checks.openai_client_check BASE_URL API_KEY MODEL_ID [HF_DIR]

HF_DIR: the served model as a Hugging Face folder (for SmolLM2, the
float32 conversion of its GGUF by gguf_to_hf.py). With it, the answers at
temperature 0 are also checked against an independent run: transformers
renders the chat template and tokenizes, mlx-lm generates greedily, and
transformers decodes.

Checks, each printed as it passes (the first failure raises and exits 1):
- models.list() names the served model;
- a chat completion at temperature 0: shape, usage;
- the same request streamed with include_usage: one id, the role first, the
  same text, one finish_reason, a usage chunk with no choices;
- max_tokens ends with finish_reason "length";
- a stop string taken from the answer ends the text before it;
- a text completion;
- with HF_DIR, log-probabilities (logprobs, top_logprobs=5, temperature 0)
  against mlx-lm's log-softmax of the logits of one pass over the prompt
  and the answer: each token's bytes (transformers' byte-level table), its
  log-probability and its top 5, within twice the float32 parity tolerance
  (1e-4 of the step's largest |logit|: a log-probability adds the
  log-sum-exp's error to the logit's);
- bad requests raise the matching exception (BadRequestError,
  NotFoundError, AuthenticationError) with the field named, after exactly
  one HTTP request (no retry), and the server answers normally afterwards.
"""

from __future__ import annotations

import sys

import openai


class Counter:
    """Counts the HTTP requests the client sends."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, request) -> None:
        self.n += 1


def client(base: str, key: str, counter: Counter) -> openai.OpenAI:
    http = openai.DefaultHttpxClient(event_hooks={"request": [counter]})
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, http_client=http, timeout=300)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def expect_error(counter: Counter, kind: type, param: str | None, call, code: str | None = None) -> None:
    before = counter.n
    try:
        call()
    except kind as err:
        body = err.body if isinstance(err.body, dict) else {}
        check(body.get("param") == param, f"{kind.__name__}: param {body.get('param')!r}, wanted {param!r}")
        if code is not None:
            check(body.get("code") == code, f"{kind.__name__}: code {body.get('code')!r}, wanted {code!r}")
        check(counter.n - before == 1, f"{kind.__name__}: {counter.n - before} HTTP requests (a retry?)")
        print(f"ok: {kind.__name__} for {param or code or 'the request'}")
        return
    raise AssertionError(f"no {kind.__name__} raised (param {param!r})")


def independent_answer(hf_dir: str, messages: list[dict], max_tokens: int) -> tuple[list[int], str]:
    """The prompt ids and the greedy answer by transformers and mlx-lm."""
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tok.encode(rendered, add_special_tokens=False)
    model, _ = load(hf_dir)
    eos = {tok.eos_token_id}
    ids = []
    for token, _ in generate_step(mx.array(prompt), model, max_tokens=max_tokens,
                                  sampler=lambda x: mx.argmax(x, axis=-1)):
        token = int(token)
        if token in eos:
            break
        ids.append(token)
    return prompt, tok.decode(ids, skip_special_tokens=True)


def check_logprobs(hf_dir: str, api: openai.OpenAI, model: str) -> None:
    """Our log-probabilities against mlx-lm's (see the module notes)."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load
    from transformers import AutoTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    ours = api.chat.completions.create(model=model, messages=messages, temperature=0,
                                       max_tokens=24, logprobs=True, top_logprobs=5)
    content = ours.choices[0].logprobs.content
    check(len(content) > 0, "log-probabilities returned")
    tok = AutoTokenizer.from_pretrained(hf_dir)
    unbyte = {c: b for b, c in bytes_to_unicode().items()}
    vocab_bytes = {}
    for piece, i in tok.get_vocab().items():
        vocab_bytes[bytes(unbyte[c] for c in piece) if all(c in unbyte for c in piece)
                    else piece.encode()] = i
    ids = [vocab_bytes[bytes(e.bytes)] for e in content]
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tok.encode(rendered, add_special_tokens=False)
    mlx_model, _ = load(hf_dir)
    logits = mlx_model(mx.array([prompt + ids]))[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    logits, logprobs = np.array(logits), np.array(logprobs)
    worst, worst_abs = 0.0, 0.0
    for j, (entry, token) in enumerate(zip(content, ids)):
        pos = len(prompt) - 1 + j
        ref = logprobs[pos]
        tol = 2 * 1e-4 * float(np.abs(logits[pos]).max())
        check(int(np.argmax(ref)) == token, f"step {j}: mlx-lm's greedy token differs")
        worst = max(worst, abs(entry.logprob - ref[token]) / tol)
        worst_abs = max(worst_abs, abs(entry.logprob - ref[token]))
        check(abs(entry.logprob - ref[token]) <= tol,
              f"step {j}: logprob {entry.logprob} vs mlx-lm {ref[token]} (tolerance {tol:.2e})")
        tops = entry.top_logprobs
        check(len(tops) == 5, f"step {j}: {len(tops)} top tokens")
        for t in tops:
            i = vocab_bytes[bytes(t.bytes)]
            check(abs(t.logprob - ref[i]) <= tol, f"step {j}: top {t.token!r} {t.logprob} vs {ref[i]}")
        ours_ids = {vocab_bytes[bytes(t.bytes)] for t in tops}
        fifth = tops[-1].logprob
        missed = [i for i in np.argsort(-ref)[:5] if i not in ours_ids and ref[i] > fifth + 2 * tol]
        check(not missed, f"step {j}: mlx-lm's top tokens {missed} missing")
    print(f"ok: log-probabilities of {len(content)} tokens and their top 5 match mlx-lm "
          f"(largest difference {worst_abs:.1e}, {worst:.1e} of the tolerance)")


def main() -> int:
    base, key, model = sys.argv[1:4]
    hf_dir = sys.argv[4] if len(sys.argv) > 4 else None
    counter = Counter()
    api = client(base, key, counter)

    ids = [m.id for m in api.models.list().data]
    check(ids == [model], f"models: {ids}")
    print("ok: models.list")

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = api.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
    text = whole.choices[0].message.content
    check(whole.object == "chat.completion" and bool(text), f"chat: {whole}")
    check(whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens, "usage")
    check(whole.choices[0].finish_reason in ("stop", "length"), "finish_reason")
    print(f"ok: chat ({whole.usage.completion_tokens} tokens): {text!r}")

    chunks = list(api.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True}))
    check(len({c.id for c in chunks}) == 1, "one id for every chunk")
    check(chunks[0].choices[0].delta.role == "assistant", "role in the first delta")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == text, f"streamed {streamed!r} != {text!r}")
    finishes = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    check(len(finishes) == 1, f"{len(finishes)} chunks with finish_reason")
    check(chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens,
          f"usage chunk: {chunks[-1]}")
    print("ok: streaming equals the whole answer, with usage")

    limited = api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me a long story."}],
        temperature=0, max_tokens=5)
    check(limited.choices[0].finish_reason == "length" and limited.usage.completion_tokens == 5,
          f"max_tokens: {limited}")
    print("ok: max_tokens -> length")

    word = text.split()[1]
    stopped = api.chat.completions.create(model=model, messages=messages, temperature=0,
                                          max_tokens=24, stop=[word])
    check(stopped.choices[0].finish_reason == "stop", "stop reason")
    check(stopped.choices[0].message.content == text[:text.index(word)],
          f"stop: {stopped.choices[0].message.content!r}")
    print(f"ok: stop string {word!r}")

    completion = api.completions.create(model=model, prompt="The capital of France is",
                                        temperature=0, max_tokens=8)
    check(completion.object == "text_completion" and bool(completion.choices[0].text), "completion")
    print(f"ok: text completion {completion.choices[0].text!r}")

    chat = api.chat.completions.create
    expect_error(counter, openai.BadRequestError, "n",
                 lambda: chat(model=model, messages=messages, n=2, max_tokens=2))
    expect_error(counter, openai.BadRequestError, "temperature",
                 lambda: chat(model=model, messages=messages, temperature=-1, max_tokens=2))
    expect_error(counter, openai.BadRequestError, "top_p",
                 lambda: chat(model=model, messages=messages, top_p=2, max_tokens=2))
    expect_error(counter, openai.BadRequestError, "messages",
                 lambda: chat(model=model, messages=[], max_tokens=2))
    expect_error(counter, openai.BadRequestError, "messages[0].role",
                 lambda: chat(model=model, messages=[{"role": 3, "content": "hi"}], max_tokens=2))
    expect_error(counter, openai.BadRequestError, "max_tokens",
                 lambda: chat(model=model, messages=messages, max_tokens=10**6),
                 code="context_length_exceeded")
    expect_error(counter, openai.NotFoundError, "model",
                 lambda: chat(model="no-such-model", messages=messages, max_tokens=2))
    wrong_key = client(base, "wrong-key", counter)
    expect_error(counter, openai.AuthenticationError, None,
                 lambda: wrong_key.chat.completions.create(model=model, messages=messages, max_tokens=2))

    if hf_dir:
        import httpx2

        for content, limit in [("What is the capital of France?", 24),
                               ("Write two sentences about the sea.", 40)]:
            msgs = [{"role": "user", "content": content}]
            prompt, reference = independent_answer(hf_dir, msgs, limit)
            ours = api.chat.completions.create(model=model, messages=msgs, temperature=0,
                                               max_tokens=limit)
            check(ours.usage.prompt_tokens == len(prompt),
                  f"prompt tokens {ours.usage.prompt_tokens} != transformers' {len(prompt)}")
            tokens = httpx2.post(f"{base}/tokenize", json={"messages": msgs},
                                 headers={"Authorization": f"Bearer {key}"}).json()["tokens"]
            check(tokens == prompt, f"/tokenize {tokens} != transformers' {prompt}")
            answer = ours.choices[0].message.content
            check(answer == reference, f"greedy answer {answer!r} != mlx-lm's {reference!r}")
            print(f"ok: same prompt ids and answer as transformers + mlx-lm ({len(prompt)} ids)")
        check_logprobs(hf_dir, api, model)

    again = api.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
    check(again.choices[0].message.content == text, f"the server answers as before after the errors: {again.choices[0].message.content!r} != {text!r}")
    print("ok: still serving, same answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
