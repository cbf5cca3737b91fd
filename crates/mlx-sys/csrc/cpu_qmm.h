/* Our CPU quantized matrix product for MLX's affine 4- and 8-bit format,
 * as an MLX primitive (see cpu_qmm.cpp). C entry points over mlx-c's
 * handles, so that bindgen and Rust can call them. */

#ifndef MLX_SYS_CPU_QMM_H
#define MLX_SYS_CPU_QMM_H

#include <stddef.h>

#include "mlx/c/array.h"
#include "mlx/c/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Instruction sets the kernel may use (a cap: the best the CPU has up to
 * it is taken). The _VNNI ones add the int8 dot product (AVX-VNNI,
 * AVX512-VNNI) that the int8 path uses; the float32 path computes alike
 * with or without it. _AMX adds AMX-BF16 tiles for the many-row float
 * path in place of the sgemm (qmm_amx.cpp). */
#define MLX_SYS_CPU_QMM_ISA_SCALAR 0
#define MLX_SYS_CPU_QMM_ISA_AVX2 1
#define MLX_SYS_CPU_QMM_ISA_AVX2_VNNI 2
#define MLX_SYS_CPU_QMM_ISA_AVX512 3
#define MLX_SYS_CPU_QMM_ISA_AVX512_VNNI 4
#define MLX_SYS_CPU_QMM_ISA_AVX512_AMX 5
#define MLX_SYS_CPU_QMM_ISA_BEST 6

/* res = x W^T, W [N, K] given as MLX lays out an affine-quantized matrix:
 * w uint32 [N, K * bits / 32] (elements from the low bits up), scales and
 * biases [N, K / group_size] (float32, float16 or bfloat16), x [..., K]
 * (float32, float16 or bfloat16). bits 4 or 8, group_size 32, 64 or 128.
 * The result, [..., N], has the dtype MLX's quantized_matmul gives (x's
 * and the scales' promoted) and is computed lazily on `stream`, which must
 * be a CPU stream. `max_isa` caps the instruction set (tests use it; pass
 * MLX_SYS_CPU_QMM_ISA_BEST). `gemm_min_rows`: inputs of at least this many
 * rows take the many-row path: AMX tiles where the CPU has them, else
 * tiles of W dequantized to float32 for the BLAS sgemm MLX links (when
 * found); 0 = each path's default (mlx_sys_cpu_qmm_default_*_rows).
 * `int8_x` nonzero: inputs of fewer rows (all, without the many-row
 * path) take the int8 path: x quantized per group of W to int8 (scale
 * max|x| / 127, round to nearest even) and multiplied by integer dot
 * products (VNNI where the CPU has it), each group's sum
 * scaled in float32.
 * `residual` not NULL: res = residual + x W^T in the same primitive, as
 * MLX's add would give it; the product must then be float32 (x or the
 * scales float32) and the residual float32 of its shape.
 * Returns 0 on success; otherwise writes a message into err (err_len bytes,
 * NUL-terminated) and returns 1, `res` untouched. */
int mlx_sys_cpu_qmm(
    mlx_array* res,
    const mlx_array x,
    const mlx_array w,
    const mlx_array scales,
    const mlx_array biases,
    const mlx_array* residual,
    int group_size,
    int bits,
    int max_isa,
    int gemm_min_rows,
    int int8_x,
    const mlx_stream stream,
    char* err,
    size_t err_len);

/* The instruction set the kernel uses on this CPU under `max_isa`
 * (one of the MLX_SYS_CPU_QMM_ISA_* values, never _BEST). */
int mlx_sys_cpu_qmm_isa(int max_isa);

/* Whether the BLAS sgemm (cblas_sgemm) was found in the process. */
int mlx_sys_cpu_qmm_has_sgemm(void);

/* The default of `gemm_min_rows` for the sgemm path. */
int mlx_sys_cpu_qmm_default_gemm_rows(void);

/* The default of `gemm_min_rows` for AMX tiles. */
int mlx_sys_cpu_qmm_default_tile_rows(void);

#ifdef __cplusplus
}
#endif

#endif
