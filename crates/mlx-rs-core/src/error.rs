//! The error type of `mlx-rs-core`.
//!
//! MLX failures are carried as [`mlx_rs::error::Exception`]; the other
//! variants describe inputs this crate rejects before handing them to MLX,
//! so that messages say what was wrong in the caller's terms.

use mlx_rs::error::Exception;

/// Errors from caches, masks and attention helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An MLX operation failed.
    #[error("MLX error: {0}")]
    Mlx(#[from] Exception),

    /// Keys or values given to a cache do not have the expected shape.
    #[error("KV cache: {what} (keys shape {keys:?}, values shape {values:?})")]
    CacheShape {
        /// What is wrong.
        what: String,
        /// Shape of the keys passed in.
        keys: Vec<i32>,
        /// Shape of the values passed in.
        values: Vec<i32>,
    },

    /// A mask parameter is out of range.
    #[error("attention mask: {0}")]
    InvalidMask(String),

    /// A sampling or generation option is out of range, or the prompt has
    /// the wrong shape or type.
    #[error("generation: {0}")]
    InvalidArgument(String),

    /// A distributed operation or group failed (see
    /// [`crate::distributed`]).
    #[error("distributed: {0}")]
    Distributed(String),

    /// A sequence's output constraint failed or allows no token (see
    /// [`crate::generate::TokenConstraint`]).
    #[error("output constraint: {0}")]
    Constraint(String),

    /// The model failed (its own error type, boxed).
    #[error("model: {0}")]
    Model(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
