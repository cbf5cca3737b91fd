"""How a product's time grows with its rows on the GPU: what a speculative
verify pass (k + 1 rows) costs against a decode step (1 row).

Usage (on the GPU machine, `xtask/gpu/run.sh py gpu.rows_probe`):
    python -m gpu.rows_probe [--iters N]

Times, per row count M, `x [M, 4096] @ W^T` with Mistral 7B's largest
matrix (W [14336, 4096]) in bfloat16 and as MLX 4-bit (group 64, bf16
scales), and the attention of M queries over 512 cached positions
(`fast.scaled_dot_product_attention`, 32/8 heads of 128, causal for M > 1);
each the median of N timed evaluations after warm-up; one JSON line each.
"""
import argparse, json, statistics, time

import mlx.core as mx


def timed(fn, iters):
    for _ in range(3):
        mx.eval(fn())
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, min(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    a = ap.parse_args()
    n, k = 14336, 4096
    w = (mx.random.normal((n, k)) * 0.02).astype(mx.bfloat16)
    wq, s, b = mx.quantize(w, group_size=64, bits=4)
    keys = mx.random.normal((1, 8, 512, 128)).astype(mx.bfloat16)
    values = mx.random.normal((1, 8, 512, 128)).astype(mx.bfloat16)
    mx.eval(w, wq, s, b, keys, values)
    for m in (1, 2, 3, 4, 5, 6, 8, 9, 16, 32):
        x = mx.random.normal((m, k)).astype(mx.bfloat16)
        q = mx.random.normal((1, 32, m, 128)).astype(mx.bfloat16)
        mx.eval(x, q)
        probes = {
            "bf16 matmul": lambda: x @ w.T,
            "4-bit quantized_matmul": lambda: mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=64, bits=4),
            "sdpa 512 cached": lambda: mx.fast.scaled_dot_product_attention(
                q, keys, values, scale=128 ** -0.5, mask="causal" if m > 1 else None),
        }
        for name, fn in probes.items():
            try:
                med, best = timed(fn, a.iters)
                print(json.dumps({"probe": name, "rows": m, "median_ms": round(med, 4), "min_ms": round(best, 4)}), flush=True)
            except Exception as e:  # one failing probe must not hide the rest
                print(json.dumps({"probe": name, "rows": m, "error": str(e)[:300]}), flush=True)


if __name__ == "__main__":
    main()
