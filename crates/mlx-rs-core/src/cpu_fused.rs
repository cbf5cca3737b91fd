//! CPU kernels of our own for the fast ops of a decode step (RMSNorm, RoPE,
//! one-query attention, SwiGLU; `crates/mlx-sys/csrc/cpu_fused.cpp`), each
//! one MLX primitive on the CPU stream.
//!
//! Why: MLX 0.32 has no CPU kernels for `fast::rms_norm`, `fast::rope` and
//! `fast::scaled_dot_product_attention`; on the CPU each expands into its
//! fallback graph (11, 29 and 12 primitives), and every primitive costs host
//! time to build and dispatch on every step. On a narrow, deep model
//! (SmolLM2-135M: 30 layers of width 576) these make up most of a decode
//! step's primitives (see docs/performance.md). MLX compiles SwiGLU
//! (`silu(gate) * up`, [`swiglu`]) into one primitive, but runs it on the
//! CPU as scalar code with a call per element; ours is vectorized.
//!
//! The functions here pick ours where the caller asks for it
//! ([`CpuFast::Ours`], a load option), the thread's default stream is a
//! CPU stream and the inputs are float32 (`--dtype auto` on the CPU), and
//! MLX's op everywhere else: a GPU keeps MLX's fused kernels, and half
//! types keep MLX's fallbacks, whose roundings after each step make our
//! half-precision logits bit-identical to mlx-lm's (ours round once: as
//! close to MLX's op as tested in `tests/cpu_fused.rs`, not identical).
//! The kernels themselves take float32, float16 and bfloat16.

use std::ffi::CStr;
use std::os::raw::c_char;

use mlx_rs::{error::Exception, fast, nn::silu, transforms::compile::compile, Array, Stream};

use crate::cache::StoredKv;
use crate::error::Result;
use crate::mask::SdpaMask;
use crate::streams::is_cpu;

/// Whether the fast ops on the CPU use our kernels (a load option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuFast {
    /// MLX's ops (on the CPU: their decomposed fallback graphs).
    #[default]
    Mlx,
    /// Ours, wherever they apply (CPU stream, supported case).
    Ours,
}

impl std::str::FromStr for CpuFast {
    type Err = String;

    /// `mlx` or `ours`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mlx" => Ok(CpuFast::Mlx),
            "ours" => Ok(CpuFast::Ours),
            other => Err(format!("{other:?} is not one of mlx, ours")),
        }
    }
}

/// Errors of our fused CPU ops.
#[derive(Debug, thiserror::Error)]
pub enum CpuFusedError {
    /// The stream is not a CPU stream.
    #[error("fused CPU op: the stream is not a CPU stream")]
    NotCpu,
    /// The kernel's C++ side refused the arrays (its message).
    #[error("fused CPU op refused: {0}")]
    Kernel(String),
}

impl From<CpuFusedError> for crate::error::Error {
    fn from(err: CpuFusedError) -> Self {
        crate::error::Error::Mlx(mlx_rs::error::Exception::custom(err.to_string()))
    }
}

/// Whether every array is float32 (where ours are chosen).
pub(crate) fn all_f32(arrays: &[&Array]) -> bool {
    arrays.iter().all(|a| a.dtype() == mlx_rs::Dtype::Float32)
}

/// The thread's default stream when `kind` asks for ours and it is a CPU
/// stream.
pub(crate) fn ours_on(kind: CpuFast) -> Option<Stream> {
    if kind != CpuFast::Ours {
        return None;
    }
    let stream = Stream::thread_local_or_default();
    is_cpu(&stream).then_some(stream)
}

/// Runs one of the shim's builders of one result: `f(res, err, err_len)`
/// returns 0 and fills `res`, or 1 and a message.
fn build(
    f: impl FnOnce(*mut mlx_sys::mlx_array, *mut c_char, usize) -> i32,
) -> std::result::Result<Array, CpuFusedError> {
    let [res] = build_all(|[res], err, len| f(res, err, len))?;
    Ok(res)
}

/// Runs one of the shim's builders of `N` results: `f(res, err, err_len)`
/// returns 0 and fills every handle of `res`, or 1 and a message.
pub(crate) fn build_all<const N: usize>(
    f: impl FnOnce(&mut [mlx_sys::mlx_array; N], *mut c_char, usize) -> i32,
) -> std::result::Result<[Array; N], CpuFusedError> {
    let mut message = [0 as c_char; 512];
    // SAFETY: the handles of `res` are fresh ones that the shim fills on
    // success (they then become the returned arrays, freed on their drop)
    // and that are freed here on failure; `message` is a writable buffer of
    // the length passed, which the shim NUL-terminates.
    unsafe {
        let mut res: [mlx_sys::mlx_array; N] = std::array::from_fn(|_| mlx_sys::mlx_array_new());
        if f(&mut res, message.as_mut_ptr(), message.len()) != 0 {
            for handle in res {
                mlx_sys::mlx_array_free(handle);
            }
            let text = CStr::from_ptr(message.as_ptr())
                .to_string_lossy()
                .into_owned();
            return Err(CpuFusedError::Kernel(text));
        }
        Ok(res.map(|handle| Array::from_ptr(handle)))
    }
}

/// `fast::rms_norm(x, weight, eps)` by our kernel on `stream` (a CPU
/// stream): `x [..., D]`, `weight [D]`.
pub fn cpu_rms_norm(
    x: &Array,
    weight: &Array,
    eps: f32,
    stream: &Stream,
) -> std::result::Result<Array, CpuFusedError> {
    if !is_cpu(stream) {
        return Err(CpuFusedError::NotCpu);
    }
    // SAFETY: live array and stream handles owned by the caller (the shim
    // copies what it keeps); `res`, `err` as `build` passes them.
    build(|res, err, len| unsafe {
        mlx_sys::mlx_sys_cpu_rms_norm(
            res,
            x.as_ptr(),
            weight.as_ptr(),
            eps,
            stream.as_ptr(),
            err,
            len,
        )
    })
}

/// `fast::rope(x, dims, traditional, base, scale, offset, freqs)` by our
/// kernel on `stream` (a CPU stream): `x [..., L, D]`; `freqs` `[dims / 2]`
/// replaces `base` where given.
#[allow(clippy::too_many_arguments)]
pub fn cpu_rope(
    x: &Array,
    dims: i32,
    traditional: bool,
    base: f32,
    scale: f32,
    offset: i32,
    freqs: Option<&Array>,
    stream: &Stream,
) -> std::result::Result<Array, CpuFusedError> {
    if !is_cpu(stream) {
        return Err(CpuFusedError::NotCpu);
    }
    // The shim reads `freqs` only when given; a placeholder otherwise.
    let none = Array::from_f32(0.0);
    let f = freqs.unwrap_or(&none);
    // SAFETY: as in `cpu_rms_norm`.
    build(|res, err, len| unsafe {
        mlx_sys::mlx_sys_cpu_rope(
            res,
            x.as_ptr(),
            dims,
            traditional,
            base,
            scale,
            offset,
            f.as_ptr(),
            freqs.is_some(),
            stream.as_ptr(),
            err,
            len,
        )
    })
}

/// `fast::scaled_dot_product_attention(q, k, v, scale)` without a mask by
/// our kernel on `stream` (a CPU stream), for one query position:
/// `q [B, Hq, 1, D]`, `k [B, Hkv, N, D]`, `v [B, Hkv, N, Dv]`.
pub fn cpu_decode_attention(
    queries: &Array,
    keys: &Array,
    values: &Array,
    scale: f32,
    stream: &Stream,
) -> std::result::Result<Array, CpuFusedError> {
    if !is_cpu(stream) {
        return Err(CpuFusedError::NotCpu);
    }
    // SAFETY: as in `cpu_rms_norm`.
    build(|res, err, len| unsafe {
        mlx_sys::mlx_sys_cpu_decode_attention(
            res,
            queries.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            scale,
            stream.as_ptr(),
            err,
            len,
        )
    })
}

/// RMS normalization of `x` `[..., D]` scaled by `weight` `[D]`: ours on a
/// CPU stream for float32 where `kind` asks for it, else MLX's
/// `fast::rms_norm`.
pub fn rms_norm(x: &Array, weight: &Array, eps: f32, kind: CpuFast) -> Result<Array> {
    match ours_on(kind) {
        Some(stream) if all_f32(&[x, weight]) => Ok(cpu_rms_norm(x, weight, eps, &stream)?),
        _ => Ok(fast::rms_norm(x, Some(weight), eps)?),
    }
}

/// Rotary embedding of `x` `[B, H, L, D]` at one `offset`: ours on a CPU
/// stream for float32 where `kind` asks for it, else MLX's `fast::rope`. `base` is
/// `None` exactly when `freqs` is given.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &Array,
    dims: i32,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: i32,
    freqs: Option<&Array>,
    kind: CpuFast,
) -> Result<Array> {
    match ours_on(kind) {
        Some(stream) if x.ndim() >= 3 && all_f32(&[x]) && (base.is_some() || freqs.is_some()) => {
            Ok(cpu_rope(
                x,
                dims,
                traditional,
                base.unwrap_or(0.0),
                scale,
                offset,
                freqs,
                &stream,
            )?)
        }
        _ => Ok(fast::rope(
            x,
            dims,
            traditional,
            base,
            scale,
            offset,
            freqs,
        )?),
    }
}

/// A layer's attention over its stored keys and values
/// ([`attention`](crate::attention)): ours on a CPU stream where `kind`
/// asks for it and the step is one query position over dense float32
/// keys and values without a mask (decode), else MLX's.
pub fn attention(
    queries: &Array,
    stored: &StoredKv,
    scale: f32,
    mask: &SdpaMask,
    kind: CpuFast,
) -> Result<Array> {
    if let (StoredKv::Dense { keys, values }, SdpaMask::None) = (stored, mask) {
        let decode = queries.ndim() == 4 && queries.dim(2) == 1 && keys.ndim() == 4;
        if decode && all_f32(&[queries, keys, values]) {
            if let Some(stream) = ours_on(kind) {
                return Ok(cpu_decode_attention(queries, keys, values, scale, &stream)?);
            }
        }
    }
    crate::attention(queries, stored, scale, mask)
}

/// `silu(gate) * up` by our kernel on `stream` (a CPU stream): float32
/// arrays of one shape.
pub fn cpu_swiglu(
    gate: &Array,
    up: &Array,
    stream: &Stream,
) -> std::result::Result<Array, CpuFusedError> {
    if !is_cpu(stream) {
        return Err(CpuFusedError::NotCpu);
    }
    // SAFETY: as in `cpu_rms_norm`.
    build(|res, err, len| unsafe {
        mlx_sys::mlx_sys_cpu_swiglu(res, gate.as_ptr(), up.as_ptr(), stream.as_ptr(), err, len)
    })
}

/// `log(sum(exp(x)))` over the last axis of `x` `[..., N]`, kept (`[...,
/// 1]`), by our kernel on `stream` (a CPU stream): float32, `N > 0`.
pub fn cpu_logsumexp(x: &Array, stream: &Stream) -> std::result::Result<Array, CpuFusedError> {
    if !is_cpu(stream) {
        return Err(CpuFusedError::NotCpu);
    }
    // SAFETY: as in `cpu_rms_norm`.
    build(|res, err, len| unsafe {
        mlx_sys::mlx_sys_cpu_logsumexp(res, x.as_ptr(), stream.as_ptr(), err, len)
    })
}

/// `log(sum(exp(x)))` over the last axis of `x`, kept, by ours on a CPU
/// stream for float32 where `kind` asks for it (MLX's CPU kernel is
/// scalar: a sampler's normalizer over a vocabulary took about 5% of a
/// SmolLM2 decode step); `None` otherwise (the caller keeps MLX's op).
pub fn logsumexp(x: &Array, kind: CpuFast) -> Result<Option<Array>> {
    match ours_on(kind) {
        Some(stream) if all_f32(&[x]) && x.ndim() >= 1 && x.dim(-1) > 0 => {
            Ok(Some(cpu_logsumexp(x, &stream)?))
        }
        _ => Ok(None),
    }
}

/// A compiled function of arrays giving arrays.
type Compiled = Box<dyn FnMut(&[Array]) -> std::result::Result<Vec<Array>, Exception>>;

thread_local! {
    /// The one compiled `swiglu` of this thread: MLX caches a trace per
    /// compiled function, so compiling once avoids re-tracing every call.
    static SWIGLU: std::cell::RefCell<Compiled> = std::cell::RefCell::new(Box::new(compile(
        |args: &[Array]| -> std::result::Result<Vec<Array>, Exception> {
            Ok(vec![silu(&args[0])?.multiply(&args[1])?])
        },
        true,
    )));
}

/// `silu(gate) * up`: ours on a CPU stream for float32 where `kind` asks
/// for it, else compiled (shapeless) as mlx-lm compiles its `swiglu` (on
/// a GPU MLX fuses it into one kernel).
pub fn swiglu(gate: &Array, up: &Array, kind: CpuFast) -> Result<Array> {
    if let Some(stream) = ours_on(kind) {
        if all_f32(&[gate, up]) && gate.shape() == up.shape() {
            return Ok(cpu_swiglu(gate, up, &stream)?);
        }
    }
    SWIGLU.with(|f| {
        let mut out = (f.borrow_mut())(&[gate.clone(), up.clone()])?;
        Ok(out
            .pop()
            .ok_or_else(|| Exception::custom("the compiled swiglu gave no output"))?)
    })
}
