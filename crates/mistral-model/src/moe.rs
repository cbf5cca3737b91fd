//! [`SparseMoe`]: Mixtral's sparse mixture of experts (mlx-lm
//! `mixtral.py`'s `MixtralSparseMoeBlock` over `switch_layers.py`'s
//! `SwitchGLU`), and [`SwitchLinear`], one linear map per expert stacked
//! into one `[experts, out, in]` matrix (dense or MLX-quantized).
//!
//! A router (`gate`) scores the experts; each token goes to its top
//! `num_experts_per_tok`, whose scores are softmaxed among themselves and
//! weight the experts' SwiGLU outputs. The experts' products are MLX's
//! `gather_mm` / `gather_qmm`, which pick each token's expert matrices
//! without a loop over experts; with 64 or more (token, expert) pairs the
//! pairs are sorted by expert first, as mlx-lm does, so that each expert's
//! matrix is read once.
//!
//! Weights come in two layouts: Mistral's, one module per expert
//! (`experts.N.w1` gate, `w2` down, `w3` up), stacked here at load (one
//! layer's experts are held twice while stacking), and mlx-community's,
//! already stacked (`switch_mlp.{gate,up,down}_proj`).
//!
//! Split over ranks (tensor parallelism), every rank keeps every expert and
//! the whole router, and a block of each expert's hidden units: the rows of
//! its gate and up projections and the columns of its down projection, as
//! a dense SwiGLU block is split; the weighted sum of the experts' partial
//! outputs is summed over the ranks. Each projection is read whole and cut
//! at load (one projection's experts held at once).

use mlx_rs::{
    ops::{
        argpartition_axis, argsort_axis, dequantize, gather_mm, gather_qmm,
        indexing::{take_along_axis, IndexOp},
        softmax_axis, stack,
    },
    Array, Dtype,
};

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::linear::{Linear, LinearWeight};
use crate::mlp::swiglu;
use crate::quantization::QuantParams;
use crate::tensor_parallel::{Split, TensorParallel};
use crate::weights::Weights;

/// (token, expert) pairs from which the pairs are sorted by expert (mlx-lm's
/// `SwitchGLU` threshold).
const SORT_FROM_PAIRS: usize = 64;

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
        let Some(params) = cfg.quantization_for(weights.module_path()) else {
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
        let pick = |f: fn(&crate::linear::QuantizedWeight) -> &Array| -> Result<Array, ModelError> {
            let a = stack(&quantized.iter().map(|q| f(q)).collect::<Vec<_>>(), 0)?;
            a.eval()?;
            Ok(a)
        };
        Ok(SwitchLinear::Quantized {
            weight: pick(|q| &q.weight)?,
            scales: pick(|q| &q.scales)?,
            biases: pick(|q| &q.biases)?,
            params: quantized[0].params,
        })
    }

    /// The dense form of a quantized stack (itself when dense).
    fn dequantized(self) -> Result<Self, ModelError> {
        match self {
            SwitchLinear::Quantized {
                weight,
                scales,
                biases,
                params,
            } => {
                let w = dequantize(&weight, &scales, &biases, params.group_size, params.bits)?;
                w.eval()?;
                Ok(SwitchLinear::Dense(w))
            }
            dense => Ok(dense),
        }
    }

    /// This rank's block of every expert (see the module note): output rows
    /// for [`Split::Outputs`], input columns for [`Split::Inputs`]; `what`
    /// names the projection in errors.
    fn shard(
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

    /// `x` `[..., 1, in]` through expert `indices[...]` each, giving
    /// `[..., 1, out]` (`x`'s batch axes broadcast against `indices`).
    pub fn forward(&self, x: &Array, indices: &Array, sorted: bool) -> Result<Array, ModelError> {
        Ok(match self {
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

/// A sparse mixture-of-experts feed-forward block
/// (`model.layers.N.block_sparse_moe`).
#[derive(Debug, Clone)]
pub struct SparseMoe {
    gate: Linear,
    gate_proj: SwitchLinear,
    up_proj: SwitchLinear,
    down_proj: SwitchLinear,
    top_k: i32,
    /// Split over ranks: the partial outputs are summed over them.
    reduce: Option<TensorParallel>,
}

impl SparseMoe {
    /// Takes the router (`gate`) and the experts, in either layout, from the
    /// module `weights` points at.
    pub fn new(cfg: &MistralConfig, weights: &mut Weights) -> Result<Self, ModelError> {
        let (experts, top_k) = cfg.experts().ok_or_else(|| {
            ModelError::Input("a mixture-of-experts layer needs num_local_experts".to_owned())
        })?;
        let reduce = weights.tensor_parallel().cloned();
        let (dim, hidden) = (cfg.hidden_size, cfg.intermediate_size);
        let gate = Linear::new(cfg, &mut weights.pp("gate"), dim, experts, false)?;
        let stacked = weights.take("switch_mlp.gate_proj.weight");
        let (gate_proj, up_proj, down_proj) = match stacked {
            Some(first) => {
                let mut switch = weights.pp("switch_mlp");
                let (wide, narrow) = ((experts, hidden, dim), (experts, dim, hidden));
                (
                    SwitchLinear::stacked(cfg, &mut switch.pp("gate_proj"), wide, Some(first))?,
                    SwitchLinear::stacked(cfg, &mut switch.pp("up_proj"), wide, None)?,
                    SwitchLinear::stacked(cfg, &mut switch.pp("down_proj"), narrow, None)?,
                )
            }
            None => (
                SwitchLinear::per_expert(cfg, weights, "w1", experts, hidden, dim)?,
                SwitchLinear::per_expert(cfg, weights, "w3", experts, hidden, dim)?,
                SwitchLinear::per_expert(cfg, weights, "w2", experts, dim, hidden)?,
            ),
        };
        let (gate_proj, up_proj, down_proj) = match &reduce {
            None => (gate_proj, up_proj, down_proj),
            Some(parallel) => {
                let what = |name: &str| format!("{}.{name}", weights.module_path());
                (
                    gate_proj.shard(Split::Outputs, parallel, &what("gate_proj"))?,
                    up_proj.shard(Split::Outputs, parallel, &what("up_proj"))?,
                    down_proj.shard(Split::Inputs, parallel, &what("down_proj"))?,
                )
            }
        };
        Ok(SparseMoe {
            gate,
            gate_proj,
            up_proj,
            down_proj,
            top_k,
            reduce,
        })
    }

    /// Bytes held by the router and the experts.
    pub fn weight_bytes(&self) -> u64 {
        self.gate.weight_bytes()
            + self.gate_proj.weight_bytes()
            + self.up_proj.weight_bytes()
            + self.down_proj.weight_bytes()
    }

    /// Applies the block to the rows `x` `[N, hidden_size]`.
    pub fn forward(&self, x: &Array) -> Result<Array, ModelError> {
        let gates = self.gate.forward(x)?;
        let k = self.top_k;
        let chosen = argpartition_axis(gates.negative()?, k - 1, -1)?.index((.., ..k));
        let scores = softmax_axis(take_along_axis(&gates, &chosen, -1)?, -1, true)?;
        let y = self.experts(x, &chosen)?;
        let y = y.multiply(scores.expand_dims(-1)?)?.sum_axis(-2, false)?;
        match &self.reduce {
            Some(parallel) => parallel.all_sum(&y),
            None => Ok(y),
        }
    }

    /// mlx-lm's `SwitchGLU`: each row of `x` `[N, hidden]` through its
    /// experts `chosen` `[N, k]`, giving `[N, k, hidden]`.
    fn experts(&self, x: &Array, chosen: &Array) -> Result<Array, ModelError> {
        let (rows, k) = (chosen.dim(0), chosen.dim(1));
        let sort = chosen.size() >= SORT_FROM_PAIRS;
        let (x, indices, inverse) = if sort {
            // Pairs ordered by expert: row `order / k` of x for each.
            let flat = chosen.flatten(None, None)?;
            let order = argsort_axis(&flat, 0)?;
            let inverse = argsort_axis(&order, 0)?;
            let source_rows = order.floor_divide(Array::from_int(k).as_dtype(order.dtype())?)?;
            let x = x.expand_dims(-2)?.take_axis(&source_rows, 0)?;
            (x, flat.take_axis(&order, 0)?, Some(inverse))
        } else {
            (x.reshape(&[rows, 1, 1, x.dim(-1)])?, chosen.clone(), None)
        };
        let up = self.up_proj.forward(&x, &indices, sort)?;
        let gate = self.gate_proj.forward(&x, &indices, sort)?;
        let y = self
            .down_proj
            .forward(&swiglu(&gate, &up)?, &indices, sort)?;
        let y = match inverse {
            Some(inverse) => y.take_axis(&inverse, 0)?.reshape(&[rows, k, 1, -1])?,
            None => y,
        };
        Ok(y.squeeze_axes(&[-2])?)
    }
}
