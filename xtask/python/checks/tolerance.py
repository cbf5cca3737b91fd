"""Measure the logit differences mlx-lm itself shows, to set test tolerances.

    python -m checks.tolerance MODELS_DIR [--json OUT.json]

All numbers come from mlx-lm 0.32.2 on the same weights (make_models.py's
gqa4_f32 and its bf16/f16/quantized copies), on a few prompts:

* vs f32: logits of each variant against the f32 model's logits: max abs,
  max abs relative to the f32 logits' max magnitude, mean abs, share of
  positions whose argmax equals f32's, and the number of greedy steps (of
  --greedy) equal to the f32 model's greedy ids.
* self: one variant against itself, whole prompt in one pass versus one token
  at a time through the KV cache (different kernels and shapes).
* upcast: one variant against the same weights with every float parameter
  (bf16/f16 weights, quantization scales and biases) cast to float32, so that
  all activations are computed in f32. Same weights, different compute
  precision: an engine that keeps some intermediate values in higher or lower
  precision than mlx-lm lands within about this distance of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import mlx.core as mx
import numpy as np

from common import mlx_lm_ref

VARIANTS = [
    "gqa4_f32", "gqa4_bf16", "gqa4_f16",
    "gqa4_q8_g32", "gqa4_q8_g64", "gqa4_q8_g128",
    "gqa4_q4_g32", "gqa4_q4_g64", "gqa4_q4_g128", "gqa4_q4_g64_bf16",
]


def prompts(vocab: int) -> list[list[int]]:
    """BOS + random ids: 3 prompts of 8, 32 and 64 tokens, fixed seed."""
    rng = np.random.default_rng(1234)
    return [[1] + rng.integers(3, vocab, n - 1).tolist() for n in (8, 32, 64)]


def stepwise_logits(model, ids: list[int]) -> mx.array:
    cache = model.make_cache()
    rows = [model(mx.array([[t]], dtype=mx.int32), cache=cache)[0, -1] for t in ids]
    return mx.stack(rows).astype(mx.float32)


def upcast_to_f32(model) -> None:
    """Cast every floating parameter to float32 in place (packed quantized
    weights are uint32 and stay as they are)."""
    from mlx.utils import tree_map

    model.update(tree_map(lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a,
                          model.parameters()))


def greedy_agreement(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models_dir")
    ap.add_argument("--greedy", type=int, default=32)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    mx.set_default_device(mx.cpu)

    results = {}
    base = None
    for name in VARIANTS:
        model, _ = mlx_lm_ref.load_model(os.path.join(args.models_dir, name))
        ps = prompts(model.args.vocab_size)
        one_pass = [np.array(mlx_lm_ref.prompt_logits(model, p)) for p in ps]
        stepped = [np.array(stepwise_logits(model, p)) for p in ps]
        greedy = [mlx_lm_ref.greedy(model, p, args.greedy)[0] for p in ps]
        upcast_to_f32(model)
        upcast = [np.array(mlx_lm_ref.prompt_logits(model, p)) for p in ps]
        if base is None:
            base = {"logits": one_pass, "greedy": greedy}
        ref_max = max(float(np.abs(x).max()) for x in base["logits"])
        d = [np.abs(x - y) for x, y in zip(one_pass, base["logits"])]
        s = [np.abs(x - y) for x, y in zip(one_pass, stepped)]
        u = [np.abs(x - y) for x, y in zip(one_pass, upcast)]
        top1 = np.mean(np.concatenate([x.argmax(-1) == y.argmax(-1) for x, y in zip(one_pass, base["logits"])]))
        results[name] = {
            "vs_f32_max_abs": float(max(x.max() for x in d)),
            "vs_f32_max_rel": float(max(x.max() for x in d)) / ref_max,
            "vs_f32_mean_abs": float(np.mean(np.concatenate([x.ravel() for x in d]))),
            "vs_f32_top1_agree": float(top1),
            "vs_f32_greedy_agree": [greedy_agreement(g, b) for g, b in zip(greedy, base["greedy"])],
            "self_max_abs": float(max(x.max() for x in s)),
            "self_max_rel": float(max(x.max() for x in s)) / max(float(np.abs(x).max()) for x in one_pass),
            "upcast_max_abs": float(max(x.max() for x in u)),
            "upcast_max_rel": float(max(x.max() for x in u)) / max(float(np.abs(x).max()) for x in one_pass),
            "f32_logits_max": ref_max,
        }

    hdr = f"{'model':18} {'vs f32 max':>11} {'rel':>9} {'mean':>9} {'top1':>6} {'greedy=':>12} | {'self max':>9} | {'upcast max':>10} {'rel':>9}"
    print(hdr)
    for name, r in results.items():
        print(
            f"{name:18} {r['vs_f32_max_abs']:11.3e} {r['vs_f32_max_rel']:9.2e} {r['vs_f32_mean_abs']:9.2e} "
            f"{r['vs_f32_top1_agree']:6.3f} {str(r['vs_f32_greedy_agree']):>12} | "
            f"{r['self_max_abs']:9.2e} | {r['upcast_max_abs']:10.2e} {r['upcast_max_rel']:9.2e}"
        )
    print(f"(f32 logits max |x| = {results['gqa4_f32']['f32_logits_max']:.3f}; greedy= : steps of "
          f"{args.greedy} equal to f32's greedy ids, per prompt of 8/32/64 tokens)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mlx_lm": mlx_lm_ref.mlx_lm_version(), "greedy": args.greedy, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
