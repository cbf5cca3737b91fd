"""Tool calls through the official `openai` client against a running
`mistral-cli serve` on the real SmolLM2 model (its template has no tool
format, so the server's generic JSON tool format is used; see
crates/mistral-server/src/tools.rs). crates/mistral-server/tests/tool_calls.rs
starts the server and runs this script.

Usage:
    python -m checks.tool_calls_check BASE_URL API_KEY MODEL_ID [--mistral TEKKEN_JSON [--thinking]]
    python -m checks.tool_calls_check BASE_URL API_KEY MODEL_ID --template JINJA

With `--template`, the server runs with the chat template JINJA (one that
declares the Hermes `<tool_call>` format; crates/mistral-server/src/
template_tools.rs): a first check renders conversations with tools, calls
and results with transformers' `render_jinja_template` (earlier calls'
arguments as objects, as vLLM passes them) and asks `POST /tokenize` to
encode that text, which must give the ids the server's own rendering of
the same messages and tools gives; the other checks run as for the generic
format.

With `--mistral`, the server's model is one whose prompts go through
mistral-common's protocol (Mistral's own tool format, its grammar in
crates/mistral-server/src/mistral_tools.rs) and TEKKEN_JSON is its
tokenizer file: call ids are nine letters and digits instead of `call_...`,
and a first check asks `POST /tokenize` for the prompt ids of conversations
with tools, tool calls and tool results, which must be mistral-common's
`encode_chat_completion` ids for the same messages and tools. With
`--thinking` (protocol v13, whose grammar lets a forced call follow
`[THINK]...[/THINK]`, which a random model never closes) the named and
required checks are left out, and a grammar makes the model think to check
that `[THINK]...[/THINK]` comes back as `reasoning_content`, whole and
streamed.

Checks, each printed as it passes (the first failure raises and exits 1):
- a named `tool_choice`: finish_reason "tool_calls", one call of that
  function, `call_` id, arguments a JSON string valid under its parameters
  (`jsonschema`); the same request streamed: the deltas (index, id and name
  first, then arguments) assemble into the same call;
- `required` over two tools, at temperature 0 and 0.8: every call names a
  tool and its arguments validate; with `parallel_tool_calls: false`
  exactly one call;
- `auto`: either text or valid calls;
- a round trip: the call and a `tool` result sent back, the next answer
  (tool_choice "none") is text;
- a tool_choice naming an unknown function, tools with response_format,
  and tools on the text completions endpoint are a BadRequestError naming
  the field.
"""

from __future__ import annotations

import json
import re
import sys
import types

import jsonschema
import openai

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"], "additionalProperties": False}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "maxLength": 30},
        "limit": {"type": "integer", "minimum": 1, "maximum": 10}},
        "required": ["query"], "additionalProperties": False}}}
TOOLS = [WEATHER, SEARCH]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris and in Rome?"}]


CALL_ID = re.compile(r"call_[0-9a-f]+")
MISTRAL_CALL_ID = re.compile(r"[a-zA-Z0-9]{9}")
ID = CALL_ID  # the form this run expects (main sets it)
# The `auto` answers' token limit: the generic format's answer is one JSON
# object, which must end to parse; elsewhere text may stop at the limit.
AUTO_TOKENS = 200
# How a free-text answer may end: SmolLM2 ends its answers under its own
# template; the random model of the --mistral runs writes text until
# max_tokens, and so may SmolLM2 under the --template ones.
TEXT_ENDS = {"stop"}
# Extra fields for the named and required requests: under Mistral's v11+
# format one call may follow another, and the random model never stops
# calling, so those runs allow one call (the v7 list ends by itself).
ENDED = {}

# Conversations for the /tokenize check (OpenAI shapes, as both take them).
NESTED = {"type": "function", "function": {
    "name": "book_trip", "description": "Book a trip: vols, hôtels, 東京",
    "parameters": {"type": "object", "properties": {
        "legs": {"type": "array", "items": {"type": "object", "properties": {
            "from": {"type": "string"}, "to": {"type": "string"}, "budget": {"type": "number", "minimum": 0.5}}}},
        "travellers": {"type": "integer", "maximum": 1e3}}, "required": ["legs"]}}}
CALLS = [{"id": "a1b2c3d4e", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
         {"id": "Z9y8X7w6v", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Rome", "unit": "celsius"}'}}]
CONVERSATIONS = [
    [{"role": "system", "content": "You help with travel."},
     {"role": "user", "content": "What is the weather in Paris and in Rome?"}],
    [{"role": "user", "content": "What is the weather in Paris and in Rome?"},
     {"role": "assistant", "content": None, "tool_calls": CALLS},
     {"role": "tool", "tool_call_id": "a1b2c3d4e", "name": "get_weather", "content": "Sunny, 24 C"},
     {"role": "tool", "tool_call_id": "Z9y8X7w6v", "name": "get_weather", "content": "Rain,  18 C"},
     {"role": "assistant", "content": "Paris is sunny; Rome is rainy."},
     {"role": "user", "content": "Book me   a trip to 東京, budget 1e-05 then 2.5 ünïcödé"}],
]


def check_tokenize(base: str, key: str, tekken: str) -> None:
    """Our prompt ids (POST /tokenize) against mistral-common's."""
    import urllib.request

    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.from_file(tekken)
    for messages in CONVERSATIONS:
        for tools in (TOOLS, TOOLS + [NESTED]):
            body = json.dumps({"messages": messages, "tools": tools}).encode()
            req = urllib.request.Request(base + "/tokenize", data=body, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            with urllib.request.urlopen(req) as reply:
                ours = json.load(reply)["tokens"]
            theirs = reference.encode_chat_completion(
                ChatCompletionRequest(messages=messages, tools=tools)).tokens
            assert ours == theirs, (messages, ours, theirs)
    print(f"ok: /tokenize gives mistral-common's ids for {len(CONVERSATIONS) * 2} conversations with tools")


def post_json(base: str, key: str, path: str, body: dict) -> dict:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as err:
        raise AssertionError(f"{path}: {err.code} {err.read().decode()}") from None


def check_template_render(base: str, key: str, template: str) -> None:
    """The server's render of messages with tools against transformers'."""
    from transformers.utils.chat_template_utils import render_jinja_template

    with open(template) as f:
        text = f.read()
    for messages in CONVERSATIONS:
        as_objects = json.loads(json.dumps(messages))
        for m in as_objects:
            for call in m.get("tool_calls") or []:
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
        for tools in (TOOLS, TOOLS + [NESTED]):
            rendered, _ = render_jinja_template(conversations=[as_objects], tools=tools, chat_template=text,
                                                add_generation_prompt=True)
            theirs = post_json(base, key, "/tokenize", {"prompt": rendered[0], "add_special_tokens": False})
            ours = post_json(base, key, "/tokenize", {"messages": messages, "tools": tools})
            assert ours["tokens"] == theirs["tokens"], (rendered[0], ours, theirs)
    print(f"ok: the template renders {len(CONVERSATIONS) * 2} conversations with tools as transformers does")


def check_reasoning(c, model: str, tekken: str) -> None:
    """A v13 model's [THINK]...[/THINK] comes back as reasoning_content, not
    content, whole and streamed. The random model is made to think by a
    grammar (the `grammar` response_format) naming the two control tokens."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    inner = MistralTokenizer.from_file(tekken).instruct_tokenizer.tokenizer
    think, end = inner.get_special_token("[THINK]"), inner.get_special_token("[/THINK]")
    grammar = f"start: <[{think}]> /[a-z]{{3,12}}/ <[{end}]> /[a-z]{{3,12}}/"
    fmt = {"type": "grammar", "grammar": grammar}
    r = c.chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=40,
                                  extra_body={"response_format": fmt})
    msg = r.choices[0].message
    thought = getattr(msg, "reasoning_content", None) or (msg.model_extra or {}).get("reasoning_content")
    assert r.choices[0].finish_reason == "stop", r.choices[0]
    assert thought and thought.isalpha() and msg.content and msg.content.isalpha(), msg
    parts = {"reasoning_content": "", "content": ""}
    for chunk in c.chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=40,
                                           stream=True, extra_body={"response_format": fmt}):
        for ch in chunk.choices:
            extra = ch.delta.model_extra or {}
            parts["reasoning_content"] += extra.get("reasoning_content") or ""
            parts["content"] += ch.delta.content or ""
    assert parts == {"reasoning_content": thought, "content": msg.content}, (parts, thought, msg.content)
    print(f"ok: reasoning_content {thought!r}, content {msg.content!r}, streamed the same")


def check_call(call) -> None:
    assert ID.fullmatch(call.id), call
    assert call.type == "function", call
    jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])


def forced_calls(c, model):
    """Named and required tool choices; returns the named answer's choice."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice=named,
                                  temperature=0, max_tokens=200, **ENDED)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None and len(choice.message.tool_calls) >= 1, choice.message
    for call in choice.message.tool_calls:
        assert call.function.name == "get_weather", call
        check_call(call)
    print(f"ok: named tool_choice: {[(t.function.name, t.function.arguments) for t in choice.message.tool_calls]}")

    calls, finish = {}, None
    for chunk in c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice=named,
                                           temperature=0, max_tokens=200, stream=True, **ENDED):
        for ch in chunk.choices:
            finish = ch.finish_reason or finish
            for d in ch.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
                if d.id:
                    assert entry["id"] is None and entry["arguments"] == "", "id and name come first"
                    entry["id"], entry["name"] = d.id, d.function.name
                entry["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls", finish
    streamed = [(calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)]
    whole = [(t.function.name, t.function.arguments) for t in choice.message.tool_calls]
    assert streamed == whole, (streamed, whole)
    assert all(ID.fullmatch(calls[i]["id"]) for i in calls)
    print(f"ok: streamed deltas assemble into the same calls: {streamed}")

    for temperature, seed in [(0.0, None), (0.8, 7)]:
        r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                      temperature=temperature, seed=seed, max_tokens=200, **ENDED)
        assert r.choices[0].finish_reason == "tool_calls", r.choices[0]
        for call in r.choices[0].message.tool_calls:
            check_call(call)
        print(f"ok: required at {temperature}: {len(r.choices[0].message.tool_calls)} valid calls")
    r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                  parallel_tool_calls=False, temperature=0.8, seed=3, max_tokens=200)
    assert len(r.choices[0].message.tool_calls) == 1, r.choices[0].message
    check_call(r.choices[0].message.tool_calls[0])
    print("ok: parallel_tool_calls false: one call")

    return choice


def main() -> int:
    global ID, TEXT_ENDS, ENDED, AUTO_TOKENS
    base, key, model = sys.argv[1:4]
    thinking = "--thinking" in sys.argv
    if sys.argv[4:5] == ["--mistral"]:
        ID, TEXT_ENDS, ENDED = MISTRAL_CALL_ID, {"stop", "length"}, {"parallel_tool_calls": False}
        AUTO_TOKENS = 64
        check_tokenize(base, key, sys.argv[5])
    if sys.argv[4:5] == ["--template"]:
        # SmolLM2's text answers under these test templates may run past
        # max_tokens (200).
        TEXT_ENDS, AUTO_TOKENS = {"stop", "length"}, 64
        check_template_render(base, key, sys.argv[5])
    c = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
    if thinking:
        # A forced call may follow [THINK]...[/THINK] (v13), and the random
        # model never closes its thinking: the call layout is v11's, checked
        # there; the round trip sends a call written here.
        first = CALLS[0]
        call = types.SimpleNamespace(id=first["id"], function=types.SimpleNamespace(**first["function"]))
        check_reasoning(c, model, sys.argv[5])
    else:
        call = forced_calls(c, model).message.tool_calls[0]

    r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=0, max_tokens=AUTO_TOKENS)
    msg = r.choices[0].message
    if msg.tool_calls:
        assert r.choices[0].finish_reason == "tool_calls"
        for made in msg.tool_calls:
            check_call(made)
    else:
        assert isinstance(msg.content, str) and r.choices[0].finish_reason in TEXT_ENDS, r.choices[0]
    pieces, names = [], []
    for chunk in c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=0,
                                           max_tokens=AUTO_TOKENS, stream=True):
        for ch in chunk.choices:
            if ch.delta.content:
                pieces.append(ch.delta.content)
            names += [d.function.name for d in ch.delta.tool_calls or [] if d.function.name]
    if msg.tool_calls:
        assert names == [t.function.name for t in msg.tool_calls], (names, msg.tool_calls)
    else:
        assert "".join(pieces) == msg.content, (pieces, msg.content)
        # Mistral's format has a call token: text before it streams as it comes.
        assert ID is not MISTRAL_CALL_ID or len(pieces) > 1, pieces
    print(f"ok: auto: {'calls' if msg.tool_calls else 'text'}, streamed the same ({len(pieces)} text chunks)")

    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"},
    ]
    r = c.chat.completions.create(model=model, messages=history, tools=TOOLS, tool_choice="none",
                                  temperature=0, max_tokens=40)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content, r.choices[0]
    print(f"ok: round trip: {r.choices[0].message.content!r}")

    bad = [
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (dict(tools=TOOLS, response_format={"type": "json_object"}), "response_format"),
        (dict(tools=[{"type": "function", "function": {"name": "x", "parameters": {"type": "array", "uniqueItems": True}}}],
              tool_choice="required"), "tools"),
    ]
    for extra, field in bad:
        try:
            c.chat.completions.create(model=model, messages=ASK, max_tokens=5, **extra)
        except openai.BadRequestError as err:
            assert err.body.get("param") == field, (field, err.body)
        else:
            raise AssertionError(f"{extra} was accepted")
    try:
        c.completions.create(model=model, prompt="Hi", max_tokens=5, extra_body={"tools": TOOLS})
    except openai.BadRequestError as err:
        assert err.body.get("param") == "tools", err.body
    else:
        raise AssertionError("tools on completions were accepted")
    print(f"ok: {len(bad) + 1} bad tool requests are a 400 naming the field")
    return 0


if __name__ == "__main__":
    sys.exit(main())
