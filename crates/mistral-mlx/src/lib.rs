//! Mistral LLM inference in Rust on MLX: the crate to depend on.
//!
//! It re-exports what a program needs from the layered crates underneath
//! (`mlx-rs-core` <- `mistral-model` <- `mistral-loader`, with the text side
//! from `mistral-text` <- `mistral-loader`): loading ([`load_model`],
//! [`load_tokenizer`]), the model ([`Mistral`]), and generation
//! ([`Generate`] over a [`KVCache`], or a [`RotatingKVCache`] for
//! sliding-window models, with [`cache_offset`]/[`trim_cache`] for reusing a
//! prompt cache across chat turns). The seed README's Quick Start (the
//! original API, which keeps working; today's README shows it too):
//!
//! ```no_run
//! use mistral_mlx::{load_model, load_tokenizer, Generate, KVCache};
//! use mlx_rs::ops::indexing::{IndexOp, NewAxis};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let model_dir = "path/to/Mistral-7B-Instruct-v0.3-4bit";
//!     let mut model = load_model(model_dir)?;
//!     let tokenizer = load_tokenizer(model_dir)?;
//!
//!     let encoding = tokenizer.encode("Hello, ", true)?;
//!     let prompt = mlx_rs::Array::from(encoding.get_ids()).index(NewAxis);
//!     let mut cache = Vec::new();
//!
//!     let generator = Generate::<KVCache>::new(&mut model, &mut cache, 0.7, &prompt);
//!     for token in generator.take(50) {
//!         let token = token?;
//!         print!("{}", tokenizer.decode(&[token.item::<u32>()], true)?);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Decoding token by token as above is the seed README's; it drops the
//! spaces SentencePiece marks on tokens and splits multi-byte characters.
//! [`StreamingDetokenizer`] (or [`StopChecker`]) prints exactly the one-shot
//! decode instead.

pub use mistral_loader::{
    load_chat_template, load_model, load_model_with, load_special_tokens, load_tokenizer,
    ChatMessage, LoadError, LoadOptions, SpecialTokens, StopChecker, StopCriteria,
    StreamingDetokenizer, Tokenizer, TokenizerError,
};
pub use mistral_model::{Mistral, MistralConfig, ModelError};
pub use mlx_rs_core::{
    cache_offset, create_attention_mask, scaled_dot_product_attention, trim_cache, AttentionMask,
    ConcatKeyValueCache, Error, Generate, GenerateOptions, KVCache, KeyValueCache, LanguageModel,
    RotatingKVCache, SamplingOptions, SdpaMask,
};
