//! Structured output: [`OutputFormat`] (a JSON schema, any JSON object, a
//! regex, a Lark grammar) compiled by llguidance into a [`Constraint`] that
//! says which tokens may come next.
//!
//! Design notes:
//! - [`ConstraintFactory`] is built once per tokenizer: llguidance's token
//!   trie over every id's bytes ([`TokenBytes`]); special tokens are marked
//!   as llguidance wants (a 0xFF byte before their text) so grammar text
//!   never matches them; `eos` is the token the grammar's end allows.
//! - A format llguidance cannot compile (a schema keyword it does not
//!   honour, a bad regex) is an error naming what, for a 400.
//! - JSON is laid out on one line (`", "`, `": "`) unless the schema sets
//!   llguidance's `x-guidance` options itself.
//! - [`Constraint::allowed`] is a bitset over the ids; once the grammar has
//!   ended only `eos` is allowed.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::token_bytes::TokenBytes;

/// A format that cannot be used, or a constraint that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConstraintError(pub String);

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// JSON valid under this schema.
    JsonSchema(Value),
    /// Any JSON object.
    JsonObject,
    /// Text matching this regex (whole).
    Regex(String),
    /// Text of this Lark grammar (llguidance's dialect).
    Lark(String),
}

/// The tokenizer as llguidance sees it.
struct Env {
    trie: TokTrie,
    tokenizer: tokenizers::Tokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => crate::contain::contain(|| self.tokenizer.encode(text, false))
                .ok()
                .and_then(Result::ok)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_else(|| self.trie.greedy_tokenize(s)),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// Builds [`Constraint`]s for one tokenizer (see the module notes).
#[derive(Clone)]
pub struct ConstraintFactory {
    factory: Arc<ParserFactory>,
}

impl std::fmt::Debug for ConstraintFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConstraintFactory")
    }
}

impl ConstraintFactory {
    /// The factory for `tokenizer` (whose ids' bytes are `bytes`), ending
    /// grammars with `eos`.
    pub fn new(
        tokenizer: &tokenizers::Tokenizer,
        bytes: &TokenBytes,
        eos: u32,
    ) -> Result<Self, ConstraintError> {
        let special = tokenizer.get_added_tokens_decoder();
        let words: Vec<Vec<u8>> = (0..bytes.len() as u32)
            .map(|id| match special.get(&id) {
                Some(t) if t.special => {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(t.content.as_bytes());
                    w
                }
                _ => bytes.get(id).unwrap_or_default().to_vec(),
            })
            .collect();
        let info = TokRxInfo::new(words.len() as u32, eos);
        let env = Env {
            trie: TokTrie::from(&info, &words),
            tokenizer: tokenizer.clone(),
        };
        let env: TokEnv = Arc::new(env);
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| ConstraintError(e.to_string()))?;
        factory.quiet();
        Ok(ConstraintFactory {
            factory: Arc::new(factory),
        })
    }

    /// A fresh constraint for `format`; an error names what llguidance
    /// cannot compile.
    pub fn create(&self, format: &OutputFormat) -> Result<Constraint, ConstraintError> {
        let grammar = match format {
            OutputFormat::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(single_line(schema))
            }
            OutputFormat::JsonObject => TopLevelGrammar::from_json_schema(single_line(
                &serde_json::json!({"type": "object"}),
            )),
            OutputFormat::Regex(rx) => TopLevelGrammar::from_regex(rx),
            OutputFormat::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError(e));
        }
        Ok(Constraint { matcher })
    }
}

/// `schema` with llguidance's layout options set, unless it sets its own
/// (`x-guidance`): JSON on one line with `", "` and `": "` between items,
/// so a sampled answer cannot run on in whitespace.
pub fn single_line(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({"whitespace_flexible": false, "item_separator": ", ",
                               "key_separator": ": "})
        });
    }
    schema
}

/// One sequence's constraint: consume each token, ask what may follow.
pub struct Constraint {
    matcher: Matcher,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}

impl Constraint {
    /// Takes the sequence's next token (after the grammar's end, the end
    /// token or whatever ends the sequence, ignored).
    pub fn consume(&mut self, token: u32) -> Result<(), ConstraintError> {
        if self.matcher.is_stopped() {
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstraintError(e.to_string()))
    }

    /// The tokens allowed next: bit `i % 32` of word `i / 32` for token `i`.
    pub fn allowed(&mut self) -> Result<Vec<u32>, ConstraintError> {
        self.matcher
            .compute_mask_or_eos()
            .map(|mask| mask.as_slice().to_vec())
            .map_err(|e| ConstraintError(e.to_string()))
    }
}
