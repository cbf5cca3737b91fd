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
//! Compilation: mlx-lm runs each filter and the categorical draw as an
//! `mx.compile`d function, which fuses their element-wise ops with different
//! rounding (on a GPU; on the CPU where MLX finds a C++ compiler), so the
//! stages are compiled the same way (see `compiled.rs`). A compiled draw
//! takes its key as an input, so only a seeded sampler's draw is compiled;
//! an unseeded one draws op by op from mlx-rs's thread-local generator (so
//! `mlx_rs::random::seed` still rules it), and may part from mlx-lm at a
//! near-tie.
//!
//! Scalars: mlx-lm computes `1 / temp` and `log(min_p)` in double precision
//! from Python floats; here they are computed in `f64` from the `f32`
//! options, so the two agree exactly for options representable in `f32`
//! (e.g. 0.5, 0.75) and may differ in the last bit otherwise.

mod compiled;
mod filters;
mod penalty;

pub use filters::{apply_min_p, apply_top_k, apply_top_p};
pub use penalty::RepetitionPenalty;

use mlx_rs::{error::Exception, ops::indexing::argmax_axis, random, Array};

use crate::error::{Error, Result};
use compiled::Stage;
use filters::{check_top_k, min_p_ops, scalar_ops, top_k_ops, top_p_ops};

/// A seed from the wall clock (nanoseconds since the Unix epoch; 0 if the
/// clock is before it), for runs that sample without a given seed.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

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
#[derive(Debug)]
pub struct Sampler {
    options: SamplingOptions,
    rng: Option<random::RandomState>,
    compiled: bool,
    /// The filters in mlx-lm's order, then the draw; empty when greedy.
    stages: Vec<Stage>,
}

impl Clone for Sampler {
    /// A sampler with the same options, compilation and random state.
    fn clone(&self) -> Self {
        Sampler::build(self.options, self.rng.clone(), self.compiled)
    }
}

impl Sampler {
    /// A sampler with `options`; with `seed`, its draws are reproducible
    /// (and equal to mlx-lm's after `mx.random.seed(seed)`). Its stages are
    /// compiled with MLX, as mlx-lm compiles them (the draw only when
    /// seeded, see the module note); on a CPU without a C++ compiler MLX
    /// runs them op by op, as it does mlx-lm's.
    pub fn new(options: SamplingOptions, seed: Option<u64>) -> Result<Self> {
        Sampler::with_compile(options, seed, true)
    }

    /// As [`Sampler::new`], choosing whether the stages are compiled with
    /// MLX (on the CPU, MLX compiles them with the system's C++ compiler at
    /// run time, where it finds one).
    pub fn with_compile(
        options: SamplingOptions,
        seed: Option<u64>,
        compile: bool,
    ) -> Result<Self> {
        options.validate()?;
        let rng = seed.map(random::RandomState::with_seed).transpose()?;
        Ok(Sampler::build(options, rng, compile))
    }

    fn build(options: SamplingOptions, rng: Option<random::RandomState>, compiled: bool) -> Self {
        let o = options;
        let mut stages = Vec::new();
        if o.temperature != 0.0 {
            let (top_p, min_p, top_k) = (o.top_p, o.min_p, o.top_k);
            if 0.0 < top_p && top_p < 1.0 {
                stages.push(filter(move |x| top_p_ops(x, top_p), compiled));
            }
            if min_p != 0.0 {
                stages.push(filter(move |x| min_p_ops(x, min_p), compiled));
            }
            if top_k > 0 {
                stages.push(filter(move |x| top_k_ops(x, top_k), compiled));
            }
            let inv_temp = 1.0 / f64::from(o.temperature);
            stages.push(Stage::new(
                move |a: &[Array]| {
                    let scaled = a[0].multiply(scalar_ops(inv_temp, a[0].dtype())?)?;
                    Ok(vec![random::categorical(&scaled, -1, None, a.get(1))?])
                },
                compiled && rng.is_some(),
            ));
        }
        Sampler {
            options,
            rng,
            compiled,
            stages,
        }
    }

    /// The options this sampler applies.
    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// Samples one id per row of `logprobs` `[B, vocab]`; returns `[B]`
    /// `uint32`.
    pub fn sample(&mut self, logprobs: &Array) -> Result<Array> {
        if self.options.temperature == 0.0 {
            return Ok(argmax_axis(logprobs, -1, None)?);
        }
        if self.options.top_k > 0 {
            check_top_k(self.options.top_k, logprobs.dim(-1))?;
        }
        let Some((draw, filters)) = self.stages.split_last_mut() else {
            return Err(Error::InvalidArgument("sampler has no draw stage".into()));
        };
        let mut x = logprobs.clone();
        for filter in filters {
            x = filter.call(&[x])?;
        }
        match self.rng.as_mut() {
            Some(rng) => draw.call(&[x, rng.next_key()?]),
            None => draw.call(&[x]),
        }
    }
}

/// A filter stage: `f` on the stage's one input.
fn filter(
    f: impl Fn(&Array) -> std::result::Result<Array, Exception> + 'static,
    compiled: bool,
) -> Stage {
    Stage::new(move |a: &[Array]| Ok(vec![f(&a[0])?]), compiled)
}
