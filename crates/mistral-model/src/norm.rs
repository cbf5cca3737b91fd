//! [`RmsNorm`]: root-mean-square normalization with a learned weight, via
//! MLX's fused `rms_norm` (as mlx-lm's `nn.RMSNorm`), or on a CPU stream
//! our kernel where the load asks for it ([`mlx_rs_core::cpu_fused`]).

use mlx_rs::Array;
use mlx_rs_core::cpu_fused::{self, CpuFast};

use crate::error::ModelError;
use crate::weights::Weights;

/// RMS normalization over the last axis, scaled by `weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Array,
    eps: f32,
    fast: CpuFast,
}

impl RmsNorm {
    /// Bytes held by the scale vector.
    pub fn weight_bytes(&self) -> u64 {
        self.weight.nbytes() as u64
    }

    /// Takes `weight` `[dim]` from the module `weights` points at.
    pub fn new(weights: &mut Weights, dim: i32, eps: f32) -> Result<Self, ModelError> {
        Ok(RmsNorm {
            weight: weights.float("weight", &[dim])?,
            eps,
            fast: weights.options().cpu_fast,
        })
    }

    /// Normalizes `x` `[..., dim]`.
    pub fn forward(&self, x: &Array) -> Result<Array, ModelError> {
        Ok(cpu_fused::rms_norm(x, &self.weight, self.eps, self.fast)?)
    }
}
