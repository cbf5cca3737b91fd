//! The arithmetic of speculative decoding: the distribution the sampler
//! draws from, and the verdict on drafted tokens.
//!
//! Greedy: a draft is accepted where it equals the target's most likely
//! token, and the first rejected one is replaced by that token.
//!
//! Sampled (Leviathan et al. 2023, "Fast Inference from Transformers via
//! Speculative Decoding"): a draft `x` drawn from the draft distribution `q`
//! is accepted with probability `min(1, p(x) / q(x))`, `p` being the
//! target's; a rejected one is replaced by a draw from
//! `max(0, p - q)` renormalised. The token so produced follows `p` exactly.
//! A deterministic draft (prompt lookup) is a `q` that puts all its mass on
//! `x`: accepted with probability `p(x)`, replaced by a draw from `p` with
//! `x` removed.

use mlx_rs::{
    ops::{
        indexing::{argmax_axis, TryIndexOp},
        maximum, select, softmax_axis,
    },
    random, Array, Dtype,
};

use super::GenerateOptions;
use crate::error::Result;
use crate::sample::{apply_min_p, apply_top_k, apply_top_p, clock_seed};

/// Turns logits into the distributions the target and draft sample from,
/// and draws with a random state of its own.
pub(crate) struct Scorer {
    options: GenerateOptions,
    rng: random::RandomState,
}

impl Scorer {
    /// A scorer for `options` (seeded by its seed, else by the clock).
    pub(crate) fn new(options: &GenerateOptions) -> Result<Self> {
        options.sampling.validate()?;
        if let Some(p) = &options.repetition_penalty {
            p.validate()?;
        }
        let seed = options.seed.unwrap_or_else(clock_seed);
        Ok(Scorer {
            options: options.clone(),
            rng: random::RandomState::with_seed(seed)?,
        })
    }

    /// Whether tokens are picked greedily (temperature 0).
    pub(crate) fn greedy(&self) -> bool {
        self.options.sampling.temperature == 0.0
    }

    /// A fresh random key.
    pub(crate) fn key(&mut self) -> Result<Array> {
        Ok(self.rng.next_key()?)
    }

    /// Log-probabilities `[L, vocab]` of `logits` `[1, L, vocab]`, each row
    /// after the repetition penalty over its own history: `history` for row
    /// 0 (every token fed up to and including row 0's), then each row adds
    /// the next of `later` (the tokens fed at rows 1, 2, ...).
    pub(crate) fn logprobs(&self, logits: &Array, history: &[u32], later: &[u32]) -> Result<Array> {
        let rows = logits.reshape(&[logits.dim(-2), logits.dim(-1)])?;
        let rows = match self.options.repetition_penalty.filter(|p| p.is_active()) {
            None => rows,
            Some(penalty) => {
                let mut seen = history.to_vec();
                let mut out = Vec::with_capacity(rows.dim(0) as usize);
                for i in 0..rows.dim(0) {
                    if i > 0 {
                        seen.push(later[i as usize - 1]);
                    }
                    let keep = penalty.window(seen.len() as i32) as usize;
                    let recent = &seen[seen.len() - keep..];
                    let recent = Array::from_slice(recent, &[recent.len() as i32]);
                    let row = rows.try_index(i..i + 1)?;
                    out.push(penalty.apply(&recent, &row)?);
                }
                mlx_rs::ops::concatenate(&out, 0)?
            }
        };
        Ok(rows.subtract(rows.logsumexp_axis(-1, true)?)?)
    }

    /// The distribution the sampler draws from for each row of
    /// `logprobs`: its filters (top-p, min-p, top-k, in mlx-lm's order),
    /// then the temperature; `[R, vocab]` float32.
    pub(crate) fn probabilities(&self, logprobs: &Array) -> Result<Array> {
        let o = &self.options.sampling;
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
        let inv_temp = Array::from_f32((1.0 / f64::from(o.temperature)) as f32);
        Ok(softmax_axis(
            x.as_dtype(Dtype::Float32)?.multiply(inv_temp)?,
            -1,
            true,
        )?)
    }

    /// One token per row: the most likely when greedy, else a draw from
    /// the sampler's distribution; `[R]` uint32.
    pub(crate) fn pick(&mut self, logprobs: &Array) -> Result<(Array, Option<Array>)> {
        if self.greedy() {
            return Ok((
                argmax_axis(logprobs, -1, None)?.as_dtype(Dtype::Uint32)?,
                None,
            ));
        }
        let probs = self.probabilities(logprobs)?;
        let key = self.key()?;
        Ok((draw(&probs, &key)?, Some(probs)))
    }
}

/// One draw per row of `probs` `[R, vocab]` (non-negative weights, not
/// necessarily normalised); `[R]` uint32.
pub(crate) fn draw(probs: &Array, key: &Array) -> Result<Array> {
    let logits = probs.log()?;
    Ok(random::categorical(&logits, -1, None, key)?.as_dtype(Dtype::Uint32)?)
}

/// The verdict on `drafts` `[R]` (row `i` drafted where the target's
/// distribution is `p[i]`, `[R, vocab]` float32): whether each is accepted
/// (`[R]` bool) and the token that replaces it if not (`[R]` uint32).
/// `q`: the draft distributions `[R, vocab]` the drafts were drawn from;
/// `None` for deterministic drafts (all mass on the drafted token).
pub(crate) fn judge(
    p: &Array,
    q: Option<&Array>,
    drafts: &Array,
    key: &Array,
) -> Result<(Array, Array)> {
    let rows = drafts.dim(0);
    let index = drafts.as_dtype(Dtype::Int32)?.reshape(&[rows, 1])?;
    let p_draft = p.take_along_axis(&index, -1)?.reshape(&[rows])?;
    let (accept_key, replace_key) = random::split(key, 2)?;
    let u = random::uniform::<_, f32>(0.0f32, 1.0f32, &[rows][..], &accept_key)?;
    let zero = Array::from_f32(0.0);
    let (accepted, residual) = match q {
        Some(q) => {
            let q_draft = q.take_along_axis(&index, -1)?.reshape(&[rows])?;
            // u < p/q, without dividing (q > 0 where the draft was drawn).
            let accepted = u.multiply(&q_draft)?.lt(&p_draft)?;
            (accepted, maximum(p.subtract(q)?, &zero)?)
        }
        None => {
            let removed = p.put_along_axis(&index, &zero, -1)?;
            (u.lt(&p_draft)?, removed)
        }
    };
    // Where p and q agree the residual has no mass; a rejection then has
    // probability 0, and `p` stands in to keep the draw defined.
    let mass = residual.sum_axis(-1, true)?;
    let residual = select(mass.gt(&zero)?, &residual, p)?;
    Ok((accepted, draw(&residual, &replace_key)?))
}
