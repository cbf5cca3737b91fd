//! Room after a packed quantized matrix for MLX 0.32.2's CUDA
//! `quantized_matmul`, whose many-row kernel (`qmm_sm80_kernel`) reads a
//! few bytes past the end of the packed weights in its last block.
//! compute-sanitizer reports it on the 4-bit test model's head (see
//! BENCHMARKS.md); where the next bytes are unmapped, the read aborts the
//! process with an illegal memory access. On a CUDA GPU the matrix gets a
//! copy with zero rows after it, and the model holds a view of its own
//! rows, so the stray reads land inside the allocation.

use mlx_rs::{
    ops::{concatenate, indexing::TryIndexOp, zeros_dtype},
    Array,
};

use crate::error::Result;

/// Bytes of zeros kept after a packed matrix: more than one row of the
/// kernel's K-tile (64 elements) at any width seen, at most a few rows.
pub const SLACK_BYTES: i32 = 4096;

/// `packed` (a 2-D packed matrix) in an allocation with at least
/// [`SLACK_BYTES`] of zeros after its rows, on MLX's CUDA build on a GPU;
/// `packed` itself elsewhere (the CPU kernels stay inside their inputs).
pub fn with_read_slack(packed: &Array) -> Result<Array> {
    if !(cfg!(feature = "cuda") && crate::runtime::on_gpu()) || packed.ndim() != 2 {
        return Ok(packed.clone());
    }
    let (rows, cols) = (packed.dim(0), packed.dim(1));
    let row_bytes = (cols * packed.item_size() as i32).max(1);
    let extra = (SLACK_BYTES + row_bytes - 1) / row_bytes;
    let zeros = zeros_dtype(&[extra, cols], packed.dtype())?;
    let roomy = concatenate(&[packed.clone(), zeros], 0)?;
    roomy.eval()?;
    // A prefix of rows: row-contiguous, the same buffer, no copy when used.
    let view = roomy.try_index(..rows)?;
    view.eval()?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_values_and_only_pads_on_a_cuda_gpu() {
        let packed = Array::from_slice(&[1u32, 2, 3, 4, 5, 6], &[3, 2]);
        let out = with_read_slack(&packed).unwrap();
        assert_eq!(out.shape(), &[3, 2]);
        assert_eq!(out.as_slice::<u32>(), &[1, 2, 3, 4, 5, 6]);
    }
}
