"""Write the project's small random-weight Mistral test models.

Usage:
    python -m models.make_models OUT_DIR [--force]

Every model directory looks like a Hugging Face Mistral checkpoint:
config.json (MistralForCausalLM), tokenizer.json (built from the real Mistral
SentencePiece model by spconvert.py), tokenizer_config.json (bos/eos and a
Mistral chat template), generation_config.json and safetensors weights with
the Hugging Face tensor names. Quantized models are written by mlx-lm's own
`mlx_lm.convert` (mlx-community layout: model.safetensors with packed uint32
`weight`, `scales`, `biases`; "quantization" in config.json).

Everything is deterministic: weights come from numpy generators seeded per
model; std 0.02 normal for matrices, 1 + 0.1 * normal for RMSNorm weights.
OUT_DIR/manifest.json lists every model with its properties.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import save_file

from common import spconvert

TOKENIZERS = {"v3": 32768, "v1": 32000}  # tokenizer version -> vocab size


@dataclass
class Spec:
    """One model to generate. Fields mirror the config.json keys."""

    name: str
    seed: int
    tokenizer: str = "v3"
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int | None = None  # None: not written, hidden / heads implied
    rope_theta: float = 1_000_000.0
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    dtype: str = "float32"  # float32 | bfloat16 | float16
    shards: int = 1
    description: str = ""

    @property
    def vocab_size(self) -> int:
        return TOKENIZERS[self.tokenizer]

    @property
    def effective_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


# Float models written directly. Hidden and intermediate sizes are multiples
# of 128 so that every matrix can be quantized with group size 32/64/128.
FLOAT_MODELS = [
    Spec("gqa4_f32", seed=1, description="GQA 4:1 (8 q heads, 2 kv heads), no window, untied"),
    Spec(
        "mha_tied_f32",
        seed=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
        description="GQA 1:1 (MHA), tied embeddings (no lm_head tensor)",
    ),
    Spec(
        "headdim_f32",
        seed=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,  # hidden / heads would be 32 (Mistral Nemo / Small style)
        description="explicit head_dim 64 != hidden/heads 32, q/o proj 256 wide",
    ),
    Spec(
        "window_v01_f32",
        seed=4,
        tokenizer="v1",
        rope_theta=10_000.0,
        sliding_window=16,
        description="Mistral 7B v0.1 style: sliding_window 16 on every layer, no layer_types, v1 tokenizer",
    ),
    Spec(
        "sharded_f32",
        seed=5,
        num_hidden_layers=3,
        shards=3,
        description="3 safetensors shards + model.safetensors.index.json",
    ),
]

# Copies of gqa4_f32 with the same weights cast to half precision.
CAST_MODELS = [("gqa4_bf16", "gqa4_f32", "bfloat16"), ("gqa4_f16", "gqa4_f32", "float16")]

# mlx_lm.convert quantizations of gqa4_f32: (name, bits, group size, dtype of
# the non-quantized parameters and of scales/biases).
QUANT_MODELS = [
    (f"gqa4_q{bits}_g{group}", bits, group, "float32") for bits in (4, 8) for group in (32, 64, 128)
] + [("gqa4_q4_g64_bf16", 4, 64, "bfloat16"),  # the usual mlx-community layout
       ("gqa4_q8_g64_f16", 8, 64, "float16")]  # 8 bits with half-precision scales


def make_config(spec: Spec) -> dict:
    """config.json as Hugging Face writes it for MistralForCausalLM."""
    config = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-05,
        "rope_theta": spec.rope_theta,
        # v0.1 configs carry a window; v0.2+ write null. Never "layer_types".
        "sliding_window": spec.sliding_window,
        "attention_dropout": 0.0,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "use_cache": True,
        "torch_dtype": spec.dtype,
        "transformers_version": "4.57.0",
    }
    if spec.head_dim is not None:
        config["head_dim"] = spec.head_dim
    return config


def make_weights(spec: Spec, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """Random float32 weights with Hugging Face names ([out, in] matrices);
    `vocab_size` overrides the spec's tokenizer's (make_gguf_models.py)."""
    vocab_size = vocab_size or spec.vocab_size
    rng = np.random.default_rng(spec.seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    h, hd = spec.hidden_size, spec.effective_head_dim
    q_out, kv_out = spec.num_attention_heads * hd, spec.num_key_value_heads * hd
    w = {"model.embed_tokens.weight": matrix(vocab_size, h)}
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = matrix(q_out, h)
        w[p + "self_attn.k_proj.weight"] = matrix(kv_out, h)
        w[p + "self_attn.v_proj.weight"] = matrix(kv_out, h)
        w[p + "self_attn.o_proj.weight"] = matrix(h, q_out)
        w[p + "mlp.gate_proj.weight"] = matrix(spec.intermediate_size, h)
        w[p + "mlp.up_proj.weight"] = matrix(spec.intermediate_size, h)
        w[p + "mlp.down_proj.weight"] = matrix(h, spec.intermediate_size)
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "post_attention_layernorm.weight"] = norm(h)
    w["model.norm.weight"] = norm(h)
    if not spec.tie_word_embeddings:
        w["lm_head.weight"] = matrix(vocab_size, h)
    return w


def cast(weights: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """Cast with round-to-nearest-even. numpy has no bfloat16: bf16 tensors
    are produced by the safetensors/mlx path (see save_weights)."""
    if dtype == "float32":
        return weights
    if dtype == "float16":
        return {k: v.astype(np.float16) for k, v in weights.items()}
    raise ValueError(dtype)


def save_weights(out_dir: str, weights: dict[str, np.ndarray], dtype: str, shards: int) -> None:
    """Write safetensors (one file, or `shards` files plus an index)."""
    names = list(weights)  # insertion order: embed, layers in order, norm, head
    if shards == 1:
        groups = [names]
        files = ["model.safetensors"]
    else:
        # Contiguous, roughly equal split by tensor count.
        bounds = np.linspace(0, len(names), shards + 1).round().astype(int)
        groups = [names[bounds[i] : bounds[i + 1]] for i in range(shards)]
        files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    metadata = {"format": "pt"}  # what transformers writes; mlx-lm ignores it
    for group, fname in zip(groups, files):
        path = os.path.join(out_dir, fname)
        part = {k: weights[k] for k in group}
        if dtype == "bfloat16":
            # bfloat16 through MLX (numpy lacks the dtype); round-to-nearest-even.
            import mlx.core as mx

            mx.save_safetensors(path, {k: mx.array(v).astype(mx.bfloat16) for k, v in part.items()}, metadata)
        else:
            save_file(cast(part, dtype), path, metadata=metadata)
    if shards > 1:
        itemsize = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
        index = {
            "metadata": {"total_size": int(sum(v.size for v in weights.values()) * itemsize)},
            "weight_map": {k: fname for group, fname in zip(groups, files) for k in group},
        }
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)


def write_tokenizer_files(out_dir: str, version: str) -> None:
    sp_path = spconvert.mistral_common_model_path(version)
    spconvert.write_tokenizer_json(sp_path, os.path.join(out_dir, "tokenizer.json"))
    names = spconvert.special_pieces(sp_path)
    tokenizer_config = {
        # Generic class: loads tokenizer.json as written (transformers 5 would
        # rebuild normalizer/pre-tokenizer for LlamaTokenizerFast).
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names["bos_token"],
        "eos_token": names["eos_token"],
        "unk_token": names["unk_token"],
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
        "chat_template": spconvert.chat_template(sp_path),
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config, f, indent=2, ensure_ascii=False)


def write_json(path: str, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_float_model(root: str, spec: Spec, weights: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    out_dir = os.path.join(root, spec.name)
    os.makedirs(out_dir)
    weights = weights if weights is not None else make_weights(spec)
    write_json(os.path.join(out_dir, "config.json"), make_config(spec))
    write_json(
        os.path.join(out_dir, "generation_config.json"),
        {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.57.0"},
    )
    write_tokenizer_files(out_dir, spec.tokenizer)
    save_weights(out_dir, weights, spec.dtype, spec.shards)
    return weights


def manifest_entry(spec: Spec, **extra) -> dict:
    entry = {
        "dir": spec.name,
        "description": spec.description,
        "tokenizer": spec.tokenizer,
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.effective_head_dim,
        "head_dim_explicit": spec.head_dim is not None,
        "sliding_window": spec.sliding_window,
        "tied": spec.tie_word_embeddings,
        "dtype": spec.dtype,
        "shards": spec.shards,
        "seed": spec.seed,
        "quantized": None,
    }
    entry.update(extra)
    return entry


def quantize(root: str, src: str, name: str, bits: int, group: int, dtype: str) -> None:
    """mlx_lm.convert, exactly as `mlx_lm.convert --quantize` runs it."""
    from mlx_lm.convert import convert

    out_dir = os.path.join(root, name)
    convert(src, out_dir, quantize=True, q_bits=bits, q_group_size=group, dtype=dtype)
    # convert copies the tokenizer through transformers; keep our exact files.
    for fname in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(os.path.join(src, fname), os.path.join(out_dir, fname))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--force", action="store_true", help="delete OUT_DIR first if it exists")
    args = ap.parse_args()

    root = os.path.abspath(args.out_dir)
    if os.path.exists(root):
        if not args.force:
            print(f"{root} exists (use --force to regenerate)", file=sys.stderr)
            return 1
        shutil.rmtree(root)
    os.makedirs(root)
    t0 = time.time()
    manifest = []
    base_weights = {}
    for spec in FLOAT_MODELS:
        base_weights[spec.name] = write_float_model(root, spec)
        manifest.append(manifest_entry(spec))
    specs = {s.name: s for s in FLOAT_MODELS}
    for name, src, dtype in CAST_MODELS:
        spec = Spec(**{**specs[src].__dict__, "name": name, "dtype": dtype,
                       "description": f"{src} weights cast to {dtype}"})
        write_float_model(root, spec, base_weights[src])
        manifest.append(manifest_entry(spec, source=src))
    for name, bits, group, dtype in QUANT_MODELS:
        src = "gqa4_f32"
        quantize(root, os.path.join(root, src), name, bits, group, dtype)
        spec = Spec(**{**specs[src].__dict__, "name": name, "dtype": dtype,
                       "description": f"mlx_lm.convert -q --q-bits {bits} --q-group-size {group} of {src}"})
        manifest.append(manifest_entry(spec, source=src, quantized={"bits": bits, "group_size": group, "mode": "affine"}))
    write_json(os.path.join(root, "manifest.json"), {"generator": "xtask/python/make_models.py", "models": manifest})
    print(f"wrote {len(manifest)} models to {root} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
