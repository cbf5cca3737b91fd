//! [`write_positions`]: new keys or values written into a cache buffer as a
//! single MLX `SliceUpdate` node.
//!
//! Why not `try_index_mut`: for an update with leading dimensions of size 1
//! (a batch of one, as in every decode step) mlx-rs 0.33 first reshapes the
//! update to drop them and then reshapes it back to the buffer's rank, so
//! each write adds two `Reshape` nodes to the graph that MLX's Python
//! indexing (and so mlx-lm) does not: four per layer and token. On a GPU
//! every node costs host time in each step. This calls mlx-c's
//! `mlx_slice_update` with the update as it is.

use mlx_rs::{error::Exception, Array, Stream};

use crate::error::{Error, Result};

/// `buf` with `update` written at positions `start..start + L` of axis 2;
/// both are `[B, H, _, D]`, `update` `[B, H, L, D]`.
pub(crate) fn write_positions(buf: &Array, update: &Array, start: i32) -> Result<Array> {
    let (b_shape, u_shape) = (buf.shape(), update.shape());
    let fits = b_shape.len() == 4
        && u_shape.len() == 4
        && b_shape[0] == u_shape[0]
        && b_shape[1] == u_shape[1]
        && b_shape[3] == u_shape[3]
        && start >= 0
        && start
            .checked_add(u_shape[2])
            .is_some_and(|end| end <= b_shape[2]);
    if !fits {
        return Err(Error::InvalidArgument(format!(
            "cache write: an update of shape {u_shape:?} does not fit a buffer of shape \
             {b_shape:?} at position {start}"
        )));
    }
    let starts = [0, 0, start, 0];
    let stops = [b_shape[0], b_shape[1], start + u_shape[2], b_shape[3]];
    let strides = [1i32; 4];
    crate::runtime::ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    // SAFETY: `res` is a fresh array handle that mlx-c fills on success and
    // that becomes the returned Array (freed on its drop) or is freed here;
    // the index slices live for the call and their lengths are passed.
    unsafe {
        let mut res = mlx_sys::mlx_array_new();
        let status = mlx_sys::mlx_slice_update(
            &mut res,
            buf.as_ptr(),
            update.as_ptr(),
            starts.as_ptr(),
            starts.len(),
            stops.as_ptr(),
            stops.len(),
            strides.as_ptr(),
            strides.len(),
            stream.as_ptr(),
        );
        if status != 0 {
            mlx_sys::mlx_array_free(res);
            return Err(Error::Mlx(Exception::custom(format!(
                "cache write of shape {u_shape:?} into {b_shape:?} at position {start} failed"
            ))));
        }
        Ok(Array::from_ptr(res))
    }
}

#[cfg(test)]
mod tests {
    use mlx_rs::ops::indexing::{Ellipsis, TryIndexMutOp};

    use super::*;

    fn numbered(shape: &[i32]) -> Array {
        let n: i32 = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|v| v as f32).collect();
        Array::from_slice(&values, shape)
    }

    /// The same values as mlx-rs's indexed write, for a batch of one and of
    /// two, at the start, inside and at the end of the buffer.
    #[test]
    fn writes_what_indexing_writes() {
        for (b, start, len) in [(1, 0, 3), (1, 5, 1), (2, 2, 4), (1, 7, 1)] {
            let buf = numbered(&[b, 2, 8, 4]);
            let update = numbered(&[b, 2, len, 4])
                .multiply(Array::from_f32(-1.0))
                .unwrap();
            let ours = write_positions(&buf, &update, start).unwrap();
            let mut theirs = buf.clone();
            theirs
                .try_index_mut((Ellipsis, start..start + len, ..), &update)
                .unwrap();
            assert_eq!(
                ours.as_slice::<f32>(),
                theirs.as_slice::<f32>(),
                "b {b}, start {start}, len {len}"
            );
        }
    }

    #[test]
    fn an_update_that_does_not_fit_is_an_error() {
        let buf = numbered(&[1, 2, 8, 4]);
        for (update, start) in [
            (numbered(&[1, 2, 2, 4]), 7),
            (numbered(&[1, 2, 1, 4]), -1),
            (numbered(&[1, 3, 1, 4]), 0),
            (numbered(&[1, 2, 1, 5]), 0),
            (numbered(&[2, 1, 4]), 0),
        ] {
            let err = write_positions(&buf, &update, start).unwrap_err();
            assert!(err.to_string().contains("does not fit"), "{err}");
        }
    }
}
