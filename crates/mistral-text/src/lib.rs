//! The text side of LLM inference: token ids to and from text, stop
//! conditions, chat prompts.
//!
//! Design: these pieces work on strings and token ids only, never on
//! tensors, so this crate has no MLX dependency (no `mlx-rs`, no `mlx-sys`,
//! no link build script); it builds and tests anywhere `tokenizers` does.
//! The pieces:
//! - the [`Tokenizer`] newtype over `tokenizers::Tokenizer`,
//!   whose errors `?` turns into `Box<dyn std::error::Error>`;
//! - [`StreamingDetokenizer`]: token ids to text, streamed, equal to one-shot decoding;
//! - [`StopChecker`]: end-of-sequence ids, stop strings and token limits;
//! - [`TokenBytes`]: the bytes each token id stands for (log-probabilities);
//! - [`ChatTemplate`]: chat prompts from Jinja `chat_template`s;
//! - [`constrain`]: structured output (JSON schema, regex, Lark) through
//!   llguidance;
//! - [`tekken`]: Mistral's own `tekken.json` tokenizer, as mistral-common runs it;
//! - [`sentencepiece`]: Mistral's SentencePiece files (`tokenizer.model.vN`),
//!   likewise; [`sentencepiece_hf`] their `tokenizer.json` form;
//! - [`MistralTokenizer`]: either of the two, as the chat protocol uses them;
//! - [`tokenizer_file_error`]: the error both files report;
//! - [`mistral_chat`]: prompt ids exactly as mistral-common builds them.
//!
//! Nothing model-specific lives here: which files hold the tokenizer, the
//! EOS ids and the chat template is mistral-loader's job. In the stack,
//! `mistral-text` <- `mistral-loader`, beside `mlx-rs-core` <-
//! `mistral-model` <- `mistral-loader`; the loader re-exports this crate's
//! API.

#![deny(missing_docs)]

mod chat;
pub mod constrain;
mod contain;
mod detokenizer;
pub mod mistral_chat;
mod mistral_tokenizer;
pub mod python_json;
pub mod sentencepiece;
mod sentencepiece_bpe;
pub mod sentencepiece_hf;
mod stop;
pub mod tekken;
mod tekken_hf;
mod token_bytes;
mod tokenizer;
pub mod tokenizer_file_error;

pub use chat::{ChatError, ChatMessage, ChatTemplate, ChatTemplateArgs};
pub use detokenizer::{is_byte_token, DetokenizeError, StreamingDetokenizer};
pub use mistral_tokenizer::MistralTokenizer;
pub use stop::{StopChecker, StopCriteria, StopError, StopReason, StopStep, StopStringMatcher};
pub use token_bytes::TokenBytes;
pub use tokenizer::{Tokenizer, TokenizerError};

#[cfg(test)]
mod tests;
