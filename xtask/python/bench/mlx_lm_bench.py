"""mlx-lm's side of `cargo xtask compare`: one process, one measured run
(or `--iterations N`), mirroring `mistral-cli bench --iterations N --json`.

Usage:
    python -m bench.mlx_lm_bench --model DIR --prompt-tokens P --gen-tokens G [--warmup N] [--iterations N]
    python -m bench.mlx_lm_bench --bandwidth
    (add --device gpu on MLX's CUDA build; the default is the CPU)

Run: mlx-lm 0.32.2's own loader (`mlx_lm.utils.load_model`, which evaluates
the parameters; timed as the load) with the references' sliding-window patch
(common/mlx_lm_ref.py), then `--warmup` short runs (a prompt of at most 32 tokens, 4 generated, as
`mistral-cli bench` warms up; with `--warmup-full` the measured lengths),
then one run (or `--iterations N` runs) of `mlx_lm.generate.generate_step`
(greedy, `max_tokens` = G; no EOS check, as ours) on the same pseudo-random
prompt ids as `mistral-cli bench` (its xorshift, salt 2). The clock stops at
the last token, as in mlx-lm's `stream_generate`. Rates: prompt tokens / time
to first token, (G - 1) / (last token - first token). Peak memory from
`mx.get_peak_memory()` (reset before the run). With several iterations
each figure is the median over them, and `per_iteration` lists them all. A decode step's time split
as `mistral-cli bench` splits ours (build, dispatch, wait; see
`StepClock`), and a step's dispatch with the device idle
(`idle_dispatch`).

`--bandwidth` measures the machine's memory read bandwidth (see
`bandwidth()`).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import mlx.core as mx

WARMUP_PROMPT = 32
WARMUP_GEN = 4
MASK = (1 << 64) - 1


def synthetic_ids(count: int, vocab: int, salt: int) -> list[int]:
    """`mistral-cli bench`'s prompt: xorshift64 ids in [min(1000, vocab/2), vocab)."""
    low = min(1000, vocab // 2)
    span = max(vocab - low, 1)
    state = 0x9E3779B97F4A7C15 ^ salt
    out = []
    for _ in range(count):
        state ^= (state << 13) & MASK
        state ^= state >> 7
        state ^= (state << 17) & MASK
        out.append(low + state % span)
    return out


def weight_bytes_per_token(model, config: dict) -> tuple[int, int]:
    """(all weight bytes, bytes read per decoded token): everything but the
    embedding table, of which one row, unless it is also the tied head."""
    from mlx.utils import tree_flatten

    params = dict(tree_flatten(model.parameters()))
    total = sum(v.nbytes for v in params.values())
    table = sum(v.nbytes for k, v in params.items() if k.startswith("model.embed_tokens."))
    if config.get("tie_word_embeddings", False):
        return total, total
    return total, total - table + table // int(config["vocab_size"])


class StepClock:
    """Host time of mlx-lm's decode steps, as `mistral-cli bench` splits
    ours: `build` is the model call and the sampler (through a proxy of the
    model and the sampler passed in), `dispatch` is `mx.async_eval` (patched
    in this process only); the rest of a step's share of the decode time is
    the wait for its token (with generate_step's own small Python work).
    Counts only while `on` (after the first token)."""

    def __init__(self):
        self.on = False
        self.build = 0.0
        self.dispatch = 0.0

    def add(self, part: str, since: float) -> None:
        if self.on:
            setattr(self, part, getattr(self, part) + time.perf_counter() - since)


class TimedModel:
    """`model`, whose calls count as build time on `clock`."""

    def __init__(self, model, clock: StepClock):
        self.__dict__.update(_model=model, _clock=clock)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self._model(*args, **kwargs)
        self._clock.add("build", start)
        return out

    def __getattr__(self, name):
        return getattr(self._model, name)


def idle_dispatch(model, cache, first: int) -> float:
    """Seconds `mx.async_eval` takes for one decode step with the device
    idle, as `mistral-cli bench` measures ours: the median of 8 greedy steps
    on the run's cache (after one unrecorded), each built, then handed over
    once all earlier work has finished (`mx.synchronize`)."""
    token = mx.array([[first]], dtype=mx.uint32)
    times = []
    for step in range(9):
        nxt = mx.argmax(model(token, cache=cache), axis=-1)
        mx.synchronize()
        start = time.perf_counter()
        mx.async_eval(nxt)
        took = time.perf_counter() - start
        mx.eval(nxt)
        if step > 0:
            times.append(took)
        token = nxt
    return statistics.median(times)


def run(model, ids: list[int], gen: int) -> dict:
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import make_prompt_cache

    clock = StepClock()
    real_async_eval = mx.async_eval

    def timed_async_eval(*args):
        start = time.perf_counter()
        real_async_eval(*args)
        clock.add("dispatch", start)

    def sampler(logprobs):
        start = time.perf_counter()
        out = mx.argmax(logprobs, axis=-1)
        clock.add("build", start)
        return out

    mx.clear_cache()
    mx.reset_peak_memory()
    prompt = mx.array(ids, dtype=mx.uint32)
    mx.async_eval = timed_async_eval
    try:
        start = time.perf_counter()
        first = last = None
        count = 0
        cache = make_prompt_cache(model)
        for _token, _ in generate_step(prompt, TimedModel(model, clock), max_tokens=gen, sampler=sampler,
                                       prompt_cache=cache):
            last = time.perf_counter()
            if first is None:
                first = last
                clock.on = True
            count += 1
    finally:
        mx.async_eval = real_async_eval
    ttft = first - start
    decode = last - first
    peak = mx.get_peak_memory()
    idle = idle_dispatch(model, cache, ids[0])
    steps = max(count - 1, 1)
    build_ms, dispatch_ms = clock.build / steps * 1e3, clock.dispatch / steps * 1e3
    return {
        "prompt_tokens": len(ids),
        "generated": count,
        "prefill_tps": len(ids) / ttft if ttft > 0 else 0.0,
        "decode_tps": (count - 1) / decode if decode > 0 else 0.0,
        "ttft_s": ttft,
        "peak_mem_GB": peak / 1e9,
        "decode_build_ms": build_ms,
        "decode_dispatch_ms": dispatch_ms,
        "decode_wait_ms": decode / steps * 1e3 - build_ms - dispatch_ms,
        "decode_idle_dispatch_ms": idle * 1e3,
    }


def gpu_bandwidth() -> dict:
    """The GPU's memory read bandwidth: MLX's `sum` over 4 GiB of float32
    (median of 6 after one unrecorded pass)."""
    n = (1 << 32) // 4
    x = mx.random.uniform(shape=(n,))
    mx.eval(x)
    sums = []
    for _ in range(7):
        t = time.perf_counter()
        mx.eval(mx.sum(x))
        sums.append(time.perf_counter() - t)
    read = x.nbytes / statistics.median(sums[1:]) / 1e9
    return {"read_GBps": read, "mlx_sum_GBps": read, "bytes": x.nbytes}


def bandwidth() -> dict:
    """Memory read bandwidth, two ways over 1 GiB of float32 (median of 6
    after one unrecorded pass): MLX's `sum` (one CPU thread) and numpy's
    matrix-vector product (its bundled OpenBLAS, every core), which reads
    the matrix once as a decode step reads its weights. The larger is the
    bound."""
    import numpy as np

    n = (1 << 30) // 4
    x = mx.random.uniform(shape=(n,))
    mx.eval(x)
    w = np.random.default_rng(0).standard_normal((n // 4096, 4096), dtype=np.float32)
    v = np.ones(n // 4096, dtype=np.float32)
    sums, gemvs = [], []
    for _ in range(7):
        t = time.perf_counter()
        mx.eval(mx.sum(x))
        sums.append(time.perf_counter() - t)
        t = time.perf_counter()
        v @ w
        gemvs.append(time.perf_counter() - t)
    mlx_sum = x.nbytes / statistics.median(sums[1:]) / 1e9
    numpy_gemv = w.nbytes / statistics.median(gemvs[1:]) / 1e9
    return {"read_GBps": max(mlx_sum, numpy_gemv), "mlx_sum_GBps": mlx_sum,
            "numpy_gemv_GBps": numpy_gemv, "bytes": x.nbytes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--prompt-tokens", type=int)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=1,
                    help="measured runs; each figure is their median (as mistral-cli bench --iterations)")
    ap.add_argument("--warmup-full", action="store_true",
                    help="warm up with the measured prompt and generation lengths (as mlx_lm.benchmark; "
                    "mistral-cli bench --warmup-full)")
    ap.add_argument("--bandwidth", action="store_true")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = ap.parse_args()
    if args.iterations < 1:
        ap.error("--iterations must be at least 1")
    mx.set_default_device(mx.gpu if args.device == "gpu" else mx.cpu)
    if args.bandwidth:
        print(json.dumps(gpu_bandwidth() if args.device == "gpu" else bandwidth()))
        return 0
    if not (args.model and args.prompt_tokens):
        ap.error("--model and --prompt-tokens are required")

    import mlx_lm
    from common.mlx_lm_ref import load_model  # mlx-lm's loader + the sliding-window patch

    start = time.perf_counter()
    model, _notes = load_model(args.model)
    load_s = time.perf_counter() - start
    with open(f"{args.model}/config.json") as f:
        config = json.load(f)
    vocab = int(config["vocab_size"])
    warm_prompt, warm_gen = ((args.prompt_tokens, args.gen_tokens) if args.warmup_full
                             else (min(args.prompt_tokens, WARMUP_PROMPT), WARMUP_GEN))
    for _ in range(args.warmup):
        run(model, synthetic_ids(warm_prompt, vocab, 2), warm_gen)
    runs = [run(model, synthetic_ids(args.prompt_tokens, vocab, 2), args.gen_tokens)
            for _ in range(args.iterations)]
    result = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    if args.iterations > 1:
        result["per_iteration"] = {key: [r[key] for r in runs] for key in runs[0]}
    total, per_token = weight_bytes_per_token(model, config)
    print(json.dumps({
        "engine": f"mlx-lm {getattr(mlx_lm, '__version__', '?')}",
        "model": args.model,
        "load_s": load_s,
        "weight_bytes": total,
        "weight_bytes_per_token": per_token,
        **result,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
