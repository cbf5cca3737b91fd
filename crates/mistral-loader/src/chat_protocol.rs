//! Which way a model's chat prompts become ids: its chat template, or
//! mistral-common's exact protocol ([`mistral_text::mistral_chat`]) from the
//! folder's own Mistral tokenizer file (`tekken.json` or
//! `tokenizer.model.vN`).

use std::path::Path;

use mistral_text::mistral_chat::PROTOCOL_VERSIONS;
use mistral_text::MistralTokenizer;

use crate::error::{LoadError, Result};
use crate::tokenizer::{load_mistral_tokenizer, mistral_tokenizer_file, TEKKEN_FILE};

/// How chat prompts are built (`--tokenizer-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenizerMode {
    /// mistral-common's protocol when the folder has a `tekken.json` or a
    /// `tokenizer.model.vN` of a version implemented here, else the chat
    /// template.
    #[default]
    Auto,
    /// The chat template.
    Template,
    /// mistral-common's protocol; an error when the folder cannot have it.
    Mistral,
}

/// The folder's own Mistral tokenizer when `mode` builds chat prompts from
/// it.
pub fn load_chat_protocol(dir: &Path, mode: TokenizerMode) -> Result<Option<MistralTokenizer>> {
    let implemented = |t: &MistralTokenizer| PROTOCOL_VERSIONS.contains(&t.version());
    let file = match mode {
        TokenizerMode::Template => return Ok(None),
        _ if !dir.is_dir() => None,
        _ => mistral_tokenizer_file(dir),
    };
    match (mode, file) {
        (TokenizerMode::Auto, None) => Ok(None),
        (TokenizerMode::Auto, Some(file)) => {
            Ok(load_mistral_tokenizer(&file).ok().filter(implemented))
        }
        (_, None) => Err(LoadError::Tokenizer {
            path: dir.join(TEKKEN_FILE),
            message: "does not exist, nor does a tokenizer.model.vN; mistral-common's chat \
                      protocol needs one of them"
                .to_owned(),
        }),
        (_, Some(file)) => {
            let tokenizer = load_mistral_tokenizer(&file)?;
            if !implemented(&tokenizer) {
                return Err(LoadError::Tokenizer {
                    path: file,
                    message: format!(
                        "the chat protocol of version v{} is not supported (supported: v1, v2, \
                         v3, v7, v11, v13)",
                        tokenizer.version()
                    ),
                });
            }
            Ok(Some(tokenizer))
        }
    }
}
