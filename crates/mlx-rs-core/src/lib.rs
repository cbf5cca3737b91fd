//! MLX building blocks for LLM inference, shared by the model crates:
//! KV caches, attention masks, attention, RoPE, sampling and generation.
//!
//! Everything here is model-agnostic; Mistral specifics live in
//! `mistral-model`.

pub mod runtime;
