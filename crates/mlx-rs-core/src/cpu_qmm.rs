//! Quantized matrix products on the CPU by a kernel of our own
//! (`crates/mlx-sys/csrc/cpu_qmm.cpp`), run inside MLX's lazy graph as an
//! MLX primitive on the CPU stream.
//!
//! Why: MLX 0.32's CPU `quantized_matmul` is scalar code on one thread
//! (0.1-0.2 GB/s of weights), so a quantized checkpoint either runs about
//! 10x slower than float32 or is dequantized at load (6.6x the file's
//! memory for 4-bit). Ours takes MLX's affine 4- and 8-bit format as it is
//! (packed `uint32` weights, per-group scales and biases in float32,
//! float16 or bfloat16, groups of 32, 64 or 128; our GGUF loader gives
//! Q4_0/Q4_1/Q8_0 in exactly that form):
//! - a few rows (decode): the weights are unpacked to float32 in SIMD
//!   registers (AVX-512, or AVX2+FMA+F16C, chosen at run time; a portable
//!   scalar path elsewhere) and multiplied by FMA, output rows shared among
//!   a small persistent thread pool;
//! - many rows (prefill; at least [`DEFAULT_TILE_ROWS`] with AMX tiles,
//!   [`DEFAULT_GEMM_ROWS`] with `sgemm`): on CPUs with AMX-BF16 (Linux), by
//!   its tiles: the codes are exact in bfloat16 and x
//!   is split into three bfloat16 parts, so each group's sum is a float32
//!   sum of exact products ([`Isa::Avx512Amx`]); elsewhere tiles of the
//!   matrix are dequantized to float32 and multiplied by the BLAS `sgemm`
//!   MLX itself links (OpenBLAS on our Linux builds).
//!
//! Accumulation is float32; activations are not quantized. The result has
//! the dtype MLX's `quantized_matmul` gives (x's and the scales' promoted).
//!
//! The int8 path ([`CpuQmm::OursQ8`], `--cpu-qmm ours-q8`) quantizes x
//! instead, per group of the weights (as llama.cpp's Q8 activations):
//! codes `c = round(x * 127 / max|x|)` with scale `d = max|x| / 127`, and
//! per group `s * d * sum(q * c) + b * d * sum(c)`, the integer sums by
//! VNNI's `vpdpbusd` (AVX512-VNNI or AVX-VNNI; AVX2's `vpmaddubsw`
//! without), for fewer rows than [`Tuning::gemm_rows`] (decode; many rows
//! still take AMX tiles or `sgemm`, faster on our machine: BENCHMARKS.md;
//! with `gemm_rows` raised, the int8 kernel's tiles of 4 x 4 rows take
//! them too). The bias term takes the
//! codes' sum, not x's: the result is then exactly `W x̂` for the x̂ the
//! codes stand for (error `W (x̂ - x)`, each `|x̂ - x| <= d / 2`), smaller
//! than the codes' error times `s * q` alone when W's groups straddle zero.
//!
//! It is used where the caller asks for it ([`CpuQmm::Ours`] or
//! [`CpuQmm::OursQ8`], a load option: `mistral-cli --cpu-qmm ours`) and
//! the product runs on a CPU
//! stream ([`cpu_quantized_matmul`] returns `None` elsewhere, and the
//! caller uses MLX's `quantized_matmul`). The primitive has no GPU
//! implementation.

use std::ffi::CStr;
use std::os::raw::c_char;

use mlx_rs::{Array, Dtype, Stream};

use crate::streams::is_cpu;

/// The fewest rows of `x` that go through the dequantize-and-`sgemm` path
/// by default (fewer take the SIMD matrix-vector kernel).
pub const DEFAULT_GEMM_ROWS: i32 = 16;

/// The same for AMX tiles ([`Isa::Avx512Amx`]), which beat the row kernel
/// from fewer rows.
pub const DEFAULT_TILE_ROWS: i32 = 7;

/// Errors of our CPU quantized product.
#[derive(Debug, thiserror::Error)]
pub enum CpuQmmError {
    /// The arrays or parameters are not a product the kernel computes.
    #[error("CPU quantized product: {0}")]
    Unsupported(String),
    /// The kernel's C++ side refused the arrays (its message).
    #[error("CPU quantized product refused: {0}")]
    Kernel(String),
}

impl From<CpuQmmError> for crate::error::Error {
    fn from(err: CpuQmmError) -> Self {
        crate::error::Error::Mlx(mlx_rs::error::Exception::custom(err.to_string()))
    }
}

/// Whether quantized products on the CPU use our kernel (a load option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuQmm {
    /// MLX's `quantized_matmul` (the default).
    #[default]
    Mlx,
    /// Ours, wherever it applies (CPU stream, supported format).
    Ours,
    /// Ours with x quantized to int8 per group (the int8 path; see the
    /// module's documentation): faster, rounds x to 8 bits.
    OursQ8,
}

impl CpuQmm {
    /// Whether our kernel takes the products (either path).
    pub fn is_ours(self) -> bool {
        matches!(self, CpuQmm::Ours | CpuQmm::OursQ8)
    }
}

impl std::str::FromStr for CpuQmm {
    type Err = String;

    /// `mlx`, `ours` or `ours-q8`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mlx" => Ok(CpuQmm::Mlx),
            "ours" => Ok(CpuQmm::Ours),
            "ours-q8" => Ok(CpuQmm::OursQ8),
            other => Err(format!("{other:?} is not one of mlx, ours, ours-q8")),
        }
    }
}

/// The instruction set the kernel uses (a cap where passed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable scalar code.
    Scalar,
    /// AVX2 with FMA and F16C (x86-64).
    Avx2,
    /// AVX2 and AVX-VNNI (int8 dot products; the float path as AVX2).
    Avx2Vnni,
    /// AVX-512 F/BW/VL (x86-64).
    Avx512,
    /// AVX-512 and AVX512-VNNI (int8 dot products; the float path as
    /// AVX-512).
    Avx512Vnni,
    /// AVX512-VNNI and AMX-BF16 tiles (Linux): many rows by the tiles, at
    /// float32's accuracy, in place of `sgemm`; fewer as AVX512-VNNI.
    Avx512Amx,
}

impl Isa {
    fn raw(self) -> i32 {
        match self {
            Isa::Scalar => mlx_sys::MLX_SYS_CPU_QMM_ISA_SCALAR as i32,
            Isa::Avx2 => mlx_sys::MLX_SYS_CPU_QMM_ISA_AVX2 as i32,
            Isa::Avx2Vnni => mlx_sys::MLX_SYS_CPU_QMM_ISA_AVX2_VNNI as i32,
            Isa::Avx512 => mlx_sys::MLX_SYS_CPU_QMM_ISA_AVX512 as i32,
            Isa::Avx512Vnni => mlx_sys::MLX_SYS_CPU_QMM_ISA_AVX512_VNNI as i32,
            Isa::Avx512Amx => mlx_sys::MLX_SYS_CPU_QMM_ISA_AVX512_AMX as i32,
        }
    }

    fn from_raw(raw: i32) -> Isa {
        match raw {
            r if r == Isa::Avx512Amx.raw() => Isa::Avx512Amx,
            r if r == Isa::Avx512Vnni.raw() => Isa::Avx512Vnni,
            r if r == Isa::Avx512.raw() => Isa::Avx512,
            r if r == Isa::Avx2Vnni.raw() => Isa::Avx2Vnni,
            r if r == Isa::Avx2.raw() => Isa::Avx2,
            _ => Isa::Scalar,
        }
    }
}

/// The best instruction set the kernel uses on this CPU.
pub fn best_isa() -> Isa {
    isa_under(Isa::Avx512Amx)
}

/// The instruction set the kernel uses on this CPU when capped at `cap`
/// (the best this CPU has at or below it; a CPU may lack one below its
/// best, e.g. AVX-VNNI where it has AVX512-VNNI).
pub fn isa_under(cap: Isa) -> Isa {
    // SAFETY: takes and returns plain integers.
    Isa::from_raw(unsafe { mlx_sys::mlx_sys_cpu_qmm_isa(cap.raw()) })
}

/// Whether the BLAS `sgemm` (for many rows) was found in this process.
pub fn has_sgemm() -> bool {
    // SAFETY: no arguments; looks a symbol up once.
    unsafe { mlx_sys::mlx_sys_cpu_qmm_has_sgemm() != 0 }
}

/// How to run one product (tests vary these; the model uses the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The best instruction set allowed.
    pub max_isa: Isa,
    /// The fewest rows of `x` that take the many-row path (AMX tiles where
    /// the CPU has them, else `sgemm`); 0: that path's default
    /// ([`DEFAULT_TILE_ROWS`], [`DEFAULT_GEMM_ROWS`]).
    pub gemm_rows: i32,
    /// The int8 path (x quantized per group) for fewer rows than
    /// `gemm_rows`.
    pub int8: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_isa: Isa::Avx512Amx,
            gemm_rows: 0,
            int8: false,
        }
    }
}

/// Whether the kernel computes this format: 4 or 8 bits, groups of 32, 64
/// or 128, `x` and the scales in float32, float16 or bfloat16.
pub fn supports(x_dtype: Dtype, scales_dtype: Dtype, group_size: i32, bits: i32) -> bool {
    let float = |d| matches!(d, Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16);
    matches!(bits, 4 | 8)
        && matches!(group_size, 32 | 64 | 128)
        && float(x_dtype)
        && float(scales_dtype)
}

/// `x Wᵀ` for the affine-quantized `W` (`w`, `scales`, `biases` as MLX
/// lays them out) by our kernel, when `kernel` asks for it and the
/// thread's default stream is a CPU stream; `None` otherwise (the caller
/// then uses MLX's `quantized_matmul`).
pub fn cpu_quantized_matmul(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
    kernel: CpuQmm,
) -> Result<Option<Array>, CpuQmmError> {
    let Some((stream, tuning)) = ours_on(x, scales, group_size, bits, kernel) else {
        return Ok(None);
    };
    product(
        x, w, scales, biases, None, group_size, bits, tuning, &stream,
    )
    .map(Some)
}

/// `residual + x Wᵀ` in one primitive, where [`cpu_quantized_matmul`]
/// would take the product and it is float32 with `residual` float32 of
/// its shape (the sum MLX's add gives, without a second operation);
/// `None` otherwise (the caller adds).
#[allow(clippy::too_many_arguments)]
pub fn cpu_quantized_matmul_add(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
    kernel: CpuQmm,
    residual: &Array,
) -> Result<Option<Array>, CpuQmmError> {
    let Some((stream, tuning)) = ours_on(x, scales, group_size, bits, kernel) else {
        return Ok(None);
    };
    let float32 = |d| d == Dtype::Float32;
    let out_shape = x
        .shape()
        .split_last()
        .map(|(_, rows)| [rows, &[w.dim(0)]].concat());
    if !(float32(x.dtype()) || float32(scales.dtype()))
        || !float32(residual.dtype())
        || out_shape.as_deref() != Some(residual.shape())
    {
        return Ok(None);
    }
    product(
        x,
        w,
        scales,
        biases,
        Some(residual),
        group_size,
        bits,
        tuning,
        &stream,
    )
    .map(Some)
}

/// The thread's default stream and the tuning `kernel` asks for, where it
/// asks for our kernel, the kernel computes this format and the stream is
/// a CPU stream.
fn ours_on(
    x: &Array,
    scales: &Array,
    group_size: i32,
    bits: i32,
    kernel: CpuQmm,
) -> Option<(Stream, Tuning)> {
    if !kernel.is_ours() || !supports(x.dtype(), scales.dtype(), group_size, bits) {
        return None;
    }
    let stream = Stream::thread_local_or_default();
    let tuning = Tuning {
        int8: kernel == CpuQmm::OursQ8,
        ..Tuning::default()
    };
    is_cpu(&stream).then_some((stream, tuning))
}

/// `x Wᵀ` by our kernel on `stream` (a CPU stream) with `tuning`; an error
/// where the arrays are not a product it computes (see [`supports`]; the
/// shapes must be `x [..., K]`, `w [N, K * bits / 32]` uint32, `scales`
/// and `biases` `[N, K / group_size]` of one dtype).
#[allow(clippy::too_many_arguments)]
pub fn cpu_quantized_matmul_with(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
    tuning: Tuning,
    stream: &Stream,
) -> Result<Array, CpuQmmError> {
    product(x, w, scales, biases, None, group_size, bits, tuning, stream)
}

/// `x Wᵀ`, plus `residual` where given, by our kernel on `stream`.
#[allow(clippy::too_many_arguments)]
fn product(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    residual: Option<&Array>,
    group_size: i32,
    bits: i32,
    tuning: Tuning,
    stream: &Stream,
) -> Result<Array, CpuQmmError> {
    if !is_cpu(stream) {
        return Err(CpuQmmError::Unsupported(
            "the stream is not a CPU stream".to_owned(),
        ));
    }
    let mut message = [0 as c_char; 512];
    // SAFETY: every handle is a live array or stream owned by the caller
    // (the shim copies what it keeps; `residual` points at a handle that
    // outlives the call, or is null); `res` is a fresh handle that the
    // shim fills on success and we free on failure; `message` is a
    // writable buffer of the length passed, which the shim NUL-terminates.
    unsafe {
        let mut res = mlx_sys::mlx_array_new();
        // A handle to the residual's handle, or null for none.
        let residual = residual.map(Array::as_ptr);
        let residual = residual
            .as_ref()
            .map_or(std::ptr::null(), std::ptr::from_ref);
        let status = mlx_sys::mlx_sys_cpu_qmm(
            &mut res,
            x.as_ptr(),
            w.as_ptr(),
            scales.as_ptr(),
            biases.as_ptr(),
            residual,
            group_size,
            bits,
            tuning.max_isa.raw(),
            tuning.gemm_rows,
            i32::from(tuning.int8),
            stream.as_ptr(),
            message.as_mut_ptr(),
            message.len(),
        );
        if status != 0 {
            mlx_sys::mlx_array_free(res);
            let text = CStr::from_ptr(message.as_ptr())
                .to_string_lossy()
                .into_owned();
            return Err(CpuQmmError::Kernel(text));
        }
        Ok(Array::from_ptr(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_defaults_are_the_kernels() {
        // SAFETY: take and return plain integers.
        let (gemm, tiles) = unsafe {
            (
                mlx_sys::mlx_sys_cpu_qmm_default_gemm_rows(),
                mlx_sys::mlx_sys_cpu_qmm_default_tile_rows(),
            )
        };
        assert_eq!((DEFAULT_GEMM_ROWS, DEFAULT_TILE_ROWS), (gemm, tiles));
    }
}
