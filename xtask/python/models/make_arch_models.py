"""Write small random-weight checkpoints of the newer Mistral architectures,
and mlx-lm's reference outputs on them.

Usage:
    python -m models.make_arch_models OUT_DIR [--force]

OUT_DIR/<name>/  config.json, generation_config.json, tokenizer.json and
                 tokenizer_config.json (make_models.write_tokenizer_files, the
                 v3 tokenizer), safetensors weights
OUT_DIR/manifest.json  {"generator", "models": [entry, ...]}: every model's
                 architecture, layout, dtype, quantization, FP8 kind, window,
                 RoPE type and the bytes of its vision and text tensors
OUT_DIR/refs/<name>.safetensors  mlx-lm's outputs on the standard prompts, in
                 exactly reference.py's format (mlx_lm_ref.compute/write):
                 NAME.prompt_ids, NAME.logits, NAME.chunked_logits,
                 NAME.greedy_ids (64), NAME.greedy_margin; metadata "reference"

The models (hidden 128 unless said; vocab 32768 of the v3 tokenizer):
  ministral3_f32, ministral3_bf16   Ministral 3 text model: yarn RoPE with the
                 llama-4 query scaling, window 8 on layers 0 and 2, tied
  mixtral_f32    Mixtral, 4 experts top-2, Mistral's per-expert tensor names
  mixtral_stacked_f32  the same weights in the mlx-community stacked layout
  mixtral_q4_g64, mixtral_q8_g32   mlx_lm.convert quantizations of mixtral_f32
  mistral3_ministral3_bf16   Mistral3ForConditionalGeneration around a
                 ministral3 text model, language_model.* names, vision tensors,
                 chat_template.jinja
  mistral3_mistral_tf5_f32   Mistral3 around a "mistral" text model in
                 transformers 5's layout (model.language_model.*, lm_head.weight)
  ministral3_fp8_tensor   FP8 (F8_E4M3) projections with per-tensor scales
  mistral_fp8_block   FP8 projections with 128x128 block scales, intermediate 320
  llama_rope_{linear,dynamic,llama3,yarn}   gqa4_f32's weights (same seed) as a
                 "llama" model with each rope_scaling type
  mistral4_f32   Mistral 4 (DeepSeek-V3 style MLA attention + grouped MoE),
                 q LoRA, interleaved yarn rope + llama-4 query scaling, layer 0
                 dense, 8 experts top-2 in 2 groups, a shared expert, HF names
  mistral4_noqlora_f32   plain q_proj, non-interleaved rope, every layer MoE,
                 1 group, no shared expert, top-k weights not renormalized
  mistral4_mlx_bf16   mlx_lm.convert --dtype bfloat16 of mistral4_f32: the
                 layout mlx-lm saves (embed_q / unembed_out, switch_mlp)
  native_gqa4_bf16, native_gqa4_f32, native_mixtral_f32   Mistral's own
                 layout (params.json, consolidated*.safetensors, interleaved
                 wq/wk rows) of gqa4_bf16, gqa4_f32 (two files) and mixtral_f32
  native_ministral3_f32   the same of twin_ministral3_full_f32 (ministral3's
                 shapes, seed 21, every layer full, mscale 1): params.json yarn and
                 llama_4_scaling as Ministral 3 publishes them
  mistral4_q4_g32   mlx_lm.convert -q (4-bit, group 32) of mistral4_f32:
                 embed_q / unembed_out quantized (QuantizedMultiLinear)
  mistral3_mistral4_fp8   mistral4_f32's weights in a mistral3 wrapper
                 (transformers 5 names) in FP8: kv_b_proj and the other
                 attention matrices per tensor, routed experts fused
                 (experts.gate_up_proj / down_proj) with per-expert scales

References: mlx-lm's own loader wherever it loads the directory correctly.
Quantized Mixtral: mlx-lm 0.32.2 cannot run a QuantizedSwitchLinear on MLX
0.32.2, so the model mlx-lm loads is dequantized by mlx-lm's own
`dequantize_model` (float32) and run as its float Mixtral. FP8: mlx-lm's
ministral3 sanitize multiplies the raw fp8 bytes by the scale (wrong), so the
weights are dequantized by mlx-lm's own correct FP8 code,
`mlx_lm.models.mistral4.Model.sanitize` (called on a stub), and loaded into
mlx-lm's float ministral3 / llama model in bfloat16. mistral4_mlx_bf16: MLX
0.32.2's CPU GatherMM is float32-only, so on the CPU the switch_mlp gather_mm
runs on float32 copies of the bf16 operands and is rounded to bf16 (what MLX's
CPU matmul does for bf16); the rest is mlx-lm's bf16 model as loaded.

Everything is deterministic: numpy generators seeded per model, std 0.02
normal for matrices, 1 + 0.1 * normal for RMSNorm weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import types

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from common import mlx_lm_ref
from models import make_models
from models.make_models import Spec, write_json

GENERATOR = "xtask/python/make_arch_models.py"
N_GREEDY = 64
VOCAB = make_models.TOKENIZERS["v3"]
VISION_MARKERS = ("vision_tower.", "multi_modal_projector.")
TRANSFORMERS_VERSION = "4.57.0"
FP8_MAX = 448.0  # largest finite float8 e4m3fn value

# ---------------------------------------------------------------------------
# Random weights


class Init:
    """Seeded weights in make_models.py's style."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def matrix(self, *shape: int, std: float = 0.02) -> np.ndarray:
        return (self.rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    def norm(self, n: int) -> np.ndarray:
        return (1.0 + 0.1 * self.rng.standard_normal(n, dtype=np.float32)).astype(np.float32)


# Ministral 3 text model (ministral3_*, mistral3_ministral3_bf16, the FP8
# one). Seed 12: with tied embeddings these tiny random models tend to repeat
# one token (the residual stream is mostly the input embedding); with seeds 11
# and 16 a 64-token greedy run of the bf16 copy is one token repeated, with 12
# every prompt gives at least 3 distinct ids in float32 and in bfloat16.
MINISTRAL3_SPEC = Spec(
    "ministral3", seed=12, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
    num_attention_heads=8, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False,
)
MINISTRAL3_LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention"]
MINISTRAL3_WINDOW = 8
# mscale 1.0 with mscale_all_dim 1.0 gives mlx-lm's YarnRoPE an input scale of
# exactly 1 (the ratio of the two); mscale 2.0 makes it 1.217, so the scaled
# query/key path is exercised. "original_max_position_embeddings" 16 makes the
# llama-4 query scale 1 + 0.1 * log(1 + floor(pos / 16)) change inside the
# 55-token "long" prompt.
MINISTRAL3_ROPE = {
    "rope_type": "yarn",
    "rope_theta": 1000000.0,
    "factor": 16.0,
    "original_max_position_embeddings": 16,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "mscale": 2.0,
    "mscale_all_dim": 1.0,
    "llama_4_scaling_beta": 0.1,
}

MIXTRAL = dict(seed=15, hidden=128, intermediate=256, layers=2, heads=8, kv_heads=2, experts=4, top_k=2)
# Router logits are gate(rmsnorm(h)); with std 0.2 over 128 inputs they have a
# spread of about 2, so the top-2 choice is rarely a near-tie while the
# softmax over the two chosen experts still weights both (std 0.5 makes it
# nearly one-hot). run_mixtral_router_check prints the smallest gap.
ROUTER_STD = 0.2

MISTRAL_TF5_SPEC = Spec("mistral_tf5", seed=13, head_dim=32, rope_theta=1_000_000.0)
FP8_BLOCK_SPEC = Spec(
    "mistral_fp8_block", seed=14, hidden_size=256, intermediate_size=320, num_hidden_layers=2,
    num_attention_heads=8, num_key_value_heads=2, dtype="bfloat16",
)
# Same seed and shapes as make_models.py's gqa4_f32: identical weights.
LLAMA_ROPE_SPEC = Spec("llama_rope", seed=1)
LLAMA_ROPE_VARIANTS = {
    "llama_rope_linear": {"rope_type": "linear", "factor": 4.0},
    "llama_rope_dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama_rope_llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "llama_rope_yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.0},
}

# Mistral 4 (mistral4_*): DeepSeek-V3 style multi-head latent attention
# (q low-rank through q_a/q_b with an RMSNorm between, or a plain q_proj; a
# shared latent kv_a_proj_with_mqa of kv_lora_rank + rope dims; kv_b_proj
# expanding the normed latent to per-head nope keys and values), the rope on
# the last qk_rope_head_dim dims of q and on one shared rope key, yarn RoPE +
# llama-4 query scaling, and DeepSeek-V3 MoE layers (softmax router in
# float32, group-limited top-k, routed scaling, shared experts) after
# first_k_dense_replace dense layers.
MISTRAL4 = dict(
    seed=62, hidden=128, intermediate=256, moe_intermediate=64, layers=3, heads=4,
    q_lora_rank=48, kv_lora_rank=64, rope_dim=16, nope_dim=32, v_dim=32,
    experts=8, top_k=2, n_shared=1, first_dense=1, n_group=2, topk_group=1,
    routed_scaling=2.5, norm_topk=True, rope_interleave=True,
)
# No q LoRA (plain q_proj), non-interleaved rope, every layer MoE, no groups,
# no shared experts (n_shared_experts null: mlx-lm then builds none), the
# top-k weights not renormalized.
MISTRAL4_NOQLORA = {
    **MISTRAL4, "seed": 61, "layers": 2, "q_lora_rank": None, "rope_interleave": False,
    "first_dense": 0, "n_group": 1, "topk_group": 1, "norm_topk": False, "n_shared": None,
}
# factor 4 with mscale == mscale_all_dim: mlx-lm's YarnRoPE input scale is
# their ratio, exactly 1, while apply_yarn_mscale multiplies the attention
# scale by (0.1 * mscale_all_dim * ln(factor) + 1)^2 = 1.29648, so the softmax
# scale is 48^-0.5 * 1.29648 = 0.18713, not 48^-0.5. The llama-4 query scale
# 1 + 0.1 * ln(1 + floor(pos / 16)) changes at positions 16 and 32 of the
# "long" prompt.
MISTRAL4_ROPE = {
    "rope_type": "yarn",
    "rope_theta": 10000.0,
    "factor": 4.0,
    "original_max_position_embeddings": 16,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "llama_4_scaling_beta": 0.1,
}
# Router std 0.5: gate(rmsnorm(h)) logits with a spread of about 5.7. Seeds
# 62 and 61 were picked from 41-70 for the largest smallest gaps (printed by
# mistral4_router_check) over the prompts and the greedy continuations, in
# float32 and (62) in bfloat16, where the router logits are bf16 and many
# seeds give exact top-k ties.
MISTRAL4_ROUTER_STD = 0.5
MISTRAL4_MODELS = {"mistral4_f32": MISTRAL4, "mistral4_noqlora_f32": MISTRAL4_NOQLORA,
                   "mistral4_mlx_bf16": MISTRAL4, "mistral4_q4_g32": MISTRAL4,
                   "mistral3_mistral4_fp8": MISTRAL4}

# Pixtral-like vision tower + Mistral3 projector (weights only: mlx-lm drops
# them, our engine must not read them).
VISION = dict(hidden=256, intermediate=256, heads=4, patch=16, channels=3, merge=2)

CHAT_TEMPLATE_JINJA = (
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {{- '[INST]' + message['content'] + '[/INST]' }}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- message['content'] + eos_token }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)


def ministral3_weights(tied: bool, seed: int | None = None) -> dict[str, np.ndarray]:
    """The Ministral 3 text weights; the tied variant is the untied one
    without lm_head.weight (make_weights draws the head last)."""
    spec = MINISTRAL3_SPEC if seed is None else dataclasses.replace(MINISTRAL3_SPEC, seed=seed)
    w = make_models.make_weights(spec)
    if tied:
        del w["lm_head.weight"]
    return w


def mixtral_weights() -> dict[str, np.ndarray]:
    """Mixtral with Mistral's per-expert names (w1 gate, w2 down, w3 up)."""
    m = MIXTRAL
    init = Init(m["seed"])
    h, inter, hd = m["hidden"], m["intermediate"], m["hidden"] // m["heads"]
    w = {"model.embed_tokens.weight": init.matrix(VOCAB, h)}
    for i in range(m["layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = init.matrix(m["heads"] * hd, h)
        w[p + "self_attn.k_proj.weight"] = init.matrix(m["kv_heads"] * hd, h)
        w[p + "self_attn.v_proj.weight"] = init.matrix(m["kv_heads"] * hd, h)
        w[p + "self_attn.o_proj.weight"] = init.matrix(h, m["heads"] * hd)
        w[p + "block_sparse_moe.gate.weight"] = init.matrix(m["experts"], h, std=ROUTER_STD)
        for e in range(m["experts"]):
            q = f"{p}block_sparse_moe.experts.{e}."
            w[q + "w1.weight"] = init.matrix(inter, h)
            w[q + "w2.weight"] = init.matrix(h, inter)
            w[q + "w3.weight"] = init.matrix(inter, h)
        w[p + "input_layernorm.weight"] = init.norm(h)
        w[p + "post_attention_layernorm.weight"] = init.norm(h)
    w["model.norm.weight"] = init.norm(h)
    w["lm_head.weight"] = init.matrix(VOCAB, h)
    return w


def stack_experts(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-expert Mixtral weights -> mlx-community's switch_mlp layout
    ([experts, out, in] per projection), same values, same order otherwise."""
    out: dict[str, np.ndarray] = {}
    for k, v in w.items():
        if ".block_sparse_moe.experts." not in k:
            out[k] = v
            continue
        prefix, rest = k.split(".block_sparse_moe.experts.")
        expert, name = rest.split(".", 1)
        if expert != "0":
            continue
        target = {"w1.weight": "gate_proj", "w2.weight": "down_proj", "w3.weight": "up_proj"}[name]
        out[f"{prefix}.block_sparse_moe.switch_mlp.{target}.weight"] = np.stack(
            [w[f"{prefix}.block_sparse_moe.experts.{e}.{name}"] for e in range(MIXTRAL["experts"])])
    return out


def mistral4_weights(m: dict) -> dict[str, np.ndarray]:
    """Mistral 4 in the Hugging Face / DeepSeek-V3 layout mlx-lm's sanitize
    takes: kv_b_proj not absorbed, per-expert mlp.experts.E.* names."""
    init = Init(m["seed"])
    h, heads = m["hidden"], m["heads"]
    qk = m["nope_dim"] + m["rope_dim"]
    w = {"model.embed_tokens.weight": init.matrix(VOCAB, h)}
    for i in range(m["layers"]):
        p = f"model.layers.{i}."
        if m["q_lora_rank"] is None:
            w[p + "self_attn.q_proj.weight"] = init.matrix(heads * qk, h)
        else:
            w[p + "self_attn.q_a_proj.weight"] = init.matrix(m["q_lora_rank"], h)
            w[p + "self_attn.q_a_layernorm.weight"] = init.norm(m["q_lora_rank"])
            w[p + "self_attn.q_b_proj.weight"] = init.matrix(heads * qk, m["q_lora_rank"])
        w[p + "self_attn.kv_a_proj_with_mqa.weight"] = init.matrix(m["kv_lora_rank"] + m["rope_dim"], h)
        w[p + "self_attn.kv_a_layernorm.weight"] = init.norm(m["kv_lora_rank"])
        w[p + "self_attn.kv_b_proj.weight"] = init.matrix(heads * (m["nope_dim"] + m["v_dim"]), m["kv_lora_rank"])
        w[p + "self_attn.o_proj.weight"] = init.matrix(h, heads * m["v_dim"])
        if i < m["first_dense"]:
            w[p + "mlp.gate_proj.weight"] = init.matrix(m["intermediate"], h)
            w[p + "mlp.up_proj.weight"] = init.matrix(m["intermediate"], h)
            w[p + "mlp.down_proj.weight"] = init.matrix(h, m["intermediate"])
        else:
            w[p + "mlp.gate.weight"] = init.matrix(m["experts"], h, std=MISTRAL4_ROUTER_STD)
            for e in range(m["experts"]):
                q = f"{p}mlp.experts.{e}."
                w[q + "gate_proj.weight"] = init.matrix(m["moe_intermediate"], h)
                w[q + "up_proj.weight"] = init.matrix(m["moe_intermediate"], h)
                w[q + "down_proj.weight"] = init.matrix(h, m["moe_intermediate"])
            if m["n_shared"] is not None:
                inter = m["moe_intermediate"] * m["n_shared"]
                w[p + "mlp.shared_experts.gate_proj.weight"] = init.matrix(inter, h)
                w[p + "mlp.shared_experts.up_proj.weight"] = init.matrix(inter, h)
                w[p + "mlp.shared_experts.down_proj.weight"] = init.matrix(h, inter)
        w[p + "input_layernorm.weight"] = init.norm(h)
        w[p + "post_attention_layernorm.weight"] = init.norm(h)
    w["model.norm.weight"] = init.norm(h)
    w["lm_head.weight"] = init.matrix(VOCAB, h)
    return w


def vision_weights(seed: int, layers: int, text_hidden: int, tower: str, projector: str) -> dict[str, np.ndarray]:
    v = VISION
    init = Init(seed)
    h, inter = v["hidden"], v["intermediate"]
    w = {f"{tower}patch_conv.weight": init.matrix(h, v["channels"], v["patch"], v["patch"]),
         f"{tower}ln_pre.weight": init.norm(h)}
    for i in range(layers):
        p = f"{tower}transformer.layers.{i}."
        w[p + "attention_norm.weight"] = init.norm(h)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            w[p + f"attention.{name}.weight"] = init.matrix(h, h)
        w[p + "ffn_norm.weight"] = init.norm(h)
        w[p + "feed_forward.gate_proj.weight"] = init.matrix(inter, h)
        w[p + "feed_forward.up_proj.weight"] = init.matrix(inter, h)
        w[p + "feed_forward.down_proj.weight"] = init.matrix(h, inter)
    w[f"{projector}norm.weight"] = init.norm(h)
    w[f"{projector}patch_merger.merging_layer.weight"] = init.matrix(h, h * v["merge"] ** 2)
    w[f"{projector}linear_1.weight"] = init.matrix(text_hidden, h)
    w[f"{projector}linear_2.weight"] = init.matrix(text_hidden, text_hidden)
    return w


# ---------------------------------------------------------------------------
# Configs


def ministral3_config(tied: bool, dtype: str) -> dict:
    s = MINISTRAL3_SPEC
    return {
        "architectures": ["Ministral3ForCausalLM"],
        "model_type": "ministral3",
        "vocab_size": VOCAB,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.num_hidden_layers,
        "num_attention_heads": s.num_attention_heads,
        "num_key_value_heads": s.num_key_value_heads,
        "head_dim": s.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-05,
        "rope_parameters": dict(MINISTRAL3_ROPE),
        "layer_types": list(MINISTRAL3_LAYER_TYPES),
        "sliding_window": MINISTRAL3_WINDOW,
        "attention_dropout": 0.0,
        "tie_word_embeddings": tied,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": dtype,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def mixtral_config() -> dict:
    m = MIXTRAL
    return {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "vocab_size": VOCAB,
        "hidden_size": m["hidden"],
        "intermediate_size": m["intermediate"],
        "num_hidden_layers": m["layers"],
        "num_attention_heads": m["heads"],
        "num_key_value_heads": m["kv_heads"],
        "num_local_experts": m["experts"],
        "num_experts_per_tok": m["top_k"],
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "output_router_logits": False,
        "router_aux_loss_coef": 0.02,
        "router_jitter_noise": 0.0,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "use_cache": True,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
    }


def mistral4_config(m: dict, dtype: str) -> dict:
    return {
        "architectures": ["Mistral4ForCausalLM"],
        "model_type": "mistral4",
        "vocab_size": VOCAB,
        "hidden_size": m["hidden"],
        "intermediate_size": m["intermediate"],
        "moe_intermediate_size": m["moe_intermediate"],
        "num_hidden_layers": m["layers"],
        "num_attention_heads": m["heads"],
        "num_key_value_heads": m["heads"],
        "q_lora_rank": m["q_lora_rank"],
        "kv_lora_rank": m["kv_lora_rank"],
        "qk_rope_head_dim": m["rope_dim"],
        "qk_nope_head_dim": m["nope_dim"],
        "v_head_dim": m["v_dim"],
        "n_routed_experts": m["experts"],
        "num_experts_per_tok": m["top_k"],
        # null, not absent: mlx-lm's ModelArgs has no default for it.
        "n_shared_experts": m["n_shared"],
        "first_k_dense_replace": m["first_dense"],
        "n_group": m["n_group"],
        "topk_group": m["topk_group"],
        "routed_scaling_factor": m["routed_scaling"],
        "norm_topk_prob": m["norm_topk"],
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-06,
        "rope_parameters": dict(MISTRAL4_ROPE),
        "rope_interleave": m["rope_interleave"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": dtype,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def vision_config(layers: int) -> dict:
    v = VISION
    return {
        "model_type": "pixtral",
        "hidden_size": v["hidden"],
        "intermediate_size": v["intermediate"],
        "num_hidden_layers": layers,
        "num_attention_heads": v["heads"],
        "head_dim": v["hidden"] // v["heads"],
        "num_channels": v["channels"],
        "image_size": 128,
        "patch_size": v["patch"],
        "hidden_act": "silu",
        "rope_theta": 10000.0,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
    }


def mistral3_config(text_config: dict, vision_layers: int, dtype: str) -> dict:
    text_config = {k: v for k, v in text_config.items()
                   if k not in ("architectures", "torch_dtype", "transformers_version")}
    return {
        "architectures": ["Mistral3ForConditionalGeneration"],
        "model_type": "mistral3",
        "text_config": text_config,
        "vision_config": vision_config(vision_layers),
        "image_token_index": 10,
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": False,
        "spatial_merge_size": 2,
        "vision_feature_layer": -1,
        "torch_dtype": dtype,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def llama_config(rope_scaling: dict | None) -> dict:
    config = make_models.make_config(LLAMA_ROPE_SPEC)
    config.update({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "rope_theta": 10000.0,
        "max_position_embeddings": 16,
        "rope_scaling": rope_scaling,
        "attention_bias": False,
        "mlp_bias": False,
        "pretraining_tp": 1,
    })
    del config["sliding_window"]  # no such key in LlamaConfig
    return config


# ---------------------------------------------------------------------------
# Files


def new_model_dir(root: str, name: str, config: dict, tokenizer_dir: str) -> str:
    out_dir = os.path.join(root, name)
    os.makedirs(out_dir)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_json(os.path.join(out_dir, "generation_config.json"),
               {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": TRANSFORMERS_VERSION})
    for fname in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(tokenizer_dir, fname), os.path.join(out_dir, fname))
    return out_dir


def bf16_bytes(a: np.ndarray) -> bytes:
    """float32 -> bfloat16 (round to nearest even, through MLX) as raw bytes."""
    return np.array(mx.array(a).astype(mx.bfloat16).view(mx.uint16)).tobytes()


def write_raw_safetensors(path: str, tensors: list[tuple[str, str, list[int], bytes]]) -> None:
    """A safetensors file from (name, dtype, shape, raw little-endian bytes):
    8-byte little-endian header length, JSON header padded with spaces to a
    multiple of 8, then the data in the given order. Needed for F8_E4M3,
    which neither safetensors.numpy nor mx.save_safetensors can write."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, data in tensors:
        size = {"F8_E4M3": 1, "BF16": 2, "F16": 2, "F32": 4}[dtype] * int(np.prod(shape, dtype=np.int64))
        assert len(data) == size, (name, dtype, shape, len(data))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, _, _, data in tensors:
            f.write(data)


def tensor_bytes(model_dir: str) -> tuple[int, int]:
    """(vision bytes, text bytes) of the tensors as stored in the directory's
    safetensors files (from their headers)."""
    vision = text = 0
    for fname in sorted(os.listdir(model_dir)):
        if not fname.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, fname), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            size = info["data_offsets"][1] - info["data_offsets"][0]
            if any(m in name for m in VISION_MARKERS):
                vision += size
            else:
                text += size
    return vision, text


# FP8 ------------------------------------------------------------------------

FP8_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_fp8_projection(name: str) -> bool:
    return name.endswith(".weight") and name.split(".")[-2] in FP8_PROJECTIONS


def to_fp8_bytes(scaled: np.ndarray) -> bytes:
    """float32 values already divided by their scale -> e4m3fn bytes (MLX's
    own conversion; clipped first so nothing can round past 448)."""
    q = mx.to_fp8(mx.array(np.clip(scaled, -FP8_MAX, FP8_MAX)))
    assert q.dtype == mx.uint8
    return np.array(q).tobytes()


def fp8_per_tensor(w: np.ndarray) -> tuple[bytes, np.float32]:
    """Per-tensor scale, stored as a bf16 scalar: the weights are divided by
    the bf16-rounded scale so that fp8 * stored scale approximates w."""
    scale = np.float32(np.abs(w).max() / FP8_MAX)
    scale = np.float32(np.array(mx.array(scale).astype(mx.bfloat16).astype(mx.float32)))
    return to_fp8_bytes(w / scale), scale


def fp8_per_block(w: np.ndarray, block: int = 128) -> tuple[bytes, np.ndarray]:
    """128x128 block scales [ceil(out/128), ceil(in/128)] float32; the last
    row/column of blocks is partial when a size is not a multiple of 128."""
    m, n = w.shape
    bm, bn = -(-m // block), -(-n // block)
    scales = np.zeros((bm, bn), dtype=np.float32)
    for i in range(bm):
        for j in range(bn):
            scales[i, j] = np.abs(w[i * block:(i + 1) * block, j * block:(j + 1) * block]).max() / FP8_MAX
    full = np.repeat(np.repeat(scales, block, axis=0), block, axis=1)[:m, :n]
    return to_fp8_bytes(w / full), scales


def write_fp8_model(out_dir: str, weights: dict[str, np.ndarray], kind: str, seed: int,
                    fp8=is_fp8_projection) -> None:
    """Tensors `fp8` picks as F8_E4M3 + `<name>_scale_inv` (tensor: bf16 [],
    or f32 [experts, 1, 1] for a 3-D stack of experts; block: f32
    [ceil(out/128), ceil(in/128)]); tensor kind also writes a static
    `<module>.activation_scale` (bf16 []) for each matrix. Everything else bf16."""
    rng = np.random.default_rng(seed)
    tensors = []
    for name, w in weights.items():
        if not fp8(name):
            tensors.append((name, "BF16", list(w.shape), bf16_bytes(w)))
            continue
        module = name.removesuffix(".weight")
        if w.ndim == 3:  # per expert, as transformers' fused experts (experts.gate_up_proj)
            scales = (np.abs(w).max(axis=(1, 2), keepdims=True) / FP8_MAX).astype(np.float32)
            tensors.append((name, "F8_E4M3", list(w.shape), to_fp8_bytes(w / scales)))
            tensors.append((f"{name}_scale_inv", "F32", list(scales.shape), scales.tobytes()))
        elif kind == "tensor":
            data, scale = fp8_per_tensor(w)
            tensors.append((name, "F8_E4M3", list(w.shape), data))
            tensors.append((f"{module}.weight_scale_inv", "BF16", [], bf16_bytes(np.array(scale, dtype=np.float32))))
            act = np.array(0.01 + 0.09 * rng.random(), dtype=np.float32)
            tensors.append((f"{module}.activation_scale", "BF16", [], bf16_bytes(act)))
        else:
            data, scales = fp8_per_block(w)
            tensors.append((name, "F8_E4M3", list(w.shape), data))
            tensors.append((f"{module}.weight_scale_inv", "F32", list(scales.shape), scales.tobytes()))
    write_raw_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)


def mlx_lm_fp8_dequantize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """mlx-lm's own FP8 dequantization: `mistral4.Model.sanitize` called on a
    stub whose args.num_hidden_layers is 0 (so only its generic parts run:
    int4 remap (nothing here), `dequant` of every `*_scale_inv` (from_fp8 to
    bf16 times the scale, per tensor or per 128x128 block), activation_scale
    dropped, rotary inv_freq dropped)."""
    from mlx_lm.models import mistral4

    stub = types.SimpleNamespace(args=types.SimpleNamespace(num_hidden_layers=0))
    return mistral4.Model.sanitize(stub, dict(weights))


def check_fp8_dequant(deq: dict[str, mx.array], original: dict[str, np.ndarray], fp8=is_fp8_projection) -> float:
    """The dequantized projections are within fp8's precision of the float
    weights they came from; returns the largest relative error seen."""
    worst = 0.0
    for name, w in original.items():
        if not fp8(name):
            continue
        d = np.array(deq[name].astype(mx.float32))
        assert deq[name].dtype == mx.bfloat16, (name, deq[name].dtype)
        bound = 0.07 * np.abs(w) + np.abs(w).max() / FP8_MAX * 2.0 ** -8
        err = np.abs(d - w)
        assert (err <= bound).all(), f"{name}: fp8 round trip off by {err.max()}"
        worst = max(worst, float((err / np.maximum(np.abs(w), 1e-3)).max()))
    return worst


# ---------------------------------------------------------------------------
# Reference helpers


def mlx_model(module_name: str, config: dict):
    """mlx-lm's model class of `module_name` built from a config dict."""
    import importlib

    arch = importlib.import_module(f"mlx_lm.models.{module_name}")
    return arch.Model(arch.ModelArgs.from_dict(config))


def fp8_reference(model_dir: str, module_name: str, original: dict[str, np.ndarray], fp8=is_fp8_projection):
    """The reference plan of an FP8 checkpoint: mlx-lm's float `module_name`
    model on the weights mlx-lm's own FP8 dequantization gives, and notes."""
    def plan():
        model, worst = load_fp8_reference(model_dir, module_name, original, fp8)
        notes = {"window": None, "compute": "bfloat16",
                 "fp8_dequant": "mlx_lm.models.mistral4.Model.sanitize (stub args, num_hidden_layers 0)",
                 "fp8_max_rel_err": worst,
                 "direct_load": direct_load_note(model_dir, model, [1, 2, 3, 4, 5])}
        return model, notes
    return plan


def load_fp8_reference(model_dir: str, module_name: str, original: dict[str, np.ndarray],
                       fp8=is_fp8_projection):
    """mlx-lm's float `module_name` model (bfloat16) on mlx-lm's FP8
    dequantization of the directory's weights."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    config.pop("quantization_config")
    raw = mx.load(os.path.join(model_dir, "model.safetensors"))
    fp8_names = [n for n in original if fp8(n)]
    assert fp8_names and all(raw[n].dtype == mx.uint8 for n in fp8_names)  # how MLX loads F8_E4M3
    deq = mlx_lm_fp8_dequantize(raw)
    worst = check_fp8_dequant(deq, original, fp8)
    model = mlx_model(module_name, config)
    deq = model.sanitize(deq)
    model.load_weights(list(deq.items()), strict=True)
    model.eval()
    mx.eval(model.parameters())
    from mlx.utils import tree_flatten

    dtypes = {str(v.dtype) for _, v in tree_flatten(model.parameters())}
    assert dtypes == {"mlx.core.bfloat16"}, dtypes
    return model, worst


def one_line(err: Exception, n: int) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def direct_load_note(model_dir: str, model, prompt: list[int]) -> str:
    """What mlx-lm's own loader makes of an FP8 directory (a diagnostic)."""
    try:
        direct, _ = mlx_lm_ref.load_model(model_dir)
        a = mlx_lm_ref.prompt_logits(direct, prompt)
        b = mlx_lm_ref.prompt_logits(model, prompt)
        return f"mlx-lm load_model runs it but max |logits - reference| = {float(mx.abs(a - b).max()):.3g}"
    except Exception as err:  # noqa: BLE001 - a diagnostic only
        return f"mlx-lm load_model fails: {type(err).__name__}: {one_line(err, 120)}"


def quantized_run_note(model, prompt: list[int]) -> str:
    try:
        mx.eval(model(mx.array([prompt], dtype=mx.int32)))
        return "the quantized model runs in mlx-lm"
    except Exception as err:  # noqa: BLE001 - a diagnostic only
        if "global_scale" in str(err):  # mlx-lm 0.32.2 passes a kwarg MLX 0.32.2 lacks
            return ("the quantized model fails in mlx-lm: its QuantizedSwitchLinear passes "
                    "global_scale= to mx.gather_qmm, which this MLX lacks")
        return f"the quantized model fails in mlx-lm: {type(err).__name__}: {one_line(err, 120)}"


def dequantize_to_f32(model) -> None:
    """mlx-lm's own dequantize_model (it handles QuantizedSwitchLinear:
    a float SwitchLinear with the [E, out, in] dequantized weight), float32."""
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear

    mlx_lm_ref.to_dense_f32(model)
    left = [n for n, m in model.named_modules()
            if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding, QuantizedSwitchLinear))]
    assert not left, f"still quantized: {left}"


def contiguous_splits() -> None:
    """On a GPU: every `mx.split` part copied to contiguous memory. MLX
    0.32.2's CUDA `fast.rope` with custom `freqs` reads the last-axis part of
    a split wrongly (relative error 1.0; `mla_cuda_probe.py`'s
    `op_split_rope_*`, one H100, 2026-12-06), which breaks mlx-lm's Mistral 4
    (its `q_pe`); with the copies its GPU logits are within 2e-3 of the CPU's.
    The values are the same, so nothing else changes."""
    split = mx.split
    mx.split = lambda *a, **k: [mx.contiguous(p) for p in split(*a, **k)]


def dequantize_multi_linear(model) -> int:
    """mlx-lm's QuantizedMultiLinear layers (Mistral 4's absorbed embed_q /
    unembed_out), which `dequantize_model` leaves quantized, replaced by
    float MultiLinear layers holding `mx.dequantize` of their weights.
    Returns how many were replaced."""
    from mlx_lm.models.mla import MultiLinear, QuantizedMultiLinear

    swapped = 0
    for _, module in list(model.named_modules()):
        for attr in ("embed_q", "unembed_out"):
            q = getattr(module, attr, None) if isinstance(module, nn.Module) else None
            if not isinstance(q, QuantizedMultiLinear):
                continue
            w = mx.dequantize(q["weight"], q["scales"], q.get("biases"), q.group_size, q.bits, mode=q.mode)
            dense = MultiLinear(w.shape[2], w.shape[1], w.shape[0])
            dense.weight = w
            setattr(module, attr, dense)
            swapped += 1
    return swapped


def router_min_gap(model, prompts: list[dict]) -> float:
    """Smallest gap between the k-th and (k+1)-th router logit over every
    token of the prompts (one pass), every layer: how close the expert choice
    comes to a tie."""
    k = MIXTRAL["top_k"]
    records: list[mx.array] = []

    class RecordingGate(nn.Linear):
        def __call__(self, x):
            y = super().__call__(x)
            records.append(y)
            return y

    saved = []
    for layer in model.model.layers:
        moe = layer.block_sparse_moe
        saved.append(moe.gate)
        g = RecordingGate(moe.gate.weight.shape[1], moe.gate.weight.shape[0], bias=False)
        g.weight = moe.gate.weight
        moe.gate = g
    try:
        for p in prompts:
            mx.eval(model(mx.array([p["ids"]], dtype=mx.int32)))
    finally:
        for layer, g in zip(model.model.layers, saved):
            layer.block_sparse_moe.gate = g
    gap = math.inf
    for r in records:
        s = -np.sort(-np.array(r.astype(mx.float32)).reshape(-1, r.shape[-1]), axis=-1)
        gap = min(gap, float((s[:, k - 1] - s[:, k]).min()))
    return gap


def mistral4_router_check(model, prompts: list[dict], m: dict) -> dict:
    """Records every MoE layer's router logits over every token of the
    prompts (one pass each), re-derives the expert choice in numpy the way
    mlx-lm's `mistral4_expert_select` makes it (softmax in float32; with
    n_group > 1 a group's score is the sum of its 2 best probabilities, the
    n_group - topk_group lowest groups are zeroed; top-k of what is left;
    weights are the unzeroed probabilities, divided by their sum + 1e-20 if
    norm_topk_prob, times routed_scaling_factor), checks that it picks the
    same experts with the same weights as mlx-lm's function, and returns the
    smallest gaps: between the k-th and (k+1)-th router logit among the
    eligible experts, and (n_group > 1) between the topk_group-th and next
    group score (a sum of probabilities)."""
    from mlx_lm.models import mistral4

    records: list[mx.array] = []

    class RecordingGate(nn.Linear):
        def __call__(self, x):
            y = super().__call__(x)
            records.append(y)
            return y

    moes = [layer.mlp for layer in model.model.layers if isinstance(layer.mlp, mistral4.Mistral4MoE)]
    assert len(moes) == m["layers"] - m["first_dense"], len(moes)
    saved = [moe.gate for moe in moes]
    for moe in moes:
        g = RecordingGate(moe.gate.weight.shape[1], moe.gate.weight.shape[0], bias=False)
        g.weight = moe.gate.weight
        moe.gate = g
    try:
        for p in prompts:
            mx.eval(model(mx.array([p["ids"]], dtype=mx.int32)))
    finally:
        for moe, g in zip(moes, saved):
            moe.gate = g

    k, n_group, topk_group = m["top_k"], m["n_group"], m["topk_group"]
    topk_gap = group_gap = math.inf
    worst_weight = 0.0
    for r in records:
        inds, weights = mistral4.mistral4_expert_select(
            r, k, n_group, topk_group, m["routed_scaling"], m["norm_topk"])
        inds = np.array(inds).reshape(-1, k)
        weights = np.array(weights.astype(mx.float32)).reshape(-1, k)
        g = np.array(r.astype(mx.float32)).reshape(-1, m["experts"]).astype(np.float64)
        s = np.exp(g - g.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        eligible = s.copy()
        if n_group > 1:
            grouped = eligible.reshape(len(s), n_group, -1)
            group_scores = np.sort(grouped, axis=-1)[..., -2:].sum(axis=-1)
            ranked = np.sort(group_scores, axis=-1)[:, ::-1]
            group_gap = min(group_gap, float((ranked[:, topk_group - 1] - ranked[:, topk_group]).min()))
            dropped = np.argsort(group_scores, axis=-1)[:, : n_group - topk_group]
            np.put_along_axis(grouped, dropped[..., None], 0.0, axis=1)
            eligible = grouped.reshape(len(s), -1)
        # In router-logit units (= log-probability): with a peaked softmax
        # the k-th and (k+1)-th probabilities are both tiny, their
        # difference says nothing about how near a tie they are.
        ranked = np.sort(np.where(eligible > 0, g, -np.inf), axis=-1)[:, ::-1]
        topk_gap = min(topk_gap, float((ranked[:, k - 1] - ranked[:, k]).min()))
        chosen = np.argsort(-eligible, axis=-1)[:, :k]
        assert (np.sort(chosen, axis=-1) == np.sort(inds, axis=-1)).all(), "expert choice differs"
        expected = np.take_along_axis(s, inds, axis=-1)
        if m["norm_topk"]:
            expected = expected / (expected.sum(axis=-1, keepdims=True) + 1e-20)
        expected = expected * m["routed_scaling"]
        worst_weight = max(worst_weight, float(np.abs(expected - weights).max()))
    assert worst_weight < 1e-5, f"expert weights differ from mlx-lm's by {worst_weight}"
    return {"topk_gap": topk_gap, "group_gap": None if n_group == 1 else group_gap,
            "tokens": sum(int(np.prod(r.shape[:-1])) for r in records) // len(moes)}


def gather_mm_in_f32(model) -> int:
    """MLX 0.32.2's CPU GatherMM supports only float32 ("[GatherMM::eval]
    Currently only supports float32"), so mlx-lm cannot run a bfloat16
    SwitchGLU on the CPU. This swaps every MoE layer's switch_mlp
    gate/up/down SwitchLinear for one whose gather_mm runs on float32 copies
    of its bfloat16 operands (exact) and rounds the result to bfloat16: what
    MLX's CPU matmul does for bfloat16 operands (bit for bit the same as
    `x_bf16 @ w_bf16.T` per expert, checked below). Everything else stays
    mlx-lm's bfloat16 model. Returns the number of layers swapped."""
    from mlx_lm.models.switch_layers import SwitchGLU, SwitchLinear

    class F32GatherSwitchLinear(SwitchLinear):
        def __call__(self, x, indices, sorted_indices=False):
            y = mx.gather_mm(x.astype(mx.float32), self["weight"].astype(mx.float32).swapaxes(-1, -2),
                             rhs_indices=indices, sorted_indices=sorted_indices)
            return y.astype(x.dtype)

    swapped = 0
    for _, module in model.named_modules():
        if not isinstance(module, SwitchGLU):
            continue
        for proj in ("gate_proj", "up_proj", "down_proj"):
            old = getattr(module, proj)
            assert type(old) is SwitchLinear and "bias" not in old, type(old)
            new = F32GatherSwitchLinear(old.input_dims, old.output_dims, old.num_experts, bias=False)
            new.weight = old.weight
            setattr(module, proj, new)
        swapped += 1
        # The swapped layer against a plain bf16 matmul of one expert.
        x = mx.array(np.random.default_rng(0).standard_normal((3, module.gate_proj.input_dims)),
                     dtype=mx.bfloat16)
        idx = mx.array([[1, 0]] * 3, dtype=mx.uint32)
        got = module.gate_proj(mx.expand_dims(x, (-2, -3)), idx).squeeze(-2)
        assert mx.array_equal(got[:, 0], x @ module.gate_proj.weight[1].T).item()
    return swapped


def decode_path_diff(model, prompts: list[dict]) -> float:
    """Largest |difference| between the last token's logits through
    mlx-lm's decode path (one token with a cache: attention over the latent,
    embed_q on the query, unembed_out on the output, the rope scores as an
    additive mask) and through its one-pass prefill path (k/v expanded)."""
    from mlx_lm.models.cache import make_prompt_cache

    worst = 0.0
    for p in prompts:
        ids = p["ids"]
        if len(ids) < 2:
            continue
        cache = make_prompt_cache(model)
        model(mx.array([ids[:-1]], dtype=mx.int32), cache=cache)
        last = model(mx.array([ids[-1:]], dtype=mx.int32), cache=cache)[0, -1].astype(mx.float32)
        full = mlx_lm_ref.prompt_logits(model, ids)[-1]
        worst = max(worst, float(mx.abs(last - full).max()))
    return worst


def logits_of(model, ids: list[int]) -> np.ndarray:
    return np.array(mlx_lm_ref.prompt_logits(model, ids))


def check_results(name: str, results: list[dict]) -> None:
    for r in results:
        for key in ("logits", "chunked_logits"):
            if r[key] is not None:
                assert np.isfinite(np.array(r[key])).all(), f"{name}/{r['name']}: non-finite {key}"
        ids = r["greedy_ids"]
        assert len(ids) == N_GREEDY, (name, r["name"], len(ids))
        assert len(set(ids)) > 1, f"{name}/{r['name']}: greedy ids are all {ids[0]}"


# ---------------------------------------------------------------------------
# The models


def entry(name: str, description: str, arch: str, layout: str, dtype: str, *, wrapper=None,
          quantized=None, fp8=None, sliding_window=None, layer_types=None, rope_type="default",
          rope=None, rope_theta=1000000.0, tied=False, hidden=128, intermediate=256, layers=2, heads=8, kv_heads=2,
          head_dim=16, experts=None, top_k=None, seed=None, source=None, chat_template=None,
          reference_approach="mlx-lm load_model on the directory") -> dict:
    return {
        "dir": name, "description": description, "arch": arch, "wrapper": wrapper, "layout": layout,
        "dtype": dtype, "quantized": quantized, "fp8": fp8, "sliding_window": sliding_window,
        "layer_types": layer_types, "rope_type": rope_type, "rope_theta": rope_theta, "rope": rope,
        "vision_bytes": None, "text_bytes": None,  # filled in from the files
        "tied": tied, "vocab_size": VOCAB, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": head_dim, "num_local_experts": experts, "num_experts_per_tok": top_k,
        "seed": seed, "source": source, "chat_template": chat_template,
        "reference": reference_approach,
    }


def ministral3_entry(name, description, layout, dtype, tied, **kw) -> dict:
    s = MINISTRAL3_SPEC
    return entry(name, description, "ministral3", layout, dtype, sliding_window=MINISTRAL3_WINDOW,
                 layer_types=list(MINISTRAL3_LAYER_TYPES), rope_type="yarn", rope=dict(MINISTRAL3_ROPE),
                 tied=tied, layers=s.num_hidden_layers, head_dim=s.head_dim, seed=s.seed, **kw)


def mixtral_entry(name, description, layout, **kw) -> dict:
    m = MIXTRAL
    return entry(name, description, "mixtral", layout, "float32", layers=m["layers"],
                 head_dim=m["hidden"] // m["heads"], experts=m["experts"], top_k=m["top_k"],
                 seed=m["seed"], **kw)


def mistral4_entry(name, description, layout, dtype, m, **kw) -> dict:
    e = entry(name, description, "mistral4", layout, dtype, rope_type="yarn", rope=dict(MISTRAL4_ROPE),
              rope_theta=MISTRAL4_ROPE["rope_theta"], hidden=m["hidden"], intermediate=m["intermediate"],
              layers=m["layers"], heads=m["heads"], kv_heads=m["heads"], head_dim=m["nope_dim"] + m["rope_dim"],
              experts=m["experts"], top_k=m["top_k"], seed=m["seed"], **kw)
    e.update({"q_lora_rank": m["q_lora_rank"], "kv_lora_rank": m["kv_lora_rank"],
              "n_routed_experts": m["experts"], "first_k_dense_replace": m["first_dense"],
              "n_group": m["n_group"], "topk_group": m["topk_group"]})
    return e


def build(root: str, tokenizer_dir: str) -> list[tuple[dict, object]]:
    """Writes every model directory; returns (manifest entry, reference
    function) pairs. A reference function returns (model, notes)."""
    plans: list[tuple[dict, object]] = []

    def direct(model_dir):
        return lambda: mlx_lm_ref.load_model(model_dir)

    # 1-2. Ministral 3, tied.
    tied_w = ministral3_weights(tied=True)
    for name, dtype in (("ministral3_f32", "float32"), ("ministral3_bf16", "bfloat16")):
        d = new_model_dir(root, name, ministral3_config(True, dtype), tokenizer_dir)
        make_models.save_weights(d, tied_w, dtype, 1)
        desc = ("Ministral 3 text model: yarn rope (factor 16, mscale 2 / mscale_all_dim 1) + llama-4 "
                "query scaling (beta 0.1, every 16 positions), window 8 on layers 0 and 2, "
                "head_dim 32, tied")
        if dtype != "float32":
            desc = f"ministral3_f32's weights cast to {dtype}"
        plans.append((ministral3_entry(name, desc, "hf", dtype, True,
                                       source=None if dtype == "float32" else "ministral3_f32"), direct(d)))

    # 3-5. Mixtral.
    moe_w = mixtral_weights()
    d = new_model_dir(root, "mixtral_f32", mixtral_config(), tokenizer_dir)
    make_models.save_weights(d, moe_w, "float32", 1)
    plans.append((mixtral_entry("mixtral_f32", "Mixtral, 4 experts top-2, Mistral's per-expert names "
                                "(block_sparse_moe.experts.E.w1/w2/w3, gate [4, 128])", "per_expert"),
                  direct(d)))
    d = new_model_dir(root, "mixtral_stacked_f32", mixtral_config(), tokenizer_dir)
    make_models.save_weights(d, stack_experts(moe_w), "float32", 1)
    plans.append((mixtral_entry("mixtral_stacked_f32", "mixtral_f32 in the mlx-community layout "
                                "(block_sparse_moe.switch_mlp.{gate,up,down}_proj.weight [4, out, in])",
                                "stacked", source="mixtral_f32"), direct(d)))
    for name, bits, group in (("mixtral_q4_g64", 4, 64), ("mixtral_q8_g32", 8, 32)):
        make_models.quantize(root, os.path.join(root, "mixtral_f32"), name, bits, group, "float32")
        d = os.path.join(root, name)

        def quantized_ref(d=d):
            model, notes = mlx_lm_ref.load_model(d)
            notes["quantized_run"] = quantized_run_note(model, [1, 2, 3])
            dequantize_to_f32(model)
            notes["compute"] = "dequantized by mlx_lm.utils.dequantize_model, float32"
            return model, notes

        plans.append((mixtral_entry(
            name, f"mlx_lm.convert -q --q-bits {bits} --q-group-size {group} of mixtral_f32 "
            "(stacked switch_mlp, router gate, embedding and lm_head quantized too)", "stacked",
            quantized={"bits": bits, "group_size": group, "mode": "affine"}, source="mixtral_f32",
            reference_approach="mlx-lm load_model, then mlx_lm.utils.dequantize_model (QuantizedSwitchLinear "
                               "included) in float32: mlx-lm's float Mixtral on the dequantized weights"),
            quantized_ref))

    # 6. Mistral3 wrapper around Ministral 3, bf16, language_model.* names.
    untied_w = ministral3_weights(tied=False)
    name = "mistral3_ministral3_bf16"
    d = new_model_dir(root, name, mistral3_config(ministral3_config(False, "bfloat16"), 2, "bfloat16"),
                      tokenizer_dir)
    with open(os.path.join(d, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE_JINJA)
    # As transformers 5 saves it: the template only in chat_template.jinja.
    with open(os.path.join(d, "tokenizer_config.json")) as f:
        tok_config = json.load(f)
    tok_config.pop("chat_template", None)
    write_json(os.path.join(d, "tokenizer_config.json"), tok_config)
    w = {("language_model." + k): v for k, v in untied_w.items()}
    w.update(vision_weights(21, 2, 128, "vision_tower.", "multi_modal_projector."))
    make_models.save_weights(d, w, "bfloat16", 1)
    plans.append((ministral3_entry(
        name, "Mistral3ForConditionalGeneration around ministral3 (untied: language_model.lm_head.weight), "
        "language_model.model.* names, 2-layer Pixtral vision tower + projector tensors, "
        "chat_template.jinja (no chat_template in tokenizer_config.json)", "language_model", "bfloat16", False,
        wrapper="mistral3", chat_template="chat_template.jinja",
        reference_approach="mlx-lm load_model on the directory (mistral3.py drops the vision tensors)"),
        direct(d)))

    # 7. Mistral3 wrapper around a "mistral" text model, transformers 5 layout.
    name = "mistral3_mistral_tf5_f32"
    text_config = make_models.make_config(MISTRAL_TF5_SPEC)
    text_config["rope_parameters"] = {"rope_type": "default", "rope_theta": MISTRAL_TF5_SPEC.rope_theta}
    d = new_model_dir(root, name, mistral3_config(text_config, 1, "float32"), tokenizer_dir)
    w = {}
    for k, v in make_models.make_weights(MISTRAL_TF5_SPEC).items():
        w[k if k == "lm_head.weight" else "model.language_model." + k.removeprefix("model.")] = v
    w.update(vision_weights(22, 1, 128, "model.vision_tower.", "model.multi_modal_projector."))
    make_models.save_weights(d, w, "float32", 1)
    plans.append((entry(
        name, "Mistral3 around a 'mistral' text model (Mistral Small 3.1 style, head_dim 32 explicit), "
        "transformers 5 names: model.language_model.*, top-level lm_head.weight, model.vision_tower.* "
        "(1 layer), model.multi_modal_projector.*; text_config has rope_theta and an equal "
        "rope_parameters", "mistral", "tf5", "float32", wrapper="mistral3", head_dim=32,
        seed=MISTRAL_TF5_SPEC.seed, reference_approach="mlx-lm load_model on the directory "
        "(mistral3.py maps model.language_model.* and drops the vision tensors)"), direct(d)))

    # 8. Ministral 3 in FP8, per-tensor scales.
    name = "ministral3_fp8_tensor"
    config = ministral3_config(False, "bfloat16")
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "static",
                                     "weight_block_size": None,
                                     "modules_to_not_convert": ["lm_head", "model.embed_tokens"]}
    d = new_model_dir(root, name, config, tokenizer_dir)
    write_fp8_model(d, untied_w, "tensor", seed=31)

    fp8_tensor_ref = fp8_reference(d, "ministral3", untied_w)

    plans.append((ministral3_entry(
        name, "ministral3 (untied) with every q/k/v/o/gate/up/down weight F8_E4M3, a bf16 scalar "
        "weight_scale_inv (max|w|/448) and a bf16 scalar activation_scale each; embeddings, norms, "
        "lm_head bf16", "hf", "bfloat16", False, fp8="tensor",
        reference_approach="mlx-lm's FP8 dequant (mistral4.Model.sanitize on a stub: from_fp8 to bf16 "
                           "times weight_scale_inv), then mlx-lm's float ministral3 model in bfloat16"),
        fp8_tensor_ref))

    # 9. Dense "mistral" in FP8 with 128x128 block scales.
    name = "mistral_fp8_block"
    s = FP8_BLOCK_SPEC
    config = make_models.make_config(s)
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128],
                                     "activation_scheme": "dynamic"}
    d = new_model_dir(root, name, config, tokenizer_dir)
    block_w = make_models.make_weights(s)
    write_fp8_model(d, block_w, "block", seed=32)

    fp8_block_ref = fp8_reference(d, "llama", block_w)

    plans.append((entry(
        name, "mistral, hidden 256, intermediate 320 (not a multiple of 128: partial blocks), projections "
        "F8_E4M3 with float32 weight_scale_inv [ceil(out/128), ceil(in/128)], dynamic activations, "
        "embeddings/norms/lm_head bf16", "mistral", "hf", "bfloat16", fp8="block", hidden=s.hidden_size,
        intermediate=s.intermediate_size, head_dim=s.effective_head_dim, seed=s.seed,
        reference_approach="mlx-lm's FP8 dequant (mistral4.Model.sanitize on a stub: per 128x128 block, "
                           "padded), then mlx-lm's float llama model in bfloat16"), fp8_block_ref))

    # 10. RoPE scaling variants of gqa4_f32's weights as "llama" models.
    llama_w = make_models.make_weights(LLAMA_ROPE_SPEC)
    for name, scaling in LLAMA_ROPE_VARIANTS.items():
        d = new_model_dir(root, name, llama_config(scaling), tokenizer_dir)
        make_models.save_weights(d, llama_w, "float32", 1)
        plans.append((entry(
            name, f"llama with rope_scaling {json.dumps(scaling)}, rope_theta 1e4, max_position_embeddings 16, "
            "gqa4_f32's weights (same seed)", "llama", "hf", "float32", rope_type=scaling["rope_type"],
            rope=dict(scaling), rope_theta=10000.0, seed=LLAMA_ROPE_SPEC.seed,
            reference_approach="mlx-lm load_model on the directory" + (
                " (DynamicNTKScalingRoPE: the base depends on each call's length + offset, so one-pass "
                "and chunked logits legitimately differ)" if scaling["rope_type"] == "dynamic" else "")),
            direct(d)))

    # 11-13. Mistral 4.
    plans.extend(build_mistral4(root, tokenizer_dir))
    plans.extend(build_native(root, tokenizer_dir))

    for e, _ in plans:
        e["vision_bytes"], e["text_bytes"] = tensor_bytes(os.path.join(root, e["dir"]))
        e["files"] = sorted(f for f in os.listdir(os.path.join(root, e["dir"])) if f.endswith(".safetensors"))
    return plans


def mlx_lm_bf16_copy(root: str, src: str, name: str) -> str:
    """mlx_lm.convert of `src` with --dtype bfloat16, no quantization: the
    layout mlx-lm itself saves (its sanitize applied, then every parameter
    cast to bf16). Our tokenizer files are copied over convert's, and
    config.json's torch_dtype (convert keeps the source's "float32") is set
    to "bfloat16", as a conversion of a bf16 checkpoint would have it."""
    from mlx_lm.convert import convert

    out_dir = os.path.join(root, name)
    convert(src, out_dir, dtype="bfloat16")
    for fname in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(os.path.join(src, fname), os.path.join(out_dir, fname))
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    assert "quantization" not in config, config.get("quantization")
    config["torch_dtype"] = "bfloat16"
    write_json(path, config)
    return out_dir


def check_mistral4_mlx_layout(model_dir: str, m: dict, hf: dict[str, np.ndarray]) -> None:
    """The converted directory holds exactly mlx-lm's sanitize of the HF
    weights (kv_b_proj absorbed into embed_q / unembed_out, experts stacked
    into switch_mlp) cast to bf16, bit for bit, and nothing else."""
    import glob

    saved: dict[str, mx.array] = {}
    for f in sorted(glob.glob(os.path.join(model_dir, "model*.safetensors"))):
        saved.update(mx.load(f))
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    expected = mlx_model("mistral4", config).sanitize({k: mx.array(v) for k, v in hf.items()})
    assert sorted(saved) == sorted(expected), sorted(set(saved) ^ set(expected))
    heads, kv, nope, v = m["heads"], m["kv_lora_rank"], m["nope_dim"], m["v_dim"]
    for i in range(m["layers"]):
        p = f"model.layers.{i}."
        assert saved[p + "self_attn.embed_q.weight"].shape == (heads, kv, nope)
        assert saved[p + "self_attn.unembed_out.weight"].shape == (heads, v, kv)
        if i >= m["first_dense"]:
            for proj, shape in (("gate_proj", (m["experts"], m["moe_intermediate"], m["hidden"])),
                                ("up_proj", (m["experts"], m["moe_intermediate"], m["hidden"])),
                                ("down_proj", (m["experts"], m["hidden"], m["moe_intermediate"]))):
                assert saved[f"{p}mlp.switch_mlp.{proj}.weight"].shape == shape, proj
    for k, a in saved.items():
        assert "kv_b_proj" not in k and ".experts." not in k, k
        assert a.dtype == mx.bfloat16, (k, a.dtype)
        assert mx.array_equal(a, expected[k].astype(mx.bfloat16)).item(), k


# Mistral's own layout ------------------------------------------------------

NATIVE_LAYER_NAMES = (  # Hugging Face part of model.layers.N.* -> Mistral's part of layers.N.*
    ("input_layernorm.", "attention_norm."), ("post_attention_layernorm.", "ffn_norm."),
    ("self_attn.q_proj.", "attention.wq."), ("self_attn.k_proj.", "attention.wk."),
    ("self_attn.v_proj.", "attention.wv."), ("self_attn.o_proj.", "attention.wo."),
    ("mlp.gate_proj.", "feed_forward.w1."), ("mlp.down_proj.", "feed_forward.w2."),
    ("mlp.up_proj.", "feed_forward.w3."), ("block_sparse_moe.gate.", "feed_forward.gate."),
    ("block_sparse_moe.experts.", "feed_forward.experts."),
)


def native_name(name: str) -> str:
    """The name mistral-inference's checkpoints use for a Hugging Face name
    (the inverse of transformers' convert_mistral_weights_to_hf.py)."""
    for hf, native in (("model.embed_tokens.", "tok_embeddings."), ("model.norm.", "norm."),
                       ("lm_head.", "output.")):
        if name.startswith(hf):
            return native + name[len(hf):]
    layer, part = name.removeprefix("model.layers.").split(".", 1)
    for hf, native in NATIVE_LAYER_NAMES:
        if part.startswith(hf):
            return f"layers.{layer}.{native}{part[len(hf):]}"
    raise ValueError(name)


def to_interleaved(w: mx.array, n_heads: int) -> mx.array:
    """Hugging Face's rotate-half q/k rows -> Mistral's interleaved pairs:
    the inverse of transformers' `permute` in convert_mistral_weights_to_hf.py
    (w.view(n, rows // n // 2, 2, cols).transpose(1, 2))."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_native(root: str, name: str, twin: str, shards: int) -> dict:
    """Writes ROOT/NAME in Mistral's layout from the Hugging Face folder
    TWIN: params.json, consolidated(-0000N-of-0000M).safetensors; no
    config.json. Returns params."""
    with open(os.path.join(twin, "config.json")) as f:
        c = json.load(f)
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    rope = c.get("rope_parameters") or {}
    params = {"dim": c["hidden_size"], "n_layers": c["num_hidden_layers"],
              "head_dim": c.get("head_dim") or c["hidden_size"] // heads, "hidden_dim": c["intermediate_size"],
              "n_heads": heads, "n_kv_heads": kv, "norm_eps": c["rms_norm_eps"], "vocab_size": c["vocab_size"],
              "rope_theta": c.get("rope_theta", rope.get("rope_theta")),
              "max_position_embeddings": c["max_position_embeddings"]}
    if c["model_type"] == "ministral3":
        # The inverse of transformers' convert_ministral3_weights_to_hf.py
        # (beta_fast <- yarn.beta, beta_slow <- yarn.alpha; it writes mscale
        # = mscale_all_dim = 1), laid out as Ministral 3's own params.json.
        assert rope["mscale"] == rope["mscale_all_dim"] == 1.0 and not c.get("sliding_window"), name
        original = rope["original_max_position_embeddings"]
        params["yarn"] = {"original_max_position_embeddings": original, "factor": rope["factor"],
                          "apply_scale": False, "beta": rope["beta_fast"], "alpha": rope["beta_slow"]}
        params["llama_4_scaling"] = {"original_max_position_embeddings": original,
                                     "beta": rope["llama_4_scaling_beta"]}
        params["tied_embeddings"] = c["tie_word_embeddings"]
    if c.get("num_local_experts"):
        params["moe"] = {"num_experts": c["num_local_experts"], "num_experts_per_tok": c["num_experts_per_tok"]}
    weights = mx.load(os.path.join(twin, "model.safetensors"))
    out = {}
    for k, v in weights.items():
        if k.endswith("self_attn.q_proj.weight"):
            v = to_interleaved(v, heads)
        elif k.endswith("self_attn.k_proj.weight"):
            v = to_interleaved(v, kv)
        out[native_name(k)] = v
    d = os.path.join(root, name)
    os.makedirs(d)
    write_json(os.path.join(d, "params.json"), params)
    names = sorted(out)
    for i in range(shards):
        part = {k: out[k] for k in names[i::shards]}
        fname = "consolidated.safetensors" if shards == 1 else f"consolidated-{i + 1:05d}-of-{shards:05d}.safetensors"
        mx.save_safetensors(os.path.join(d, fname), part, metadata={"format": "pt"})
    return params


def build_native(root: str, tokenizer_dir: str) -> list[tuple[dict, object]]:
    """Mistral's own layout of four models whose Hugging Face twins exist:
    the references are mlx-lm on the twins (same weights)."""
    plans = []
    parent = os.path.dirname(os.path.abspath(root))
    # Ministral 3 as its params.json can say it: every layer full, no
    # window, no attention factor (mscale = mscale_all_dim = 1); the twin is
    # not itself a test model. Seed 21, untied: with ministral3_f32's weights
    # (seed 12) and every layer full, greedy decoding repeats one token.
    config = ministral3_config(False, "float32")
    config.pop("sliding_window")
    config["layer_types"] = ["full_attention"] * MINISTRAL3_SPEC.num_hidden_layers
    config["rope_parameters"]["mscale"] = 1.0
    ministral3_twin = new_model_dir(root, "twin_ministral3_full_f32", config, tokenizer_dir)
    make_models.save_weights(ministral3_twin, ministral3_weights(tied=False, seed=21), "float32", 1)
    for name, twin, shards, desc in (
        ("native_gqa4_bf16", os.path.join(parent, "gqa4_bf16"), 1,
         "gqa4_bf16 in Mistral's layout: params.json + consolidated.safetensors, tok_embeddings / "
         "layers.N.attention.wq... / feed_forward.w1-3 / output names, wq and wk rows interleaved per head"),
        ("native_gqa4_f32", os.path.join(parent, "gqa4_f32"), 2,
         "gqa4_f32 in Mistral's layout in two files, consolidated-00001-of-00002.safetensors and -00002"),
        ("native_mixtral_f32", os.path.join(root, "mixtral_f32"), 1,
         "mixtral_f32 in Mistral's layout: params.json moe {num_experts 4, num_experts_per_tok 2}, "
         "layers.N.feed_forward.gate and feed_forward.experts.E.w1-3"),
        ("native_ministral3_f32", ministral3_twin, 1,
         "Ministral 3 in Mistral's layout: params.json yarn {factor 16, beta 32, alpha 1, apply_scale "
         "false} + llama_4_scaling {beta 0.1}, original length 16 (the query scale changes inside the "
         "long prompt), untied output; its twin has every layer full"),
    ):
        if not os.path.isdir(twin):
            raise SystemExit(f"{twin}: the Hugging Face twin of {name} is missing (run make_models.py first)")
        params = write_native(root, name, twin, shards)
        with open(os.path.join(twin, "config.json")) as f:
            c = json.load(f)
        arch = "mixtral" if "moe" in params else "ministral3" if "yarn" in params else "mistral"
        dtype = c["torch_dtype"]
        kw = dict(experts=params["moe"]["num_experts"], top_k=params["moe"]["num_experts_per_tok"],
                  seed=MIXTRAL["seed"]) if arch == "mixtral" else {}
        if arch == "ministral3":
            kw = dict(layer_types=c["layer_types"], rope_type="yarn", rope=dict(c["rope_parameters"]),
                      tied=False, layers=c["num_hidden_layers"], seed=21)
        e = entry(name, desc, arch, "native", dtype, rope_theta=params["rope_theta"],
                  head_dim=params["head_dim"], source=os.path.relpath(twin, root),
                  reference_approach="mlx-lm load_model on the Hugging Face twin (the same weights)", **kw)
        plans.append((e, lambda twin=twin: mlx_lm_ref.load_model(twin)))
    return plans


def build_mistral4(root: str, tokenizer_dir: str) -> list[tuple[dict, object]]:
    plans = []

    def direct(model_dir):
        return lambda: mlx_lm_ref.load_model(model_dir)

    rope = ("yarn rope (theta 1e4, factor 4, original 16, mscale = mscale_all_dim = 1: softmax scale "
            "48^-0.5 * 1.1386^2) + llama-4 query scaling (beta 0.1, every 16 positions)")
    m = MISTRAL4
    hf_w = mistral4_weights(m)
    d = new_model_dir(root, "mistral4_f32", mistral4_config(m, "float32"), tokenizer_dir)
    make_models.save_weights(d, hf_w, "float32", 1)
    plans.append((mistral4_entry(
        "mistral4_f32", "Mistral 4: MLA attention (4 heads, q_lora_rank 48, kv_lora_rank 64, nope 32 + rope 16, "
        "v 32), interleaved rope (rope_interleave true), " + rope + "; layer 0 dense (intermediate 256), "
        "layers 1-2 MoE (8 experts top-2, 2 groups top-1, norm_topk_prob, routed_scaling 2.5, 1 shared "
        "expert, moe_intermediate 64); HF/DeepSeek-V3 names (kv_b_proj not absorbed, "
        "mlp.experts.E.*, mlp.shared_experts.*), untied", "hf", "float32", m), direct(d)))

    m = MISTRAL4_NOQLORA
    d = new_model_dir(root, "mistral4_noqlora_f32", mistral4_config(m, "float32"), tokenizer_dir)
    make_models.save_weights(d, mistral4_weights(m), "float32", 1)
    plans.append((mistral4_entry(
        "mistral4_noqlora_f32", "Mistral 4 without q LoRA (plain self_attn.q_proj [192, 128]), non-interleaved "
        "rope (rope_interleave false), " + rope + "; 2 layers, both MoE (first_k_dense_replace 0), "
        "8 experts top-2, n_group 1, norm_topk_prob false, routed_scaling 2.5, n_shared_experts null "
        "(no shared experts)", "hf", "float32", m), direct(d)))

    m = MISTRAL4
    name = "mistral4_mlx_bf16"
    d = mlx_lm_bf16_copy(root, os.path.join(root, "mistral4_f32"), name)
    check_mistral4_mlx_layout(d, m, hf_w)

    def mlx_bf16_ref(d=d):
        model, notes = mlx_lm_ref.load_model(d)
        notes["compute"] = "bfloat16"
        try:
            mx.eval(model(mx.array([[1, 2, 3]], dtype=mx.int32)))
        except RuntimeError as err:
            if "GatherMM" not in str(err):
                raise
            swapped = gather_mm_in_f32(model)
            notes["gather_mm"] = (
                f"MLX's CPU GatherMM is float32-only ({one_line(err, 80)}): the switch_mlp gather_mm of "
                f"the {swapped} MoE layers runs on float32 copies of the bf16 operands, result rounded "
                "to bf16 (bit-identical to a bf16 matmul per expert on the CPU)")
        return model, notes

    plans.append((mistral4_entry(
        name, "mistral4_f32 converted by mlx_lm.convert --dtype bfloat16 (no quantization): mlx-lm's own "
        "layout, self_attn.embed_q.weight [4, 64, 32] and self_attn.unembed_out.weight [4, 32, 64] "
        "(kv_b_proj absorbed), mlp.switch_mlp.{gate,up,down}_proj.weight [8, out, in]; config.json as "
        "convert writes it (torch_dtype set to bfloat16)", "mlx", "bfloat16", m, source="mistral4_f32",
        reference_approach="mlx-lm load_model on the directory, bfloat16 (on the CPU the switch_mlp "
                           "gather_mm runs in float32 on the bf16 values and is rounded to bf16: MLX's "
                           "CPU GatherMM has no bfloat16)"), mlx_bf16_ref))

    # Mistral 4 quantized by mlx_lm.convert (4-bit, group 32): the absorbed
    # embed_q / unembed_out (QuantizedMultiLinear), the stacked experts, the
    # other linears, embedding and head.
    name = "mistral4_q4_g32"
    make_models.quantize(root, os.path.join(root, "mistral4_f32"), name, 4, 32, "float32")
    d = os.path.join(root, name)

    def q4_ref(d=d):
        model, notes = mlx_lm_ref.load_model(d)
        notes["quantized_run"] = quantized_run_note(model, [1, 2, 3])
        model.set_dtype(mx.float32)
        notes["multi_linear"] = f"{dequantize_multi_linear(model)} QuantizedMultiLinear dequantized"
        dequantize_to_f32(model)
        notes["compute"] = ("QuantizedMultiLinear dequantized by mx.dequantize, the rest by "
                            "mlx_lm.utils.dequantize_model, float32")
        return model, notes

    plans.append((mistral4_entry(
        name, "mlx_lm.convert -q --q-bits 4 --q-group-size 32 of mistral4_f32: mlx-lm's layout with "
        "self_attn.embed_q / unembed_out quantized ([4, 64, 32] and [4, 32, 64], QuantizedMultiLinear), "
        "switch_mlp quantized, the other linears, embedding and lm_head too", "mlx", "float32", m,
        quantized={"bits": 4, "group_size": 32, "mode": "affine"}, source="mistral4_f32",
        reference_approach="mlx-lm load_model, then every quantized layer dequantized (QuantizedMultiLinear "
                           "by mx.dequantize, the rest by mlx_lm.utils.dequantize_model) in float32: "
                           "mlx-lm's float Mistral 4 on the dequantized weights (its QuantizedSwitchLinear "
                           "cannot run on MLX 0.32.2)"), q4_ref))

    # Mistral 4 in a mistral3 wrapper (transformers 5 names), FP8: every
    # attention matrix (kv_b_proj too) and the shared expert per tensor, the
    # routed experts fused as transformers stores them (experts.gate_up_proj
    # [E, 2I, H], experts.down_proj [E, H, I]) with one scale per expert.
    name = "mistral3_mistral4_fp8"
    config = mistral3_config(mistral4_config(m, "bfloat16"), 1, "bfloat16")
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "static",
                                     "weight_block_size": None,
                                     "modules_to_not_convert": ["lm_head", "model.embed_tokens", "vision_tower",
                                                                "multi_modal_projector", "mlp.gate"]}
    d = new_model_dir(root, name, config, tokenizer_dir)
    w = {}
    for k, v in hf_w.items():
        layer_experts = k.split(".mlp.experts.")
        if len(layer_experts) == 2:
            continue  # fused below
        w[k if k == "lm_head.weight" else "model.language_model." + k.removeprefix("model.")] = v
    for i in range(m["first_dense"], m["layers"]):
        p = f"model.layers.{i}.mlp.experts."
        per = lambda part: np.stack([hf_w[f"{p}{e}.{part}.weight"] for e in range(m["experts"])])  # noqa: E731
        fused = f"model.language_model.layers.{i}.mlp.experts."
        w[fused + "gate_up_proj"] = np.concatenate([per("gate_proj"), per("up_proj")], axis=1)
        w[fused + "down_proj"] = per("down_proj")
    w.update(vision_weights(23, 1, 128, "model.vision_tower.", "model.multi_modal_projector."))
    mla_fp8 = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
               "gate_proj", "up_proj", "down_proj")

    def fp8_here(n: str) -> bool:
        if "vision_tower" in n or "multi_modal_projector" in n:
            return False
        return (n.endswith(".weight") and n.split(".")[-2] in mla_fp8) or n.endswith(
            (".experts.gate_up_proj", ".experts.down_proj"))

    write_fp8_model(d, w, "tensor", seed=33, fp8=fp8_here)
    fp8_plan = fp8_reference(d, "mistral3", w, fp8_here)

    def mistral4_fp8_ref(plan=fp8_plan):
        model, notes = plan()
        swapped = gather_mm_in_f32(model)
        notes["gather_mm"] = (f"MLX's CPU GatherMM is float32-only: the switch_mlp gather_mm of the {swapped} "
                              "MoE layers runs on float32 copies of the bf16 operands, rounded to bf16")
        return model, notes

    plans.append((mistral4_entry(
        name, "Mistral3ForConditionalGeneration around mistral4_f32's text model (transformers 5 names: "
        "model.language_model.*, lm_head.weight; a 1-layer vision tower + projector, bf16) in FP8: "
        "q_a/q_b/kv_a_proj_with_mqa/kv_b_proj/o_proj, the dense layer's and the shared experts' "
        "gate/up/down F8_E4M3 with bf16 scalar weight_scale_inv and activation_scale; routed experts fused "
        "(mlp.experts.gate_up_proj [8, 128, 128], mlp.experts.down_proj [8, 128, 64]) in F8_E4M3 with "
        "float32 per-expert scales [8, 1, 1]; router, norms, embeddings, lm_head bf16", "tf5", "bfloat16", m,
        wrapper="mistral3", fp8="tensor",
        reference_approach="mlx-lm's FP8 dequant (mistral4.Model.sanitize on a stub: from_fp8 to bf16 times "
                           "weight_scale_inv, per tensor or broadcast per expert), then mlx-lm's float "
                           "mistral3 model (its mistral4 sanitize splits the fused experts and absorbs "
                           "kv_b_proj) in bfloat16, switch_mlp gather_mm in float32 on the CPU"),
        mistral4_fp8_ref))
    return plans


# ---------------------------------------------------------------------------
# Cheap structural checks of mlx-lm's models


def check_mistral4_model(name: str, model) -> dict:
    """mlx-lm built the Mistral 4 the config asks for: yarn rope with input
    scale 1 and the interleaving asked for, the attention scale with the
    yarn mscale folded in, q LoRA or not, dense/MoE layers, shared experts.
    Returns the values for the reference's metadata."""
    from mlx_lm.models import deepseek_v3, mistral4, rope_utils

    m = MISTRAL4_MODELS[name]
    qk = m["nope_dim"] + m["rope_dim"]
    s = 0.1 * MISTRAL4_ROPE["mscale_all_dim"] * math.log(MISTRAL4_ROPE["factor"]) + 1.0
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        assert type(attn.rope) is rope_utils.YarnRoPE, type(attn.rope)
        assert attn.rope.mscale == 1.0 and attn.rope.dims == m["rope_dim"]
        assert attn.rope.traditional == m["rope_interleave"], attn.rope.traditional
        assert abs(attn.scale - qk ** -0.5 * s * s) < 1e-12 and abs(attn.scale - qk ** -0.5) > 0.01, attn.scale
        assert hasattr(attn, "q_proj") == (m["q_lora_rank"] is None)
        assert hasattr(attn, "q_a_proj") == (m["q_lora_rank"] is not None)
        if i < m["first_dense"]:
            assert type(layer.mlp) is deepseek_v3.DeepseekV3MLP, type(layer.mlp)
        else:
            assert type(layer.mlp) is mistral4.Mistral4MoE, type(layer.mlp)
            assert hasattr(layer.mlp, "shared_experts") == (m["n_shared"] is not None)
    attn = model.model.layers[0].self_attn
    return {"attention_scale": attn.scale, "rope_traditional": attn.rope.traditional,
            "rope_input_scale": attn.rope.mscale}


def check_rope_modules(name: str, model) -> None:
    """mlx-lm really built the RoPE the config asks for."""
    from mlx_lm.models import rope_utils

    if name in MISTRAL4_MODELS:
        return  # check_mistral4_model, called by main

    rope = model.layers[0].self_attn.rope
    if name.startswith("ministral3") or name == "mistral3_ministral3_bf16":
        assert isinstance(rope, rope_utils.YarnRoPE), type(rope)
        assert abs(rope.mscale - 1.0) > 0.1, f"{name}: yarn mscale is {rope.mscale}"
        return
    kind = LLAMA_ROPE_VARIANTS.get(name, {}).get("rope_type")
    if kind is None:
        return
    expected = {"linear": nn.RoPE, "dynamic": rope_utils.DynamicNTKScalingRoPE,
                "llama3": rope_utils.Llama3RoPE, "yarn": rope_utils.YarnRoPE}[kind]
    assert type(rope) is expected, (name, type(rope))
    if kind == "linear":
        assert rope.scale == 0.25, rope.scale
    if kind == "dynamic":
        assert rope.max_position_embeddings == 16 and rope.factor == 2.0
    if kind == "yarn":
        assert abs(rope.mscale - (0.1 * math.log(4.0) + 1.0)) < 1e-6, rope.mscale


def check_rope_variants_differ(root: str, prompt: list[int]) -> float:
    """The four RoPE variants give logits different from each other and from
    plain RoPE (the same weights without rope_scaling); returns the smallest
    max-abs difference."""
    logits = {}
    for name in LLAMA_ROPE_VARIANTS:
        model, _ = mlx_lm_ref.load_model(os.path.join(root, name))
        logits[name] = logits_of(model, prompt)
    plain = mlx_model("llama", llama_config(None))
    plain.load_weights(list(mx.load(os.path.join(root, "llama_rope_linear", "model.safetensors")).items()))
    logits["plain"] = logits_of(plain, prompt)
    names = list(logits)
    smallest = math.inf
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = float(np.abs(logits[a] - logits[b]).max())
            assert diff > 1e-3, f"{a} and {b} give the same logits (max diff {diff})"
            smallest = min(smallest, diff)
    return smallest


# ---------------------------------------------------------------------------


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
    if mlx_lm_ref.reference_device() != mx.cpu:
        contiguous_splits()
    # The CPU build unless MISTRAL_MLX_REFERENCE_DEVICE=gpu (as reference.py).
    mx.set_default_device(mlx_lm_ref.reference_device())
    t0 = time.time()

    with tempfile.TemporaryDirectory() as tokenizer_dir:
        make_models.write_tokenizer_files(tokenizer_dir, "v3")
        plans = build(root, tokenizer_dir)
    t_write = time.time() - t0
    write_json(os.path.join(root, "manifest.json"),
               {"generator": GENERATOR, "models": [e for e, _ in plans]})
    print(f"wrote {len(plans)} models to {root} in {t_write:.1f}s")

    refs = os.path.join(root, "refs")
    results_of: dict[str, list[dict]] = {}
    for e, make_reference in plans:
        t1 = time.time()
        name = e["dir"]
        model_dir = os.path.join(root, name)
        # Mistral's layout has no tokenizer.json: its twin's gives the prompts.
        prompt_dir = os.path.join(root, e["source"]) if e["layout"] == "native" else model_dir
        prompts = mlx_lm_ref.standard_prompts(prompt_dir)
        model, notes = make_reference()
        check_rope_modules(name, model)
        results = mlx_lm_ref.compute(model, prompts, N_GREEDY, "float32")
        check_results(name, results)
        extra = ""
        if e["arch"] == "mixtral":
            gap = router_min_gap(model, prompts)
            notes["router_min_gap"] = gap
            extra = f", smallest 2nd/3rd router logit gap {gap:.4f}"
        if name == "mixtral_stacked_f32":
            for a, b in zip(results_of["mixtral_f32"], results):
                assert np.array_equal(np.array(a["logits"]), np.array(b["logits"])), a["name"]
                assert a["greedy_ids"] == b["greedy_ids"], a["name"]
            extra += ", identical to mixtral_f32"
        if "fp8_max_rel_err" in notes:
            extra = f", fp8 max rel err {notes['fp8_max_rel_err']:.3f}; {notes['direct_load']}"
        if "quantized_run" in notes:
            extra += f"; {notes['quantized_run']}"
        if e["arch"] == "mistral4":
            m = MISTRAL4_MODELS[name]
            text_model = getattr(model, "language_model", model)  # inside a mistral3 wrapper
            notes.update(check_mistral4_model(name, text_model))
            # Router gaps over the prompts, and over the prompts followed by
            # the greedy ids fed back (one pass: the routing of every decode step).
            gap = mistral4_router_check(text_model, prompts, m)
            seqs = [{"name": r["name"], "ids": r["prompt_ids"] + r["greedy_ids"][:-1]} for r in results]
            gap_all = mistral4_router_check(text_model, seqs, m)
            assert gap["topk_gap"] > 0 and (gap["group_gap"] is None or gap["group_gap"] > 0), gap
            notes["router_min_gap"] = {"prompts": gap, "with_greedy": gap_all}
            diff = decode_path_diff(model, prompts)
            notes["decode_vs_prefill_max_diff"] = diff
            if e["dtype"] == "float32" and mlx_lm_ref.reference_device() == mx.cpu:
                assert diff < 1e-4, f"{name}: mlx-lm's decode and prefill paths differ by {diff}"

            def groups(g):
                return "" if g["group_gap"] is None else f", group {g['group_gap']:.4f}"

            extra = (f", scale {notes['attention_scale']:.5f}, traditional {notes['rope_traditional']}; "
                     f"smallest router gaps: top-k logit {gap['topk_gap']:.4f}{groups(gap)} (prompts), "
                     f"{gap_all['topk_gap']:.4f}{groups(gap_all)} (with greedy); "
                     f"decode vs prefill {diff:.3g}")
            if "gather_mm" in notes:
                extra += "; gather_mm in float32 (CPU)"
        if name == "llama_rope_yarn":
            diff = check_rope_variants_differ(root, prompts[2]["ids"])
            extra = f", rope variants differ pairwise by >= {diff:.3g}"
        results_of[name] = results
        meta = {"model": name, "mlx_lm": mlx_lm_ref.mlx_lm_version(), "mlx": mx.__version__,
                "prompts": [p["name"] for p in prompts], "greedy": N_GREEDY, "logits_dtype": "float32",
                "approach": e["reference"], **notes}
        mlx_lm_ref.write(os.path.join(refs, f"{name}.safetensors"), results, meta)
        print(f"{name}: reference in {time.time() - t1:.2f}s{extra}")
    print(f"{len(plans)} models + references in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
