"""Host time to build one decode step's graph under mlx-lm 0.32.2, without
evaluating it; the twin of `crates/mistral-loader/examples/graph_build_time.rs`
(see there).

    python -m bench.graph_build_time --model DIR        # measure
    python -m bench.graph_build_time --make-model DIR   # write deep32_bf16 there

The model is loaded as the references load it (common/mlx_lm_ref.py), on
the CPU. After an 8-token prompt (evaluated with its cache), each of 300
steps builds
`argmax(model(token, cache)[:, -1, :])` and trims the cache back by one
(evaluating the cache every 50 steps). Prints one JSON object: the median and
the 10th and 90th percentiles of the build time, in milliseconds.

`deep32_bf16`: 32 layers of hidden 256 (8 heads, 2 key/value heads, MLP
512), bf16, make_models.py's generator: many layers of little work, so the
per-operation host cost shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import mlx.core as mx


def measure(model_dir: str) -> dict:
    from mlx_lm.models.cache import make_prompt_cache

    from common.mlx_lm_ref import load_model

    mx.set_default_device(mx.cpu)
    model, _notes = load_model(model_dir)
    cache = make_prompt_cache(model)
    mx.eval(model(mx.array([[1, 2, 3, 4, 5, 6, 7, 8]]), cache=cache), [c.state for c in cache])
    token = mx.array([[9]])
    steps = 300
    times = []
    for step in range(steps):
        start = time.perf_counter()
        logits = model(token, cache=cache)
        _next = mx.argmax(logits[:, -1, :], axis=-1)
        times.append((time.perf_counter() - start) * 1e3)
        for c in cache:
            c.trim(1)
        if step % 50 == 49:
            mx.eval([c.state for c in cache])
    times.sort()
    return {"engine": "mlx-lm", "model": model_dir, "steps": steps,
            "build_ms_median": times[steps // 2], "build_ms_p10": times[steps // 10],
            "build_ms_p90": times[steps * 9 // 10]}


def make_model(out_dir: str) -> None:
    from models import bench_models

    bench_models.float_model(os.path.dirname(os.path.abspath(out_dir)) or ".",
                             os.path.basename(os.path.abspath(out_dir)), seed=7,
                             hidden_size=256, intermediate_size=512, num_hidden_layers=32,
                             num_attention_heads=8, num_key_value_heads=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--model")
    group.add_argument("--make-model")
    args = ap.parse_args()
    if args.make_model:
        make_model(args.make_model)
        return 0
    print(json.dumps(measure(args.model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
