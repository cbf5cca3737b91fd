"""Write the models `cargo xtask compare` runs, ours and mlx-lm side by side.

Usage:
    python -m models.bench_models OUT_DIR --smollm2 GGUF [--only NAME,...]

Random weights (make_models.py's generator, std 0.02) in Mistral shapes,
stored as mlx-community publishes models:
  m150_bf16      hidden 1024, 8 layers, 16 heads / 4 kv heads, MLP 2816,
                 vocab 32768 (v0.3 tokenizer), untied: 157 M parameters, bf16
  m150_q4        mlx_lm.convert of m150_bf16: 4-bit, group 64, bf16 scales
  m150_q8        the same, 8-bit
  m150_window    m150_bf16's weights with sliding_window 256 on every layer
  m7b_2l_bf16    Mistral 7B's shapes (hidden 4096, MLP 14336, 32/8 heads)
                 cut to 2 layers: real per-layer matrix sizes, bf16
  smollm2_bf16   the real SmolLM2-135M-Instruct, from the project's GGUF
                 (gguf_to_hf.py: float32) cast to bf16 by mlx_lm.convert

OUT_DIR/manifest.json lists them with their weight bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from models import make_models as mm

M150 = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
            num_attention_heads=16, num_key_value_heads=4)


def float_model(root: str, name: str, seed: int, window: int | None = None, **shape) -> None:
    spec = mm.Spec(name, seed=seed, dtype="bfloat16", sliding_window=window, **shape)
    mm.write_float_model(root, spec)


def convert(root: str, src: str, name: str, **kwargs) -> None:
    from mlx_lm.convert import convert as mlx_convert

    out_dir = os.path.join(root, name)
    mlx_convert(os.path.join(root, src), out_dir, **kwargs)
    for fname in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        path = os.path.join(root, src, fname)
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(out_dir, fname))


def smollm2(root: str, gguf: str) -> None:
    f32 = os.path.join(root, "smollm2_f32")
    subprocess.run([sys.executable, "-m", "common.gguf_to_hf", gguf, f32, "--force"], check=True)
    convert(root, "smollm2_f32", "smollm2_bf16", dtype="bfloat16")
    shutil.rmtree(f32)


def weight_bytes(model_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(model_dir, f))
               for f in os.listdir(model_dir) if f.endswith(".safetensors"))


def write_manifest(root: str) -> dict:
    """Writes `root/manifest.json`: every model folder and its weight bytes."""
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    manifest = {"models": [{"dir": n, "file_bytes": weight_bytes(os.path.join(root, n))} for n in names]}
    mm.write_json(os.path.join(root, "manifest.json"), manifest)
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--smollm2", required=True, help="the SmolLM2 GGUF file")
    args = ap.parse_args()
    root = os.path.abspath(args.out_dir)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)

    float_model(root, "m150_bf16", seed=101, **M150)
    convert(root, "m150_bf16", "m150_q4", quantize=True, q_bits=4, q_group_size=64, dtype="bfloat16")
    convert(root, "m150_bf16", "m150_q8", quantize=True, q_bits=8, q_group_size=64, dtype="bfloat16")
    float_model(root, "m150_window", seed=101, window=256, **M150)
    float_model(root, "m7b_2l_bf16", seed=102, hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=8)
    smollm2(root, args.smollm2)

    manifest = write_manifest(root)
    for entry in manifest["models"]:
        print(f"{entry['dir']}: {entry['file_bytes'] / 1e9:.3f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
