//! Mistral LLM inference in Rust on MLX: the crate to depend on.
//!
//! Re-exports what the Quick Start in the README uses.
