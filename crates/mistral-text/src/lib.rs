//! The text side of LLM inference: token ids to and from text, stop
//! conditions, chat prompts.
//!
//! Design: these pieces work on strings and token ids only, never on
//! tensors, so this crate has no MLX dependency (no `mlx-rs`, no `mlx-sys`,
//! no link build script); it builds and tests anywhere `tokenizers` does.
//! Each piece is its own module:
//! - [`tokenizer`]: the [`Tokenizer`] newtype over `tokenizers::Tokenizer`,
//!   whose errors `?` turns into `Box<dyn std::error::Error>`;
//! - [`detokenizer`]: token ids to text, streamed, equal to one-shot decoding;
//! - [`stop`]: end-of-sequence ids, stop strings and token limits;
//! - [`token_bytes`]: the bytes each token id stands for (log-probabilities);
//! - [`chat`]: chat prompts from Jinja `chat_template`s;
//! - [`constrain`]: structured output (JSON schema, regex, Lark) through
//!   llguidance;
//! - [`tekken`]: Mistral's own `tekken.json` tokenizer, as mistral-common runs it;
//! - [`sentencepiece`]: Mistral's SentencePiece files (`tokenizer.model.vN`),
//!   likewise; [`sentencepiece_hf`] their `tokenizer.json` form;
//! - [`mistral_tokenizer`]: either of the two, as the chat protocol uses them;
//! - [`tokenizer_file_error`]: the error both files report;
//! - [`mistral_chat`]: prompt ids exactly as mistral-common builds them.
//!
//! Nothing model-specific lives here: which files hold the tokenizer, the
//! EOS ids and the chat template is mistral-loader's job. In the stack,
//! `mistral-text` <- `mistral-loader`, beside `mlx-rs-core` <-
//! `mistral-model` <- `mistral-loader`; the loader re-exports this crate's
//! API.

#![deny(missing_docs)]

pub mod chat;
pub mod constrain;
mod contain;
pub mod detokenizer;
pub mod mistral_chat;
pub mod mistral_tokenizer;
pub mod python_json;
pub mod sentencepiece;
mod sentencepiece_bpe;
pub mod sentencepiece_hf;
pub mod stop;
pub mod tekken;
mod tekken_hf;
pub mod token_bytes;
pub mod tokenizer;
pub mod tokenizer_file_error;

pub use chat::{ChatError, ChatMessage, ChatTemplate, ChatTemplateArgs};
pub use detokenizer::{DetokenizeError, StreamingDetokenizer};
pub use mistral_tokenizer::MistralTokenizer;
pub use stop::{StopChecker, StopCriteria, StopError, StopReason, StopStep, StopStringMatcher};
pub use token_bytes::TokenBytes;
pub use tokenizer::{Tokenizer, TokenizerError};

#[cfg(test)]
mod tests;
