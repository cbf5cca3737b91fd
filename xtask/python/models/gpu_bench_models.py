"""The models of the GPU harness (`xtask/gpu/run.sh bench`), written on the
GPU machine itself (nothing that large can be carried there).

Usage:
    python -m models.gpu_bench_models OUT_DIR

  m7b_bf16   Mistral 7B's shapes (hidden 4096, 32 layers, 32/8 heads, MLP
             14336, vocab 32768): random bf16 weights, std 0.02 (norms 1)
  m7b_q8     mlx_lm.convert of m7b_bf16: 8-bit, group 64
  m7b_q4     the same, 4-bit, group 64
  m7b_q4r    Mistral 7B's shapes in 4-bit, group 64, written directly:
             random packed words, scales and biases (bf16) from MLX's
             generator, no bf16 model first (seconds instead of minutes;
             for speed only: its outputs mean nothing)
  m150_bf16  bench_models.py's ~150M model (hidden 1024, 8 layers, 16/4
             heads, MLP 2816), its weights from make_models' generator
  mx8_bf16   Mixtral 8x7B's shapes with 4 layers instead of 32 (8 experts
             of MLP 14336, top 2), random bf16, experts
             stacked as mlx-lm keeps them (`switch_mlp`); 11.3 GB of experts, of which a token reads 2 of 8 per layer

The 7B weights come from MLX's own generator on the default device (the
GPU), seeded, written as sharded safetensors with an index, so that a
14.5 GB model takes seconds rather than minutes of numpy. config.json and
the tokenizer files are make_models.py's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys

import mlx.core as mx

from models import bench_models as bm
from models import make_models as mm

M7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
           num_attention_heads=32, num_key_value_heads=8)
MX8 = dict(M7B, num_hidden_layers=4)
EXPERTS = 8


def expert_shapes(spec: mm.Spec) -> list[tuple[str, tuple[int, ...]]]:
    """`shapes` with each MLP replaced by a Mixtral block of EXPERTS experts."""
    h, f = spec.hidden_size, spec.intermediate_size
    out = []
    for name, shp in shapes(spec):
        if ".mlp." not in name:
            out.append((name, shp))
        elif name.endswith("mlp.gate_proj.weight"):
            p = name[: -len("mlp.gate_proj.weight")] + "block_sparse_moe."
            out += [
                (p + "gate.weight", (EXPERTS, h)),
                (p + "switch_mlp.gate_proj.weight", (EXPERTS, f, h)),
                (p + "switch_mlp.up_proj.weight", (EXPERTS, f, h)),
                (p + "switch_mlp.down_proj.weight", (EXPERTS, h, f)),
            ]
    return out


def shapes(spec: mm.Spec) -> list[tuple[str, tuple[int, ...]]]:
    """Hugging Face Mistral tensor names and shapes, layer by layer."""
    h, f, v = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    d = spec.effective_head_dim
    q, kv = spec.num_attention_heads * d, spec.num_key_value_heads * d
    out = [("model.embed_tokens.weight", (v, h))]
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (q, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, q)),
            (p + "mlp.gate_proj.weight", (f, h)),
            (p + "mlp.up_proj.weight", (f, h)),
            (p + "mlp.down_proj.weight", (h, f)),
        ]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def random_bf16_model(root: str, name: str, seed: int, experts: bool = False, **shape) -> None:
    spec = mm.Spec(name, seed=seed, dtype="bfloat16", **shape)
    out_dir = os.path.join(root, name)
    os.makedirs(out_dir)
    config = mm.make_config(spec)
    if experts:
        config.update(model_type="mixtral", architectures=["MixtralForCausalLM"],
                      num_local_experts=EXPERTS, num_experts_per_tok=2)
    mm.write_json(os.path.join(out_dir, "config.json"), config)
    mm.write_json(os.path.join(out_dir, "generation_config.json"),
                  {"bos_token_id": 1, "eos_token_id": 2})
    mm.write_tokenizer_files(out_dir, spec.tokenizer)
    mx.random.seed(seed)
    tensors = expert_shapes(spec) if experts else shapes(spec)
    # About 2 GB per shard.
    shards, current, size = [], [], 0
    for name_, shp in tensors:
        current.append((name_, shp))
        size += 2 * math.prod(shp)
        if size > 2e9:
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        arrays = {}
        for tname, shp in shard:
            if tname.endswith("norm.weight"):
                arrays[tname] = mx.ones(shp, dtype=mx.bfloat16)
            else:
                arrays[tname] = (0.02 * mx.random.normal(shp)).astype(mx.bfloat16)
            weight_map[tname] = fname
        mx.save_safetensors(os.path.join(out_dir, fname), arrays, metadata={"format": "pt"})
        del arrays
    mm.write_json(os.path.join(out_dir, "model.safetensors.index.json"),
                  {"metadata": {}, "weight_map": weight_map})


def random_q4_model(root: str, name: str, seed: int, group: int = 64, **shape) -> None:
    spec = mm.Spec(name, seed=seed, dtype="bfloat16", **shape)
    out_dir = os.path.join(root, name)
    os.makedirs(out_dir)
    config = mm.make_config(spec)
    config["quantization"] = {"group_size": group, "bits": 4}
    config["quantization_config"] = dict(config["quantization"])
    mm.write_json(os.path.join(out_dir, "config.json"), config)
    mm.write_json(os.path.join(out_dir, "generation_config.json"),
                  {"bos_token_id": 1, "eos_token_id": 2})
    mm.write_tokenizer_files(out_dir, spec.tokenizer)
    mx.random.seed(seed)
    arrays = {}
    for tname, shp in shapes(spec):
        if tname.endswith("norm.weight"):
            arrays[tname] = mx.ones(shp, dtype=mx.bfloat16)
            continue
        rows, cols = shp
        base = tname[: -len(".weight")]
        scales = (0.001 + 0.002 * mx.random.uniform(shape=(rows, cols // group))).astype(mx.bfloat16)
        words = (rows, cols // 8)
        high = mx.random.randint(0, 1 << 16, words, dtype=mx.uint32)
        low = mx.random.randint(0, 1 << 16, words, dtype=mx.uint32)
        arrays[base + ".weight"] = (high << 16) | low
        arrays[base + ".scales"] = scales
        arrays[base + ".biases"] = (-8.0 * scales).astype(mx.bfloat16)
    mx.save_safetensors(os.path.join(out_dir, "model.safetensors"), arrays, metadata={"format": "mlx"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--only", help="comma-separated model names to write (default: all)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    wanted = lambda name: only is None or name in only
    root = os.path.abspath(args.out_dir)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    if wanted("m7b_bf16") or wanted("m7b_q8") or wanted("m7b_q4"):
        random_bf16_model(root, "m7b_bf16", seed=107, **M7B)
    if wanted("m7b_q8"):
        bm.convert(root, "m7b_bf16", "m7b_q8", quantize=True, q_bits=8, q_group_size=64, dtype="bfloat16")
    if wanted("m7b_q4"):
        bm.convert(root, "m7b_bf16", "m7b_q4", quantize=True, q_bits=4, q_group_size=64, dtype="bfloat16")
    if only is not None and "m7b_q4r" in only:
        random_q4_model(root, "m7b_q4r", seed=109, **M7B)
    if only is not None and "mx8_bf16" in only:
        random_bf16_model(root, "mx8_bf16", seed=111, experts=True, **MX8)
    if wanted("m150_bf16"):
        bm.float_model(root, "m150_bf16", seed=101, **bm.M150)
    print(json.dumps(bm.write_manifest(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
