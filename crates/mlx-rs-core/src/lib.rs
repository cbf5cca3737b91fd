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
//! - [`error`]: the crate's error type.

#![deny(missing_docs)]

pub mod cache;
pub mod error;
pub mod mask;
pub mod runtime;

pub use cache::{ConcatKeyValueCache, KVCache, KeyValueCache};
pub use error::{Error, Result};
pub use mask::{
    create_attention_mask, create_causal_mask, scaled_dot_product_attention, AttentionMask,
    SdpaMask,
};

#[cfg(test)]
mod tests;
