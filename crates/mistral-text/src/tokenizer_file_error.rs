//! [`TokenizerFileError`]: what Mistral's own tokenizer files (tekken and
//! SentencePiece) report: a file that cannot be used, or ids that cannot be
//! decoded.

use std::path::{Path, PathBuf};

/// A Mistral tokenizer file that cannot be used, or ids that cannot be
/// decoded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerFileError {
    /// The file could not be read or parsed, or a field is wrong.
    #[error("{path}: {field}: {message}")]
    File {
        /// The tokenizer file.
        path: PathBuf,
        /// The field at fault (`config.version`, `pieces[12].type`, ...).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// An id past the vocabulary.
    #[error("token id {0} is outside the vocabulary")]
    UnknownId(u32),
    /// A control token met while decoding with
    /// [`SpecialTokenPolicy::Raise`](crate::tekken::SpecialTokenPolicy::Raise).
    #[error("token id {0} is a control token, and the policy refuses them")]
    SpecialToken(u32),
}

/// The error for `field` of the file at `path`.
pub(crate) fn file_error(path: &Path, field: &str, message: impl ToString) -> TokenizerFileError {
    TokenizerFileError::File {
        path: path.to_path_buf(),
        field: field.to_owned(),
        message: message.to_string(),
    }
}
