"""mistral-common's answers for tekken.json files, for the Rust tekken tests.

Reads one JSON request on stdin, writes one JSON answer on stdout:

    request: {"files": [path, ...] | null,   # null: the tekken files mistral-common ships
              "texts": [str, ...],           # encode each
              "ids":   [[id, ...], ...]}     # decode each
    answer:  {"files": [{"path": path, "version": "v3", "vocab_size": n,
                         "num_special": n, "bos": id, "eos": id,
                         "specials": [str, ...],               # control tokens by id
                         "ids": [[id, ...], ...],              # encode(text, bos=False, eos=False)
                         "ids_bos_eos": [[id, ...], ...],      # encode(text, bos=True, eos=True)
                         "decode_ignore": [str, ...],          # decode(ids), the default policy
                         "decode_keep": [str, ...],            # SpecialTokenPolicy.KEEP
                         "decode_raise": [str | null, ...]}]}  # RAISE: null where it raised

Everything is mistral_common.tokens.tokenizers.tekken.Tekkenizer
(mistral-common 1.13.1, whose tiktoken does the BPE), independent of the
Rust code. Run as `python -m refs.tekken_ref < request.json`.
"""

from __future__ import annotations

import json
import os
import sys


def shipped_files() -> list[str]:
    import mistral_common

    data = os.path.join(os.path.dirname(mistral_common.__file__), "data")
    return sorted(os.path.join(data, f) for f in os.listdir(data) if f.startswith("tekken") and f.endswith(".json"))


def encode_decode(tok, texts: list[str], ids: list[list[int]]) -> dict:
    """A mistral-common tokenizer's ids of `texts` (without and with
    `<s>`/`</s>`) and its decodes of `ids` under each special-token policy
    (RAISE: null where it raised). Shared with sentencepiece_ref.py."""
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

    def decode_raise(seq):
        try:
            return tok.decode(seq, special_token_policy=SpecialTokenPolicy.RAISE)
        except ValueError:
            return None

    return {
        "ids": [tok.encode(t, bos=False, eos=False) for t in texts],
        "ids_bos_eos": [tok.encode(t, bos=True, eos=True) for t in texts],
        "decode_ignore": [tok.decode(seq) for seq in ids],
        "decode_keep": [tok.decode(seq, special_token_policy=SpecialTokenPolicy.KEEP) for seq in ids],
        "decode_raise": [decode_raise(seq) for seq in ids],
    }


def answer_for(path: str, texts: list[str], ids: list[list[int]]) -> dict:
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    tok = Tekkenizer.from_file(path)
    return {
        "path": path,
        "version": tok.version.value,
        "vocab_size": tok.n_words,
        "num_special": tok.num_special_tokens,
        "bos": tok.bos_id,
        "eos": tok.eos_id,
        "specials": [t["token_str"] for t in tok._all_special_tokens],
        **encode_decode(tok, texts, ids),
    }


def answer_request(answer_for, shipped_files) -> int:
    """Reads the request on stdin, writes each file's answer on stdout."""
    request = json.load(sys.stdin)
    files = request.get("files") or shipped_files()
    answer = {"files": [answer_for(f, request.get("texts", []), request.get("ids", [])) for f in files]}
    json.dump(answer, sys.stdout)
    return 0


def main() -> int:
    return answer_request(answer_for, shipped_files)


if __name__ == "__main__":
    sys.exit(main())
