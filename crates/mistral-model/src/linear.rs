//! [`Linear`]: `y = x Wᵀ (+ b)` with a [`LinearWeight`] (dense or
//! MLX-quantized), optionally cut into row blocks ([`RowSplit`]) or split
//! over ranks.

use mlx_rs::{
    ops::{addmm, concatenate},
    Array,
};

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::linear_weight::{row_cuts, LinearWeight};
use crate::row_split::RowSplit;
use crate::tensor_parallel::{Split, TensorParallel};
use crate::weights::Weights;

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

    /// `residual + self.forward(x)` (a residual connection), in one launch
    /// of our CUDA kernel where it takes the product of a quantized layer
    /// with no bias, row blocks or ranks; else as the two operations.
    pub fn forward_plus(&self, x: &Array, residual: &Array) -> Result<Array, ModelError> {
        if let (LinearWeight::Quantized(q), None, None, None) =
            (&self.weight, &self.split, &self.reduce, &self.bias)
        {
            if let Some(y) = q.matvec_add(x, residual)? {
                return Ok(y);
            }
        }
        Ok(residual.add(&self.forward(x)?)?)
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
