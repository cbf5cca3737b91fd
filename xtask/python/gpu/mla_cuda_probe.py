"""Where MLX 0.32.2's CUDA backend goes wrong on Mistral 4 (mlx-lm's
`mistral4`): each probe runs in its own process (an illegal memory access
ends the CUDA context) and prints one line.

Usage (on the GPU machine, through `xtask/gpu/run.sh py gpu.mla_cuda_probe`):
    python -m gpu.mla_cuda_probe            # every probe
    python -m gpu.mla_cuda_probe NAME...    # some

Probes:
  sdpa_decode_*   mx.fast.scaled_dot_product_attention as mlx-lm's latent
                  decode step calls it: q [1, H, 1, r], one shared latent as
                  keys and values [1, 1, L, r], an additive float mask
                  [1, H, 1, L] (the RoPE part's scores); against the same
                  attention written as matmul + softmax on the CPU.
  sdpa_prefill_*  as mlx-lm's prefill calls it: q, k [1, H, L, nope+rope],
                  v [1, H, L, v_dim] (a value size unlike the key size),
                  causal mask.
  model_*         mlx-lm's Mistral 4 (the dims of make_arch_models.py's
                  mistral4_f32, vocab 512, random weights) on the GPU:
                  greedy prefill logits of the last position against
                  prefill-less-one + one decode step, and against the CPU;
                  `_manual` swaps mlx-lm's attention for matmul + softmax,
                  `_dense` makes every layer dense (no experts),
                  `_contiguous` copies every `mx.split` part to contiguous
                  memory (MLX 0.32.2's CUDA `fast.rope` with `freqs` reads a
                  split's last-axis part wrongly: `op_split_rope_*`).
  op_*            single operations of that attention, GPU against CPU,
                  twice.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np


def manual_attention(q, k, v, scale, mask):
    """Softmax attention as plain array ops (float32), keys/values shared
    over query heads when they have one head."""
    import mlx.core as mx

    if k.shape[1] != q.shape[1]:
        k = mx.repeat(k, q.shape[1] // k.shape[1], axis=1)
        v = mx.repeat(v, q.shape[1] // v.shape[1], axis=1)
    s = (q.astype(mx.float32) * scale) @ k.astype(mx.float32).swapaxes(-1, -2)
    if isinstance(mask, str) and mask == "causal":
        L, S = s.shape[-2], s.shape[-1]
        keep = mx.arange(S)[None, :] <= (mx.arange(L)[:, None] + S - L)
        s = mx.where(keep, s, mx.array(-np.inf, mx.float32))
    elif mask is not None:
        s = s + mask.astype(mx.float32) if mask.dtype != mx.bool_ else mx.where(mask, s, -np.inf)
    return (mx.softmax(s, axis=-1) @ v.astype(mx.float32)).astype(q.dtype)


def rel(a, b) -> float:
    import mlx.core as mx

    a, b = (np.asarray(x.astype(mx.float32), np.float64) for x in (a, b))
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def sdpa_case(kind: str, heads: int, r: int, length: int, dtype: str) -> str:
    import mlx.core as mx

    dt = getattr(mx, dtype)
    mx.random.seed(7)
    if kind == "decode":
        q = mx.random.normal((1, heads, 1, r)).astype(dt)
        kv = mx.random.normal((1, 1, length, r)).astype(dt)
        k = v = kv
        mask = (mx.random.normal((1, heads, 1, length)) * 2).astype(dt)
    else:
        nope, rope, vd = r
        q = mx.random.normal((1, heads, length, nope + rope)).astype(dt)
        k = mx.random.normal((1, heads, length, nope + rope)).astype(dt)
        v = mx.random.normal((1, heads, length, vd)).astype(dt)
        mask = "causal"
    scale = 0.18713
    with mx.stream(mx.cpu):
        want = manual_attention(q, k, v, scale, mask)
        mx.eval(want)
    got = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    mx.eval(got)
    manual_gpu = manual_attention(q, k, v, scale, mask)
    mx.eval(manual_gpu)
    return (f"fast sdpa on {mx.default_device()} vs CPU matmul+softmax: rel err {rel(got, want):.2e}; "
            f"matmul+softmax there: {rel(manual_gpu, want):.2e}")


def model_case(manual: bool, dense: bool, contiguous: bool = False) -> str:
    import mlx.core as mx

    if contiguous:
        # Every split part copied to contiguous memory before use.
        split = mx.split
        mx.split = lambda *a, **k: [mx.contiguous(p) for p in split(*a, **k)]
    from mlx_lm.models import mistral4
    from mlx_lm.models.cache import make_prompt_cache

    args = mistral4.ModelArgs.from_dict({
        "model_type": "mistral4", "vocab_size": 512, "hidden_size": 128, "intermediate_size": 256,
        "moe_intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 4, "q_lora_rank": 48, "kv_lora_rank": 64, "qk_rope_head_dim": 16,
        "qk_nope_head_dim": 32, "v_head_dim": 32, "n_routed_experts": 8, "num_experts_per_tok": 2,
        "n_shared_experts": 1, "first_k_dense_replace": 3 if dense else 1, "n_group": 2, "topk_group": 1,
        "routed_scaling_factor": 2.5, "norm_topk_prob": True, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_interleave": True,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                            "original_max_position_embeddings": 16, "beta_fast": 32.0, "beta_slow": 1.0,
                            "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1},
    })
    if manual:
        def sdpa(queries, keys, values, cache, scale, mask, sinks=None):
            return manual_attention(queries, keys, values, scale, mask)

        mistral4.scaled_dot_product_attention = sdpa
    mx.random.seed(3)
    model = mistral4.Model(args)
    # Larger router weights (as the test models): expert choices far from ties.
    for layer in model.model.layers:
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None:
            gate.weight = mx.random.normal(gate.weight.shape) * 0.5
    mx.eval(model.parameters())
    ids = mx.array(np.random.default_rng(5).integers(0, 512, size=(1, 40)), mx.int32)

    def last_logits(prefill_all: bool):
        cache = make_prompt_cache(model)
        if prefill_all:
            return model(ids, cache=cache)[0, -1]
        model(ids[:, :-1], cache=cache)
        return model(ids[:, -1:], cache=cache)[0, -1]

    gpu_prefill, gpu_decode = last_logits(True), last_logits(False)
    mx.eval(gpu_prefill, gpu_decode)
    with mx.stream(mx.cpu):
        cpu_prefill, cpu_decode = last_logits(True), last_logits(False)
        mx.eval(cpu_prefill, cpu_decode)
    return (f"on {mx.default_device()}: decode vs prefill {rel(gpu_decode, gpu_prefill):.2e} "
            f"(CPU {rel(cpu_decode, cpu_prefill):.2e}); prefill vs CPU {rel(gpu_prefill, cpu_prefill):.2e}, "
            f"decode vs CPU {rel(gpu_decode, cpu_decode):.2e}")


def op_case(name: str) -> str:
    """One operation of mlx-lm's Mistral 4 attention on the GPU against the
    CPU, on the shapes of the test model, twice (run-to-run changes show
    uninitialized reads)."""
    import mlx.core as mx

    mx.random.seed(11)
    x = mx.random.normal((1, 40, 80))
    w64 = 1.0 + 0.1 * mx.random.normal((64,))
    q = mx.random.normal((1, 4, 40, 48))
    kv = mx.random.normal((1, 1, 40, 64))
    wq = mx.random.normal((4, 64, 32)) * 0.1
    freqs = mx.random.uniform(1.0, 100.0, (8,))

    def run():
        if name == "split_rms_norm":
            a, _ = mx.split(x, [64], axis=-1)
            return mx.fast.rms_norm(a, w64, 1e-6)
        if name == "split_rope_traditional":
            _, b = mx.split(q, [32], axis=-1)
            return mx.fast.rope(b, 16, traditional=True, base=None, scale=1.0, offset=5, freqs=freqs)
        if name == "split_rope_half":
            _, b = mx.split(q, [32], axis=-1)
            return mx.fast.rope(b, 16, traditional=False, base=None, scale=1.0, offset=5, freqs=freqs)
        if name == "rope_kv_transposed":
            k = x[..., 64:].reshape(1, 40, 1, 16).transpose(0, 2, 1, 3)
            return mx.fast.rope(k, 16, traditional=True, base=None, scale=1.0, offset=0, freqs=freqs)
        if name == "multilinear_t":
            a, _ = mx.split(q, [32], axis=-1)
            return a @ wq.swapaxes(-1, -2)
        if name == "multilinear_broadcast":
            return kv @ wq
        if name == "broadcast_concat":
            k = mx.broadcast_to(kv[..., :16], (1, 4, 40, 16))
            return mx.concatenate([kv @ wq, k], axis=-1)
        raise ValueError(name)

    gpu1 = run()
    mx.eval(gpu1)
    gpu2 = run()
    mx.eval(gpu2)
    with mx.stream(mx.cpu):
        cpu = run()
        mx.eval(cpu)
    return f"vs CPU {rel(gpu1, cpu):.2e}, second run vs first {rel(gpu2, gpu1):.2e}"


PROBES = {
    **{f"op_{n}": (op_case, (n,)) for n in ("split_rms_norm", "split_rope_traditional", "split_rope_half",
                                           "rope_kv_transposed", "multilinear_t", "multilinear_broadcast",
                                           "broadcast_concat")},
    **{f"sdpa_decode_h{h}_r{r}_l{n}_{d}": (sdpa_case, ("decode", h, r, n, d))
       for h, r, n, d in [(4, 64, 8, "float32"), (4, 64, 40, "float32"), (4, 64, 300, "float32"),
                          (4, 64, 40, "bfloat16"), (128, 512, 40, "bfloat16"), (128, 512, 1000, "bfloat16")]},
    **{f"sdpa_prefill_h{h}_l{n}_{d}": (sdpa_case, ("prefill", h, (32, 16, 32), n, d))
       for h, n, d in [(4, 8, "float32"), (4, 40, "float32"), (4, 40, "bfloat16")]},
    "sdpa_prefill_h128_l64_real_bf16": (sdpa_case, ("prefill", 128, (128, 64, 128), 64, "bfloat16")),
    "model": (model_case, (False, False)),
    "model_manual": (model_case, (True, False)),
    "model_dense": (model_case, (False, True)),
    "model_dense_manual": (model_case, (True, True)),
    "model_contiguous": (model_case, (False, False, True)),
    "model_dense_contiguous": (model_case, (False, True, True)),
}


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        fn, args = PROBES[sys.argv[2]]
        print(fn(*args), flush=True)
        return 0
    names = sys.argv[1:] or list(PROBES)
    for name in names:
        t0 = time.time()
        try:
            p = subprocess.run([sys.executable, "-m", "gpu.mla_cuda_probe", "--one", name], capture_output=True, text=True,
                               timeout=300)
            if p.returncode == 0:
                line = p.stdout.strip().splitlines()[-1]
            else:
                tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
                line = f"FAILED (exit {p.returncode}): {tail[:300]}"
        except subprocess.TimeoutExpired:
            line = "FAILED: timed out after 300 s"
        print(f"{name:<36} {line} [{time.time() - t0:.1f}s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
