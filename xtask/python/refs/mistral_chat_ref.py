"""mistral-common's prompt ids for conversations, for the Rust chat-protocol
tests.

Reads one JSON request on stdin, writes one JSON answer on stdout:

    request: {"file": path of a tekken.json,
              "versions": ["v3", "v7", ...],          # the protocol versions to encode under
              "spm_files": [path, ...],               # SentencePiece files, each under its own version
              "conversations": [{"messages": [...], "tools": [...] | null}, ...],
              "out_dir": folder for the per-version copies of the file}
    answer:  {"versions": [{"version": "v7", "file": path of the copy with that version,
                            "ids": [[id, ...] | {"error": str}, ...]}]}

Messages and tools are OpenAI-style dicts as mistral-common's
ChatCompletionRequest takes them (`role`, `content`, `tool_calls` [{`id`,
`function`: {`name`, `arguments`}}], `tool_call_id`, `name`; tools
[{`type`: "function", `function`: {`name`, `description`, `parameters`}}]).
Each conversation is encoded by MistralTokenizer.from_file(copy)
.encode_chat_completion(...) (mistral-common 1.13.1, ValidationMode.test):
the exact ids a Mistral model is trained on. SentencePiece files are encoded
as they are, under the version their name gives. A copy of the file is written
per version with `config.version` changed, so the same vocabulary is encoded
under each protocol. Past v7 mistral-common wants the file to list its
control tokens: those copies list the 20 it uses up to v7 and then [ARGS],
[CALL_ID], [THINK], [/THINK] (ids 20-23; the rest are its fillers).
Run as `python -m refs.mistral_chat_ref < request.json`.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    request = json.load(sys.stdin)
    out = []

    def encode_all(tokenizer) -> list:
        ids = []
        for conv in request["conversations"]:
            try:
                req = ChatCompletionRequest(messages=conv["messages"], tools=conv.get("tools"))
                ids.append(tokenizer.encode_chat_completion(req).tokens)
            except Exception as err:  # noqa: BLE001 - the answer says what was refused
                ids.append({"error": f"{type(err).__name__}: {err}"})
        return ids

    for path in request.get("spm_files") or []:
        tokenizer = MistralTokenizer.from_file(path)
        version = tokenizer.instruct_tokenizer.tokenizer.version.value
        out.append({"version": version, "file": path, "ids": encode_all(tokenizer)})
    if not request.get("file"):
        json.dump({"versions": out}, sys.stdout)
        return 0
    with open(request["file"]) as f:
        tekken = json.load(f)
    os.makedirs(request["out_dir"], exist_ok=True)
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    listed = [dict(t) for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    for i, text in enumerate(["[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]"]):
        listed.append({"rank": len(Tekkenizer.DEPRECATED_SPECIAL_TOKENS) + i, "token_str": text, "is_control": True})
    for version in request["versions"]:
        tekken["config"]["version"] = version
        if int(version[1:]) > 7:
            tekken["special_tokens"] = listed
        else:
            tekken.pop("special_tokens", None)
        path = os.path.join(request["out_dir"], f"tekken_{version}.json")
        with open(path, "w") as f:
            json.dump(tekken, f)
        out.append({"version": version, "file": path, "ids": encode_all(MistralTokenizer.from_file(path))})
    json.dump({"versions": out}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
