"""Tool calls through the official `openai` client against a running
`mistral-cli serve` on the real SmolLM2 model (its template has no tool
format, so the server's generic JSON tool format is used; see
crates/mistral-server/src/tools.rs). crates/mistral-server/tests/tool_calls.rs
starts the server and runs this script.

Usage:
    python tool_calls_check.py BASE_URL API_KEY MODEL_ID

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
import sys

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


def check_call(call) -> None:
    assert call.id.startswith("call_"), call
    assert call.type == "function", call
    jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])


def main() -> int:
    base, key, model = sys.argv[1:4]
    c = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
    named = {"type": "function", "function": {"name": "get_weather"}}
    r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice=named,
                                  temperature=0, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None and len(choice.message.tool_calls) >= 1, choice.message
    for call in choice.message.tool_calls:
        assert call.function.name == "get_weather", call
        check_call(call)
    print(f"ok: named tool_choice: {[(t.function.name, t.function.arguments) for t in choice.message.tool_calls]}")

    calls, finish = {}, None
    for chunk in c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice=named,
                                           temperature=0, max_tokens=200, stream=True):
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
    assert all(calls[i]["id"].startswith("call_") for i in calls)
    print(f"ok: streamed deltas assemble into the same calls: {streamed}")

    for temperature, seed in [(0.0, None), (0.8, 7)]:
        r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                      temperature=temperature, seed=seed, max_tokens=200)
        assert r.choices[0].finish_reason == "tool_calls", r.choices[0]
        for call in r.choices[0].message.tool_calls:
            check_call(call)
        print(f"ok: required at {temperature}: {len(r.choices[0].message.tool_calls)} valid calls")
    r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                  parallel_tool_calls=False, temperature=0.8, seed=3, max_tokens=200)
    assert len(r.choices[0].message.tool_calls) == 1, r.choices[0].message
    check_call(r.choices[0].message.tool_calls[0])
    print("ok: parallel_tool_calls false: one call")

    r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=0, max_tokens=200)
    msg = r.choices[0].message
    if msg.tool_calls:
        assert r.choices[0].finish_reason == "tool_calls"
        for call in msg.tool_calls:
            check_call(call)
    else:
        assert isinstance(msg.content, str) and r.choices[0].finish_reason == "stop", r.choices[0]
    print(f"ok: auto: {'calls' if msg.tool_calls else 'text'}")

    call = choice.message.tool_calls[0]
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
