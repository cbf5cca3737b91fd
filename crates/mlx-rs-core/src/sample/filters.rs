//! The log-probability filters of mlx-lm 0.32.2's `sample_utils.py`
//! (`apply_top_p`, `apply_min_p` with `min_tokens_to_keep = 1`,
//! `apply_top_k`), op for op on the same MLX ops, so that ties and rounding
//! fall the same way. Removed tokens get `-inf`; scalars are cast to the
//! log-probabilities' dtype first, as Python's weakly typed scalars are.

use mlx_rs::{
    error::Exception,
    ops::{argpartition_axis, indexing::TryIndexOp, select, sort_axis},
    Array, Dtype,
};

use crate::error::{Error, Result};

/// A scalar in `dtype` (Python scalars in MLX expressions take the array's
/// dtype).
pub(crate) fn scalar_ops(value: f64, dtype: Dtype) -> MlxResult<Array> {
    Array::from_f32(value as f32).as_dtype(dtype)
}

type MlxResult<T> = std::result::Result<T, Exception>;

/// Keeps the smallest set of most likely tokens whose probability mass
/// reaches `top_p` (nucleus sampling); `logprobs` is `[B, vocab]`.
pub fn apply_top_p(logprobs: &Array, top_p: f32) -> Result<Array> {
    Ok(top_p_ops(logprobs, top_p)?)
}

/// [`apply_top_p`]'s ops (a sampler stage).
pub(crate) fn top_p_ops(logprobs: &Array, top_p: f32) -> MlxResult<Array> {
    let sorted = sort_axis(logprobs, -1)?;
    let sorted_probs = sorted.as_dtype(Dtype::Float32)?.exp()?;
    let mass_above = sorted_probs.cumsum(-1, true, false)?;
    let total_mass = mass_above
        .try_index((.., ..1))?
        .add(sorted_probs.try_index((.., ..1))?)?;
    let limit = total_mass.multiply(Array::from_f32(top_p))?;
    let num_dropped = mass_above
        .ge(&limit)?
        .sum_axis(-1, true)?
        .as_dtype(Dtype::Uint32)?;
    let threshold = sorted.take_along_axis(&num_dropped, -1)?;
    let neg_inf = scalar_ops(f64::NEG_INFINITY, logprobs.dtype())?;
    select(logprobs.lt(&threshold)?, &neg_inf, logprobs)
}

/// Removes tokens less likely than `min_p` times the most likely one.
pub fn apply_min_p(logprobs: &Array, min_p: f32) -> Result<Array> {
    if !(0.0..=1.0).contains(&min_p) {
        return Err(Error::InvalidArgument(format!(
            "min_p must be in [0, 1], got {min_p}"
        )));
    }
    Ok(min_p_ops(logprobs, min_p)?)
}

/// [`apply_min_p`]'s ops (a sampler stage; `min_p` checked by the caller).
pub(crate) fn min_p_ops(logprobs: &Array, min_p: f32) -> MlxResult<Array> {
    let top = logprobs.max_axis(-1, true)?;
    let scaled_min_p = top.add(scalar_ops(f64::from(min_p).ln(), logprobs.dtype())?)?;
    let neg_inf = scalar_ops(f64::NEG_INFINITY, logprobs.dtype())?;
    select(logprobs.lt(&scaled_min_p)?, &neg_inf, logprobs)
}

/// Keeps the `top_k` most likely tokens (`0 < top_k < vocab`).
pub fn apply_top_k(logprobs: &Array, top_k: i32) -> Result<Array> {
    check_top_k(top_k, logprobs.dim(-1))?;
    Ok(top_k_ops(logprobs, top_k)?)
}

/// Checks `0 < top_k < vocab`.
pub(crate) fn check_top_k(top_k: i32, vocab: i32) -> Result<()> {
    if !(0 < top_k && top_k < vocab) {
        return Err(Error::InvalidArgument(format!(
            "top_k must be in (0, {vocab}), got {top_k}"
        )));
    }
    Ok(())
}

/// [`apply_top_k`]'s ops (a sampler stage; `top_k` checked by the caller).
pub(crate) fn top_k_ops(logprobs: &Array, top_k: i32) -> MlxResult<Array> {
    let order = argpartition_axis(logprobs.negative()?, top_k - 1, -1)?;
    let mask_idx = order.try_index((.., top_k..))?;
    let neg_inf = scalar_ops(f64::NEG_INFINITY, logprobs.dtype())?;
    logprobs.put_along_axis(&mask_idx, &neg_inf, -1)
}
