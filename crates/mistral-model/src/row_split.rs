//! [`RowSplit`]: a matrix cut by rows into parts, each multiplied on its own
//! MLX stream, so one product uses several CPU cores.
//!
//! Design note: MLX's CPU kernels for bfloat16/float16 matmuls and for the
//! quantized matmul run on one thread (float32 goes to a multi-threaded
//! BLAS), so in the checkpoint's dtype a model uses one core. Rows of
//! `x Wᵀ` are independent: part `i` computes columns `rows_i` of the output
//! on side stream `i - 1` (part 0 on the default stream), and the parts are
//! concatenated. Each output element is computed by the same kernel over the
//! same inputs as without the split (the unit tests check bit equality). The
//! parts are views of the matrix (no extra memory).

use mlx_rs::{ops::concatenate, Array, Dtype};
use mlx_rs_core::streams::on_side_stream;

use crate::error::ModelError;
use crate::linear_weight::LinearWeight;

/// Fewest rows a part may have: below this the extra operation costs more
/// than the core it gains.
const MIN_PART_ROWS: i32 = 128;

/// A matrix `[rows, cols]` as row blocks computed on separate streams.
#[derive(Debug, Clone)]
pub struct RowSplit {
    parts: Vec<LinearWeight>,
}

impl RowSplit {
    /// `weight` cut into `parts` row blocks, or `None` where a split does not
    /// pay: fewer than two parts asked, too few rows, or a float32 matrix
    /// (MLX's CPU backend hands those to a multi-threaded BLAS).
    pub fn new(weight: &LinearWeight, parts: usize) -> Result<Option<RowSplit>, ModelError> {
        let rows = match weight {
            LinearWeight::Dense(w) if w.dtype() != Dtype::Float32 => w.shape()[0],
            // Our CPU kernel uses every core itself.
            LinearWeight::Quantized(q) if q.cpu.is_ours() => return Ok(None),
            LinearWeight::Quantized(q) => q.weight.shape()[0],
            _ => return Ok(None),
        };
        let parts = (parts.min(i32::MAX as usize) as i32).min(rows / MIN_PART_ROWS);
        if parts < 2 {
            return Ok(None);
        }
        // Boundaries on multiples of 32 rows, as even as that allows.
        let bounds: Vec<i32> = (1..parts)
            .map(|i| (rows as i64 * i as i64 / parts as i64) as i32 / 32 * 32)
            .collect();
        let Some(parts) = weight.row_blocks(&bounds)? else {
            return Ok(None);
        };
        Ok(Some(RowSplit { parts }))
    }

    /// Number of parts.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Always false: a split has at least two parts.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// `x Wᵀ`, part `i > 0` on side stream `i - 1`.
    pub fn matmul_t(&self, x: &Array) -> Result<Array, ModelError> {
        let mut outputs = Vec::with_capacity(self.parts.len());
        for (i, part) in self.parts.iter().enumerate() {
            outputs.push(match i {
                0 => part.matmul_t(x)?,
                _ => on_side_stream(i - 1, || part.matmul_t(x))?,
            });
        }
        Ok(concatenate(&outputs, -1)?)
    }
}

#[cfg(test)]
mod tests {
    use mlx_rs::{ops::quantize, random};

    use super::*;
    use crate::linear_weight::QuantizedWeight;
    use crate::quantization::QuantParams;

    fn matrix(rows: i32, cols: i32, dtype: Dtype) -> Array {
        let key = random::key(7).unwrap();
        random::normal::<f32>(&[rows, cols], None, None, &key)
            .unwrap()
            .as_dtype(dtype)
            .unwrap()
    }

    fn assert_same_product(weight: &LinearWeight, parts: usize, x: &Array) {
        let split = RowSplit::new(weight, parts).unwrap().expect("a split");
        assert_eq!(split.len(), parts);
        let whole = weight.matmul_t(x).unwrap();
        let pieces = split.matmul_t(x).unwrap();
        assert_eq!(whole.shape(), pieces.shape());
        assert!(whole.eq_values(&pieces).unwrap());
    }

    #[test]
    fn dense_half_precision_products_are_bit_equal_to_the_whole() {
        for dtype in [Dtype::Bfloat16, Dtype::Float16] {
            let weight = LinearWeight::Dense(matrix(1000, 256, dtype));
            for rows in [1, 7] {
                let x = matrix(rows, 256, dtype);
                assert_same_product(&weight, 2, &x);
                assert_same_product(&weight, 3, &x);
            }
        }
    }

    #[test]
    fn quantized_products_are_bit_equal_to_the_whole() {
        let dense = matrix(640, 256, Dtype::Bfloat16);
        for bits in [4, 8] {
            let (weight, scales, biases) = quantize(&dense, 64, bits).unwrap();
            let weight = LinearWeight::Quantized(QuantizedWeight {
                weight,
                scales,
                biases,
                params: QuantParams {
                    group_size: 64,
                    bits,
                },
                kernel: Default::default(),
                cpu: Default::default(),
            });
            let x = matrix(5, 256, Dtype::Bfloat16);
            assert_same_product(&weight, 2, &x);
        }
    }

    #[test]
    fn float32_and_small_matrices_are_not_split() {
        let f32_weight = LinearWeight::Dense(matrix(1024, 64, Dtype::Float32));
        assert!(RowSplit::new(&f32_weight, 2).unwrap().is_none());
        let small = LinearWeight::Dense(matrix(200, 64, Dtype::Bfloat16));
        assert!(RowSplit::new(&small, 2).unwrap().is_none());
        let bf16 = LinearWeight::Dense(matrix(1024, 64, Dtype::Bfloat16));
        assert!(RowSplit::new(&bf16, 1).unwrap().is_none());
    }
}
