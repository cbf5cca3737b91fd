//! [`on_rows`]: a layer's 3-D `forward` through its `forward_rows`.
//!
//! The model runs its layers on rows, `[B * L, hidden]` (see
//! [`Attention::forward_rows`](crate::Attention::forward_rows)); the layers
//! keep a `forward` over `[B, L, hidden]` for callers that hold that shape.

use mlx_rs::Array;

use crate::error::ModelError;

/// `rows` applied to `x` `[B, L, hidden]` as `[B * L, hidden]` with the
/// batch shape `(B, L)`, and its `[B * L, out]` given back as `[B, L, out]`.
/// `what` names the input in the error for an `x` that is not 3-D.
pub(crate) fn on_rows(
    x: &Array,
    what: &str,
    rows: impl FnOnce(&Array, (i32, i32)) -> Result<Array, ModelError>,
) -> Result<Array, ModelError> {
    if x.ndim() != 3 {
        return Err(ModelError::Input(format!(
            "{what} must be [batch, length, hidden], got shape {:?}",
            x.shape()
        )));
    }
    let (b, l, d) = (x.dim(0), x.dim(1), x.dim(2));
    let out = rows(&x.reshape(&[b * l, d])?, (b, l))?;
    Ok(out.reshape(&[b, l, -1])?)
}
