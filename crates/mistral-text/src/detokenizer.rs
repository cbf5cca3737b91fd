//! Streaming detokenization: token ids in one at a time, final text out.
//!
//! Design notes:
//! - Invariant: the concatenation of every segment [`StreamingDetokenizer::step`]
//!   returned, plus [`StreamingDetokenizer::finish`], equals the one-shot
//!   `tokenizer.decode(all_ids, skip_special_tokens)`. Text is only handed out
//!   once no later token can change it.
//! - Each step decodes a short window of recent ids, not the whole sequence:
//!   an *anchor* (one already emitted token) plus the tokens after it. The new
//!   text is the window's decode minus the part already emitted from it, so
//!   decoder effects on the window's first token (SentencePiece's
//!   `Strip(" ", 1, 0)`, `Metaspace` dropping the first space) hit the anchor
//!   in both decodes alike and cancel out.
//! - An anchor must decode (alone) to non-empty text: a token whose text the
//!   strip removes entirely (`▁`) or a skipped special token would let the
//!   strip reach the next token's space. Byte-fallback tokens (`<0xE2>`) are
//!   never anchors, and text is held while the last decodable token is one:
//!   the `ByteFallback` decoder turns a whole run of byte tokens into text at
//!   once (and into U+FFFD for every byte when the run is invalid UTF-8), so a
//!   later byte can change the text of earlier ones. Skipped special tokens
//!   and unknown ids decode to nothing and do not end a byte run (the decoder
//!   never sees them), so they are transparent here too.
//! - Byte-level BPE (tekken, GPT-2 style) decodes all bytes of the sequence at
//!   once, lossily: a character split over tokens shows as U+FFFD until it is
//!   complete. Text ending in U+FFFD is therefore held, and such a token is
//!   not an anchor; U+FFFD that really is in the output is emitted as soon as
//!   a later token follows it, or by `finish`.
//! - Each step costs two decodes of a window that is usually 2 tokens (longer
//!   only while a byte run or a held U+FFFD lasts), independent of how many
//!   tokens came before.
//! - Should a decoder ever rewrite text that was already emitted (a decoder
//!   with effects this design does not know), `step` returns
//!   [`DetokenizeError::Unstable`] instead of silently breaking the invariant.

use tokenizers::Tokenizer;

/// Errors of [`StreamingDetokenizer`].
#[derive(Debug, thiserror::Error)]
pub enum DetokenizeError {
    /// The tokenizer's decoder failed.
    #[error("decoding token ids {ids:?} failed: {message}")]
    Decode {
        /// The window of ids that was being decoded.
        ids: Vec<u32>,
        /// The `tokenizers` crate's message.
        message: String,
    },

    /// The decoder changed text that had already been emitted.
    #[error(
        "the tokenizer's decoder changed already emitted text {emitted:?} (window {ids:?} \
         now decodes to {now:?}); streaming cannot match its one-shot decode"
    )]
    Unstable {
        /// The window of ids.
        ids: Vec<u32>,
        /// What had been emitted from the window.
        emitted: String,
        /// What the window decodes to now.
        now: String,
    },
}

/// How one token takes part in decoding, as far as streaming is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// Decodes to nothing: a skipped special token or an id not in the vocabulary.
    Transparent,
    /// A byte-fallback token, `<0xNN>`.
    Byte,
    /// Anything else.
    Text,
}

/// Turns a stream of token ids into text, one final segment per token.
///
/// ```no_run
/// # fn demo(tokenizer: &tokenizers::Tokenizer, ids: &[u32])
/// #     -> Result<String, mistral_text::DetokenizeError> {
/// use mistral_text::StreamingDetokenizer;
/// let mut detok = StreamingDetokenizer::new(tokenizer, true);
/// let mut text = String::new();
/// for &id in ids {
///     text += &detok.step(id)?; // print it as it comes
/// }
/// text += &detok.finish()?;
/// assert_eq!(text, tokenizer.decode(ids, true).unwrap());
/// # Ok(text)
/// # }
/// ```
#[derive(Debug)]
pub struct StreamingDetokenizer<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    /// The ids being decoded: the anchor (when there is one) and the ids since.
    window: Vec<u32>,
    /// The part of `window`'s decode already emitted (or, for the anchor,
    /// emitted earlier).
    emitted: String,
    /// Whether the last token that is not transparent is a byte token.
    in_byte_run: bool,
}

impl<'a> StreamingDetokenizer<'a> {
    /// A detokenizer for a new sequence. `skip_special_tokens` is passed to
    /// every decode, as it would be to the one-shot `decode`.
    pub fn new(tokenizer: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        StreamingDetokenizer {
            tokenizer,
            skip_special_tokens,
            window: Vec::new(),
            emitted: String::new(),
            in_byte_run: false,
        }
    }

    /// Forgets every id fed so far; the next id starts a new sequence.
    pub fn reset(&mut self) {
        self.window.clear();
        self.emitted.clear();
        self.in_byte_run = false;
    }

    /// Feeds the next token id and returns the text that became final with
    /// it (often the token's own text, possibly empty while bytes of a
    /// character are pending).
    pub fn step(&mut self, id: u32) -> Result<String, DetokenizeError> {
        self.window.push(id);
        let kind = self.kind(id);
        match kind {
            TokenKind::Transparent => return Ok(String::new()),
            TokenKind::Byte => {
                self.in_byte_run = true;
                return Ok(String::new());
            }
            TokenKind::Text => self.in_byte_run = false,
        }
        let text = self.decode(&self.window)?;
        if text.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let new = self.new_text(text)?;
        // The token just fed becomes the anchor when that is safe (see the
        // module notes): its own decode is non-empty and ends cleanly.
        let alone = self.decode(&[id])?;
        if !alone.is_empty() && !alone.ends_with(char::REPLACEMENT_CHARACTER) {
            self.window.clear();
            self.window.push(id);
            self.emitted = alone;
        }
        Ok(new)
    }

    /// Ends the sequence: returns the text still held back (pending bytes,
    /// trailing U+FFFD), as the one-shot decode shows it, and resets.
    pub fn finish(&mut self) -> Result<String, DetokenizeError> {
        let text = self.decode(&self.window)?;
        let rest = self.new_text(text)?;
        self.reset();
        Ok(rest)
    }

    /// How many ids the next step decodes besides the new one (the anchor and
    /// held tokens): the per-token cost, independent of the sequence length.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Whether a byte-fallback run is pending (its text is not final yet).
    pub fn has_pending_bytes(&self) -> bool {
        self.in_byte_run
    }

    /// The part of `text` (the window's decode) after what was emitted, and
    /// records it as emitted.
    fn new_text(&mut self, text: String) -> Result<String, DetokenizeError> {
        match text.strip_prefix(self.emitted.as_str()) {
            Some(new) => {
                let new = new.to_string();
                self.emitted = text;
                Ok(new)
            }
            None => Err(DetokenizeError::Unstable {
                ids: self.window.clone(),
                emitted: self.emitted.clone(),
                now: text,
            }),
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String, DetokenizeError> {
        let error = |message: String| DetokenizeError::Decode {
            ids: ids.to_vec(),
            message,
        };
        crate::contain::contain(|| self.tokenizer.decode(ids, self.skip_special_tokens))
            .map_err(error)?
            .map_err(|e| error(e.to_string()))
    }

    fn kind(&self, id: u32) -> TokenKind {
        let Some(token) = self.tokenizer.id_to_token(id) else {
            return TokenKind::Transparent;
        };
        if self.skip_special_tokens
            && self
                .tokenizer
                .get_added_vocabulary()
                .is_special_token(&token)
        {
            TokenKind::Transparent
        } else if is_byte_token(&token) {
            TokenKind::Byte
        } else {
            TokenKind::Text
        }
    }
}

/// Whether `token` is a byte-fallback piece, `<0xNN>` with two hex digits.
pub fn is_byte_token(token: &str) -> bool {
    let b = token.as_bytes();
    b.len() == 6
        && b.starts_with(b"<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}
