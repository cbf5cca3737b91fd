//! [`TokenConstraint`]: which tokens a sequence may take next (structured
//! output: a JSON schema, a regex, a grammar), applied to its logits before
//! sampling.
//!
//! Design: the constraint lives on the host (the matcher is the caller's,
//! e.g. llguidance's), so it must see each token before the next mask
//! exists; a batch with a constrained row starts the forward, reads the fed
//! tokens while the device runs it, and computes the masks meanwhile.
//! Rows without a constraint take no mask and no extra work.

use mlx_rs::Array;

use crate::error::{Error, Result};

/// A sequence's output constraint.
pub trait TokenConstraint: Send + std::fmt::Debug {
    /// Takes the token the sequence was just fed (the one it sampled last).
    fn consume(&mut self, token: u32) -> std::result::Result<(), String>;

    /// The tokens allowed next: bit `i % 32` of word `i / 32` is set for
    /// token `i` (tokens past the words are not allowed).
    fn allowed(&mut self) -> std::result::Result<Vec<u32>, String>;
}

/// `logits` (`[1, vocab]`) with the tokens `constraint` forbids at -inf.
pub(crate) fn masked(logits: &Array, constraint: &mut dyn TokenConstraint) -> Result<Array> {
    let words = constraint.allowed().map_err(Error::Constraint)?;
    let vocab = logits.dim(-1).max(0) as usize;
    let allowed = |i: usize| words.get(i / 32).is_some_and(|w| (w >> (i % 32)) & 1 == 1);
    let bias: Vec<f32> = (0..vocab)
        .map(|i| if allowed(i) { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    if bias.iter().all(|b| b.is_infinite()) {
        return Err(Error::Constraint(
            "no token of the vocabulary is allowed next".into(),
        ));
    }
    let bias = Array::from_slice(&bias, &[1, vocab as i32]).as_dtype(logits.dtype())?;
    Ok(logits.add(&bias)?)
}
