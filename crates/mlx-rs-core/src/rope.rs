//! Rotary position embeddings: [`initialize_rope`] builds a [`Rope`] from a
//! model's settings, as mlx-lm's `initialize_rope` does, and [`Rope::forward`]
//! applies MLX's fused `fast::rope` at a cache offset.
//!
//! Supported scalings: none, and linear (positions divided by a factor).
//! Others (yarn, llama3, ...) are the caller's to reject; Mistral-family
//! checkpoints use none.

use mlx_rs::{fast, Array};

use crate::cache::Positions;
use crate::error::{Error, Result};

/// How positions are scaled before rotation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Positions as they are.
    None,
    /// Positions divided by `factor` (`rope_scaling: {"type": "linear"}`).
    Linear {
        /// The factor (> 0).
        factor: f32,
    },
}

/// A configured rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// How many leading features of each head rotate.
    pub dims: i32,
    /// Rotate adjacent pairs (`true`) or the two halves (`false`, Mistral).
    pub traditional: bool,
    /// The frequency base (`rope_theta`).
    pub base: f32,
    /// The position scale (1 / linear factor).
    pub scale: f32,
}

/// Builds the rotary embedding for heads of `dims` features with frequency
/// `base`; errors name the bad setting.
pub fn initialize_rope(
    dims: i32,
    base: f32,
    traditional: bool,
    scaling: RopeScaling,
) -> Result<Rope> {
    if dims <= 0 || dims % 2 != 0 {
        return Err(Error::InvalidArgument(format!(
            "RoPE dims must be even and positive, got {dims}"
        )));
    }
    if !(base.is_finite() && base > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "RoPE base (rope_theta) must be positive, got {base}"
        )));
    }
    let scale = match scaling {
        RopeScaling::None => 1.0,
        RopeScaling::Linear { factor } if factor.is_finite() && factor > 0.0 => 1.0 / factor,
        RopeScaling::Linear { factor } => {
            return Err(Error::InvalidArgument(format!(
                "linear RoPE scaling factor must be positive, got {factor}"
            )))
        }
    };
    Ok(Rope {
        dims,
        traditional,
        base,
        scale,
    })
}

impl Rope {
    /// Rotates `x` `[B, H, L, D]` whose first position is `offset`.
    pub fn forward(&self, x: &Array, offset: i32) -> Result<Array> {
        Ok(fast::rope(
            x,
            self.dims,
            self.traditional,
            self.base,
            self.scale,
            offset,
            None,
        )?)
    }

    /// Rotates `x` `[B, H, L, D]` whose first position is given per row
    /// or shared ([`Positions`], from the layer's cache).
    pub fn forward_at(&self, x: &Array, positions: &Positions) -> Result<Array> {
        match positions {
            Positions::Shared(offset) => self.forward(x, *offset),
            Positions::PerRow(offsets) => Ok(fast::rope_dynamic(
                x,
                self.dims,
                self.traditional,
                self.base,
                self.scale,
                offsets,
                None,
            )?),
        }
    }
}
