//! [`Tokenizer`]: the `tokenizers` crate's tokenizer with errors that `?`
//! can turn into `Box<dyn std::error::Error>`.
//!
//! `tokenizers` returns `Box<dyn Error + Send + Sync>`, which `?` cannot
//! convert into the `Box<dyn Error>` a plain `main` returns, so the README's
//! Quick Start would not compile with it. This newtype's `encode` and
//! `decode` return [`TokenizerError`] instead; everything else is the inner
//! tokenizer's, through `Deref` (so `&Tokenizer` works wherever a
//! `&tokenizers::Tokenizer` is expected).

use std::ops::{Deref, DerefMut};

use tokenizers::{EncodeInput, Encoding};

/// Encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
#[error("tokenizer: {message}")]
pub struct TokenizerError {
    /// What the `tokenizers` crate reported.
    pub message: String,
}

/// A loaded `tokenizer.json` (see the module notes).
#[derive(Debug, Clone)]
pub struct Tokenizer(tokenizers::Tokenizer);

impl Tokenizer {
    /// Wraps a `tokenizers` tokenizer.
    pub fn new(inner: tokenizers::Tokenizer) -> Self {
        Tokenizer(inner)
    }

    /// Loads a `tokenizer.json`. A file that makes the `tokenizers` crate
    /// panic is an error like any other broken file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        crate::contain::contain(|| tokenizers::Tokenizer::from_file(path))
            .map_err(|message| TokenizerError { message })?
            .map(Tokenizer)
            .map_err(|err| TokenizerError {
                message: err.to_string(),
            })
    }

    /// Builds a tokenizer from a `tokenizer.json` document made here (from
    /// `what`, for the error).
    pub(crate) fn from_document(
        document: &serde_json::Value,
        what: &str,
    ) -> Result<Self, TokenizerError> {
        document
            .to_string()
            .parse::<tokenizers::Tokenizer>()
            .map(Tokenizer)
            .map_err(|e| TokenizerError {
                message: format!("{what} does not make a tokenizer: {e}"),
            })
    }

    /// The wrapped tokenizer.
    pub fn into_inner(self) -> tokenizers::Tokenizer {
        self.0
    }

    /// Encodes `input`, adding BOS and the like when `add_special_tokens`.
    pub fn encode<'s, E>(
        &self,
        input: E,
        add_special_tokens: bool,
    ) -> Result<Encoding, TokenizerError>
    where
        E: Into<EncodeInput<'s>>,
    {
        crate::contain::contain(|| self.0.encode(input, add_special_tokens))
            .map_err(|message| TokenizerError { message })?
            .map_err(|err| TokenizerError {
                message: err.to_string(),
            })
    }

    /// Decodes `ids` to text, leaving out special tokens when asked.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        crate::contain::contain(|| self.0.decode(ids, skip_special_tokens))
            .map_err(|message| TokenizerError { message })?
            .map_err(|err| TokenizerError {
                message: err.to_string(),
            })
    }
}

impl Deref for Tokenizer {
    type Target = tokenizers::Tokenizer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Tokenizer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
