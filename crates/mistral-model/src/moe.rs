//! [`SparseMoe`]: Mixtral's sparse mixture of experts (mlx-lm
//! `mixtral.py`'s `MixtralSparseMoeBlock` over `switch_layers.py`'s
//! `SwitchGLU`; Mistral 4's `Mistral4MoE`), over [`SwitchLinear`]
//! stacks of the experts' projections.
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
    ops::{argsort_axis, split_at_indices},
    Array,
};

use crate::config::MistralConfig;
use crate::config_mistral4::LatentConfig;
use crate::error::ModelError;
use crate::linear::Linear;
use crate::mlp::{swiglu, Mlp};
use crate::routing::Routing;
use crate::switch_linear::SwitchLinear;
use crate::tensor_parallel::{Split, TensorParallel};
use crate::weights::Weights;
use mlx_rs_core::cpu_fused::CpuFast;

/// (token, expert) pairs from which the pairs are sorted by expert (mlx-lm's
/// `SwitchGLU` threshold).
const SORT_FROM_PAIRS: usize = 64;

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
    /// Whether SwiGLU on a CPU stream runs our kernel (the load's option).
    fast: CpuFast,
}

impl SparseMoe {
    /// Takes the router (`gate`) and the experts, in either layout, from the
    /// module `weights` points at.
    pub fn new(cfg: &MistralConfig, weights: &mut Weights) -> Result<Self, ModelError> {
        let (experts, top_k) = cfg.experts().ok_or_else(|| {
            ModelError::Internal("a mixture-of-experts layer needs num_local_experts".to_owned())
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
            ModelError::Internal("a mixture-of-experts layer needs n_routed_experts".to_owned())
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
            fast: weights.options().cpu_fast,
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
            .forward(&swiglu(&gate, &up, self.fast)?, &indices, sort)?;
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
        .ok_or_else(|| {
            ModelError::Internal("a split of fused experts gave too few parts".to_owned())
        })?
        .contiguous()?;
    part.eval()?;
    Ok(part)
}
