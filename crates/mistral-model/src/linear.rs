//! [`Linear`]: `y = x Wᵀ (+ b)` with a dense or an MLX-quantized weight.
//!
//! The quantized form is MLX's affine format as written by `mlx_lm.convert`:
//! `weight` is uint32 `[out, in * bits / 32]` (elements packed from the low
//! bits up), `scales` and `biases` are `[out, in / group_size]`, and an
//! element is `scale * q + bias` of its group. Which form a module has is
//! decided by the config's quantization block (per-module entries first) and
//! checked against the tensors present.

use mlx_rs::{
    ops::{addmm, concatenate, dequantize, quantized_matmul, split_at_indices},
    Array, Dtype,
};

use mlx_rs_core::cpu_qmm::CpuQmm;
use mlx_rs_core::quantized_matvec::QmvKernel;

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::quantization::QuantParams;
use crate::row_split::RowSplit;
use crate::tensor_parallel::{Split, TensorParallel};
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
        let scales = check_scales(weights, "scales", scales, &groups)?;
        let biases = weights.float("biases", &groups)?;
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
        .map_err(mlx_rs_core::error::Error::from)?
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
    fn stack_rows(parts: &[&LinearWeight]) -> Result<Option<LinearWeight>, ModelError> {
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
fn row_cuts(a: &Array, bounds: &[i32]) -> Result<Vec<Array>, ModelError> {
    let pieces = split_at_indices(a, bounds, 0)?;
    for piece in &pieces {
        piece.eval()?;
    }
    Ok(pieces)
}

/// Where each of `parts`' outputs ends when their outputs are laid side by
/// side, less the last: the cuts of a stack of their rows.
pub(crate) fn output_bounds(parts: &[Linear]) -> Vec<i32> {
    let mut bounds = Vec::with_capacity(parts.len().saturating_sub(1));
    let mut end = 0;
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        end += part.out_dim();
        bounds.push(end);
    }
    bounds
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
    /// `Wᵀ` of a float weight, so the product is `x` times it: a dense
    /// weight's transposed view (the same buffer, evaluated once here, so a
    /// step's graph holds no transpose per product: on a GPU, where decode
    /// waits on the host, every node costs host time), or the stored
    /// transposed matrix. `None` for a quantized weight.
    transposed: Option<Array>,
}

/// `Wᵀ` of `weight` (see `Linear::transposed`), `None` when quantized.
fn transposed(weight: &LinearWeight) -> Result<Option<Array>, ModelError> {
    match weight {
        LinearWeight::Dense(w) => {
            let t = w.transpose()?;
            t.eval()?;
            Ok(Some(t))
        }
        LinearWeight::Transposed(t) => Ok(Some(t.clone())),
        LinearWeight::Quantized(_) => Ok(None),
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
            transposed: transposed(&weight)?,
            weight,
            split,
            bias,
            reduce: None,
        })
    }

    /// The layer `name` of the module `weights` points at, split over the
    /// model's ranks by `split` (see [`TensorParallel`](crate::TensorParallel)); as
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
            transposed: transposed(&weight)?,
            weight,
            split: None,
            bias,
            reduce: None,
        })
    }

    /// `parts` (layers of one input) stacked by output rows into one layer,
    /// and each part rebuilt on a view of its rows of the stacked weight
    /// (and bias), so the parts hold no memory of their own. `None` when
    /// they cannot be stacked: a part cut into row blocks or summed over
    /// ranks, weights of different forms, dtypes or quantization, quantized
    /// weights of more than 16384 rows together (see
    /// `QUANTIZED_STACK_MAX_ROWS`), or biases on some parts only.
    pub fn stack_rows(parts: &[Linear]) -> Result<Option<(Linear, Vec<Linear>)>, ModelError> {
        if parts
            .iter()
            .any(|p| p.split.is_some() || p.reduce.is_some())
        {
            return Ok(None);
        }
        let weights: Vec<&LinearWeight> = parts.iter().map(|p| &p.weight).collect();
        let Some(weight) = LinearWeight::stack_rows(&weights)? else {
            return Ok(None);
        };
        let biases: Option<Vec<&Array>> = parts.iter().map(|p| p.bias.as_ref()).collect();
        let bias = match biases {
            Some(biases) => {
                let bias = concatenate(&biases, 0)?;
                bias.eval()?;
                Some(bias)
            }
            None if parts.iter().any(|p| p.bias.is_some()) => return Ok(None),
            None => None,
        };
        let bounds = output_bounds(parts);
        let Some(blocks) = weight.row_blocks(&bounds)? else {
            return Ok(None);
        };
        let bias_blocks = match &bias {
            Some(b) => row_cuts(b, &bounds)?.into_iter().map(Some).collect(),
            None => vec![None; blocks.len()],
        };
        let views = blocks
            .into_iter()
            .zip(bias_blocks)
            .map(|(w, b)| Linear::from_parts(w, b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((Linear::from_parts(weight, bias)?, views)))
    }

    /// Number of outputs (rows of the weight).
    pub fn out_dim(&self) -> i32 {
        match &self.weight {
            LinearWeight::Dense(w) => w.shape()[0],
            LinearWeight::Transposed(w) => w.shape()[1],
            LinearWeight::Quantized(q) => q.weight.shape()[0],
        }
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
            return match (&self.transposed, &self.bias) {
                (Some(t), Some(b)) => Ok(addmm(b, x, t, 1.0, 1.0)?),
                (Some(t), None) => Ok(x.matmul(t)?),
                (None, None) => self.weight.matmul_t(x),
                (None, Some(b)) => Ok(self.weight.matmul_t(x)?.add(b)?),
            };
        }
        let mut y = match (&self.split, &self.transposed) {
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
