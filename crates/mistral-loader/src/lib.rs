//! Loads Mistral model directories (config, safetensors shards, tokenizer).
//!
//! Design notes:
//! - [`discover_checkpoint`] finds the weight files of a directory (single
//!   file, indexed shards, or unindexed shards) and validates the index.
//! - [`SafetensorsWeights`] memory-maps them, parses the headers, and hands
//!   tensors to the model one at a time as MLX arrays through
//!   [`WeightSource`], releasing each tensor's mapped pages after the copy so
//!   loading needs about 1x the checkpoint's size in memory, not 2x.
//! - [`load_config`] reads `config.json`; parsing it into `MistralConfig` is
//!   `mistral-model`'s job.
//! - [`load_tokenizer`] loads `tokenizer.json` and [`load_special_tokens`] the BOS/EOS ids.
//! - [`load_chat_template`] finds the chat template (or uses Mistral's format).
//! - The text API itself ([`Tokenizer`], [`StreamingDetokenizer`],
//!   [`StopChecker`], [`ChatTemplate`], ...) is `mistral-text`'s, which has
//!   no MLX dependency; it is re-exported here, so one dependency on the
//!   loader gives both.
//! - [`gguf`] loads llama.cpp's GGUF files directly (config from the
//!   metadata, quantized tensors kept exact, the tokenizer rebuilt from the
//!   metadata); the `load_*` functions accept a GGUF path wherever they
//!   accept a directory.
//! - FP8 checkpoints (`F8_E4M3` tensors with `weight_scale_inv`) are
//!   dequantized tensor by tensor as they are taken (`fp8`).
//! - Every error is a [`LoadError`] naming the file and tensor/field.
//! - [`LoadPlan`] decides the dtype: the checkpoint's, a forced one, or
//!   [`ComputeDtype::Auto`] (float32 on the CPU, quantized matrices
//!   dequantized when they fit).
//! - [`Loader`] puts it together (and [`load_model`] with its defaults):
//!   `config.json` into `MistralConfig`, the tensors into `Mistral`, and every model error mapped to the file
//!   that holds the tensor; tensors the model did not use are an error.

#![warn(missing_docs)]

mod chat_protocol;
mod chat_template;
mod config;
mod convert;
mod error;
mod fp8;
pub mod gguf;
pub mod hf_cache;
mod load;
mod loader;
mod native;
mod plan;
mod rope_rows;
mod safetensors_files;
mod safetensors_read;
mod safetensors_weights;
mod special_tokens;
mod tokenizer;

pub use chat_protocol::{load_chat_protocol, TokenizerMode};
pub use chat_template::{
    load_chat_template, ChatTemplateSource, ModelChatTemplate, CHAT_TEMPLATE_FILE,
};
pub use config::{load_config, read_config_str};
pub use convert::{convert_model, ConvertOptions, ConvertReport};
pub use error::{LoadError, Result};
pub use load::{load_model_config, LoadOptions};
pub use loader::{load_model, load_model_with, Loader};
pub use mistral_model::WeightSource;
pub use mistral_text::{constrain, mistral_chat, sentencepiece, tekken};
pub use mistral_text::{
    ChatError, ChatMessage, ChatTemplate, ChatTemplateArgs, DetokenizeError, MistralTokenizer,
    StopChecker, StopCriteria, StopError, StopReason, StopStep, StopStringMatcher,
    StreamingDetokenizer, TokenBytes, Tokenizer, TokenizerError,
};
pub use native::WeightsLayout;
pub use plan::{dense_f32_bytes, ComputeDtype, LoadPlan};
pub use safetensors_files::{discover_checkpoint, CheckpointFiles, CheckpointLayout};
pub use safetensors_weights::{mlx_dtype, FileAccess, SafetensorsWeights, TensorMeta};
pub use tokenizer::{
    check_tokenizer_fits, load_mistral_tokenizer, load_special_tokens, load_tokenizer,
    mistral_tokenizer_file, SpecialTokens,
};
