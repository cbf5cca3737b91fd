/* Our CPU kernels for MLX's fast ops at decode (RMSNorm, RoPE, one-query
 * attention), as MLX primitives (see cpu_fused.cpp). C entry points over
 * mlx-c's handles, so that bindgen and Rust can call them. Each builds a
 * lazy array computed on `stream`, which must be a CPU stream; returns 0
 * on success, otherwise writes a message into err (err_len bytes,
 * NUL-terminated) and returns 1, `res` untouched. */

#ifndef MLX_SYS_CPU_FUSED_H
#define MLX_SYS_CPU_FUSED_H

#include <stdbool.h>
#include <stddef.h>

#include "mlx/c/array.h"
#include "mlx/c/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* MLX's fast::rms_norm(x, weight, eps): x [..., D], weight [D]; the
 * result has x's and weight's promoted dtype. */
int mlx_sys_cpu_rms_norm(
    mlx_array* res,
    const mlx_array x,
    const mlx_array weight,
    float eps,
    const mlx_stream stream,
    char* err,
    size_t err_len);

/* MLX's fast::rope(x, dims, traditional, base, scale, offset, freqs) with
 * one integer offset: x [..., L, D], positions along L. `freqs` ([dims /
 * 2]) is read only when `has_freqs`, and then replaces `base`. */
int mlx_sys_cpu_rope(
    mlx_array* res,
    const mlx_array x,
    int dims,
    bool traditional,
    float base,
    float scale,
    int offset,
    const mlx_array freqs,
    bool has_freqs,
    const mlx_stream stream,
    char* err,
    size_t err_len);

/* MLX's fast::scaled_dot_product_attention(q, k, v, scale) without a mask
 * for one query position: q [B, Hq, 1, D], k [B, Hkv, N, D], v [B, Hkv,
 * N, Dv] of one dtype, Hq a multiple of Hkv; the result is [B, Hq, 1, Dv]. */
int mlx_sys_cpu_decode_attention(
    mlx_array* res,
    const mlx_array queries,
    const mlx_array keys,
    const mlx_array values,
    float scale,
    const mlx_stream stream,
    char* err,
    size_t err_len);

/* silu(gate) * up (gate * sigmoid(gate) * up), float32 of one shape. */
int mlx_sys_cpu_swiglu(
    mlx_array* res,
    const mlx_array gate,
    const mlx_array up,
    const mlx_stream stream,
    char* err,
    size_t err_len);

/* log(sum(exp(x))) over the last axis of float32 x [..., N] (N > 0),
 * keeping it: [..., 1]. */
int mlx_sys_cpu_logsumexp(
    mlx_array* res,
    const mlx_array x,
    const mlx_stream stream,
    char* err,
    size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
