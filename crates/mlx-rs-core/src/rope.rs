//! Rotary position embeddings: [`initialize_rope`] builds a [`Rope`] from a
//! model's settings, as mlx-lm's `initialize_rope` (`rope_utils.py`) does,
//! and [`Rope::forward`] applies MLX's fused `fast::rope` at a cache offset.
//!
//! Scalings ([`RopeScaling`]): none, linear (positions divided by a factor),
//! dynamic NTK (the base grows with the length seen), llama3 and YaRN
//! (custom per-dimension frequencies; YaRN also scales its input). Custom
//! frequencies are computed with MLX operations in mlx-lm's order, so that
//! both engines rotate by the same float32 values.

use mlx_rs::{
    ops::{clip, select},
    Array,
};

use crate::cache::Positions;
use crate::cpu_fused::CpuFast;
use crate::error::{Error, Result};

/// How positions or frequencies are scaled before rotation (a config's
/// `rope_scaling` / `rope_parameters` block).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Positions as they are (`"default"`).
    None,
    /// Positions divided by `factor` (`"linear"`).
    Linear {
        /// The factor (> 0).
        factor: f32,
    },
    /// Dynamic NTK scaling (`"dynamic"`): past `max_position_embeddings`
    /// positions, the base grows with the length a call reaches.
    Dynamic {
        /// The factor (> 0).
        factor: f32,
        /// The trained context (`max_position_embeddings`).
        max_position_embeddings: i32,
    },
    /// Llama 3.1's frequency bands (`"llama3"`).
    Llama3 {
        /// The factor low frequencies are divided by.
        factor: f32,
        /// `low_freq_factor` (default 1).
        low_freq_factor: f32,
        /// `high_freq_factor` (default 4).
        high_freq_factor: f32,
        /// `original_max_position_embeddings` (default 8192).
        original_max_position_embeddings: f32,
    },
    /// YaRN (`"yarn"`, `"deepseek_yarn"`).
    Yarn {
        /// The factor (> 0).
        factor: f32,
        /// `original_max_position_embeddings` (default 4096).
        original_max_position_embeddings: f32,
        /// `beta_fast` (default 32).
        beta_fast: f32,
        /// `beta_slow` (default 1).
        beta_slow: f32,
        /// `mscale` (default 1).
        mscale: f32,
        /// `mscale_all_dim` (default 0).
        mscale_all_dim: f32,
    },
}

/// A configured rotary embedding.
#[derive(Debug, Clone)]
pub struct Rope {
    /// How many leading features of each head rotate.
    pub dims: i32,
    /// Rotate adjacent pairs (`true`) or the two halves (`false`, Mistral).
    pub traditional: bool,
    /// The frequency base (`rope_theta`); unused where `freqs` are given.
    pub base: f32,
    /// The position scale (1 / linear factor).
    pub scale: f32,
    /// Per-pair frequencies `[dims / 2]` (llama3, YaRN), replacing `base`.
    freqs: Option<Array>,
    /// What the rotated features are multiplied by first (YaRN's mscale).
    input_scale: f32,
    /// Dynamic NTK: (factor, max_position_embeddings).
    dynamic: Option<(f32, i32)>,
    /// Whether a CPU stream rotates by our kernel (see [`crate::cpu_fused`]).
    fast: CpuFast,
}

fn positive(what: &str, value: f32) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "RoPE {what} must be positive, got {value}"
        )))
    }
}

/// `base ** (arange(0, dims, 2) / dims)` in float32: the wavelength
/// factors of each rotated pair (the inverse of the usual frequencies).
fn exponents_of(base: f32, dims: i32) -> Result<Array> {
    let steps = Array::from_iter((0..dims).step_by(2).map(|i| i as f32), &[dims / 2]);
    let exponents = steps.divide(Array::from_f32(dims as f32))?;
    Ok(Array::from_f32(base).power(&exponents)?)
}

/// mlx-lm's `Llama3RoPE` frequencies.
fn llama3_freqs(base: f32, dims: i32, s: RopeScaling) -> Result<Array> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor: low,
        high_freq_factor: high,
        original_max_position_embeddings: context,
    } = s
    else {
        unreachable!("llama3_freqs takes llama3 scaling");
    };
    let f = |v: f32| Array::from_f32(v);
    let freqs = exponents_of(base, dims)?;
    let wavelens = f((2.0 * std::f64::consts::PI) as f32).multiply(&freqs)?;
    let (low_wavelen, high_wavelen) = (
        (f64::from(context) / f64::from(low)) as f32,
        (f64::from(context) / f64::from(high)) as f32,
    );
    let freqs = select(
        &wavelens.gt(f(low_wavelen))?,
        &freqs.multiply(f(factor))?,
        &freqs,
    )?;
    let medium = wavelens
        .gt(f(high_wavelen))?
        .logical_and(&wavelens.lt(f(low_wavelen))?)?;
    let smooth = f(context)
        .divide(&wavelens)?
        .subtract(f(low))?
        .divide(f(high - low))?;
    let smooth_freqs = freqs.divide(&f(1.0).subtract(&smooth)?.divide(f(factor))?.add(&smooth)?)?;
    Ok(select(&medium, &smooth_freqs, &freqs)?)
}

/// mlx-lm's `YarnRoPE`: (frequencies, input scale).
fn yarn(base: f32, dims: i32, s: RopeScaling) -> Result<(Array, f32)> {
    let RopeScaling::Yarn {
        factor,
        original_max_position_embeddings: context,
        beta_fast,
        beta_slow,
        mscale,
        mscale_all_dim,
    } = s
    else {
        unreachable!("yarn takes YaRN scaling");
    };
    // The correction range and the mscale are host arithmetic in f64 in
    // mlx-lm (Python floats).
    let (d, b, ctx) = (f64::from(dims), f64::from(base), f64::from(context));
    let correction_dim =
        |rotations: f64| d * (ctx / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * b.ln());
    let low = correction_dim(f64::from(beta_fast)).floor().max(0.0);
    let high = correction_dim(f64::from(beta_slow)).ceil().min(d - 1.0);
    let get_mscale = |scale: f64, m: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let factor64 = f64::from(factor);
    let input_scale =
        get_mscale(factor64, f64::from(mscale)) / get_mscale(factor64, f64::from(mscale_all_dim));
    let f = |v: f64| Array::from_f32(v as f32);
    let extra = exponents_of(base, dims)?;
    let inter = f(factor64).multiply(&extra)?;
    let high = if low == high { high + 0.001 } else { high };
    let ramp = Array::from_iter((0..dims / 2).map(|i| i as f32), &[dims / 2])
        .subtract(f(low))?
        .divide(f(high - low))?;
    let mask = f(1.0).subtract(&clip(&ramp, (f(0.0), f(1.0)))?)?;
    let freqs = inter.multiply(&extra)?.divide(
        &inter
            .multiply(&mask)?
            .add(&extra.multiply(&f(1.0).subtract(&mask)?)?)?,
    )?;
    Ok((freqs, input_scale as f32))
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
    let mut rope = Rope {
        dims,
        traditional,
        base,
        scale: 1.0,
        freqs: None,
        input_scale: 1.0,
        dynamic: None,
        fast: CpuFast::Mlx,
    };
    match scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            if !(factor.is_finite() && factor > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "linear RoPE scaling factor must be positive, got {factor}"
                )));
            }
            rope.scale = 1.0 / factor;
        }
        RopeScaling::Dynamic {
            factor,
            max_position_embeddings,
        } => {
            positive("dynamic scaling factor", factor)?;
            if max_position_embeddings <= 0 || dims <= 2 {
                return Err(Error::InvalidArgument(format!(
                    "dynamic RoPE needs max_position_embeddings > 0 and dims > 2, got \
                     {max_position_embeddings} and {dims}"
                )));
            }
            rope.dynamic = Some((factor, max_position_embeddings));
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            positive("llama3 factor", factor)?;
            positive(
                "llama3 original_max_position_embeddings",
                original_max_position_embeddings,
            )?;
            if !(low_freq_factor.is_finite()
                && high_freq_factor.is_finite()
                && low_freq_factor > 0.0
                && high_freq_factor != low_freq_factor)
            {
                return Err(Error::InvalidArgument(format!(
                    "llama3 RoPE needs low_freq_factor > 0 and high_freq_factor != \
                     low_freq_factor, got {low_freq_factor} and {high_freq_factor}"
                )));
            }
            rope.freqs = Some(llama3_freqs(base, dims, scaling)?);
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            ..
        } => {
            positive("yarn factor", factor)?;
            positive(
                "yarn original_max_position_embeddings",
                original_max_position_embeddings,
            )?;
            positive("yarn beta_fast", beta_fast)?;
            positive("yarn beta_slow", beta_slow)?;
            let (freqs, input_scale) = yarn(base, dims, scaling)?;
            rope.freqs = Some(freqs);
            rope.input_scale = input_scale;
        }
    }
    if let Some(freqs) = &rope.freqs {
        freqs.eval()?;
    }
    Ok(rope)
}

/// RoPE's settings for one decode row, as our fused CPU decode step
/// ([`crate::cpu_decode_row`]) takes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowRope<'a> {
    /// How many leading features of each head rotate.
    pub dims: i32,
    /// Adjacent pairs rotate (`true`) or the two halves.
    pub traditional: bool,
    /// The frequency base (unused where `freqs` are given).
    pub base: f32,
    /// The position scale.
    pub scale: f32,
    /// Per-pair frequencies replacing `base`.
    pub freqs: Option<&'a Array>,
}

impl Rope {
    /// What [`forward`](Self::forward) rotates one position at `offset`
    /// with, where it would use our CPU kernel unchanged; `None` where MLX's
    /// op is asked for or the input is scaled first (YaRN).
    pub(crate) fn row_settings(&self, offset: i32) -> Option<RowRope<'_>> {
        if self.fast != CpuFast::Ours || self.input_scale != 1.0 {
            return None;
        }
        let base = match self.freqs {
            Some(_) => 0.0,
            None => self.base_for(i64::from(offset) + 1),
        };
        Some(RowRope {
            dims: self.dims,
            traditional: self.traditional,
            base,
            scale: self.scale,
            freqs: self.freqs.as_ref(),
        })
    }

    /// This rotation with shared positions on a CPU stream computed by our
    /// kernel (`CpuFast::Ours`) or MLX's op.
    pub fn with_cpu_fast(mut self, fast: CpuFast) -> Self {
        self.fast = fast;
        self
    }

    /// YaRN's input scale on the rotated features (in `x`'s dtype, as
    /// mlx-lm multiplies by a Python float).
    fn scaled_input(&self, x: &Array) -> Result<Array> {
        if self.input_scale == 1.0 {
            return Ok(x.clone());
        }
        let scale = Array::from_f32(self.input_scale).as_dtype(x.dtype())?;
        let last = x.dim(-1);
        if last == self.dims {
            return Ok(x.multiply(&scale)?);
        }
        let parts = mlx_rs::ops::split_at_indices(x, &[self.dims], -1)?;
        Ok(mlx_rs::ops::concatenate(
            &[parts[0].multiply(&scale)?, parts[1].clone()],
            -1,
        )?)
    }

    /// The base for a call reaching `end` positions (dynamic NTK), else
    /// `base`.
    fn base_for(&self, end: i64) -> f32 {
        match self.dynamic {
            None => self.base,
            Some((factor, max)) => {
                let (factor, max) = (f64::from(factor), max as f64);
                let seq = (end as f64).max(max);
                let dims = f64::from(self.dims);
                let grown = (factor * seq / max - (factor - 1.0)).powf(dims / (dims - 2.0));
                (f64::from(self.base) * grown) as f32
            }
        }
    }

    /// Rotates `x` `[B, H, L, D]` whose first position is `offset`.
    pub fn forward(&self, x: &Array, offset: i32) -> Result<Array> {
        let x = self.scaled_input(x)?;
        let end = i64::from(offset) + i64::from(x.dim(-2));
        let base = self.freqs.is_none().then(|| self.base_for(end));
        crate::cpu_fused::rope(
            &x,
            self.dims,
            self.traditional,
            base,
            self.scale,
            offset,
            self.freqs.as_ref(),
            self.fast,
        )
    }

    /// Rotates `x` `[B, H, L, D]` whose first position is given per row
    /// or shared ([`Positions`], from the layer's cache). Dynamic NTK
    /// scaling, whose base depends on the one length a call reaches, takes
    /// shared positions only.
    pub fn forward_at(&self, x: &Array, positions: &Positions) -> Result<Array> {
        match positions {
            Positions::Shared(offset) => self.forward(x, *offset),
            Positions::PerRow(_) if self.dynamic.is_some() => Err(Error::InvalidArgument(
                "dynamic RoPE scaling needs one position for every row of a batch".to_owned(),
            )),
            Positions::PerRow(offsets) => Ok(mlx_rs::fast::rope_dynamic(
                &self.scaled_input(x)?,
                self.dims,
                self.traditional,
                self.freqs.is_none().then_some(self.base),
                self.scale,
                offsets,
                self.freqs.as_ref(),
            )?),
        }
    }
}
