//! [`SparseMoe`]: Mixtral's sparse mixture of experts (mlx-lm
//! `mixtral.py`'s `MixtralSparseMoeBlock` over `switch_layers.py`'s
//! `SwitchGLU`), and [`SwitchLinear`], one linear map per expert stacked
//! into one `[experts, out, in]` matrix (dense or MLX-quantized; also
//! Mistral 4's per-head attention matrices).
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
    ops::{argsort_axis, dequantize, gather_mm, gather_qmm, split_at_indices, stack},
    Array, Dtype,
};

use mlx_rs_core::runtime::on_gpu;

use crate::config::MistralConfig;
use crate::config_mistral4::LatentConfig;
use crate::error::ModelError;
use crate::linear::{Linear, LinearWeight};
use crate::mlp::{swiglu, Mlp};
use crate::quantization::QuantParams;
use crate::routing::Routing;
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
            SwitchLinear::Dense(w) if w.dtype() != Dtype::Float32 && !on_gpu() => {
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

/// A sparse mixture-of-experts feed-forward block: Mixtral's
/// (`model.layers.N.block_sparse_moe`) or Mistral 4's (`model.layers.N.mlp`,
/// grouped routing and shared experts).
#[derive(Debug, Clone)]
pub struct SparseMoe {
    gate: Linear,
    gate_proj: SwitchLinear,
    up_proj: SwitchLinear,
    down_proj: SwitchLinear,
    top_k: i32,
    routing: Routing,
    /// Mistral 4's shared experts, added to every token's output.
    shared: Option<Mlp>,
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
        let dims = (cfg.hidden_size, cfg.intermediate_size);
        let projections = load_experts(cfg, weights, experts, dims, ["w1", "w3", "w2"])?;
        Self::assemble(
            cfg,
            weights,
            (experts, top_k),
            projections,
            Routing::TopK,
            None,
        )
    }

    /// Takes Mistral 4's router (`gate`), routed experts (stacked
    /// `switch_mlp`, per expert `experts.N.{gate,up,down}_proj`, or fused
    /// `experts.gate_up_proj` and `experts.down_proj`) and shared experts
    /// from the module `weights` points at (`model.layers.N.mlp`).
    pub fn latent(
        cfg: &MistralConfig,
        latent: &LatentConfig,
        weights: &mut Weights,
    ) -> Result<Self, ModelError> {
        let experts = latent.n_routed_experts.ok_or_else(|| {
            ModelError::Input("a mixture-of-experts layer needs n_routed_experts".to_owned())
        })?;
        let (dim, hidden) = (cfg.hidden_size, latent.moe_intermediate_size);
        let projections = match weights.take("experts.gate_up_proj") {
            Some(fused) => {
                weights.check_shape("experts.gate_up_proj", &fused, &[experts, 2 * hidden, dim])?;
                let parts = split_at_indices(&fused, &[hidden], 1)?;
                let mut stacked = weights.pp("experts");
                let narrow = (experts, dim, hidden);
                let part = |i: usize| -> Result<SwitchLinear, ModelError> {
                    let a = stacked_part(&parts, i)?;
                    Ok(SwitchLinear::Dense(stacked.cast(a)?))
                };
                let (gate, up) = (part(0)?, part(1)?);
                let down = stacked.require("down_proj")?;
                stacked.check_shape("down_proj", &down, &[narrow.0, narrow.1, narrow.2])?;
                (gate, up, SwitchLinear::Dense(stacked.cast(down)?))
            }
            None => load_experts(
                cfg,
                weights,
                experts,
                (dim, hidden),
                ["gate_proj", "up_proj", "down_proj"],
            )?,
        };
        let shared = match latent.n_shared_experts {
            Some(n) => Some(Mlp::with_hidden(
                cfg,
                &mut weights.pp("shared_experts"),
                hidden * n,
            )?),
            None => None,
        };
        let routing = Routing::Grouped {
            n_group: latent.n_group,
            topk_group: latent.topk_group,
            scaling: latent.routed_scaling_factor as f32,
            normalize: latent.norm_topk_prob,
        };
        let top_k = latent.num_experts_per_tok;
        Self::assemble(cfg, weights, (experts, top_k), projections, routing, shared)
    }

    /// The block from its loaded experts: the router taken here, the
    /// experts cut for this rank when the model is split.
    fn assemble(
        cfg: &MistralConfig,
        weights: &mut Weights,
        (experts, top_k): (i32, i32),
        (gate_proj, up_proj, down_proj): (SwitchLinear, SwitchLinear, SwitchLinear),
        routing: Routing,
        shared: Option<Mlp>,
    ) -> Result<Self, ModelError> {
        let reduce = weights.tensor_parallel().cloned();
        if reduce.is_some() && shared.is_some() {
            return Err(ModelError::TensorParallel(
                "shared experts (mistral4) cannot be split over ranks yet".to_owned(),
            ));
        }
        let gate = Linear::new(
            cfg,
            &mut weights.pp("gate"),
            cfg.hidden_size,
            experts,
            false,
        )?;
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
            routing,
            shared,
            reduce,
        })
    }

    /// Bytes held by the router and the experts.
    pub fn weight_bytes(&self) -> u64 {
        self.gate.weight_bytes()
            + self.gate_proj.weight_bytes()
            + self.up_proj.weight_bytes()
            + self.down_proj.weight_bytes()
            + self.shared.as_ref().map_or(0, Mlp::weight_bytes)
    }

    /// Applies the block to the rows `x` `[N, hidden_size]`.
    pub fn forward(&self, x: &Array) -> Result<Array, ModelError> {
        let (chosen, scores) = self.routing.select(&self.gate.forward(x)?, self.top_k)?;
        let y = self.experts(x, &chosen)?;
        let dtype = y.dtype();
        let mut y = y.multiply(scores.expand_dims(-1)?)?.sum_axis(-2, false)?;
        if y.dtype() != dtype {
            // Float32 routing weights (Mistral 4): back to the model's dtype.
            y = y.as_dtype(dtype)?;
        }
        if let Some(shared) = &self.shared {
            y = y.add(shared.forward(x)?)?;
        }
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

/// The experts of the module `weights` points at: stacked (`switch_mlp`),
/// else one module per expert (`experts.N.{names}`, gate, up and down).
fn load_experts(
    cfg: &MistralConfig,
    weights: &mut Weights,
    experts: i32,
    (dim, hidden): (i32, i32),
    [gate, up, down]: [&str; 3],
) -> Result<(SwitchLinear, SwitchLinear, SwitchLinear), ModelError> {
    let (wide, narrow) = ((experts, hidden, dim), (experts, dim, hidden));
    Ok(match weights.take("switch_mlp.gate_proj.weight") {
        Some(first) => {
            let mut switch = weights.pp("switch_mlp");
            (
                SwitchLinear::stacked(cfg, &mut switch.pp("gate_proj"), wide, Some(first))?,
                SwitchLinear::stacked(cfg, &mut switch.pp("up_proj"), wide, None)?,
                SwitchLinear::stacked(cfg, &mut switch.pp("down_proj"), narrow, None)?,
            )
        }
        None => (
            SwitchLinear::per_expert(cfg, weights, gate, experts, hidden, dim)?,
            SwitchLinear::per_expert(cfg, weights, up, experts, hidden, dim)?,
            SwitchLinear::per_expert(cfg, weights, down, experts, dim, hidden)?,
        ),
    })
}

/// Part `i` of a split, copied so the fused whole can be freed.
fn stacked_part(parts: &[Array], i: usize) -> Result<Array, ModelError> {
    let part = parts
        .get(i)
        .ok_or_else(|| ModelError::Input("a split of fused experts gave too few parts".to_owned()))?
        .contiguous()?;
    part.eval()?;
    Ok(part)
}
