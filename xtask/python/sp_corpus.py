"""sentencepiece and mistral-common answers for the Rust tokenizer tests.

Reads one JSON request on stdin, writes one JSON answer on stdout:

    request: {"version": "v1" | "v3",
              "texts":   [str, ...],           # encode each (no BOS)
              "decode":  [[id, ...], ...],     # decode each id sequence
              "chats":   [[[role, content], ...], ...]}
    answer:  {"model": path, "bos": id, "eos": id, "vocab_size": n,
              "encode": [[id, ...], ...], "decode": [str, ...],
              "chat":   [[id, ...], ...]}      # mistral-common's prompt ids

The models are the real Mistral SentencePiece files shipped in mistral-common
(`spconvert.mistral_common_model_path`). Run by
`crates/mistral-loader/tests/tokenizer_parity.rs` through `MISTRAL_MLX_PYTHON`.
"""

from __future__ import annotations

import json
import sys

import sentencepiece as spm

import spconvert


def chat_ids(version: str, chats: list) -> list[list[int]]:
    if not chats:
        return []
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    mistral = {"v1": MistralTokenizer.v1, "v3": MistralTokenizer.v3}[version]()
    cls = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    out = []
    for chat in chats:
        request = ChatCompletionRequest(messages=[cls[role](content=content) for role, content in chat])
        out.append(mistral.encode_chat_completion(request).tokens)
    return out


def main() -> None:
    request = json.load(sys.stdin)
    version = request["version"]
    path = spconvert.mistral_common_model_path(version)
    sp = spm.SentencePieceProcessor(model_file=path)
    answer = {
        "model": path,
        "bos": sp.bos_id(),
        "eos": sp.eos_id(),
        "vocab_size": sp.get_piece_size(),
        "encode": [sp.encode(t) for t in request.get("texts", [])],
        "decode": [sp.decode(ids) for ids in request.get("decode", [])],
        "chat": chat_ids(version, request.get("chats", [])),
    }
    json.dump(answer, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
