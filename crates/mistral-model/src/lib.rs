//! The Mistral model family on MLX: configuration and layers.
//!
//! Depends only on `mlx-rs-core`. Loading files is `mistral-loader`'s job:
//! it parses `config.json` with [`MistralConfig::from_json_str`] and hands the
//! tensors to [`Mistral::new`] through the [`WeightSource`] trait.
//!
//! Design (after mlx-lm's `models/llama.py` and candle's `models/mistral.rs`):
//! - the model holds no state; KV caches are created and owned by the caller
//!   and passed to every [`Mistral::forward`] call;
//! - constructors take the config and a [`Weights`] view whose nesting
//!   (`weights.pp("self_attn")`) mirrors the Hugging Face tensor names, so
//!   every error names the exact tensor;
//! - quantization is a kind of [`Linear`] / [`Embedding`] (MLX affine format
//!   as written by `mlx_lm.convert`), chosen per module from the config and
//!   checked against the tensors present, never a second copy of the model;
//! - the math follows mlx-lm's llama.py: fused RMSNorm, RoPE (base
//!   `rope_theta`) and scaled-dot-product attention (grouped-query attention
//!   handled natively), SwiGLU MLP, optional sliding-window masks per layer.

#![deny(missing_docs)]

mod attention;
mod block;
pub mod checkpoint_names;
mod config;
mod config_json;
mod config_mistral4;
mod embedding;
mod error;
mod fused;
mod language_model;
mod latent_attention;
mod linear;
mod linear_weight;
mod mlp;
mod model;
mod moe;
mod norm;
mod quantization;
mod query_scale;
mod rope_config;
mod routing;
mod row_split;
mod rows;
mod switch_linear;
mod tensor_parallel;
mod weights;

pub use attention::Attention;
pub use block::{DecoderLayer, FeedForward, SelfAttention};
pub use config::{EosTokenId, LayerType, MistralConfig, DEFAULT_ROPE_THETA, SUPPORTED_MODEL_TYPES};
pub use config_json::WRAPPER_MODEL_TYPES;
pub use config_mistral4::LatentConfig;
pub use embedding::Embedding;
pub use error::{ConfigError, ModelError};
pub use fused::FusedLinear;
pub use latent_attention::LatentAttention;
pub use linear::Linear;
pub use linear_weight::{LinearWeight, QuantizedWeight};
pub use mlp::Mlp;
pub use model::{Mistral, MistralModel};
pub use moe::SparseMoe;
pub use norm::RmsNorm;
pub use quantization::{
    LayerQuantization, QuantParams, QuantizationConfig, SUPPORTED_BITS, SUPPORTED_GROUP_SIZES,
};
pub use rope_config::SUPPORTED_ROPE_TYPES;
pub use routing::Routing;
pub use row_split::RowSplit;
pub use switch_linear::SwitchLinear;
pub use tensor_parallel::{Split, TensorParallel};
pub use weights::{Block, BlockAxis, WeightOptions, WeightSource, Weights};
