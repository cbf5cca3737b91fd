//! Error types of `mistral-model`: [`ConfigError`] for `config.json`
//! problems, [`ModelError`] for building and running the model.
//!
//! Every variant about a tensor carries its full Hugging Face name
//! (`model.layers.0.self_attn.q_proj.weight`) so the loader can point at the
//! file that holds it.

use mlx_rs::{error::Exception, Dtype};

/// A `config.json` that cannot be parsed or describes an impossible or
/// unsupported model.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid JSON.
    #[error("invalid config JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// A field is missing or has the wrong JSON type or range.
    #[error("config field `{field}`: {source}")]
    Field {
        /// The offending field (dotted path for nested ones).
        field: String,
        /// What serde found.
        source: serde_json::Error,
    },

    /// A field holds a value that is out of range or contradicts another one.
    #[error("config field `{field}`: {message}")]
    Invalid {
        /// The offending field (dotted path for nested ones).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A field asks for something this crate does not implement.
    #[error("config field `{field}`: unsupported: {message}")]
    Unsupported {
        /// The offending field.
        field: String,
        /// What is not supported.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Unsupported {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Errors while building or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A required tensor is absent from the weights.
    #[error("missing tensor `{tensor}`")]
    Missing {
        /// Full tensor name.
        tensor: String,
    },

    /// A tensor's shape differs from what the config implies.
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Full tensor name.
        tensor: String,
        /// Shape implied by the config.
        expected: Vec<i32>,
        /// Shape found in the weights.
        found: Vec<i32>,
    },

    /// A tensor's element type is not usable for its role.
    #[error("tensor `{tensor}` has dtype {found:?}, expected {expected}")]
    Dtype {
        /// Full tensor name.
        tensor: String,
        /// What was expected (e.g. "a floating-point type", "uint32").
        expected: String,
        /// The dtype found.
        found: Dtype,
    },

    /// The tensors present contradict the config's quantization block.
    #[error("tensor `{tensor}`: {message}")]
    Quantization {
        /// Full name of the tensor that is present or missing.
        tensor: String,
        /// What contradicts what.
        message: String,
    },

    /// The model cannot be split over the ranks as asked.
    #[error("tensor parallelism: {0}")]
    TensorParallel(String),

    /// The input to `forward` is malformed.
    #[error("invalid input: {0}")]
    Input(String),

    /// A broken internal invariant (a bug here, not bad input).
    #[error("internal error (a bug in mistral-model): {0}")]
    Internal(String),

    /// An error from the caches, masks or attention of `mlx-rs-core`.
    #[error(transparent)]
    Core(#[from] mlx_rs_core::Error),

    /// An MLX operation failed.
    #[error("MLX error: {0}")]
    Mlx(#[from] Exception),
}
