//! Mistral LLM inference in Rust on MLX: the crate to depend on.
//!
//! Re-exports what the Quick Start in the README uses: loading
//! ([`load_model`], [`load_tokenizer`]), the model ([`Mistral`]), and
//! generation ([`Generate`] over a [`KVCache`], or a [`RotatingKVCache`] for
//! sliding-window models, with [`cache_offset`]/[`trim_cache`] for reusing a
//! prompt cache across chat turns).

pub use mistral_loader::{load_model, load_tokenizer};
pub use mistral_model::Mistral;
pub use mlx_rs_core::{
    cache_offset, trim_cache, Generate, GenerateOptions, KVCache, KeyValueCache, LanguageModel,
    RotatingKVCache, SamplingOptions,
};
