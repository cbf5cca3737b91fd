//! [`Mlp`]: the SwiGLU feed-forward block,
//! `down_proj(silu(gate_proj(x)) * up_proj(x))`.
//!
//! `silu(gate) * up` is one operation ([`mlx_rs_core::cpu_fused::swiglu`]):
//! compiled as mlx-lm's `swiglu` (on a GPU one kernel where op by op it
//! takes two), or our CPU kernel where the load asks for it. Where our CUDA
//! kernel takes a decode step's stacked gate/up product, it computes the
//! SwiGLU too, in the same launch (`FusedLinear::forward_swiglu`): fewer
//! operations for the host to encode per step.

use mlx_rs::Array;
use mlx_rs_core::cpu_fused::CpuFast;

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::fused::FusedLinear;
use crate::linear::Linear;
use crate::tensor_parallel::Split;
use crate::weights::Weights;

/// The feed-forward block of a decoder layer.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `gate_proj` and `up_proj`.
    gate_up: FusedLinear,
    down_proj: Linear,
    /// Whether SwiGLU on a CPU stream runs our kernel (the load's option).
    fast: CpuFast,
}

impl Mlp {
    /// Bytes held by the three projections.
    pub fn weight_bytes(&self) -> u64 {
        self.gate_up.weight_bytes() + self.down_proj.weight_bytes()
    }

    /// Takes `gate_proj`, `up_proj` and `down_proj` from the module `weights`
    /// points at (`model.layers.N.mlp`).
    pub fn new(cfg: &MistralConfig, weights: &mut Weights) -> Result<Self, ModelError> {
        Self::with_hidden(cfg, weights, cfg.intermediate_size)
    }

    /// Like [`new`](Self::new), with `hidden` units (Mistral 4's shared
    /// experts: `moe_intermediate_size` times `n_shared_experts`).
    pub fn with_hidden(
        cfg: &MistralConfig,
        weights: &mut Weights,
        hidden: i32,
    ) -> Result<Self, ModelError> {
        let (dim, bias) = (cfg.hidden_size, cfg.mlp_bias);
        let (rows, cols) = (Split::Outputs, Split::Inputs);
        let gate = Linear::sharded(cfg, weights, "gate_proj", (dim, hidden), bias, rows)?;
        let up = Linear::sharded(cfg, weights, "up_proj", (dim, hidden), bias, rows)?;
        Ok(Mlp {
            gate_up: FusedLinear::new(vec![gate, up], weights.fuse_projections())?,
            down_proj: Linear::sharded(cfg, weights, "down_proj", (hidden, dim), bias, cols)?,
            fast: weights.options().cpu_fast,
        })
    }

    /// Applies the block to `x` `[..., hidden_size]` (the decoder layers pass
    /// rows, `[B * L, hidden_size]`).
    pub fn forward(&self, x: &Array) -> Result<Array, ModelError> {
        self.down_proj.forward(&self.hidden(x)?)
    }

    /// `residual + self.forward(x)`, the sum in the down projection's
    /// launch where our CUDA kernel takes it ([`Linear::forward_plus`]).
    pub fn forward_plus(&self, x: &Array, residual: &Array) -> Result<Array, ModelError> {
        self.down_proj.forward_plus(&self.hidden(x)?, residual)
    }

    /// `silu(gate_proj(x)) * up_proj(x)`.
    fn hidden(&self, x: &Array) -> Result<Array, ModelError> {
        if let Some(hidden) = self.gate_up.forward_swiglu(x)? {
            return Ok(hidden);
        }
        let [gate, up]: [Array; 2] = self.gate_up.forward(x)?.try_into().map_err(|_| {
            ModelError::Internal(
                "the fused gate/up projection gave other than 2 outputs".to_owned(),
            )
        })?;
        swiglu(&gate, &up, self.fast)
    }
}

/// `silu(gate) * up` (see the module notes).
pub(crate) fn swiglu(gate: &Array, up: &Array, fast: CpuFast) -> Result<Array, ModelError> {
    Ok(mlx_rs_core::cpu_fused::swiglu(gate, up, fast)?)
}
