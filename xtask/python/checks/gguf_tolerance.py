"""How far a quantized-GGUF engine may sit from the dense GGUF reference, measured on SmolLM2.

Usage:
    python -m checks.gguf_tolerance --smollm2 PATH [--hf DIR] [--refs FILE] [--greedy 64]

(a) mlx-lm on the dense float32 folder gguf_to_hf.py writes (every tensor
    dequantized by gguf-py): what gguf_refs.py stores as refs/gguf_smollm2.
(b) mlx-lm on the same model with the GGUF's quantized tensors kept
    quantized as MLX affine quantization, group 32, float32 scales/biases,
    in mlx-lm's own QuantizedLinear / QuantizedEmbedding (nn.quantize):
      Q4_1 (x = d*q + m; byte j: element j low nibble, j+16 high nibble):
           4 bits, scales = d, biases = m
      Q8_0 (x = d*q, q signed): 8 bits, q XOR 0x80, scales = d, biases = -128*d
    Norms stay float32. q/k rows are un-permuted like the dense weights
    (quantization groups run along a row, so rows move whole).
That is the layout a Rust engine keeping GGUF Q4_1/Q8_0 quantized would use,
so |(a) - (b)| is the tolerance its quantized path needs against (a).

Prints, per prompt (short / medium / long / chat, as gguf_refs.py builds
them): max |a - b|, that relative to max |a|, mean |a - b|, top-1 agreement,
how many greedy steps (b) follows (a), and (a)'s smallest greedy margin
(top-1 minus top-2 log-prob) over the steps; and that every repacked tensor
dequantizes (mx.dequantize) to exactly gguf-py's values.

--hf: gguf_to_hf.py's folder for the file (gguf_refs.py writes
MODELS_DIR/gguf-hf/smollm2); without it the file is converted into a
temporary folder first.
--refs: refs/gguf_smollm2.safetensors to take (a)'s greedy ids and margins
from instead of generating them again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

import gguf

from common import gguf_to_hf

CHAT_QUESTION = "What is the capital of France?"


def mlx_affine(t: gguf_to_hf.TensorInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(packed uint32 weight, scales f32, biases f32, bits) for a Q4_1 / Q8_0 tensor."""
    rows, row_bytes = t.data.shape
    if t.qtype == gguf.GGMLQuantizationType.Q4_1:
        b = np.asarray(t.data).reshape(rows, -1, 20)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = b[..., 4:20]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(rows, -1).astype(np.uint32)
        bits, scales, biases = 4, d, m
    elif t.qtype == gguf.GGMLQuantizationType.Q8_0:
        b = np.asarray(t.data).reshape(rows, -1, 34)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        q = (b[..., 2:34] ^ 0x80).reshape(rows, -1).astype(np.uint32)
        bits, scales, biases = 8, d, (-128.0 * d).astype(np.float32)
    else:
        raise ValueError(f"{t.name}: {t.qtype.name} has no exact MLX affine form here")
    per_word = 32 // bits
    q = q.reshape(rows, -1, per_word)
    shifts = (np.arange(per_word, dtype=np.uint32) * bits).reshape(1, 1, -1)
    packed = np.bitwise_or.reduce(q << shifts, axis=-1).astype(np.uint32)
    return packed, scales, biases, bits


def quantized_model(hf_dir: str, g: gguf_to_hf.GgufFile, config: dict, scale_dtype: str = "float32"):
    """mlx-lm model from hf_dir with the GGUF's Q4_1/Q8_0 tensors as MLX
    quantized layers, scales/biases in `scale_dtype` (float16 holds d and m
    exactly: they are f16 in the file). Returns (model, exactness report)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from common import mlx_lm_ref

    model, _ = mlx_lm_ref.load_model(hf_dir)
    dense = dict(tree_flatten(model.parameters()))
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    params, bits_of = [], {}
    worst = 0.0
    for t in g.tensors:
        if t.qtype not in (gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0):
            continue
        hf, role = gguf_to_hf.hf_name(t.name)
        path = hf[: -len(".weight")]
        packed, scales, biases, bits = mlx_affine(t)
        if role in ("attn_q", "attn_k"):
            n = n_head if role == "attn_q" else n_kv
            packed, scales, biases = (gguf_to_hf.unpermute(x, n) for x in (packed, scales, biases))
        w = mx.array(packed)
        s, b = (mx.array(x).astype(getattr(mx, scale_dtype)) for x in (scales, biases))
        deq = mx.dequantize(w, s, b, group_size=32, bits=bits).astype(mx.float32)
        worst = max(worst, float(mx.abs(deq - dense[hf]).max()))
        params += [(path + ".weight", w), (path + ".scales", s), (path + ".biases", b)]
        bits_of[path] = bits

    def predicate(path, module):
        return {"group_size": 32, "bits": bits_of[path]} if path in bits_of else False

    nn.quantize(model, class_predicate=predicate)
    model.load_weights(params, strict=False)
    mx.eval(model.parameters())
    return model, {"tensors": len(bits_of), "max_abs_dequantize_vs_gguf_py": worst}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--hf", help="gguf_to_hf.py output for that file (else converted to a temporary folder)")
    ap.add_argument("--refs", help="refs/gguf_smollm2.safetensors: (a)'s greedy ids and margins")
    ap.add_argument("--greedy", type=int, default=64)
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--f16-scales-max-tokens", type=int, default=0, metavar="N",
                    help="also (c): scales/biases float16, as MLX's own GGUF reader returns them, "
                         "one-pass logits of the prompts of at most N tokens (slow on the CPU: "
                         "float16-scale quantized matmuls are ~30x slower there)")
    args = ap.parse_args()

    import mlx.core as mx

    from common import mlx_lm_ref

    mx.set_default_device(mx.cpu)
    t_start = time.time()
    tmp = None
    hf_dir = args.hf
    if hf_dir is None:
        tmp = tempfile.TemporaryDirectory()
        hf_dir = os.path.join(tmp.name, "smollm2")
        gguf_to_hf.convert(args.smollm2, hf_dir)
    g = gguf_to_hf.GgufFile(args.smollm2)
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = json.load(f)

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    prompts = mlx_lm_ref.standard_prompts(hf_dir)
    chat = tok.apply_chat_template([{"role": "user", "content": CHAT_QUESTION}], add_generation_prompt=True,
                                   tokenize=True)
    chat = chat["input_ids"] if hasattr(chat, "keys") else chat
    prompts.append({"name": "chat", "ids": [int(i) for i in chat]})

    dense, _ = mlx_lm_ref.load_model(hf_dir)
    quant, exact = quantized_model(hf_dir, g, config)
    print(f"repacked {exact['tensors']} Q4_1/Q8_0 tensors; mx.dequantize vs gguf-py: "
          f"max abs {exact['max_abs_dequantize_vs_gguf_py']:.1e}")

    ref_greedy = {}
    if args.refs:
        ref = mx.load(args.refs)
        for p in prompts:
            if not np.array_equal(np.array(ref[f"{p['name']}.prompt_ids"]), np.array(p["ids"])):
                raise SystemExit(f"{args.refs}: prompt {p['name']} differs from this run's")
            ref_greedy[p["name"]] = (np.array(ref[f"{p['name']}.greedy_ids"]).tolist(),
                                     np.array(ref[f"{p['name']}.greedy_margin"]).tolist())

    quant16 = None
    if args.f16_scales_max_tokens > 0:
        quant16, exact16 = quantized_model(hf_dir, g, config, "float16")
        print(f"(c) float16 scales/biases: mx.dequantize vs gguf-py max abs "
              f"{exact16['max_abs_dequantize_vs_gguf_py']:.1e}")

    rows = []
    for p in prompts:
        a = np.array(mlx_lm_ref.prompt_logits(dense, p["ids"]))
        b = np.array(mlx_lm_ref.prompt_logits(quant, p["ids"]))
        if p["name"] in ref_greedy:
            ga, ma = ref_greedy[p["name"]]
            ga, ma = ga[: args.greedy], ma[: args.greedy]
        else:
            ga, ma = mlx_lm_ref.greedy(dense, p["ids"], args.greedy)
        gb, _ = mlx_lm_ref.greedy(quant, p["ids"], len(ga))
        follow = next((i for i, (x, y) in enumerate(zip(ga, gb)) if x != y), len(ga))
        d = np.abs(a - b)
        c_rel = None
        if quant16 is not None and len(p["ids"]) <= args.f16_scales_max_tokens:
            c = np.array(mlx_lm_ref.prompt_logits(quant16, p["ids"]))
            c_rel = float(np.abs(a - c).max() / np.abs(a).max())
        rows.append({
            "f16_scales_max_rel": c_rel,
            "prompt": p["name"], "tokens": len(p["ids"]),
            "max_abs": float(d.max()), "max_rel": float(d.max() / np.abs(a).max()),
            "mean_abs": float(d.mean()), "max_abs_logit": float(np.abs(a).max()),
            "top1_agree": float((a.argmax(-1) == b.argmax(-1)).mean()),
            "greedy_steps_equal": follow, "greedy_steps": len(ga),
            "min_margin_a": float(min(ma)), "argmin_margin_a": int(np.argmin(ma)),
            "quantized_text": tok.decode(gb, skip_special_tokens=False) if p["name"] == "chat" else None,
        })
    print(f"{'prompt':7} {'len':>4} {'max|a-b|':>9} {'rel':>8} {'mean':>8} {'max|a|':>7} {'top1':>6} "
          f"{'greedy=':>8} {'min margin (a)':>15}")
    for r in rows:
        print(f"{r['prompt']:7} {r['tokens']:4d} {r['max_abs']:9.3e} {r['max_rel']:8.2e} {r['mean_abs']:8.2e} "
              f"{r['max_abs_logit']:7.2f} {r['top1_agree'] * 100:5.1f}% {r['greedy_steps_equal']:3d}/{r['greedy_steps']:<3d} "
              f"{r['min_margin_a']:9.2e} @{r['argmin_margin_a']}")
    for r in rows:
        if r["f16_scales_max_rel"] is not None:
            print(f"(c) float16 scales, {r['prompt']}: max |a-c| / max |a| = {r['f16_scales_max_rel']:.2e}")
    chat_row = next(r for r in rows if r["prompt"] == "chat")
    print(f"(b) chat greedy: {chat_row['quantized_text']!r}")
    print(f"overall max rel {max(r['max_rel'] for r in rows):.2e}, max abs {max(r['max_abs'] for r in rows):.3e}; "
          f"{time.time() - t_start:.1f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"exactness": exact, "prompts": rows}, f, indent=2)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
