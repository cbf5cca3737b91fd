"""sentencepiece and mistral-common answers for the Rust tokenizer tests.

Reads one JSON request on stdin, writes one JSON answer on stdout:

    request: {"version": "v1" | "v3",
              "texts":   [str, ...],           # encode each (no BOS)
              "decode":  [[id, ...], ...],     # decode each id sequence
              "chats":   [[[role, content], ...], ...]}
    answer:  {"model": path, "bos": id, "eos": id, "vocab_size": n,
              "encode": [[id, ...], ...], "decode": [str, ...],
              "chat":   [[id, ...], ...],      # mistral-common's prompt ids
              "piece_bytes": [hex, ...]}       # with "pieces": true: every
                                               # id's bytes, hex

A piece's bytes: a byte piece (`sp.is_byte`, `<0xNN>`) is that byte; any
other piece is its text with U+2581 as a space (control and unknown pieces
as written, e.g. "<s>").

The models are the real Mistral SentencePiece files shipped in mistral-common
(`spconvert.mistral_common_model_path`). Run by
`crates/mistral-loader/tests/tokenizer_parity.rs` through `MISTRAL_MLX_PYTHON`.
"""

from __future__ import annotations

import json
import sys

import sentencepiece as spm

from common import spconvert


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


def piece_bytes(sp: spm.SentencePieceProcessor, i: int) -> str:
    piece = sp.id_to_piece(i)
    if sp.is_byte(i):
        return piece[3:5].lower()
    return piece.replace("\u2581", " ").encode("utf-8").hex()


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
    if request.get("pieces"):
        answer["piece_bytes"] = [piece_bytes(sp, i) for i in range(sp.get_piece_size())]
    json.dump(answer, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
