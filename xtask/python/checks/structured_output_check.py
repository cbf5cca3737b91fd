"""Structured output through the official `openai` client against a running
`mistral-cli serve` (crates/mistral-server/tests/structured_output.rs starts
the server on the real SmolLM2 model and runs this script).

Usage:
    python -m checks.structured_output_check BASE_URL API_KEY MODEL_ID

Checks, each printed as it passes (the first failure raises and exits 1):
- every schema of SCHEMAS (nested objects, arrays, enums, integers and
  numbers with bounds, optional fields, additionalProperties false, string
  formats and patterns, anyOf, $ref, const) as `response_format`
  `json_schema`: at temperature 0, and at 0.8 with two seeds, one streamed,
  the answer ends with finish_reason "stop" and validates against the schema
  (the `jsonschema` package, draft 2020-12);
- `json_object` gives a JSON object; `regex` gives a whole match; `grammar`
  (Lark) gives a sentence of the grammar;
- a schema llguidance cannot honour (`uniqueItems`, `oneOf`) and a bad
  `response_format` are a BadRequestError naming `response_format`.
"""

from __future__ import annotations

import json
import re
import sys

import jsonschema
import openai

NAME = {"type": "string", "minLength": 1, "maxLength": 20}
SCHEMAS: list[tuple[str, dict]] = [
    ("a person", {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
                  "required": ["name", "age"], "additionalProperties": False}),
    ("a yes or no", {"type": "boolean"}),
    ("a color", {"type": "string", "enum": ["red", "green", "blue"]}),
    ("a small integer", {"type": "integer", "minimum": -5, "maximum": 5}),
    ("a probability", {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.125}),
    ("three tags", {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 3, "maxItems": 3}),
    ("a point", {"type": "object", "properties": {"x": {"type": "number", "minimum": -100, "maximum": 100, "multipleOf": 0.5},
                 "y": {"type": "number", "minimum": -100, "maximum": 100, "multipleOf": 0.25}}, "required": ["x", "y"], "additionalProperties": False}),
    ("a book", {"type": "object", "properties": {
        "title": NAME, "year": {"type": "integer", "minimum": 1400, "maximum": 2030},
        "author": {"type": "object", "properties": {"first": NAME, "last": NAME}, "required": ["last"],
                   "additionalProperties": False}},
        "required": ["title", "author"], "additionalProperties": False}),
    ("an optional note", {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999},
                          "note": {"type": "string", "maxLength": 16}}, "required": ["id"], "additionalProperties": False}),
    ("a date", {"type": "string", "format": "date"}),
    ("an email", {"type": "string", "format": "email", "maxLength": 30}),
    ("a zip code", {"type": "string", "pattern": "^[0-9]{5}$"}),
    ("a uuid", {"type": "string", "format": "uuid"}),
    ("a list of scores", {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 10}, "maxItems": 4}),
    ("a matrix", {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
                  "minItems": 2, "maxItems": 2}, "minItems": 2, "maxItems": 2}),
    ("a status", {"type": "object", "properties": {"ok": {"type": "boolean"}, "code": {"enum": [200, 404, 500]}},
                  "required": ["ok", "code"], "additionalProperties": False}),
    ("a string or a number", {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "integer", "minimum": 0, "maximum": 99}]}),
    ("a nullable name", {"type": ["string", "null"], "maxLength": 10}),
    ("a constant", {"type": "object", "properties": {"version": {"const": 2}, "name": NAME},
                    "required": ["version", "name"], "additionalProperties": False}),
    ("a shipment", {"$defs": {"addr": {"type": "object", "properties": {"city": NAME, "zip": {"type": "string", "pattern": "^[0-9]{4}$"}},
                                       "required": ["city", "zip"], "additionalProperties": False}},
                    "type": "object", "properties": {"from": {"$ref": "#/$defs/addr"}, "to": {"$ref": "#/$defs/addr"}},
                    "required": ["from", "to"], "additionalProperties": False}),
    ("an inventory", {"type": "object", "properties": {"items": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                                         "qty": {"type": "integer", "minimum": 1, "maximum": 50}},
        "required": ["sku", "qty"], "additionalProperties": False}}}, "required": ["items"], "additionalProperties": False}),
    ("a temperature", {"type": "object", "properties": {"celsius": {"type": "number", "exclusiveMinimum": -50, "exclusiveMaximum": 60, "multipleOf": 0.5},
                       "unit": {"const": "C"}}, "required": ["celsius", "unit"], "additionalProperties": False}),
]


def client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)


def answer(c: openai.OpenAI, model: str, what: str, fmt: dict, temperature: float, seed, stream: bool) -> tuple[str, str]:
    """The answer's text and finish_reason."""
    kwargs = dict(
        model=model,
        messages=[{"role": "user", "content": f"Reply in JSON only: {what}."}],
        response_format=fmt,
        temperature=temperature,
        max_tokens=300,
    )
    if seed is not None:
        kwargs["seed"] = seed
    if not stream:
        r = c.chat.completions.create(**kwargs)
        return r.choices[0].message.content, r.choices[0].finish_reason
    text, finish = [], None
    for chunk in c.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(text), finish


def main() -> int:
    base, key, model = sys.argv[1:4]
    c = client(base, key)
    runs = [(0.0, None, False), (0.8, 1, True), (0.8, 2, False)]
    for what, schema in SCHEMAS:
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
        for temperature, seed, stream in runs:
            text, finish = answer(c, model, what, fmt, temperature, seed, stream)
            assert finish == "stop", f"{what}: finish_reason {finish!r} for {text!r}"
            jsonschema.validate(json.loads(text), schema, cls=jsonschema.Draft202012Validator,
                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        print(f"ok: {what}: {len(runs)} answers valid, e.g. {text}")
    text, finish = answer(c, model, "a user profile", {"type": "json_object"}, 0.8, 3, False)
    assert finish == "stop" and isinstance(json.loads(text), dict), (text, finish)
    print(f"ok: json_object: {text}")
    rx = r"[A-Z][a-z]{2,8} [0-9]{1,3}"
    text, finish = answer(c, model, "a name and an age", {"type": "regex", "regex": rx}, 0.8, 4, True)
    assert finish == "stop" and re.fullmatch(rx, text), (text, finish)
    print(f"ok: regex: {text!r}")
    lark = 'start: "The " ANIMAL " is " ("big" | "small") "."\nANIMAL: /[a-z]{3,8}/'
    text, finish = answer(c, model, "an animal", {"type": "grammar", "grammar": lark}, 0.8, 5, False)
    assert finish == "stop" and re.fullmatch(r"The [a-z]{3,8} is (big|small)\.", text), (text, finish)
    print(f"ok: grammar: {text!r}")
    bad = [
        {"type": "json_schema", "json_schema": {"name": "u", "schema": {"type": "array", "uniqueItems": True}}},
        {"type": "json_schema", "json_schema": {"name": "o", "schema": {"oneOf": [{"type": "number"}, {"type": "integer"}]}}},
        {"type": "json_schema", "json_schema": {"name": "n"}},
        {"type": "xml"},
        {"type": "regex", "regex": "(unclosed"},
    ]
    for fmt in bad:
        try:
            answer(c, model, "anything", fmt, 0.0, None, False)
        except openai.BadRequestError as err:
            assert "response_format" in str(err.body), err.body
        else:
            raise AssertionError(f"{fmt} was accepted")
    print(f"ok: {len(bad)} unusable formats are a 400 naming response_format")
    return 0


if __name__ == "__main__":
    sys.exit(main())
