//! [`TokenLogprobs`]: the log-probability of a sampled token and the most
//! likely alternatives, as OpenAI's `logprobs` / `top_logprobs` report them.
//!
//! They are read from the same `logprobs` the sampler draws from (the
//! model's distribution after the repetition penalty, before temperature
//! and filters, as mlx-lm's `generate_step` yields them). The arrays are
//! built with the step that samples the token and evaluated with it
//! ([`PendingLogprobs`]), so reading them later costs no extra pass.

use mlx_rs::{
    ops::{argpartition_axis, indexing::TryIndexOp},
    transforms::eval,
    Array, Dtype,
};

use crate::error::{Error, Result};

/// A sampled token's log-probability and the `top` most likely tokens of
/// the same step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// Log-probability of the sampled token.
    pub logprob: f32,
    /// The most likely tokens, `(id, log-probability)`, most likely first
    /// (ties: lower id first); as many as asked for, at most the vocabulary.
    pub top: Vec<(u32, f32)>,
}

/// [`TokenLogprobs`] as arrays, computed with the step that samples.
#[derive(Debug, Clone)]
pub(crate) struct PendingLogprobs {
    chosen: Array,
    top: Option<(Array, Array)>,
}

impl PendingLogprobs {
    /// The log-probability of `token` (`[1]`) in `logprobs` (`[1, vocab]`)
    /// and the `top` largest entries (`top` is capped at the vocabulary).
    pub(crate) fn new(logprobs: &Array, token: &Array, top: i32) -> Result<Self> {
        let chosen = logprobs
            .take_along_axis(token.reshape(&[1, 1])?, -1)?
            .as_dtype(Dtype::Float32)?;
        let top = top.min(logprobs.dim(-1));
        let top = if top > 0 {
            let ids =
                argpartition_axis(logprobs.negative()?, top - 1, -1)?.try_index((.., ..top))?;
            let values = logprobs
                .take_along_axis(&ids, -1)?
                .as_dtype(Dtype::Float32)?;
            Some((ids.as_dtype(Dtype::Uint32)?, values))
        } else {
            None
        };
        Ok(PendingLogprobs { chosen, top })
    }

    /// The arrays to evaluate.
    pub(crate) fn arrays(&self) -> Vec<&Array> {
        let mut out = vec![&self.chosen];
        if let Some((ids, values)) = &self.top {
            out.extend([ids, values]);
        }
        out
    }

    /// Evaluates (if not done yet) and reads them.
    pub(crate) fn read(self) -> Result<TokenLogprobs> {
        eval(self.arrays())?;
        let floats = |a: &Array| -> Result<Vec<f32>> {
            a.try_as_slice::<f32>()
                .map(<[f32]>::to_vec)
                .map_err(|e| Error::InvalidArgument(format!("log-probabilities: {e}")))
        };
        let logprob = floats(&self.chosen)?[0];
        let mut top = Vec::new();
        if let Some((ids, values)) = &self.top {
            let ids = ids
                .try_as_slice::<u32>()
                .map_err(|e| Error::InvalidArgument(format!("top token ids: {e}")))?;
            top = ids.iter().copied().zip(floats(values)?).collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        Ok(TokenLogprobs { logprob, top })
    }
}
