/* One decode step of a layer's attention in one MLX primitive on the CPU
 * (see cpu_decode_row.cpp): the stacked q/k/v projection's row in, the
 * new keys and values rotated and written into the cache's buffers, the
 * attention's heads out. Returns 0 on success, otherwise writes a message
 * into err (err_len bytes, NUL-terminated) and returns 1, the results
 * untouched. */

#ifndef MLX_SYS_CPU_DECODE_ROW_H
#define MLX_SYS_CPU_DECODE_ROW_H

#include <stdbool.h>
#include <stddef.h>

#include "mlx/c/array.h"
#include "mlx/c/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* `qkv` [1, (Hq + 2 Hkv) * D] float32: the queries' Hq heads, then the
 * keys' and the values' Hkv heads. `keys`, `values` [1, Hkv, C, D]
 * float32: the cache's buffers, positions 0..offset filled, offset < C.
 * RoPE as MLX's fast::rope(dims, traditional, base, scale, offset, freqs)
 * (`freqs` [dims / 2] read only when `has_freqs`); attention as
 * fast::scaled_dot_product_attention(scale) without a mask over positions
 * 0..=offset. Gives `heads` [1, Hq * D] and the buffers with position
 * `offset` written (`keys_out`, `values_out`: the inputs' memory where
 * MLX can donate it). */
int mlx_sys_cpu_decode_row(
    mlx_array* heads,
    mlx_array* keys_out,
    mlx_array* values_out,
    const mlx_array qkv,
    const mlx_array keys,
    const mlx_array values,
    int n_heads,
    int n_kv_heads,
    int offset,
    int rope_dims,
    bool rope_traditional,
    float rope_base,
    float rope_scale,
    const mlx_array rope_freqs,
    bool has_freqs,
    float scale,
    const mlx_stream stream,
    char* err,
    size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
