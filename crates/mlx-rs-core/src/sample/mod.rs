//! Token sampling with mlx-lm 0.32.2's semantics (`sample_utils.py`).
//!
//! A [`Sampler`] takes log-probabilities `[1, vocab]` (computed in the
//! model's dtype as `logits - logsumexp(logits)`) and returns the token id,
//! shape `[1]`, `uint32`:
//! - temperature 0: the argmax (greedy; ties go to the lowest id, as MLX's
//!   argmax does, so bf16 ties break as in mlx-lm);
//! - otherwise the filters in mlx-lm's order — top-p (if `0 < top_p < 1`),
//!   min-p (if `min_p != 0`), top-k (if `top_k > 0`) — then MLX's
//!   categorical sampling of `logprobs * (1 / temp)`.
//!
//! Randomness: with a seed the sampler draws its keys from its own
//! `mlx_rs::random::RandomState` seeded with it. That state splits keys
//! exactly as MLX's global generator does after Python's
//! `mx.random.seed(seed)` (`key(seed)`, then per draw `split` into the next
//! state and the key used), so a seeded run draws the same keys as mlx-lm
//! after `mx.random.seed(seed)`. Without a seed, mlx-rs's thread-local
//! generator is used (seed it with `mlx_rs::random::seed` for the same
//! effect).
//!
//! Scalars: mlx-lm computes `1 / temp` and `log(min_p)` in double precision
//! from Python floats; here they are computed in `f64` from the `f32`
//! options, so the two agree exactly for options representable in `f32`
//! (e.g. 0.5, 0.75) and may differ in the last bit otherwise.

mod filters;
mod penalty;

pub use filters::{apply_min_p, apply_top_k, apply_top_p};
pub use penalty::RepetitionPenalty;

use mlx_rs::{ops::indexing::argmax_axis, random, Array};

use crate::error::{Error, Result};
use filters::scalar;

/// Sampling options (mlx-lm's `make_sampler` arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// Temperature; 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass; applied when `0 < top_p < 1`.
    pub top_p: f32,
    /// Minimum probability relative to the most likely token; applied when
    /// not 0.
    pub min_p: f32,
    /// Number of most likely tokens kept; applied when `> 0`.
    pub top_k: i32,
}

impl Default for SamplingOptions {
    /// Greedy, no filters.
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.0,
            top_p: 0.0,
            min_p: 0.0,
            top_k: 0,
        }
    }
}

impl SamplingOptions {
    /// Checks the options are in range (the vocabulary bound of `top_k` is
    /// checked when sampling).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if self.temperature.is_nan() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be non-negative, got {}",
                self.temperature
            ));
        }
        if self.top_p.is_nan() || !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!(
                "top_p must be in [0, 1] (0 and 1 disable it), got {}",
                self.top_p
            ));
        }
        if self.min_p.is_nan() || !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.top_k < 0 {
            return bad(format!("top_k must be non-negative, got {}", self.top_k));
        }
        Ok(())
    }
}

/// Draws token ids from log-probabilities.
#[derive(Debug, Clone)]
pub struct Sampler {
    options: SamplingOptions,
    rng: Option<random::RandomState>,
}

impl Sampler {
    /// A sampler with `options`; with `seed`, its draws are reproducible
    /// (and equal to mlx-lm's after `mx.random.seed(seed)`).
    pub fn new(options: SamplingOptions, seed: Option<u64>) -> Result<Self> {
        options.validate()?;
        let rng = seed.map(random::RandomState::with_seed).transpose()?;
        Ok(Sampler { options, rng })
    }

    /// The options this sampler applies.
    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// Samples one id per row of `logprobs` `[B, vocab]`; returns `[B]`
    /// `uint32`.
    pub fn sample(&mut self, logprobs: &Array) -> Result<Array> {
        let o = self.options;
        if o.temperature == 0.0 {
            return Ok(argmax_axis(logprobs, -1, None)?);
        }
        let mut x = logprobs.clone();
        if 0.0 < o.top_p && o.top_p < 1.0 {
            x = apply_top_p(&x, o.top_p)?;
        }
        if o.min_p != 0.0 {
            x = apply_min_p(&x, o.min_p)?;
        }
        if o.top_k > 0 {
            x = apply_top_k(&x, o.top_k)?;
        }
        let inv_temp = scalar(1.0 / f64::from(o.temperature), x.dtype())?;
        let scaled = x.multiply(&inv_temp)?;
        let key = self.rng.as_mut().map(|r| r.next_key()).transpose()?;
        Ok(random::categorical(&scaled, -1, None, key.as_ref())?)
    }
}
