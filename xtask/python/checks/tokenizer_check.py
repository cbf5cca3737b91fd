"""Prove that a tokenizer.json encodes and decodes exactly like sentencepiece.

Usage:
    python -m checks.tokenizer_check               # both Mistral models (v1, v3),
                                                   # tokenizer.json built in memory
    python -m checks.tokenizer_check --sp FILE.model --json tokenizer.json

Also renders the Mistral chat template (spconvert.chat_template) for a few
conversations and checks that the JSON encodes it to mistral-common's ids.

For each corpus string: sentencepiece ids must equal `tokenizers` ids (without
BOS; with BOS they must be [bos] + ids), and both decodes must give back the
same text. Decoding is also checked on random id sequences (normal and byte
pieces, which exercises byte fallback on invalid UTF-8) and streamed decoding
(`tokenizers.decoders.DecodeStream`, token by token) must equal the one-shot
decode. Prints every difference; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import random
import sys

import sentencepiece as spm
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from common import corpus, spconvert

# The shared corpus (also read by crates/mistral-loader/tests/tokenizer_parity.rs).
CORPUS = corpus.texts()

# Strings whose encodings differ by design (printed, not counted as failures):
# - the JSON matches special tokens written literally in the text ("<s>", and on
#   v0.3 "[INST]" = control id 3), as Hugging Face files do; sentencepiece never
#   produces control ids from text. Chat prompts rely on this.
# - v0.3 user-defined pieces ([REFERENCE_DOC_N]): the "▁" next to them differs
#   (see spconvert.py); unused by chat prompts.
BY_DESIGN = {
    "v3": ["[INST] control text [/INST]", "<s> literal </s>",
           "[REFERENCE_DOC_1] first", "x[REFERENCE_DOC_1] after"],
    "v1": ["<s> literal </s>"],
}

# Conversations for the chat-template check: (role, content) pairs.
CONVERSATIONS = [
    [("user", "Hello there")],
    [("user", "Hello there"), ("assistant", "Hi you"), ("user", "Again")],
    [
        ("system", "Be nice."),
        ("user", "Hello  there"),
        ("assistant", "Hi, you."),
        ("user", "Again, café 日本 😀\ncode\tx = 1"),
    ],
]


def decode_stream(tok: Tokenizer, ids: list[int]) -> str:
    stream = DecodeStream(skip_special_tokens=False)
    out = []
    for i in ids:
        piece = stream.step(tok, i)
        if piece is not None:
            out.append(piece)
    return "".join(out)


def check_chat(sp_path: str, tok: Tokenizer, version: str, label: str) -> int:
    """chat_template rendered with jinja2 then encoded by the JSON must give the
    ids mistral-common's own chat encoder gives."""
    import jinja2
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    mistral = {"v1": MistralTokenizer.v1, "v3": MistralTokenizer.v3}[version]()
    message_class = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    env = jinja2.Environment()

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    template = env.from_string(spconvert.chat_template(sp_path))
    names = spconvert.special_pieces(sp_path)
    failures = 0
    for conv in CONVERSATIONS:
        request = ChatCompletionRequest(messages=[message_class[r](content=c) for r, c in conv])
        want = mistral.encode_chat_completion(request).tokens
        text = template.render(
            messages=[{"role": r, "content": c} for r, c in conv],
            bos_token=names["bos_token"],
            eos_token=names["eos_token"],
        )
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            failures += 1
            print(f"[{label}] MISMATCH chat {text!r}\n  mistral-common {want}\n  template+json  {got}")
    return failures


def check(sp_path: str, tok: Tokenizer, label: str, version: str | None = None, n_random: int = 200) -> int:
    sp = spm.SentencePieceProcessor(model_file=sp_path)
    bos = sp.bos_id()
    failures = 0

    def fail(msg: str) -> None:
        nonlocal failures
        failures += 1
        print(f"[{label}] MISMATCH {msg}")

    for text in CORPUS:
        want = sp.encode(text)
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            fail(f"encode {text!r}\n  sentencepiece {want}\n  tokenizers    {got}")
        got_bos = tok.encode(text, add_special_tokens=True).ids
        if got_bos != [bos] + want:
            fail(f"encode+BOS {text!r}: {got_bos[:8]}...")
        sp_text = sp.decode(want)
        hf_text = tok.decode(want, skip_special_tokens=False)
        if hf_text != sp_text:
            fail(f"decode {want}\n  sentencepiece {sp_text!r}\n  tokenizers    {hf_text!r}")
        if decode_stream(tok, want) != sp_text:
            fail(f"stream decode {text!r}: {decode_stream(tok, want)!r} != {sp_text!r}")

    # Random ids over normal and byte pieces (control pieces decode to "" in
    # sentencepiece but to their text in tokenizers, by design).
    invalid_utf8 = 0
    rng = random.Random(0)
    decodable = [i for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]
    byte_ids = [i for i in decodable if sp.is_byte(i)]
    for _ in range(n_random):
        ids = [rng.choice(decodable if rng.random() < 0.7 else byte_ids) for _ in range(rng.randint(1, 12))]
        sp_text = sp.decode(ids)
        hf_text = tok.decode(ids, skip_special_tokens=False)
        if hf_text == sp_text:
            continue
        if "\ufffd" in sp_text:
            # Invalid UTF-8 byte runs: sentencepiece replaces each invalid
            # sequence by one U+FFFD and keeps decoding the following bytes;
            # the tokenizers ByteFallback decoder turns every byte of a run that
            # is not valid UTF-8 as a whole into U+FFFD. A property of the
            # decoder library, not of the conversion; counted, not failed.
            invalid_utf8 += 1
        else:
            fail(f"random decode {ids}\n  sentencepiece {sp_text!r}\n  tokenizers    {hf_text!r}")

    if version is not None:
        failures += check_chat(sp_path, tok, version, label)
    for text in BY_DESIGN.get(label, []):
        want = sp.encode(text)[:8]
        got = tok.encode(text, add_special_tokens=False).ids[:8]
        print(f"[{label}] by design {text!r}: sentencepiece {want} json {got}")
    print(
        f"[{label}] {len(CORPUS)} strings, {n_random} random decodes "
        f"({invalid_utf8} with invalid UTF-8 differ in U+FFFD count, known), "
        f"{'chat templates, ' if version else ''}"
        f"{'OK' if failures == 0 else f'{failures} MISMATCHES'}"
    )
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sp", help="SentencePiece .model file")
    ap.add_argument("--json", help="tokenizer.json to check against --sp")
    args = ap.parse_args()

    if args.sp or args.json:
        if not (args.sp and args.json):
            ap.error("--sp and --json go together")
        failures = check(args.sp, Tokenizer.from_file(args.json), "custom")
    else:
        failures = 0
        for version in ("v1", "v3"):
            path = spconvert.mistral_common_model_path(version)
            failures += check(path, spconvert.build_tokenizer(path), version, version)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
