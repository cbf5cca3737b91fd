//! Loads Mistral model directories (config, safetensors shards, tokenizer).
//!
//! Design notes:
//! - [`safetensors_files`] finds the weight files of a directory (single
//!   file, indexed shards, or unindexed shards) and validates the index.
//! - [`SafetensorsWeights`] memory-maps them, parses the headers, and hands
//!   tensors to the model one at a time as MLX arrays through
//!   [`WeightSource`], releasing each tensor's mapped pages after the copy so
//!   loading needs about 1x the checkpoint's size in memory, not 2x.
//! - [`config`] reads `config.json`; parsing it into `MistralConfig` is
//!   `mistral-model`'s job.
//! - [`tokenizer`] loads `tokenizer.json` and the BOS/EOS ids.
//! - Every error is a [`LoadError`] naming the file and tensor/field.
//!
//! Integration (once `mistral-model` lands):
//! ```text
//! let cfg = MistralConfig::from_json_str(&mistral_loader::read_config_str(dir)?)?;
//! let mut weights = SafetensorsWeights::open(dir)?;
//! let model = Mistral::new(&cfg, &mut weights, None)
//!     .map_err(|e| /* map Missing/Shape { tensor } to weights.file_of(tensor) */)?;
//! let unexpected = weights.finish()?; // conversion failures, then unused tensors
//! ```

pub mod config;
pub mod error;
pub mod safetensors_files;
pub mod safetensors_weights;
pub mod tokenizer;
pub mod weights_trait_stub;

pub use config::{load_config, read_config_str};
pub use error::{LoadError, Result};
pub use safetensors_files::{discover_checkpoint, CheckpointFiles, CheckpointLayout};
pub use safetensors_weights::{SafetensorsWeights, TensorMeta};
pub use tokenizer::{load_special_tokens, load_tokenizer, SpecialTokens};
pub use weights_trait_stub::WeightSource;
