//! [`Linear`]: `y = x Wᵀ (+ b)` with a dense or an MLX-quantized weight.
//!
//! The quantized form is MLX's affine format as written by `mlx_lm.convert`:
//! `weight` is uint32 `[out, in * bits / 32]` (elements packed from the low
//! bits up), `scales` and `biases` are `[out, in / group_size]`, and an
//! element is `scale * q + bias` of its group. Which form a module has is
//! decided by the config's quantization block (per-module entries first) and
//! checked against the tensors present.

use mlx_rs::{
    ops::{addmm, dequantize, quantized_matmul},
    Array, Dtype,
};

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::quantization::QuantParams;
use crate::row_split::RowSplit;
use crate::tensor_parallel::{Split, TensorParallel};
use crate::weights::Weights;

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
}

impl QuantizedWeight {
    /// Takes `weight`, `scales` and `biases` of the module `weights` points
    /// at, checking them against a logical `[rows, cols]` matrix.
    pub fn load(
        weights: &mut Weights,
        rows: i32,
        cols: i32,
        params: QuantParams,
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
        let Some(scales) = weights.take("scales") else {
            return Err(ModelError::Quantization {
                tensor: weights.path("scales"),
                message: format!("is missing, but {describe}"),
            });
        };
        let groups = [rows, cols / group_size];
        let packed = weights.exact("weight", &[rows, packed_bits / 32], Dtype::Uint32)?;
        let scales = check_scales(weights, "scales", scales, &groups)?;
        let biases = weights.float("biases", &groups)?;
        Ok(QuantizedWeight {
            weight: packed,
            scales,
            biases,
            params,
        })
    }

    /// `x Wᵀ` with the fused quantized kernel: MLX's, or on NVIDIA GPUs,
    /// when asked for, our own for decode's few rows
    /// ([`mlx_rs_core::quantized_matvec`]).
    pub fn matmul_t(&self, x: &Array) -> Result<Array, ModelError> {
        if let Some(y) = mlx_rs_core::quantized_matvec::quantized_matvec(
            x,
            &self.weight,
            &self.scales,
            &self.biases,
            self.params.group_size,
            self.params.bits,
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

fn check_scales(
    weights: &Weights,
    name: &str,
    scales: Array,
    shape: &[i32],
) -> Result<Array, ModelError> {
    if !scales.dtype().is_float() {
        return Err(ModelError::Dtype {
            tensor: weights.path(name),
            expected: "a floating-point type".to_owned(),
            found: scales.dtype(),
        });
    }
    weights.check_shape(name, &scales, shape)?;
    weights.cast(scales)
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
                let quantized = QuantizedWeight::load(weights, rows, cols, params)?;
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

    /// `x Wᵀ`.
    pub fn matmul_t(&self, x: &Array) -> Result<Array, ModelError> {
        match self {
            LinearWeight::Dense(w) => Ok(x.matmul(w.transpose()?)?),
            LinearWeight::Transposed(w) => Ok(x.matmul(w)?),
            LinearWeight::Quantized(q) => q.matmul_t(x),
        }
    }
}

/// A linear layer `y = x Wᵀ + b` (bias optional), `W` being `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    /// The weight in row blocks on separate streams, when the options ask.
    split: Option<RowSplit>,
    bias: Option<Array>,
    /// Split by input columns over these ranks: the product is summed over
    /// them before the bias.
    reduce: Option<TensorParallel>,
    /// A dense weight's transpose: a view of the same buffer, evaluated once
    /// here, so a step's graph holds no transpose per product (on a GPU,
    /// where decode waits on the host, every node costs host time).
    dense_t: Option<Array>,
}

/// The evaluated transposed view of a dense weight (no copy: MLX's
/// transpose shares the buffer), `None` for any other form.
fn transposed_view(weight: &LinearWeight) -> Result<Option<Array>, ModelError> {
    match weight {
        LinearWeight::Dense(w) => {
            let t = w.transpose()?;
            t.eval()?;
            Ok(Some(t))
        }
        LinearWeight::Transposed(_) | LinearWeight::Quantized(_) => Ok(None),
    }
}

impl Linear {
    /// Takes the layer's tensors (`weight`, and `scales`/`biases` if
    /// quantized, `bias` if `bias`) from the module `weights` points at.
    pub fn new(
        cfg: &MistralConfig,
        weights: &mut Weights,
        in_dim: i32,
        out_dim: i32,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let mut weight = LinearWeight::load(cfg, weights, out_dim, in_dim)?;
        if let Some(transposed) = weight.transposed_f32(weights.transpose_f32())? {
            weight = transposed;
        }
        let split = RowSplit::new(&weight, weights.row_split())?;
        let bias = if bias {
            Some(weights.float("bias", &[out_dim])?)
        } else {
            None
        };
        Ok(Linear {
            dense_t: transposed_view(&weight)?,
            weight,
            split,
            bias,
            reduce: None,
        })
    }

    /// The layer `name` of the module `weights` points at, split over the
    /// model's ranks by `split` (see [`crate::tensor_parallel`]); as
    /// [`Linear::new`] when the model is not split.
    pub fn sharded(
        cfg: &MistralConfig,
        weights: &mut Weights,
        name: &str,
        (in_dim, out_dim): (i32, i32),
        bias: bool,
        split: Split,
    ) -> Result<Self, ModelError> {
        let Some(parallel) = weights.tensor_parallel().cloned() else {
            return Linear::new(cfg, &mut weights.pp(name), in_dim, out_dim, bias);
        };
        let mut view = weights.sharded(name, split);
        let what = view.module_path().to_owned();
        match split {
            Split::Outputs => {
                let out = parallel.divide(out_dim, &format!("the outputs of `{what}`"))?;
                Linear::new(cfg, &mut view, in_dim, out, bias)
            }
            Split::Inputs => {
                let cols = parallel.divide(in_dim, &format!("the inputs of `{what}`"))?;
                if let Some(q) = cfg.quantization_for(&what) {
                    if cols % q.group_size != 0 {
                        return Err(ModelError::TensorParallel(format!(
                            "`{what}` is quantized in groups of {}, and a rank's {cols} of its \
                             {in_dim} inputs are not whole groups",
                            q.group_size
                        )));
                    }
                }
                let mut layer = Linear::new(cfg, &mut view, cols, out_dim, bias)?;
                layer.reduce = Some(parallel);
                Ok(layer)
            }
        }
    }

    /// A layer from already-checked parts (a dense weight must be
    /// evaluable: its transposed view is evaluated here).
    pub fn from_parts(weight: LinearWeight, bias: Option<Array>) -> Result<Self, ModelError> {
        Ok(Linear {
            dense_t: transposed_view(&weight)?,
            weight,
            split: None,
            bias,
            reduce: None,
        })
    }

    /// The weight.
    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Array> {
        self.bias.as_ref()
    }

    /// Bytes held by the weight and bias.
    pub fn weight_bytes(&self) -> u64 {
        self.weight.weight_bytes() + self.bias.as_ref().map_or(0, |b| b.nbytes() as u64)
    }

    /// Applies the layer to `x` `[..., in]`, giving `[..., out]`.
    pub fn forward(&self, x: &Array) -> Result<Array, ModelError> {
        if self.split.is_none() && self.reduce.is_none() {
            // One product, with the bias fused where MLX can (addmm).
            let transposed = match (&self.dense_t, &self.weight) {
                (Some(t), _) | (None, LinearWeight::Transposed(t)) => Some(t),
                _ => None,
            };
            return match (transposed, &self.bias) {
                (Some(t), Some(b)) => Ok(addmm(b, x, t, 1.0, 1.0)?),
                (Some(t), None) => Ok(x.matmul(t)?),
                (None, None) => self.weight.matmul_t(x),
                (None, Some(b)) => Ok(self.weight.matmul_t(x)?.add(b)?),
            };
        }
        let mut y = match (&self.split, &self.dense_t) {
            (Some(split), _) => split.matmul_t(x)?,
            (None, Some(t)) => x.matmul(t)?,
            (None, None) => self.weight.matmul_t(x)?,
        };
        // Input columns split over ranks: sum the partial products first,
        // so the bias is added once.
        if let Some(parallel) = &self.reduce {
            y = parallel.all_sum(&y)?;
        }
        match &self.bias {
            Some(b) => Ok(y.add(b)?),
            None => Ok(y),
        }
    }
}
