//! The Mistral model family on MLX: configuration and layers.
//!
//! Depends only on `mlx-rs-core`. Loading files is `mistral-loader`'s job.
