//! [`LanguageModel`]: what the generator needs from a model.
//!
//! Design: the trait is generic over the cache type (not its method), so a
//! generator can hold `&mut dyn LanguageModel<C>` and be named with the cache
//! type alone (`Generate::<KVCache>::new(...)`). Errors are this crate's
//! [`Error`]; a model crate converts its own errors into
//! [`Error::Model`](crate::Error::Model).

use mlx_rs::Array;

use crate::cache::KeyValueCache;
use crate::cpu_fused::CpuFast;
use crate::error::{Error, Result};

/// A causal language model driven token by token over per-layer caches.
pub trait LanguageModel<C: KeyValueCache> {
    /// Logits `[B, L, vocab]` for `tokens` `[B, L]` (integer ids) following
    /// what `cache` holds (one slot per layer; an empty list is filled with
    /// new caches, each made for its layer's window), storing the new
    /// positions in `cache`.
    fn forward(&mut self, tokens: &Array, cache: &mut Vec<Option<C>>) -> Result<Array>;

    /// How many token ids the model accepts (ids `0..vocab_size`), if it
    /// knows. [`Generate`](crate::Generate) checks its prompt against it.
    fn vocab_size(&self) -> Option<i32> {
        None
    }

    /// Whether the model was loaded to run our CPU kernels
    /// ([`CpuFast`]); the generator's sampler then normalizes by ours too.
    /// The default: MLX's.
    fn cpu_fast(&self) -> CpuFast {
        CpuFast::Mlx
    }
}

/// Checks that every id in `ids` lies in `0..vocab_size`, naming the first
/// bad one. Evaluates `ids` (a host sync): meant for prompts and other
/// caller-given ids, not for the sampled ids of a running generation.
pub fn check_token_ids(ids: &Array, vocab_size: i32) -> Result<()> {
    let ids = ids.as_dtype(mlx_rs::Dtype::Int64)?;
    ids.eval()?;
    let values = ids
        .try_as_slice::<i64>()
        .map_err(|e| Error::InvalidArgument(format!("token ids: {e}")))?;
    match values
        .iter()
        .position(|&id| id < 0 || id >= i64::from(vocab_size))
    {
        None => Ok(()),
        Some(i) => Err(Error::InvalidArgument(format!(
            "token id {} at position {i} is outside the model's vocabulary (0..{vocab_size})",
            values[i]
        ))),
    }
}
