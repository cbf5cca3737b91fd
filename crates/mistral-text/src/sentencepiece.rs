//! [`SentencePiece`]: Mistral's SentencePiece files (`tokenizer.model.v1`,
//! `.v2`, `.v3`, `.v7`, `.v7m1`), read and run as mistral-common's
//! `SentencePieceTokenizer` runs them through the sentencepiece library.
//!
//! Design notes:
//! - The file is sentencepiece's `ModelProto` (protobuf, read by `prost`;
//!   the few fields used are declared below with their field numbers).
//! - Only what Mistral's files use is accepted, anything else is refused
//!   naming the field: a BPE model with byte fallback, the identity
//!   normalizer (spaces become `▁`, a `▁` goes in front, runs of spaces
//!   are kept), no unused pieces.
//! - Encoding is sentencepiece's BPE (module `sentencepiece_bpe`), not
//!   the `tokenizers` crate's: pieces of equal score (Mistral's whitespace
//!   runs all score -1e9) merge leftmost first, and user-defined pieces are
//!   matched whole; [`SentencePiece::to_tokenizer`] gives the `tokenizers`
//!   form the rest of the pipeline runs on.
//! - Decoding as sentencepiece's: control pieces give nothing, `<unk>`
//!   its surface ` ⁇ `, a run of byte pieces its UTF-8 with one U+FFFD per
//!   invalid byte, other pieces their text with `▁` as a space, the first
//!   such piece losing its leading `▁`. mistral-common's
//!   [`SpecialTokenPolicy::Keep`] writes every id's piece as it is.
//! - The version is the file name's suffix as mistral-common reads it
//!   (`.model.v3`, `.model.v7m1`; a bare `.model` is v1).

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::sentencepiece_bpe::Bpe;
use crate::sentencepiece_hf::{
    self, KIND_BYTE, KIND_CONTROL, KIND_NORMAL, KIND_UNKNOWN, KIND_USER_DEFINED, SPACE,
};
pub use crate::tekken::SpecialTokenPolicy;
use crate::tokenizer_file_error::file_error;
pub use crate::tokenizer_file_error::TokenizerFileError;

/// A SentencePiece file that cannot be used, or ids that cannot be decoded.
pub type SentencePieceError = TokenizerFileError;

// sentencepiece_model.proto, the fields read here.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub(crate) pieces: Vec<PieceProto>,
    #[prost(message, optional, tag = "2")]
    pub(crate) trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub(crate) normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct PieceProto {
    #[prost(string, optional, tag = "1")]
    pub(crate) piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub(crate) score: Option<f32>,
    #[prost(int32, optional, tag = "3")]
    pub(crate) kind: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct TrainerSpec {
    #[prost(int32, optional, tag = "3")]
    pub(crate) model_type: Option<i32>,
    #[prost(bool, optional, tag = "24")]
    pub(crate) treat_whitespace_as_suffix: Option<bool>,
    #[prost(bool, optional, tag = "35")]
    pub(crate) byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "41")]
    pub(crate) bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub(crate) eos_id: Option<i32>,
    #[prost(string, optional, tag = "44")]
    pub(crate) unk_surface: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    pub(crate) name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub(crate) precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    pub(crate) add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub(crate) remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub(crate) escape_whitespaces: Option<bool>,
}

/// sentencepiece's `TrainerSpec.ModelType.BPE`.
const MODEL_BPE: i32 = 2;
/// The versions mistral-common accepts in a file name, by number.
const FILE_VERSIONS: [u32; 7] = [1, 2, 3, 7, 11, 13, 15];

/// One piece of the vocabulary.
#[derive(Debug, Clone)]
struct Piece {
    text: String,
    score: f32,
    kind: i32,
}

/// A loaded SentencePiece file (see the module notes).
#[derive(Debug, Clone)]
pub struct SentencePiece {
    pieces: Vec<Piece>,
    bpe: Bpe,
    controls: HashMap<String, u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk_surface: String,
    version: u32,
}

impl SentencePiece {
    /// Reads a SentencePiece file; its version comes from its name.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SentencePieceError> {
        let path = path.as_ref();
        let version = file_version(path).map_err(|m| file_error(path, "file name", m))?;
        let bytes = std::fs::read(path).map_err(|e| file_error(path, "file", e))?;
        Self::from_bytes(&bytes, version, path)
    }

    /// Parses a SentencePiece file's `bytes` as tokenizer `version`; `path`
    /// names it in errors.
    pub fn from_bytes(bytes: &[u8], version: u32, path: &Path) -> Result<Self, SentencePieceError> {
        let err = |field: &str, message: String| file_error(path, field, message);
        let model = ModelProto::decode(bytes)
            .map_err(|e| err("file", format!("not a SentencePiece model: {e}")))?;
        let trainer = model.trainer_spec.unwrap_or_default();
        let normalizer = model.normalizer_spec.unwrap_or_default();
        if trainer.model_type.unwrap_or(1) != MODEL_BPE {
            return Err(err(
                "trainer_spec.model_type",
                format!(
                    "{} is not BPE (2), the only model Mistral ships",
                    trainer.model_type.unwrap_or(1)
                ),
            ));
        }
        let refuse = |field: &str, what: &str| err(field, format!("{what}: not supported"));
        if !trainer.byte_fallback.unwrap_or(false) {
            return Err(refuse("trainer_spec.byte_fallback", "false"));
        }
        if trainer.treat_whitespace_as_suffix.unwrap_or(false) {
            return Err(refuse("trainer_spec.treat_whitespace_as_suffix", "true"));
        }
        let name = normalizer.name.as_deref().unwrap_or("nmt_nfkc");
        let charsmap = normalizer.precompiled_charsmap.as_deref().unwrap_or(&[]);
        if name != "identity" || !charsmap.is_empty() {
            return Err(refuse(
                "normalizer_spec.name",
                &format!("{name:?} (only \"identity\")"),
            ));
        }
        if normalizer.remove_extra_whitespaces.unwrap_or(true) {
            return Err(refuse("normalizer_spec.remove_extra_whitespaces", "true"));
        }
        if !normalizer.escape_whitespaces.unwrap_or(true) {
            return Err(refuse("normalizer_spec.escape_whitespaces", "false"));
        }
        if model.pieces.is_empty() {
            return Err(err("pieces", "is empty".into()));
        }
        let mut pieces = Vec::with_capacity(model.pieces.len());
        for (i, p) in model.pieces.into_iter().enumerate() {
            let kind = p.kind.unwrap_or(KIND_NORMAL);
            let text = p.piece.unwrap_or_default();
            if !matches!(
                kind,
                KIND_NORMAL | KIND_UNKNOWN | KIND_CONTROL | KIND_USER_DEFINED | KIND_BYTE
            ) {
                return Err(err(
                    &format!("pieces[{i}].type"),
                    format!("{kind} (unused or unknown kind) is not supported"),
                ));
            }
            if text.is_empty() {
                return Err(err(&format!("pieces[{i}].piece"), "is empty".into()));
            }
            pieces.push(Piece {
                text,
                score: p.score.unwrap_or(0.0),
                kind,
            });
        }
        let mut byte_ids = [u32::MAX; 256];
        for (id, p) in pieces.iter().enumerate() {
            if p.kind == KIND_BYTE {
                let value = p
                    .text
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        err(
                            &format!("pieces[{id}].piece"),
                            format!("byte piece {:?} is not <0xNN>", p.text),
                        )
                    })?;
                byte_ids[value as usize] = id as u32;
            }
        }
        if let Some(b) = byte_ids.iter().position(|&id| id == u32::MAX) {
            return Err(err("pieces", format!("no byte piece <0x{b:02X}>")));
        }
        let id_field = |field: &str, id: Option<i32>, default: i32| -> Result<Option<u32>, _> {
            match id.unwrap_or(default) {
                -1 => Ok(None),
                i if i >= 0 && (i as usize) < pieces.len() => Ok(Some(i as u32)),
                i => Err(err(field, format!("{i} is not a piece id"))),
            }
        };
        let bos = id_field("trainer_spec.bos_id", trainer.bos_id, 1)?;
        let eos = id_field("trainer_spec.eos_id", trainer.eos_id, 2)?;
        let mergeable = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.kind, KIND_NORMAL | KIND_USER_DEFINED))
            .map(|(id, p)| (p.text.clone(), (id as u32, p.score)))
            .collect();
        let user_defined = pieces
            .iter()
            .filter(|p| p.kind == KIND_USER_DEFINED)
            .map(|p| p.text.clone())
            .collect();
        let bpe = Bpe::new(
            mergeable,
            user_defined,
            byte_ids,
            normalizer.add_dummy_prefix.unwrap_or(true),
        );
        let controls = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == KIND_CONTROL)
            .map(|(id, p)| (p.text.clone(), id as u32))
            .collect();
        Ok(SentencePiece {
            pieces,
            bpe,
            controls,
            bos,
            eos,
            unk_surface: trainer
                .unk_surface
                .unwrap_or_else(|| " \u{2047} ".to_owned()),
            version,
        })
    }

    /// The tokenizer version (3 for `tokenizer.model.v3`).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The number of pieces.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The id of control piece `text` (`[INST]`), if the file has it.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.controls.get(text).copied()
    }

    /// Whether `id` is a control piece.
    pub fn is_control(&self, id: u32) -> bool {
        self.pieces
            .get(id as usize)
            .is_some_and(|p| p.kind == KIND_CONTROL)
    }

    /// The piece of `id` as the file writes it (`▁the`, `<0x0A>`).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.text.as_str())
    }

    /// `<s>`'s id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// `</s>`'s id.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Encodes `text` as sentencepiece does (control-token text such as
    /// `[INST]` stays text), with `<s>` first and `</s>` last when asked.
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        ids.extend(self.bos.filter(|_| bos));
        ids.extend(self.bpe.encode(text));
        ids.extend(self.eos.filter(|_| eos));
        ids
    }

    /// Decodes `ids` as mistral-common does (see the module notes).
    pub fn decode(
        &self,
        ids: &[u32],
        policy: SpecialTokenPolicy,
    ) -> Result<String, SentencePieceError> {
        let piece = |id: u32| {
            self.pieces
                .get(id as usize)
                .ok_or(SentencePieceError::UnknownId(id))
        };
        match policy {
            SpecialTokenPolicy::Keep => {
                return ids.iter().map(|&id| Ok(piece(id)?.text.as_str())).collect();
            }
            SpecialTokenPolicy::Raise => {
                if let Some(&id) = ids.iter().find(|&&id| self.is_control(id)) {
                    return Err(SentencePieceError::SpecialToken(id));
                }
            }
            SpecialTokenPolicy::Ignore => {}
        }
        let mut out = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut first = true;
        for &id in ids {
            let p = piece(id)?;
            if p.kind == KIND_BYTE {
                bytes.push(self.bpe.byte_value(id));
                first = false;
                continue;
            }
            push_bytes(&mut out, &mut bytes);
            match p.kind {
                KIND_CONTROL => {}
                KIND_UNKNOWN => out.push_str(&self.unk_surface),
                _ => {
                    let text = match first {
                        true => p.text.strip_prefix(SPACE).unwrap_or(&p.text),
                        false => &p.text,
                    };
                    out.push_str(&text.replace(SPACE, " "));
                }
            }
            if p.kind != KIND_CONTROL {
                first = false;
            }
        }
        push_bytes(&mut out, &mut bytes);
        Ok(out)
    }

    /// The `tokenizer.json` document of this vocabulary
    /// ([`crate::sentencepiece_hf`]), adding `<s>` in front.
    pub fn tokenizer_json(&self) -> serde_json::Value {
        let tokens: Vec<&str> = self.pieces.iter().map(|p| p.text.as_str()).collect();
        let scores: Vec<f32> = self.pieces.iter().map(|p| p.score).collect();
        let kinds: Vec<i32> = self.pieces.iter().map(|p| p.kind).collect();
        let unk = self
            .pieces
            .iter()
            .find(|p| p.kind == KIND_UNKNOWN)
            .map(|p| p.text.as_str());
        let (model, normalizer, decoder) =
            sentencepiece_hf::bpe_parts(&tokens, &scores, &kinds, unk, self.bpe.adds_prefix());
        let bos = self.bos.map(|id| (tokens[id as usize], id));
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": sentencepiece_hf::added_tokens(&tokens, &kinds),
            "normalizer": normalizer,
            "pre_tokenizer": null,
            "post_processor": sentencepiece_hf::post_processor(bos, None),
            "decoder": decoder,
            "model": model,
        })
    }

    /// This tokenizer as a `tokenizers` one (see the module notes).
    pub fn to_tokenizer(&self) -> Result<crate::Tokenizer, crate::TokenizerError> {
        crate::Tokenizer::from_document(&self.tokenizer_json(), "the SentencePiece vocabulary")
    }
}

/// Appends a run of byte pieces' bytes: valid UTF-8 as it is, one U+FFFD
/// per invalid byte (as sentencepiece decodes them).
fn push_bytes(out: &mut String, bytes: &mut Vec<u8>) {
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        out.extend(std::iter::repeat_n('\u{fffd}', chunk.invalid().len()));
    }
    bytes.clear();
}

/// The tokenizer version in a SentencePiece file's name, as mistral-common
/// reads it (`tokenizer.model.v7m1` is 7, a bare `.model` is 1).
pub fn file_version(path: &Path) -> Result<u32, String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let suffix = name.rsplit('.').next().unwrap_or_default();
    if suffix == "model" {
        return Ok(1);
    }
    let (version, mm) = match suffix.split_once('m') {
        Some((v, mm)) => (v, Some(mm)),
        None => (suffix, None),
    };
    let number = version
        .strip_prefix('v')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| FILE_VERSIONS.contains(n));
    match (number, mm) {
        (Some(n), None | Some("1")) => Ok(n),
        _ => Err(format!(
            "{name:?} does not end in .model or .model.vN (N one of 1, 2, 3, 7, 11, 13, 15, \
             optionally followed by m1)"
        )),
    }
}
