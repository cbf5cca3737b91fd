"""Random-weight GGUF files at real model widths, for `cargo xtask compare
--vs llama.cpp` (our engine and llama.cpp's llama-bench on the same files).

Usage:
    python -m models.llama_gguf_models OUT_DIR --smollm2 PATH [--only NAME,...]

Writes OUT_DIR/<shape>_<type>.gguf and OUT_DIR/manifest.json. Shapes:
  * `1b`: Llama 3.2 1B's width and depth: hidden 2048, MLP 8192, 16 layers,
    32 query / 8 key-value heads (head 64), tied embeddings, rope 5e5
    (about 1.07 B parameters with this vocabulary);
  * `7bw`: Mistral 7B's width (hidden 4096, MLP 14336, 32 / 8 heads, head
    128, untied, rope 1e6) but only 2 of its 32 layers, so one run stays
    short on a 2-core CPU (about 0.84 B parameters, 0.4 B of them in the
    two layers; the rest is the embedding and the output matrix).
Types: Q4_0, Q4_1, Q8_0 (every 2-D tensor, embedding and output included,
quantized with gguf.quants.quantize: "pure" files) and Q4_K. gguf-py cannot
quantize K-quants, so the Q4_K files hold random raw Q4_K blocks (random
quants and sub-block scales, f16 super-scales set so the weights have std
~0.02: make_gguf_models.random_kquant); speed does not depend on the values.

Every file carries SmolLM2-135M-Instruct's `gpt2` tokenizer (vocabulary
49152, copied from the GGUF file given with --smollm2), which both
llama.cpp and our loader read, and the llama architecture metadata that
make_gguf_models.write_model writes (as llama.cpp's converter).

Deterministic: numpy generators seeded per file (the same bytes every run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT

from models import make_gguf_models as mg

SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, tied=True,
               rope_theta=500_000.0, context_length=131072),
    "7bw": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=2,
                num_attention_heads=32, num_key_value_heads=8, tied=False,
                rope_theta=1_000_000.0, context_length=32768),
}
TYPES = {
    "q4_0": (QT.Q4_0, FT.MOSTLY_Q4_0),
    "q4_1": (QT.Q4_1, FT.MOSTLY_Q4_1),
    "q8_0": (QT.Q8_0, FT.MOSTLY_Q8_0),
    "q4_k": (QT.Q4_K, FT.MOSTLY_Q4_K_S),
}
NAMES = [f"{shape}_{kind}" for shape in SHAPES for kind in TYPES]


def spec(name: str) -> mg.GSpec:
    shape, kind = name.split("_", 1)
    qtype, file_type = TYPES[kind]
    seed = 7000 + NAMES.index(name)
    return mg.GSpec(name, file_type, mg.all_linear(qtype), tokenizer="smollm2", seed=seed,
                    description=f"random weights, {shape} shape, every 2-D tensor {qtype.name}",
                    exercises=["benchmark"], **SHAPES[shape])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--smollm2", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf (its tokenizer is copied)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(NAMES)}")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or NAMES
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {NAMES}")
    os.makedirs(args.out_dir, exist_ok=True)
    vocab = mg.read_smollm2_vocab(args.smollm2)
    manifest_path = os.path.join(args.out_dir, "manifest.json")
    manifest = {"generator": "xtask/python/llama_gguf_models.py", "gguf_py": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0", "models": {}}
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            manifest["models"] = json.load(f).get("models", {})
    for name in names:
        t0 = time.time()
        path = os.path.join(args.out_dir, f"{name}.gguf")
        partial = path + ".partial"  # an interrupted run leaves no half file under the real name
        entry = mg.write_model(spec(name), args.out_dir, partial, vocab)
        os.replace(partial, path)
        entry.pop("tensor_types", None)
        entry["file"] = os.path.basename(path)
        entry["bytes"] = os.path.getsize(path)
        manifest["models"][name] = entry
        with open(manifest_path, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        print(f"{name}: {entry['bytes'] / 1e9:.2f} GB ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
