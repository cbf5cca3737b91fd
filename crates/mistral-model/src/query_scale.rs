//! Llama 4's position-dependent query scale, which Ministral 3 uses:
//! queries at position `p` are multiplied by
//! `1 + beta * ln(1 + floor(p / n))` (mlx-lm `ministral3.py`'s
//! `_get_llama_4_attn_scale`, computed in float32 in the same order, then
//! cast to the queries' dtype).

use mlx_rs::{ops::maximum, Array, Dtype};
use mlx_rs_core::Positions;

use crate::error::ModelError;

/// The scale to multiply `[B, heads, L, head_dim]` queries by, for `len`
/// new positions starting at `positions`: `[L, 1]` for shared positions,
/// `[B, 1, L, 1]` per row. A negative position counts as 0 (a log of 0
/// would give NaN; the caches give none).
pub(crate) fn query_scale(
    positions: &Positions,
    len: i32,
    (beta, n): (f32, i32),
    dtype: Dtype,
) -> Result<Array, ModelError> {
    let steps = Array::from_iter(0..len, &[len]);
    let (positions, shape) = match positions {
        Positions::Shared(offset) => (steps.add(Array::from_int(*offset))?, vec![len, 1]),
        Positions::PerRow(offsets) => {
            let rows = offsets.dim(0);
            let per_row = offsets.reshape(&[rows, 1])?.add(&steps)?;
            (
                maximum(&per_row, Array::from_int(0))?,
                vec![rows, 1, len, 1],
            )
        }
    };
    let windows = positions.divide(Array::from_int(n))?.floor()?;
    let scale = Array::from_f32(1.0)
        .add(&windows)?
        .log()?
        .multiply(Array::from_f32(beta))?;
    let scale = Array::from_f32(1.0).add(&scale)?;
    Ok(scale.reshape(&shape)?.as_dtype(dtype)?)
}
