"""Anthropic's Messages API (`POST /v1/messages`) through the official
`anthropic` client against a running `mistral-cli serve` on the real
SmolLM2 model. crates/mistral-server/tests/anthropic_api.rs starts the
server and runs this script.

Usage:
    python -m checks.anthropic_check BASE_URL API_KEY MODEL_ID

Checks, each printed as it passes (the first failure raises and exits 1):
- text: a greedy answer is one text block, `end_turn`, with token usage,
  and its text is the chat completions endpoint's answer to the same
  request (the same engine underneath);
- streaming: the event sequence is message_start, content_block_start,
  content_block_delta..., content_block_stop, message_delta, message_stop,
  and the streamed text is the whole answer's;
- `stop_sequences`: the answer ends before the sequence, `stop_sequence`
  names it; `max_tokens` ends with `max_tokens`;
- tools: a forced tool (`tool_choice` `tool`) gives a `tool_use` block whose
  input validates against its `input_schema`, `stop_reason` `tool_use`;
  streamed, the `input_json_delta` pieces assemble into the same input;
  the `tool_use` and a `tool_result` sent back give a text answer;
- errors in Anthropic's shape: a wrong key is an AuthenticationError, an
  unknown model a NotFoundError, a missing `max_tokens` and an image block
  are 400 `invalid_request_error`s naming the field.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import anthropic
import jsonschema
import openai

# This client version takes no `temperature` argument; the API still does.
GREEDY = {"temperature": 0}
ASK = [{"role": "user", "content": "What is the capital of France?"}]
SYSTEM = "You are a helpful assistant."
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {
               "city": {"type": "string", "maxLength": 20},
               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
               "required": ["city"], "additionalProperties": False}}


def raw_post(base: str, key: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(base + "/v1/messages", data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", "x-api-key": key, "anthropic-version": "2023-06-01"})
    try:
        with urllib.request.urlopen(req) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def main() -> int:
    base, key, model = sys.argv[1:4]
    c = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=300)
    o = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)

    m = c.messages.create(model=model, max_tokens=64, system=SYSTEM, messages=ASK, extra_body=GREEDY)
    assert [b.type for b in m.content] == ["text"] and m.stop_reason == "end_turn", m
    assert m.role == "assistant" and m.id.startswith("msg_"), m
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage
    chat = o.chat.completions.create(model=model, max_tokens=64, extra_body=GREEDY,
                                     messages=[{"role": "system", "content": SYSTEM}] + ASK)
    assert m.content[0].text == chat.choices[0].message.content, (m.content[0].text, chat)
    assert "Paris" in m.content[0].text, m.content[0].text
    print(f"ok: text {m.content[0].text!r} equals the chat endpoint's, usage {m.usage.output_tokens} tokens")

    kinds, text = [], ""
    for event in c.messages.create(model=model, max_tokens=64, system=SYSTEM, messages=ASK,
                                   extra_body=GREEDY, stream=True):
        kinds.append(event.type)
        if event.type == "content_block_delta":
            text += event.delta.text
    middle = kinds[2:-3]
    assert kinds[:2] == ["message_start", "content_block_start"], kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds
    assert middle and set(middle) == {"content_block_delta"}, kinds
    assert text == m.content[0].text, (text, m.content[0].text)
    with c.messages.stream(model=model, max_tokens=64, system=SYSTEM, messages=ASK, extra_body=GREEDY) as s:
        helper_text = "".join(s.text_stream)
        final = s.get_final_message()
    assert helper_text == text and final.stop_reason == "end_turn", (helper_text, final)
    print(f"ok: streamed events {kinds[:2]} ... {kinds[-3:]}, the same text")

    stop = "Paris"
    m2 = c.messages.create(model=model, max_tokens=64, system=SYSTEM, messages=ASK, extra_body=GREEDY,
                           stop_sequences=[stop])
    assert m2.stop_reason == "stop_sequence" and m2.stop_sequence == stop, m2
    assert m.content[0].text.startswith(m2.content[0].text) and stop not in m2.content[0].text, m2
    m3 = c.messages.create(model=model, max_tokens=3, system=SYSTEM, messages=ASK, extra_body=GREEDY)
    assert m3.stop_reason == "max_tokens" and m3.usage.output_tokens == 3, m3
    print(f"ok: stop_sequence {m2.content[0].text!r}, max_tokens {m3.content[0].text!r}")

    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "tool", "name": "get_weather"}
    t = c.messages.create(model=model, max_tokens=200, messages=ask, tools=[WEATHER], tool_choice=forced,
                          extra_body=GREEDY)
    uses = [b for b in t.content if b.type == "tool_use"]
    assert t.stop_reason == "tool_use" and uses, t
    for use in uses:
        assert use.name == "get_weather", use
        jsonschema.validate(use.input, WEATHER["input_schema"])
    streamed = {}
    for event in c.messages.create(model=model, max_tokens=200, messages=ask, tools=[WEATHER],
                                   tool_choice=forced, extra_body=GREEDY, stream=True):
        if event.type == "content_block_start" and event.content_block.type == "tool_use":
            streamed[event.index] = ""
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            streamed[event.index] += event.delta.partial_json
    assert [json.loads(v) for _, v in sorted(streamed.items())] == [u.input for u in uses], (streamed, uses)
    print(f"ok: tool_use {[(u.name, u.input) for u in uses]}, streamed the same")

    history = ask + [
        {"role": "assistant", "content": [b.model_dump() for b in t.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 24 C"}]},
    ]
    r = c.messages.create(model=model, max_tokens=40, messages=history, tools=[WEATHER],
                          tool_choice={"type": "none"}, extra_body=GREEDY)
    assert [b.type for b in r.content] == ["text"] and r.content[0].text, r
    print(f"ok: tool_result round trip: {r.content[0].text!r}")

    try:
        anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0).messages.create(
            model=model, max_tokens=5, messages=ASK)
        raise AssertionError("a wrong key was accepted")
    except anthropic.AuthenticationError as err:
        assert err.body["error"]["type"] == "authentication_error", err.body
    try:
        c.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
        raise AssertionError("an unknown model was accepted")
    except anthropic.NotFoundError as err:
        assert err.body["error"]["type"] == "not_found_error", err.body
    for body, field in [
        ({"model": model, "messages": ASK}, "max_tokens"),
        ({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}]}]},
         "messages[0].content[0].type"),
    ]:
        status, reply = raw_post(base, key, body)
        assert status == 400 and reply["type"] == "error", (status, reply)
        assert reply["error"]["type"] == "invalid_request_error", reply
        assert reply["error"]["message"].startswith(field + ":"), reply
    print("ok: errors in Anthropic's shape (401, 404, two 400s naming the field)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
