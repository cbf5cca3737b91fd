"""Times our 4-bit matrix-vector kernel (crates/mlx-rs-core/src/kernels/)
on a CUDA GPU at every tiling worth trying, next to MLX's
`quantized_matmul`, on Mistral 7B's decode shapes: the data behind
`Plan::tiling` in crates/mlx-rs-core/src/quantized_matvec.rs.

A tiling is (ROWS rows of W per warp, UNROLL 16-byte chunks per lane and
row in flight, warps per block), with ROWS x UNROLL <= 8 and UNROLL
dividing a lane's share of the row. Each is timed as 200 products in one
evaluation, the median of 3 rounds, and its error checked against a
float32 reference (within max(2 x MLX's error, the bf16 half step)).

Run where MLX's CUDA build is importable (xtask/gpu/run.sh sets that up):
    PYTHONPATH=xtask/python python3 -m gpu.qmv_tiling_sweep > sweep.jsonl
One JSON line per tiling and shape, then the best tiling per shape.
"""

from __future__ import annotations

import itertools
import json
import statistics

import mlx.core as mx

from gpu.qmv_kernel_check import ours, timed

# (N, K): q/o, k/v, stacked q/k/v, stacked gate/up, down, the head.
SHAPES = [(4096, 4096), (1024, 4096), (6144, 4096), (28672, 4096), (4096, 14336), (32768, 4096)]


def main() -> None:
    best = {}
    for (n, k) in SHAPES:
        mx.random.seed(1)
        w, s, b = mx.quantize(mx.random.normal((n, k)) * 0.02, group_size=64, bits=4)
        s, b = s.astype(mx.bfloat16), b.astype(mx.bfloat16)
        xs = [mx.random.normal((1, 1, k)).astype(mx.bfloat16) for _ in range(200)]
        mx.eval(w, s, b, xs)
        nbytes = w.nbytes + s.nbytes + b.nbytes
        exact = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=64, bits=4)
        ref = xs[0].astype(mx.float32) @ exact.T

        def theirs(i):
            return mx.quantized_matmul(xs[i], w, s, b, transpose=True, group_size=64, bits=4)

        mlx_err = mx.abs(theirs(0).astype(mx.float32) - ref).max().item()
        bound = max(2 * mlx_err, 2.0 ** -8 * mx.abs(ref).max().item())
        t = statistics.median(timed(theirs) for _ in range(3))
        print(json.dumps({"n": n, "k": k, "engine": "mlx", "us": round(t * 1e6, 2),
                          "gbs": round(nbytes / t / 1e9), "err": mlx_err}), flush=True)
        per_lane = (k // 32) // 32
        for rows, unroll, wpb in itertools.product((1, 2, 4, 8), (1, 2, 4, 8), (4, 8)):
            if rows * unroll > 8 or (per_lane and per_lane % unroll) or n // rows < 512:
                continue
            err = mx.abs(ours(xs[0], w, s, b, 64, (rows, unroll), wpb).astype(mx.float32) - ref).max().item()
            t = statistics.median(timed(lambda i: ours(xs[i], w, s, b, 64, (rows, unroll), wpb))
                                  for _ in range(3))
            row = {"n": n, "k": k, "engine": "ours", "rows": rows, "unroll": unroll, "wpb": wpb,
                   "us": round(t * 1e6, 2), "gbs": round(nbytes / t / 1e9), "err": err, "ok": err <= bound}
            print(json.dumps(row), flush=True)
            if (n, k) not in best or row["us"] < best[(n, k)]["us"]:
                best[(n, k)] = row
    for row in best.values():
        print(json.dumps({"best": row}), flush=True)


if __name__ == "__main__":
    main()
