//! MLX building blocks for LLM inference.
//!
//! Design: this crate holds the model-independent pieces a decoder needs
//! around MLX's fused kernels, each in its own module:
//! - [`cache`]: key/value caches, owned by the caller and passed to the model
//!   on every forward call (models hold no state);
//! - [`mask`]: causal (optionally sliding-window) attention masks in the forms
//!   `mlx_rs::fast::scaled_dot_product_attention` accepts, and a thin wrapper
//!   over that kernel taking them;
//! - [`runtime`]: which MLX this process runs on;
//! - [`detokenizer`]: token ids to text, streamed, equal to one-shot decoding;
//! - [`stop`]: end-of-sequence ids, stop strings and token limits;
//! - [`chat`]: chat prompts from Jinja `chat_template`s;
//! - [`error`]: the crate's error type.

#![deny(missing_docs)]

pub mod cache;
pub mod chat;
pub mod detokenizer;
pub mod error;
pub mod mask;
pub mod runtime;
pub mod stop;

pub use cache::{ConcatKeyValueCache, KVCache, KeyValueCache};
pub use chat::{ChatError, ChatMessage, ChatTemplate, ChatTemplateArgs};
pub use detokenizer::{DetokenizeError, StreamingDetokenizer};
pub use error::{Error, Result};
pub use mask::{
    create_attention_mask, create_causal_mask, scaled_dot_product_attention, AttentionMask,
    SdpaMask,
};
pub use stop::{StopChecker, StopCriteria, StopError, StopReason, StopStep, StopStringMatcher};

#[cfg(test)]
mod tests;
