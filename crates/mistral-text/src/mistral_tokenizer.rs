//! [`MistralTokenizer`]: either of Mistral's own tokenizer files, tekken
//! ([`Tekken`]) or SentencePiece ([`SentencePiece`]), behind the few
//! operations mistral-common's chat protocol uses.

use crate::sentencepiece::SentencePiece;
use crate::tekken::{SpecialTokenPolicy, Tekken};
pub use crate::tokenizer_file_error::TokenizerFileError;

/// Ids that one of Mistral's tokenizers cannot decode.
pub type MistralTokenizerError = TokenizerFileError;

/// One of Mistral's own tokenizers.
#[derive(Debug, Clone)]
pub enum MistralTokenizer {
    /// A `tekken.json`.
    Tekken(Tekken),
    /// A `tokenizer.model.vN`.
    SentencePiece(SentencePiece),
}

impl From<Tekken> for MistralTokenizer {
    fn from(t: Tekken) -> Self {
        MistralTokenizer::Tekken(t)
    }
}

impl From<SentencePiece> for MistralTokenizer {
    fn from(t: SentencePiece) -> Self {
        MistralTokenizer::SentencePiece(t)
    }
}

impl MistralTokenizer {
    /// The tokenizer (and chat protocol) version.
    pub fn version(&self) -> u32 {
        match self {
            MistralTokenizer::Tekken(t) => t.version(),
            MistralTokenizer::SentencePiece(t) => t.version(),
        }
    }

    /// The id of control token `text` (`[INST]`), if the tokenizer has it.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        match self {
            MistralTokenizer::Tekken(t) => t.special_id(text),
            MistralTokenizer::SentencePiece(t) => t.special_id(text),
        }
    }

    /// `</s>`'s id.
    pub fn eos_id(&self) -> Option<u32> {
        match self {
            MistralTokenizer::Tekken(t) => t.eos_id(),
            MistralTokenizer::SentencePiece(t) => t.eos_id(),
        }
    }

    /// `<s>`'s id.
    pub fn bos_id(&self) -> Option<u32> {
        match self {
            MistralTokenizer::Tekken(t) => t.bos_id(),
            MistralTokenizer::SentencePiece(t) => t.bos_id(),
        }
    }

    /// Encodes `text` as plain text, with `<s>`/`</s>` when asked.
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        match self {
            MistralTokenizer::Tekken(t) => t.encode(text, bos, eos),
            MistralTokenizer::SentencePiece(t) => t.encode(text, bos, eos),
        }
    }

    /// Decodes `ids` as mistral-common does.
    pub fn decode(
        &self,
        ids: &[u32],
        policy: SpecialTokenPolicy,
    ) -> Result<String, MistralTokenizerError> {
        match self {
            MistralTokenizer::Tekken(t) => t.decode(ids, policy),
            MistralTokenizer::SentencePiece(t) => t.decode(ids, policy),
        }
    }
}
