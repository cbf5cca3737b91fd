//! MLX building blocks for LLM inference.
//!
//! Design: this crate holds the model-independent pieces a decoder needs
//! around MLX's fused kernels:
//! - key/value caches ([`KVCache`], [`RotatingKVCache`], ...), owned by the caller and passed to the model
//!   on every forward call (models hold no state);
//! - masks ([`SdpaMask`]): causal (optionally sliding-window) attention masks in the forms
//!   `mlx_rs::fast::scaled_dot_product_attention` accepts, and a thin wrapper
//!   over that kernel taking them;
//! - the [`LanguageModel`] trait a model implements to
//!   be driven by the generator;
//! - sampling ([`Sampler`]): greedy, temperature, top-p/top-k/min-p sampling and the
//!   repetition penalty, with mlx-lm's semantics and seeding;
//! - the [`Generate`] token iterator (chunked prefill,
//!   pipelined steps, prompt-cache reuse);
//! - rotary position embeddings ([`initialize_rope`], [`Rope`]);
//! - [`distributed`]: MLX's distributed layer (process groups, collectives);
//! - [`runtime`]: which MLX this process runs on;
//! - [`cuda_kernel`]: MLX's CUDA custom kernels, and
//!   [`quantized_matvec`], our 4- and 8-bit decode kernel for NVIDIA GPUs,
//!   and [`read_slack`], room after packed weights for MLX's CUDA kernel;
//! - [`streams`]: side streams, to spread independent work over CPU cores;
//! - [`Error`]: the crate's error type.
//!
//! Text (tokenizer, streaming detokenizer, stop strings, chat templates) is
//! not here: it needs no MLX and lives in `mistral-text`.

#![deny(missing_docs)]

mod cache;
pub mod cpu_decode_row;
pub mod cpu_fused;
pub mod cpu_qmm;
pub mod cuda_kernel;
pub mod distributed;
mod error;
mod generate;
mod language_model;
mod mask;
pub mod quantized_matvec;
pub mod read_slack;
mod rope;
pub mod runtime;
mod sample;
pub mod streams;

pub use cache::{
    attention, cache_offset, trim_cache, AttendFn, BatchKVCache, ConcatKeyValueCache, DecodeStep,
    DecodeStepFn, KVCache, KeyValueCache, KvQuantization, Positions, QuantizedArray,
    RotatingKVCache, StoredKv, TrimAhead,
};
pub use error::{Error, Result};
pub use generate::{
    BatchGenerate, BatchModel, BatchToken, DraftModel, Drafter, Generate, GenerateOptions, Prefill,
    PromptLookup, SpeculativeGenerate, SpeculativeStats, StepTimes, TokenConstraint, TokenLogprobs,
};
pub use language_model::{check_token_ids, LanguageModel};
pub use mask::{
    create_attention_mask, create_causal_mask, scaled_dot_product_attention, AttentionMask,
    SdpaMask,
};
pub use rope::{initialize_rope, Rope, RopeScaling};
pub use sample::{clock_seed, RepetitionPenalty, Sampler, SamplingOptions};

/// Whether `dtype` holds integers (token ids): not floating point, complex
/// or boolean.
pub fn is_integer(dtype: mlx_rs::Dtype) -> bool {
    !dtype.is_inexact() && dtype != mlx_rs::Dtype::Bool
}

#[cfg(test)]
mod tests;
