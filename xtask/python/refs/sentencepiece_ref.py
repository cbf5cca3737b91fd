"""mistral-common's answers for its SentencePiece files, for the Rust
SentencePiece tests.

Reads one JSON request on stdin, writes one JSON answer on stdout:

    request: {"files": [path, ...] | null,   # null: the SentencePiece files mistral-common ships
              "texts": [str, ...],           # encode each
              "ids":   [[id, ...], ...]}     # decode each (ids past a file's vocabulary are dropped)
    answer:  {"files": [{"path": path, "version": "v3", "vocab_size": n,
                         "bos": id, "eos": id,
                         "controls": [id, ...],                # is_special ids
                         "ids": [[id, ...], ...],              # encode(text, bos=False, eos=False)
                         "ids_bos_eos": [[id, ...], ...],      # encode(text, bos=True, eos=True)
                         "decode_ignore": [str, ...],          # decode(ids), the default policy
                         "decode_keep": [str, ...],            # SpecialTokenPolicy.KEEP
                         "decode_raise": [str | null, ...]}]}  # RAISE: null where it raised

Everything is mistral_common.tokens.tokenizers.sentencepiece
.SentencePieceTokenizer (mistral-common 1.13.1 over the sentencepiece
library), independent of the Rust code. Run as
`python -m refs.sentencepiece_ref < request.json`.
"""

from __future__ import annotations

import os
import sys

from refs.tekken_ref import answer_request, encode_decode


def shipped_files() -> list[str]:
    import mistral_common

    data = os.path.join(os.path.dirname(mistral_common.__file__), "data")
    return sorted(os.path.join(data, f) for f in os.listdir(data) if ".model" in f)


def answer_for(path: str, texts: list[str], ids: list[list[int]]) -> dict:
    from mistral_common.tokens.tokenizers.sentencepiece import SentencePieceTokenizer

    tok = SentencePieceTokenizer(path)
    ids = [[i for i in seq if i < tok.n_words] for seq in ids]
    return {
        "path": path,
        "version": tok.version.value,
        "vocab_size": tok.n_words,
        "bos": tok.bos_id,
        "eos": tok.eos_id,
        "controls": sorted(tok.special_ids),
        **encode_decode(tok, texts, ids),
    }


if __name__ == "__main__":
    sys.exit(answer_request(answer_for, shipped_files))
