//! mlx-lm's repetition penalty (`make_repetition_penalty`): logits of tokens
//! among the last `context_size` ones are divided by the penalty when
//! positive and multiplied by it when negative (Keskar et al. 2019).
//!
//! mlx-lm's edge cases are kept: a penalty of 0 means "no penalty" (mlx-lm
//! adds no processor), and a context size of 0 means every token (Python's
//! `tokens[-0:]` is the whole list).

use mlx_rs::{
    ops::{indexing::TryIndexOp, select},
    Array,
};

use super::filters::scalar_ops;
use crate::error::{Error, Result};

/// A repetition penalty over the last `context_size` tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepetitionPenalty {
    /// The penalty factor (`>= 0`; 1 changes nothing).
    pub penalty: f32,
    /// How many of the most recent tokens count (mlx-lm's default is 20;
    /// 0: all of them).
    pub context_size: usize,
}

impl RepetitionPenalty {
    /// Checks the penalty is a non-negative number.
    pub fn validate(&self) -> Result<()> {
        if self.penalty.is_nan() || self.penalty < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "repetition penalty must be non-negative, got {}",
                self.penalty
            )));
        }
        Ok(())
    }

    /// Whether the penalty changes anything (mlx-lm skips a penalty of 0).
    pub fn is_active(&self) -> bool {
        self.penalty != 0.0
    }

    /// How many of `n` tokens count.
    pub fn window(&self, n: i32) -> i32 {
        match self.context_size {
            0 => n,
            c => i32::try_from(c).unwrap_or(i32::MAX).min(n),
        }
    }

    /// Applies the penalty to `logits` `[1, vocab]` for the ids in `tokens`
    /// (1-D, oldest first; only the last `context_size` count).
    pub fn apply(&self, tokens: &Array, logits: &Array) -> Result<Array> {
        let n = tokens.dim(0);
        if n == 0 || !self.is_active() {
            return Ok(logits.clone());
        }
        let keep = self.window(n);
        let recent = tokens.try_index((n - keep)..n)?.reshape(&[1, keep])?;
        let selected = logits.take_along_axis(&recent, -1)?;
        let penalty = scalar_ops(f64::from(self.penalty), logits.dtype())?;
        let zero = scalar_ops(0.0, logits.dtype())?;
        let penalized = select(
            selected.lt(&zero)?,
            selected.multiply(&penalty)?,
            selected.divide(&penalty)?,
        )?;
        Ok(logits.put_along_axis(&recent, &penalized, -1)?)
    }
}
