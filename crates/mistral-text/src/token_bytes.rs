//! [`TokenBytes`]: the bytes each token id stands for, as OpenAI's
//! `logprobs` report them (`bytes`, and `token` as their text).
//!
//! `tokenizers` only decodes whole sequences into (lossy) strings; a token
//! that holds part of a character has no text of its own, but it has bytes.
//! They are read from the vocabulary piece through the tokenizer's decoder
//! chain, one step at a time:
//! - `ByteLevel` (GPT-2, tekken, Llama 3): each piece character stands for
//!   one byte (GPT-2's byte-to-unicode table);
//! - `ByteFallback`: a `<0xNN>` piece is the byte `NN`;
//! - `Replace`, `Metaspace`, `BPE`, `WordPiece`: applied to the piece as a
//!   token in the middle of a sequence (so `▁` is a space, even on the
//!   first token, where a whole decode strips it);
//! - `Strip`, `Fuse`, `CTC` act on whole sequences and are left out.
//!
//! Added tokens (special or not) are their content's UTF-8.

use std::collections::HashMap;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::Decoder;

/// Every token id's bytes, computed once from a tokenizer.
#[derive(Debug, Clone)]
pub struct TokenBytes {
    bytes: Vec<Vec<u8>>,
}

impl TokenBytes {
    /// The bytes of every id of `tokenizer`'s vocabulary (added tokens
    /// included).
    pub fn new(tokenizer: &tokenizers::Tokenizer) -> Self {
        let mut steps = Vec::new();
        if let Some(decoder) = tokenizer.get_decoder() {
            flatten(decoder, &mut steps);
        }
        let added = tokenizer.get_added_tokens_decoder();
        let size = tokenizer
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        let bytes = (0..size as u32)
            .map(|id| match (added.get(&id), tokenizer.id_to_token(id)) {
                (Some(token), _) => token.content.as_bytes().to_vec(),
                (None, Some(piece)) => piece_bytes(piece, &steps),
                (None, None) => Vec::new(),
            })
            .collect();
        TokenBytes { bytes }
    }

    /// The number of ids.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes of `id` (`None` outside the vocabulary).
    pub fn get(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).map(Vec::as_slice)
    }

    /// The text of `id`: its bytes as UTF-8, with U+FFFD for a partial
    /// character.
    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.get(id).unwrap_or_default()).into_owned()
    }
}

/// The decoders of a chain, in order.
fn flatten<'d>(decoder: &'d DecoderWrapper, out: &mut Vec<&'d DecoderWrapper>) {
    match decoder {
        DecoderWrapper::Sequence(sequence) => {
            for d in sequence.get_decoders() {
                flatten(d, out);
            }
        }
        other => out.push(other),
    }
}

/// One piece's bytes through the decoder `steps` (see the module notes).
fn piece_bytes(mut piece: String, steps: &[&DecoderWrapper]) -> Vec<u8> {
    for step in steps {
        match step {
            DecoderWrapper::ByteLevel(_) => return byte_level_bytes(&piece),
            DecoderWrapper::ByteFallback(_) => {
                if let Some(byte) = fallback_byte(&piece) {
                    return vec![byte];
                }
            }
            DecoderWrapper::Replace(_)
            | DecoderWrapper::Metaspace(_)
            | DecoderWrapper::BPE(_)
            | DecoderWrapper::WordPiece(_) => {
                let chain = vec!["a".to_owned(), piece.clone(), "a".to_owned()];
                if let Ok(mut out) = step.decode_chain(chain) {
                    if out.len() == 3 {
                        piece = out.swap_remove(1);
                    }
                }
            }
            _ => {}
        }
    }
    piece.into_bytes()
}

/// `<0xNN>` as the byte `NN`.
fn fallback_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2)
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

/// A byte-level piece's bytes: GPT-2's table maps the printable bytes
/// `!..=~`, `¡..=¬`, `®..=ÿ` to the same code points and every other byte,
/// in order, to U+0100 onwards. A character outside the table stands for
/// its own UTF-8.
fn byte_level_bytes(piece: &str) -> Vec<u8> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let printable = |b: u8| {
            matches!(b, b'!'..=b'~') || matches!(b, 0xA1..=0xAC) || matches!(b, 0xAE..=0xFF)
        };
        let mut next = 256u32;
        (0..=255u8)
            .map(|b| {
                let c = if printable(b) {
                    char::from(b)
                } else {
                    next += 1;
                    char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
                };
                (c, b)
            })
            .collect()
    });
    let mut out = Vec::with_capacity(piece.len());
    for c in piece.chars() {
        match table.get(&c) {
            Some(&b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}
