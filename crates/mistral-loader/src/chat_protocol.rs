//! Which way a model's chat prompts become ids: its chat template, or
//! mistral-common's exact protocol from the folder's `tekken.json`
//! ([`mistral_text::mistral_chat`]).

use std::path::Path;

use mistral_text::mistral_chat::PROTOCOL_VERSIONS;
use mistral_text::tekken::Tekken;

use crate::error::{LoadError, Result};
use crate::tokenizer::TEKKEN_FILE;

/// How chat prompts are built (`--tokenizer-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenizerMode {
    /// mistral-common's protocol when the folder has a `tekken.json` of a
    /// version implemented here, else the chat template.
    #[default]
    Auto,
    /// The chat template.
    Template,
    /// mistral-common's protocol; an error when the folder cannot have it.
    Mistral,
}

/// The folder's `tekken.json` when `mode` builds chat prompts from it.
pub fn load_chat_protocol(dir: &Path, mode: TokenizerMode) -> Result<Option<Tekken>> {
    let path = dir.join(TEKKEN_FILE);
    let implemented = |t: &Tekken| PROTOCOL_VERSIONS.contains(&t.version());
    let refused = |message: String| LoadError::Tokenizer {
        path: path.clone(),
        message,
    };
    match mode {
        TokenizerMode::Template => Ok(None),
        TokenizerMode::Auto if !dir.is_dir() || !path.is_file() => Ok(None),
        TokenizerMode::Auto => Ok(Tekken::from_file(&path).ok().filter(implemented)),
        TokenizerMode::Mistral => {
            if !path.is_file() {
                return Err(refused(
                    "does not exist; mistral-common's chat protocol needs it".to_owned(),
                ));
            }
            let tekken = Tekken::from_file(&path).map_err(|e| refused(e.to_string()))?;
            if !implemented(&tekken) {
                return Err(refused(format!(
                    "the chat protocol of version v{} is not supported (supported: v3, v7, v11, v13)",
                    tekken.version()
                )));
            }
            Ok(Some(tekken))
        }
    }
}
