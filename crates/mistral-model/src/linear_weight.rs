//! [`LinearWeight`]: a linear layer's matrix, dense, transposed or
//! MLX-quantized ([`QuantizedWeight`]), and the products it computes.
//!
//! The quantized form is MLX's affine format as written by `mlx_lm.convert`:
//! `weight` is uint32 `[out, in * bits / 32]` (elements packed from the low
//! bits up), `scales` and `biases` are `[out, in / group_size]`, and an
//! element is `scale * q + bias` of its group. Which form a module has is
//! decided by the config's quantization block (per-module entries first) and
//! checked against the tensors present.

use mlx_rs::{
    ops::{concatenate, dequantize, quantized_matmul, split_at_indices},
    Array, Dtype,
};

use mlx_rs_core::cpu_qmm::CpuQmm;
use mlx_rs_core::quantized_matvec::QmvKernel;

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::quantization::QuantParams;
use crate::weights::Weights;

/// Most rows a stack of quantized matrices may have. MLX 0.32's CUDA
/// backend computes a one-row quantized product with its matrix-vector
/// kernel only up to 16384 output rows on sm90 GPUs (H100, H200), and with
/// a matrix-matrix kernel, of other rounding, beyond: a stack past that
/// would no longer give each layer's own product (Mistral 7B's gate and up,
/// 14336 rows each, stay apart), unless our own kernel takes it
/// (`WeightOptions::qmv`, [`mlx_rs_core::quantized_matvec::takes_one_row`]).
const QUANTIZED_STACK_MAX_ROWS: i64 = 16384;

/// A matrix the config quantizes stored without `scales`: as mlx-lm loads
/// it (quantized where `scales` are present), a floating-point `weight` is
/// the dense matrix (`mlx_lm.convert` leaves a matrix whose input size is
/// not a multiple of the group size as it was, with no entry of its own in
/// the config); a packed one is an error.
pub(crate) fn unquantized(
    weights: &mut Weights,
    rows: i32,
    cols: i32,
    params: QuantParams,
) -> Result<Array, ModelError> {
    let weight = weights.require("weight")?;
    if !weight.dtype().is_float() {
        return Err(ModelError::Quantization {
            tensor: weights.path("scales"),
            message: format!(
                "is missing, but the config quantizes `{}` ({}-bit, group size {})",
                weights.module_path(),
                params.bits,
                params.group_size
            ),
        });
    }
    weights.check_shape("weight", &weight, &[rows, cols])?;
    weights.cast(weight)
}

/// An MLX affine-quantized matrix `[rows, cols]`.
#[derive(Debug, Clone)]
pub struct QuantizedWeight {
    /// Packed elements, uint32 `[rows, cols * bits / 32]`.
    pub weight: Array,
    /// Per-group scales, `[rows, cols / group_size]`.
    pub scales: Array,
    /// Per-group biases, `[rows, cols / group_size]`.
    pub biases: Array,
    /// Group size and bit width.
    pub params: QuantParams,
    /// Which one-row products our CUDA kernel takes (the load's option).
    pub kernel: QmvKernel,
    /// Whether our CPU kernel computes its products on the CPU (the load's
    /// option).
    pub cpu: CpuQmm,
}

impl QuantizedWeight {
    /// Takes `weight` and `biases` of the module `weights` points at (its
    /// `scales` already taken), checking them against a logical
    /// `[rows, cols]` matrix.
    pub fn load(
        weights: &mut Weights,
        rows: i32,
        cols: i32,
        params: QuantParams,
        scales: Array,
    ) -> Result<Self, ModelError> {
        let QuantParams { group_size, bits } = params;
        let describe = format!(
            "the config quantizes `{}` ({bits}-bit, group size {group_size})",
            weights.module_path()
        );
        let Some(packed_bits) = cols.checked_mul(bits) else {
            return Err(ModelError::Quantization {
                tensor: weights.path("weight"),
                message: format!(
                    "{describe}, but its input size {cols} times {bits} bits overflows"
                ),
            });
        };
        if cols % group_size != 0 || packed_bits % 32 != 0 {
            return Err(ModelError::Quantization {
                tensor: weights.path("weight"),
                message: format!(
                    "{describe}, but its input size {cols} is not a multiple of the group size \
                     and of 32 / gcd(32, bits)"
                ),
            });
        }
        let groups = [rows, cols / group_size];
        let packed = weights.exact("weight", &[rows, packed_bits / 32], Dtype::Uint32)?;
        let (scales, biases) = scales_and_biases(weights, scales, &groups)?;
        Ok(QuantizedWeight {
            weight: mlx_rs_core::read_slack::with_read_slack(&packed)?,
            scales,
            biases,
            params,
            kernel: weights.options().qmv,
            cpu: weights.options().cpu_qmm,
        })
    }

    /// `x Wᵀ` with the fused quantized kernel: MLX's, or when asked for,
    /// our own: on NVIDIA GPUs for decode's few rows
    /// ([`mlx_rs_core::quantized_matvec`]), on the CPU for any number of
    /// rows ([`mlx_rs_core::cpu_qmm`]).
    pub fn matmul_t(&self, x: &Array) -> Result<Array, ModelError> {
        if let Some(y) = mlx_rs_core::cpu_qmm::cpu_quantized_matmul(
            x,
            &self.weight,
            &self.scales,
            &self.biases,
            self.params.group_size,
            self.params.bits,
            self.cpu,
        )
        .map_err(mlx_rs_core::Error::from)?
        {
            return Ok(y);
        }
        if let Some(y) = mlx_rs_core::quantized_matvec::quantized_matvec(
            x,
            &self.weight,
            &self.scales,
            &self.biases,
            self.params.group_size,
            self.params.bits,
            self.kernel,
        )? {
            return Ok(y);
        }
        Ok(quantized_matmul(
            x,
            &self.weight,
            &self.scales,
            &self.biases,
            true,
            self.params.group_size,
            self.params.bits,
        )?)
    }

    /// `silu(x Gᵀ) * (x Uᵀ)` for this matrix stacking a gate matrix G over
    /// an up matrix U of as many rows, in one launch of our CUDA kernel
    /// where it takes this product
    /// ([`mlx_rs_core::quantized_matvec::quantized_matvec_swiglu`]);
    /// `None` otherwise.
    pub fn matvec_swiglu(&self, x: &Array) -> Result<Option<Array>, ModelError> {
        Ok(mlx_rs_core::quantized_matvec::quantized_matvec_swiglu(
            x,
            &self.weight,
            &self.scales,
            &self.biases,
            self.params.group_size,
            self.params.bits,
            self.kernel,
        )?)
    }

    /// `residual + x Wᵀ` in one operation: one launch of our CUDA kernel
    /// where it takes this product
    /// ([`mlx_rs_core::quantized_matvec::quantized_matvec_add`]), or our
    /// CPU kernel's primitive where it takes it in float32
    /// ([`mlx_rs_core::cpu_qmm::cpu_quantized_matmul_add`]); `None`
    /// otherwise.
    pub fn matvec_add(&self, x: &Array, residual: &Array) -> Result<Option<Array>, ModelError> {
        if let Some(y) = mlx_rs_core::cpu_qmm::cpu_quantized_matmul_add(
            x,
            &self.weight,
            &self.scales,
            &self.biases,
            self.params.group_size,
            self.params.bits,
            self.cpu,
            residual,
        )
        .map_err(mlx_rs_core::Error::from)?
        {
            return Ok(Some(y));
        }
        Ok(mlx_rs_core::quantized_matvec::quantized_matvec_add(
            x,
            &self.weight,
            &self.scales,
            &self.biases,
            self.params.group_size,
            self.params.bits,
            self.kernel,
            residual,
        )?)
    }

    /// The dequantized matrix `[rows, cols]` (dtype of the scales).
    pub fn dequantize(&self) -> Result<Array, ModelError> {
        Ok(dequantize(
            &self.weight,
            &self.scales,
            &self.biases,
            self.params.group_size,
            self.params.bits,
        )?)
    }
}

/// The checked scales (already taken) and biases of a quantized matrix:
/// cast to the compute dtype, or, where the load narrows scales
/// (`WeightOptions::narrow_scales`), in the narrowest half-precision dtype
/// that holds both exactly.
fn scales_and_biases(
    weights: &mut Weights,
    scales: Array,
    groups: &[i32],
) -> Result<(Array, Array), ModelError> {
    let scales = weights.check_float_stored("scales", scales, groups)?;
    let biases = weights.float_stored("biases", groups)?;
    if weights.options().narrow_scales {
        if let Some(narrow) = narrowed(&scales, &biases)? {
            return Ok(narrow);
        }
    }
    Ok((weights.cast(scales)?, weights.cast(biases)?))
}

/// `scales` and `biases` in float16 or bfloat16 (evaluated) when both are
/// stored in that dtype or hold only its values; `None` otherwise.
fn narrowed(scales: &Array, biases: &Array) -> Result<Option<(Array, Array)>, ModelError> {
    let half = |d| matches!(d, Dtype::Float16 | Dtype::Bfloat16);
    if scales.dtype() == biases.dtype() && half(scales.dtype()) {
        return Ok(Some((scales.clone(), biases.clone())));
    }
    if scales.dtype() != Dtype::Float32 || biases.dtype() != Dtype::Float32 {
        return Ok(None);
    }
    for dtype in [Dtype::Float16, Dtype::Bfloat16] {
        let (s, b) = (scales.as_dtype(dtype)?, biases.as_dtype(dtype)?);
        if round_trips(&s, scales)? && round_trips(&b, biases)? {
            s.eval()?;
            b.eval()?;
            return Ok(Some((s, b)));
        }
    }
    Ok(None)
}

/// Whether `narrow` widened back equals `wide` everywhere (a NaN never
/// does: such a tensor keeps its dtype).
fn round_trips(narrow: &Array, wide: &Array) -> Result<bool, ModelError> {
    Ok(narrow.as_dtype(wide.dtype())?.eq_values(wide)?)
}

/// The weight of a linear map or embedding table: dense or quantized.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// A floating-point matrix `[rows, cols]`.
    Dense(Array),
    /// A floating-point matrix stored transposed, `[cols, rows]` contiguous
    /// (see `WeightOptions::transpose_f32`); only for linear layers.
    Transposed(Array),
    /// An MLX affine-quantized matrix.
    Quantized(QuantizedWeight),
}

impl LinearWeight {
    /// Takes the weight of the module `weights` points at, a logical
    /// `[rows, cols]` matrix, in the form the config gives for that module
    /// (dense after all when `weights` asks for dequantization). A `scales`
    /// tensor for a module the config leaves unquantized is an error naming
    /// it.
    pub fn load(
        cfg: &MistralConfig,
        weights: &mut Weights,
        rows: i32,
        cols: i32,
    ) -> Result<Self, ModelError> {
        match cfg.quantization_for(weights.module_path()) {
            Some(params) => {
                let Some(scales) = weights.take("scales") else {
                    return unquantized(weights, rows, cols, params).map(LinearWeight::Dense);
                };
                let quantized = QuantizedWeight::load(weights, rows, cols, params, scales)?;
                if !weights.dequantize() {
                    return Ok(LinearWeight::Quantized(quantized));
                }
                let dense = quantized.dequantize()?;
                dense.eval()?;
                Ok(LinearWeight::Dense(dense))
            }
            None => {
                if weights.take("scales").is_some() {
                    return Err(ModelError::Quantization {
                        tensor: weights.path("scales"),
                        message: format!(
                            "is present, but the config leaves `{}` unquantized",
                            weights.module_path()
                        ),
                    });
                }
                Ok(LinearWeight::Dense(weights.float("weight", &[rows, cols])?))
            }
        }
    }

    /// Bytes held (packed weight, scales and biases when quantized).
    pub fn weight_bytes(&self) -> u64 {
        match self {
            LinearWeight::Dense(w) | LinearWeight::Transposed(w) => w.nbytes() as u64,
            LinearWeight::Quantized(q) => {
                (q.weight.nbytes() + q.scales.nbytes() + q.biases.nbytes()) as u64
            }
        }
    }

    /// The layout `WeightOptions::transpose_f32` asks for (when `transpose`
    /// is set): a dense float32 matrix stored transposed (`[cols, rows]`,
    /// contiguous, evaluated); `None` for any other weight.
    pub fn transposed_f32(&self, transpose: bool) -> Result<Option<LinearWeight>, ModelError> {
        match self {
            LinearWeight::Dense(w) if transpose && w.dtype() == Dtype::Float32 => {
                let transposed = w.transpose()?.contiguous()?;
                transposed.eval()?;
                Ok(Some(LinearWeight::Transposed(transposed)))
            }
            _ => Ok(None),
        }
    }

    /// The matrix cut by rows at `bounds` (ascending, inside the matrix)
    /// into `bounds.len() + 1` blocks: views of its buffer (no copy),
    /// evaluated. `None` for a transposed matrix.
    pub fn row_blocks(&self, bounds: &[i32]) -> Result<Option<Vec<LinearWeight>>, ModelError> {
        let cut = |a: &Array| row_cuts(a, bounds);
        Ok(Some(match self {
            LinearWeight::Dense(w) => cut(w)?.into_iter().map(LinearWeight::Dense).collect(),
            LinearWeight::Quantized(q) => {
                let (packed, scales, biases) = (cut(&q.weight)?, cut(&q.scales)?, cut(&q.biases)?);
                packed
                    .into_iter()
                    .zip(scales)
                    .zip(biases)
                    .map(|((weight, scales), biases)| {
                        LinearWeight::Quantized(QuantizedWeight {
                            weight,
                            scales,
                            biases,
                            params: q.params,
                            kernel: q.kernel,
                            cpu: q.cpu,
                        })
                    })
                    .collect()
            }
            LinearWeight::Transposed(_) => return Ok(None),
        }))
    }

    /// The matrices of `parts` stacked by rows into one (a copy,
    /// evaluated), or `None` where they differ in form, dtype, input size
    /// or quantization, are transposed, or are quantized and would stack
    /// past [`QUANTIZED_STACK_MAX_ROWS`] for MLX's kernel.
    pub(crate) fn stack_rows(parts: &[&LinearWeight]) -> Result<Option<LinearWeight>, ModelError> {
        let stack = |arrays: Vec<&Array>| -> Result<Option<Array>, ModelError> {
            let first = arrays[0];
            let alike = arrays.iter().all(|a| {
                a.dtype() == first.dtype() && a.ndim() == 2 && a.shape()[1] == first.shape()[1]
            });
            if !alike {
                return Ok(None);
            }
            let stacked = concatenate(&arrays, 0)?;
            stacked.eval()?;
            Ok(Some(stacked))
        };
        if parts.is_empty() {
            return Ok(None);
        }
        if let Some(dense) = parts
            .iter()
            .map(|p| match p {
                LinearWeight::Dense(w) => Some(w),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            return Ok(stack(dense)?.map(LinearWeight::Dense));
        }
        let Some(quantized) = parts
            .iter()
            .map(|p| match p {
                LinearWeight::Quantized(q) => Some(q),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let first = quantized[0];
        if quantized.iter().any(|q| q.params != first.params) {
            return Ok(None);
        }
        let rows: i64 = quantized
            .iter()
            .map(|q| i64::from(q.weight.shape()[0]))
            .sum();
        // Past MLX's limit only where our own kernel takes the product.
        let ours = || {
            let QuantParams { group_size, bits } = first.params;
            let k = first.weight.shape()[1] * 32 / bits;
            i32::try_from(rows).is_ok_and(|n| {
                mlx_rs_core::quantized_matvec::takes_one_row(
                    n,
                    k,
                    group_size,
                    bits,
                    first.scales.dtype(),
                    first.kernel,
                )
            })
        };
        if rows > QUANTIZED_STACK_MAX_ROWS && !ours() {
            return Ok(None);
        }
        let field = |f: fn(&QuantizedWeight) -> &Array| quantized.iter().map(|q| f(q)).collect();
        let (Some(weight), Some(scales), Some(biases)) = (
            stack(field(|q| &q.weight))?,
            stack(field(|q| &q.scales))?,
            stack(field(|q| &q.biases))?,
        ) else {
            return Ok(None);
        };
        Ok(Some(LinearWeight::Quantized(QuantizedWeight {
            weight: mlx_rs_core::read_slack::with_read_slack(&weight)?,
            scales,
            biases,
            params: first.params,
            kernel: first.kernel,
            cpu: first.cpu,
        })))
    }

    /// `x Wᵀ`.
    pub fn matmul_t(&self, x: &Array) -> Result<Array, ModelError> {
        match self {
            LinearWeight::Dense(w) => Ok(x.matmul(w.transpose()?)?),
            LinearWeight::Transposed(w) => Ok(x.matmul(w)?),
            LinearWeight::Quantized(q) => q.matmul_t(x),
        }
    }
}

/// `a` cut along its first axis at `bounds`: views of its buffer (no copy),
/// evaluated.
pub(crate) fn row_cuts(a: &Array, bounds: &[i32]) -> Result<Vec<Array>, ModelError> {
    let pieces = split_at_indices(a, bounds, 0)?;
    for piece in &pieces {
        piece.eval()?;
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Array {
        Array::from_slice(v, &[1, v.len() as i32])
    }

    #[test]
    fn narrows_scales_only_where_exact() {
        // float16 values (GGUF's d and m, -8 d): float16.
        let (s, b) = (
            f32s(&[0.5, 0.375, 2f32.powi(-24)]),
            f32s(&[-4.0, -0.0234375, 1.0]),
        );
        let (s16, b16) = narrowed(&s, &b).unwrap().expect("float16 values");
        assert_eq!((s16.dtype(), b16.dtype()), (Dtype::Float16, Dtype::Float16));
        assert!(s16.as_dtype(Dtype::Float32).unwrap().eq_values(&s).unwrap());
        // Past float16's range but bfloat16 values: bfloat16.
        let (s, b) = (f32s(&[1048576.0]), f32s(&[-2.0]));
        let (sb, _) = narrowed(&s, &b).unwrap().expect("bfloat16 values");
        assert_eq!(sb.dtype(), Dtype::Bfloat16);
        // Q4_K's d * sc (17 significant bits): kept.
        let s = f32s(&[1.0 + 2f32.powi(-16)]);
        assert!(narrowed(&s, &f32s(&[0.0])).unwrap().is_none());
        // A NaN never compares equal: kept.
        assert!(narrowed(&f32s(&[f32::NAN]), &f32s(&[0.0]))
            .unwrap()
            .is_none());
        // Stored half precision stays as it is.
        let h = f32s(&[0.5]).as_dtype(Dtype::Bfloat16).unwrap();
        let (s, _) = narrowed(&h, &h).unwrap().expect("stored bfloat16");
        assert_eq!(s.dtype(), Dtype::Bfloat16);
    }
}
