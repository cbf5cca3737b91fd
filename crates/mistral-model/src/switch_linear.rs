//! [`SwitchLinear`]: a stack of linear maps, `[count, out, in]`, dense or
//! MLX-quantized (mlx-lm `switch_layers.py`'s `SwitchLinear` and
//! `QuantizedSwitchLinear`, `mla.py`'s `MultiLinear`): a mixture of
//! experts' projections, taken per token through MLX's `gather_mm` /
//! `gather_qmm`, and Mistral 4's per-head attention matrices, applied to
//! every head at once. Loaded stacked (mlx-community) or stacked here from
//! one module per expert (Mistral's layouts), and cut per rank for tensor
//! parallelism.

use mlx_rs::{
    ops::{dequantize, gather_mm, gather_qmm, stack},
    Array, Dtype,
};
use mlx_rs_core::runtime::on_gpu;
use std::sync::OnceLock;

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::linear_weight::LinearWeight;
use crate::quantization::QuantParams;
use crate::tensor_parallel::{Split, TensorParallel};
use crate::weights::Weights;

/// The experts' matrices of one projection, `[experts, out, in]`.
#[derive(Debug, Clone)]
pub enum SwitchLinear {
    /// Floating-point matrices.
    Dense(Array),
    /// MLX affine-quantized matrices: packed `weight`
    /// `[experts, out, in * bits / 32]`, `scales` and `biases`
    /// `[experts, out, in / group_size]`.
    Quantized {
        /// Packed elements.
        weight: Array,
        /// Per-group scales.
        scales: Array,
        /// Per-group biases.
        biases: Array,
        /// Group size and bit width.
        params: QuantParams,
    },
}

impl SwitchLinear {
    /// Takes the stacked projection of the module `weights` points at
    /// (`.../switch_mlp.gate_proj`), `experts` matrices of `[rows, cols]`;
    /// its `weight` is `taken` when the caller already took it.
    pub fn stacked(
        cfg: &MistralConfig,
        weights: &mut Weights,
        (experts, rows, cols): (i32, i32, i32),
        taken: Option<Array>,
    ) -> Result<Self, ModelError> {
        let weight = match taken {
            Some(w) => w,
            None => weights.require("weight")?,
        };
        // A floating-point stack is dense even where the config's default
        // quantizes: `mlx_lm.convert` leaves what does not divide into groups
        // as it was (mlx-lm loads by the presence of `scales`).
        let params = cfg
            .quantization_for(weights.module_path())
            .filter(|_| !weight.dtype().is_float());
        let Some(params) = params else {
            if !weight.dtype().is_float() {
                return Err(ModelError::Dtype {
                    tensor: weights.path("weight"),
                    expected: "a floating-point type".to_owned(),
                    found: weight.dtype(),
                });
            }
            weights.check_shape("weight", &weight, &[experts, rows, cols])?;
            return Ok(SwitchLinear::Dense(weights.cast(weight)?));
        };
        let QuantParams { group_size, bits } = params;
        if cols % group_size != 0 || (cols * bits) % 32 != 0 {
            return Err(ModelError::Quantization {
                tensor: weights.path("weight"),
                message: format!(
                    "its input size {cols} is not a multiple of the group size {group_size} \
                     and of 32 / gcd(32, {bits})"
                ),
            });
        }
        let groups = [experts, rows, cols / group_size];
        if weight.dtype() != Dtype::Uint32 {
            return Err(ModelError::Dtype {
                tensor: weights.path("weight"),
                expected: format!("{:?} (the config quantizes it)", Dtype::Uint32),
                found: weight.dtype(),
            });
        }
        weights.check_shape("weight", &weight, &[experts, rows, cols * bits / 32])?;
        let scales = weights.float("scales", &groups)?;
        let biases = weights.float("biases", &groups)?;
        let layer = SwitchLinear::Quantized {
            weight,
            scales,
            biases,
            params,
        };
        if weights.dequantize() {
            return layer.dequantized();
        }
        Ok(layer)
    }

    /// Stacks per-expert modules (`experts.{e}.{name}` of the module
    /// `weights` points at), each a `[rows, cols]` linear map.
    pub fn per_expert(
        cfg: &MistralConfig,
        weights: &mut Weights,
        name: &str,
        experts: i32,
        rows: i32,
        cols: i32,
    ) -> Result<Self, ModelError> {
        let mut parts = Vec::with_capacity(experts as usize);
        for e in 0..experts {
            let mut view = weights.pp(format!("experts.{e}.{name}"));
            parts.push(LinearWeight::load(cfg, &mut view, rows, cols)?);
        }
        let dense: Option<Vec<&Array>> = parts
            .iter()
            .map(|p| match p {
                LinearWeight::Dense(w) => Some(w),
                _ => None,
            })
            .collect();
        if let Some(dense) = dense {
            let w = stack(&dense, 0)?;
            w.eval()?;
            return Ok(SwitchLinear::Dense(w));
        }
        let quantized: Option<Vec<_>> = parts
            .iter()
            .map(|p| match p {
                LinearWeight::Quantized(q) => Some(q),
                _ => None,
            })
            .collect();
        let Some(quantized) =
            quantized.filter(|q| q.windows(2).all(|w| w[0].params == w[1].params))
        else {
            return Err(ModelError::Quantization {
                tensor: weights.path(&format!("experts.0.{name}.weight")),
                message: "the experts of one projection are not all stored alike".to_owned(),
            });
        };
        // Scales and biases in the compute dtype: MLX's `gather_qmm`, not our
        // CPU kernel, multiplies a stack, so scales the load narrowed for
        // that kernel (`WeightOptions::narrow_scales`) are widened back
        // here, once, instead of by MLX at every step.
        let compute = weights.dtype();
        let pick = |f: fn(&crate::linear_weight::QuantizedWeight) -> &Array,
                    dtype: Option<Dtype>|
         -> Result<Array, ModelError> {
            let parts = quantized
                .iter()
                .map(|q| match dtype {
                    Some(d) if d != f(q).dtype() => f(q).as_dtype(d),
                    _ => Ok(f(q).clone()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let a = stack(&parts, 0)?;
            a.eval()?;
            Ok(a)
        };
        Ok(SwitchLinear::Quantized {
            weight: pick(|q| &q.weight, None)?,
            scales: pick(|q| &q.scales, compute)?,
            biases: pick(|q| &q.biases, compute)?,
            params: quantized[0].params,
        })
    }

    /// The stack as [`SwitchLinear::matmul_each`] can use it on this device:
    /// MLX 0.32.2's CUDA backend has no quantized product for Mistral 4's
    /// small per-head stacks (`embed_q`, K = 32, group 32: "No implementation
    /// for problem shape"), so on a GPU a quantized one is held dequantized.
    pub(crate) fn for_matmul_each(self) -> Result<Self, ModelError> {
        match self {
            SwitchLinear::Quantized { .. } if computes_on_gpu() => self.dequantized(),
            other => Ok(other),
        }
    }

    /// The dense form of a quantized stack (itself when dense).
    fn dequantized(self) -> Result<Self, ModelError> {
        let w = self.dense_weight()?;
        w.eval()?;
        Ok(SwitchLinear::Dense(w))
    }

    /// The matrices as floating point: dequantized when quantized.
    fn dense_weight(&self) -> Result<Array, ModelError> {
        Ok(match self {
            SwitchLinear::Dense(w) => w.clone(),
            SwitchLinear::Quantized {
                weight,
                scales,
                biases,
                params,
            } => dequantize(weight, scales, biases, params.group_size, params.bits)?,
        })
    }

    /// This rank's block of every expert (see the module note): output rows
    /// for [`Split::Outputs`], input columns for [`Split::Inputs`]; `what`
    /// names the projection in errors.
    pub(crate) fn shard(
        self,
        split: Split,
        parallel: &TensorParallel,
        what: &str,
    ) -> Result<Self, ModelError> {
        let (rank, size) = (parallel.rank(), parallel.size());
        // The block of `a` along `axis`, copied so the whole can be freed.
        let cut = |a: &Array, axis: i32| -> Result<Array, ModelError> {
            let n = a.dim(axis);
            let part = parallel.divide(n, &format!("`{what}` along axis {axis}"))?;
            let indices = Array::from_iter(rank * part..(rank + 1) * part, &[part]);
            let block = a.take_axis(&indices, axis)?.contiguous()?;
            block.eval()?;
            Ok(block)
        };
        let axis = match split {
            Split::Outputs => 1,
            Split::Inputs => 2,
        };
        Ok(match self {
            SwitchLinear::Dense(w) => SwitchLinear::Dense(cut(&w, axis)?),
            SwitchLinear::Quantized {
                weight,
                scales,
                biases,
                params,
            } => {
                if split == Split::Inputs && (scales.dim(2) % size) != 0 {
                    return Err(ModelError::TensorParallel(format!(
                        "`{what}` is quantized in groups of {}, and its {} groups of inputs do \
                         not divide by the {size} ranks",
                        params.group_size,
                        scales.dim(2)
                    )));
                }
                SwitchLinear::Quantized {
                    weight: cut(&weight, axis)?,
                    scales: cut(&scales, axis)?,
                    biases: cut(&biases, axis)?,
                    params,
                }
            }
        })
    }

    /// Bytes held.
    pub fn weight_bytes(&self) -> u64 {
        match self {
            SwitchLinear::Dense(w) => w.nbytes() as u64,
            SwitchLinear::Quantized {
                weight,
                scales,
                biases,
                ..
            } => (weight.nbytes() + scales.nbytes() + biases.nbytes()) as u64,
        }
    }

    /// `x @ Wᵀ` (`transpose`) or `x @ W` for every matrix of the stack, `x`'s
    /// leading axes broadcast against the stack's (Mistral 4's per-head
    /// matrices).
    pub fn matmul_each(&self, x: &Array, transpose: bool) -> Result<Array, ModelError> {
        Ok(match self {
            SwitchLinear::Dense(w) if transpose => x.matmul(w.swap_axes(-1, -2)?)?,
            SwitchLinear::Dense(w) => x.matmul(w)?,
            SwitchLinear::Quantized {
                weight,
                scales,
                biases,
                params,
            } => mlx_rs::ops::quantized_matmul(
                x,
                weight,
                scales,
                biases,
                transpose,
                params.group_size,
                params.bits,
            )?,
        })
    }

    /// `x` `[..., 1, in]` through expert `indices[...]` each, giving
    /// `[..., 1, out]` (`x`'s batch axes broadcast against `indices`).
    pub fn forward(&self, x: &Array, indices: &Array, sorted: bool) -> Result<Array, ModelError> {
        Ok(match self {
            // MLX 0.32's CPU `gather_mm` takes float32 only: half-precision
            // experts multiply in float32 there, rounded back (the values a
            // half-precision product of MLX's CPU gives).
            SwitchLinear::Dense(w) if w.dtype() != Dtype::Float32 && !computes_on_gpu() => {
                let f32 = |a: &Array| a.as_dtype(Dtype::Float32);
                gather_mm(f32(x)?, f32(w)?.swap_axes(-1, -2)?, None, indices, sorted)?
                    .as_dtype(x.dtype())?
            }
            SwitchLinear::Dense(w) => gather_mm(x, w.swap_axes(-1, -2)?, None, indices, sorted)?,
            SwitchLinear::Quantized {
                weight,
                scales,
                biases,
                params,
            } => gather_qmm(
                x,
                weight,
                scales,
                biases,
                None,
                indices,
                true,
                params.group_size,
                params.bits,
                sorted,
            )?,
        })
    }
}

/// Whether MLX computes on a GPU in this process, asked once: the experts'
/// products ask at every step, and the device does not change.
fn computes_on_gpu() -> bool {
    static GPU: OnceLock<bool> = OnceLock::new();
    *GPU.get_or_init(on_gpu)
}
