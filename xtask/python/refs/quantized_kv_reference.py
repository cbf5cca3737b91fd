"""Greedy ids from mlx-lm 0.32.2's own generation loop with its quantized
KV cache, for the quantized-cache tests (quantized_kv_cache.rs).

Reads one JSON object on stdin:
    {"cases": [{"model": DIR, "prompt": [ids], "n": N, "bits": B,
                "group_size": G, "start": S, "full_caches": bool}, ...]}
and prints {"ids": [[...], ...], "logprobs": [[...], ...]}: per case the
ids and each id's log-probability, from
`generate_step(prompt, model, max_tokens=N, kv_bits=B, kv_group_size=G,
quantized_kv_start=S)` (greedy). The model is loaded as reference.py loads
it. With "full_caches" every layer gets a plain `KVCache` (which mlx-lm
quantizes) instead of the model's own `make_cache()`: mlx-lm cannot
quantize its rotating cache, so on a sliding-window model this computes
the windowed attention over a quantized cache by its mask instead, an
independent reference for a quantized ring buffer.
"""

from __future__ import annotations

import json
import sys

import mlx.core as mx

from common.mlx_lm_ref import load_model, reference_device


def main() -> int:
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import KVCache

    mx.set_default_device(reference_device())
    request = json.load(sys.stdin)
    models = {}
    out, out_logprobs = [], []
    for case in request["cases"]:
        path = case["model"]
        if path not in models:
            models[path] = load_model(path)[0]
        model = models[path]
        caches = [KVCache() for _ in model.layers] if case.get("full_caches") else None
        prompt = mx.array(case["prompt"], dtype=mx.int32)
        steps = generate_step(
            prompt,
            model,
            max_tokens=case["n"],
            prompt_cache=caches,
            kv_bits=case["bits"],
            kv_group_size=case["group_size"],
            quantized_kv_start=case["start"],
        )
        ids, logprobs = [], []
        for token, lp in steps:
            ids.append(int(token))
            logprobs.append(float(lp[int(token)]))
        out.append(ids)
        out_logprobs.append(logprobs)
    json.dump({"ids": out, "logprobs": out_logprobs}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
