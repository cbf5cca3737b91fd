//! MLX building blocks for LLM inference.
