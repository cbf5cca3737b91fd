//! [`LanguageModel`]: what the generator needs from a model.
//!
//! Design: the trait is generic over the cache type (not its method), so a
//! generator can hold `&mut dyn LanguageModel<C>` and be named with the cache
//! type alone (`Generate::<KVCache>::new(...)`). Errors are this crate's
//! [`Error`]; a model crate converts its own errors into
//! [`Error::Model`](crate::Error::Model).

use mlx_rs::Array;

use crate::cache::KeyValueCache;
use crate::error::Result;

/// A causal language model driven token by token over per-layer caches.
pub trait LanguageModel<C: KeyValueCache> {
    /// Logits `[B, L, vocab]` for `tokens` `[B, L]` (integer ids) following
    /// what `cache` holds (one slot per layer; an empty list is filled with
    /// new caches, each made for its layer's window), storing the new
    /// positions in `cache`.
    fn forward(&mut self, tokens: &Array, cache: &mut Vec<Option<C>>) -> Result<Array>;
}
