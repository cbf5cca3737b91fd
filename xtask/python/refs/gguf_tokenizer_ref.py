"""Tokenizer answers for a GGUF file, for the Rust GGUF tokenizer tests.

Reads one JSON request on stdin, writes one JSON answer on stdout:

    request: {"gguf":  path,
              "texts": [str, ...],          # encode each
              "ids":   [[id, ...], ...]}    # decode each
    answer:  {"gguf": path, "kind": "llama" | "gpt2", "pre": str | null,
              "bos": id, "eos": id, "add_bos": bool | null,
              "ids":         [[id, ...], ...],  # transformers, no special tokens added
              "ids_special": [[id, ...], ...],  # transformers, add_special_tokens=True
                                                # (BOS where the GGUF says add_bos_token)
              "decode":      [str, ...],        # transformers decode, special tokens kept
              "sentencepiece": null | {"model": path, "version": "v1" | "v3",
                                       "ids": [[id, ...], ...],   # sp.encode(text), no BOS
                                       "decode": [str, ...]}}     # sp.decode(ids)

The transformers tokenizer is the one gguf_to_hf.py writes: transformers'
own GGUF tokenizer converter run on the file's tokenizer.* metadata
(gguf_to_hf.load_tokenizer), independent of the Rust code. Known
differences between it and llama.cpp / sentencepiece on a SentencePiece
("llama") vocabulary: its `Metaspace(prepend_scheme="first")` does not add
the dummy-prefix space to text that already starts with a space (" a",
"   "), the decoder strips one leading space, and literal control-token text
such as "<s>" or "[INST]" in the input becomes the control id. So for GGUFs
built from a SentencePiece model (make_gguf_models.py records its path in
MODELS_DIR/gguf/manifest.json next to the file) the answer also carries
sentencepiece's own ids and decodes of the same inputs.

Run as `python -m refs.gguf_tokenizer_ref < request.json`, e.g. by a Rust test
through MISTRAL_MLX_PYTHON (like sp_corpus.py). Corpus: corpus.json.
"""

from __future__ import annotations

import json
import os
import sys

from common import gguf_to_hf, spconvert


def manifest_entry(gguf_path: str) -> dict | None:
    """make_gguf_models.py's manifest entry for this file, if there is one."""
    manifest = os.path.join(os.path.dirname(os.path.abspath(gguf_path)), "manifest.json")
    if not os.path.isfile(manifest):
        return None
    with open(manifest) as f:
        doc = json.load(f)
    name = os.path.basename(gguf_path)
    return next((m for m in doc.get("models", []) if m.get("file") == name), None)


def sentencepiece_answer(entry: dict | None, texts: list, ids: list) -> dict | None:
    sp_info = ((entry or {}).get("tokenizer") or {}).get("sentencepiece")
    if not sp_info:
        return None
    import sentencepiece as spm

    path = sp_info.get("path")
    if not path or not os.path.isfile(path):  # the manifest was written on another machine
        path = spconvert.mistral_common_model_path(sp_info["version"])
    sp = spm.SentencePieceProcessor(model_file=path)
    return {
        "model": path,
        "version": sp_info["version"],
        "ids": [sp.encode(t) for t in texts],
        "decode": [sp.decode(x) for x in ids],
    }


def main() -> int:
    request = json.load(sys.stdin)
    path = request.get("gguf")
    if not path or not os.path.isfile(path):
        print(f"gguf_tokenizer_ref: no such GGUF file: {path!r}", file=sys.stderr)
        return 1
    texts = request.get("texts", [])
    ids = request.get("ids", [])
    g = gguf_to_hf.GgufFile(path)
    tok = gguf_to_hf.load_tokenizer(path)
    answer = {
        "gguf": path,
        "kind": g.get("tokenizer.ggml.model"),
        "pre": g.get("tokenizer.ggml.pre"),
        "bos": g.get("tokenizer.ggml.bos_token_id"),
        "eos": g.get("tokenizer.ggml.eos_token_id"),
        "add_bos": g.get("tokenizer.ggml.add_bos_token"),
        "ids": [tok.encode(t, add_special_tokens=False) for t in texts],
        "ids_special": [tok.encode(t, add_special_tokens=True) for t in texts],
        "decode": [tok.decode(x, skip_special_tokens=False, clean_up_tokenization_spaces=False) for x in ids],
        "sentencepiece": sentencepiece_answer(manifest_entry(path), texts, ids),
    }
    json.dump(answer, sys.stdout, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
