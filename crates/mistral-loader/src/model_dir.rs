//! Everything in a model directory, opened in one call.
//!
//! Design notes: [`ModelDir::open`] is the loader's front door for the CLI:
//! it requires `config.json`, finds and opens the checkpoint (headers only;
//! tensors are copied when the model takes them), and loads the tokenizer
//! when `tokenizer.json` exists. A checkpoint without a tokenizer is allowed
//! (tests, conversion tools); a tokenizer that exists but is broken is an
//! error.

use std::path::{Path, PathBuf};

use mistral_text::Tokenizer;

use crate::config::read_config_str;
use crate::error::Result;
use crate::safetensors_files::{discover_checkpoint, CheckpointLayout};
use crate::safetensors_weights::SafetensorsWeights;
use crate::tokenizer::{
    check_tokenizer_fits, load_special_tokens, load_tokenizer, SpecialTokens, TOKENIZER_FILE,
};

/// An opened model directory.
#[derive(Debug)]
pub struct ModelDir {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`'s text, checked to be a JSON object (for
    /// `MistralConfig::from_json_str`).
    pub config_json: String,
    /// How the weights are laid out.
    pub layout: CheckpointLayout,
    /// The weights, ready for `Mistral::new(&cfg, &mut weights, dtype)`.
    pub weights: SafetensorsWeights,
    /// The tokenizer, when `tokenizer.json` exists.
    pub tokenizer: Option<Tokenizer>,
    /// BOS/EOS ids from the directory's JSON files.
    pub special_tokens: SpecialTokens,
}

impl ModelDir {
    /// Opens `dir`: config, checkpoint headers, tokenizer, special tokens.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_json = read_config_str(dir)?;
        let checkpoint = discover_checkpoint(dir)?;
        let weights = SafetensorsWeights::from_checkpoint(&checkpoint)?;
        let tokenizer = if dir.join(TOKENIZER_FILE).is_file() {
            Some(load_tokenizer(dir)?)
        } else {
            None
        };
        if let Some(tokenizer) = &tokenizer {
            // The config's vocabulary must hold every id the tokenizer makes.
            let vocab = serde_json::from_str::<serde_json::Value>(&config_json)
                .ok()
                .and_then(|c| c.get("vocab_size").and_then(serde_json::Value::as_i64))
                .and_then(|v| i32::try_from(v).ok());
            if let Some(vocab) = vocab {
                check_tokenizer_fits(tokenizer, vocab, dir)?;
            }
        }
        let special_tokens = load_special_tokens(dir, tokenizer.as_deref())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config_json,
            layout: checkpoint.layout,
            weights,
            tokenizer,
            special_tokens,
        })
    }
}
