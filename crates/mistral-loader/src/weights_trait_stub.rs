//! TEMPORARY local copy of `mistral_model::WeightSource`.
//!
//! `mistral-model` is being written in parallel; its `weights.rs` will define
//! exactly this trait. At merge time: delete this file, remove
//! `mod weights_trait_stub` from `lib.rs`, and replace
//! `crate::weights_trait_stub::WeightSource` with `mistral_model::WeightSource`
//! (the only users are `lib.rs`'s re-export and `safetensors_weights.rs`).

use mlx_rs::Array;

/// A source of named tensors for model construction.
///
/// Stand-in for `mistral_model::WeightSource`; see the module docs.
pub trait WeightSource {
    /// Removes and returns the tensor called `name` (Hugging Face naming), or None if absent.
    fn take(&mut self, name: &str) -> Option<Array>;
}
