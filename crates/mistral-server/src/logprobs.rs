//! Log-probabilities in OpenAI's shapes.
//!
//! The engine turns each returned token's [`TokenLogprobs`] (ids and
//! numbers, from `mlx-rs-core`'s batch step) into a [`TokenLogprob`] (the
//! tokens' text and bytes) and sends them with the text they make; the
//! HTTP side writes them as:
//! - chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs":
//!   [{"token", "logprob", "bytes"}]}], "refusal": null}`;
//! - text completions (the legacy shape): `{"tokens", "token_logprobs",
//!   "top_logprobs": [{token: logprob}], "text_offset"}`.
//!
//! The numbers are the model's distribution (after a repetition penalty,
//! before temperature and filters), as mlx-lm reports them. A token's
//! `token` is its bytes as text (U+FFFD for part of a character; `bytes`
//! is exact). The end-of-sequence token that ends a generation is not
//! listed, as it is not in the text; a token that completes a stop string
//! is.

use mistral_loader::TokenBytes;
use mlx_rs_core::TokenLogprobs;
use serde_json::{json, Map, Value};

/// What OpenAI reports for a log-probability too small for a float.
const FLOOR: f32 = -9999.0;

/// One alternative token.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    /// Its text.
    pub token: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability.
    pub logprob: f32,
}

/// One returned token with its log-probability and the top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub chosen: TopLogprob,
    /// The most likely tokens of its step, most likely first.
    pub top: Vec<TopLogprob>,
}

impl TokenLogprob {
    /// Token `id`'s entry from the numbers of its step.
    pub fn new(id: u32, numbers: &TokenLogprobs, bytes: &TokenBytes) -> Self {
        let entry = |id: u32, logprob: f32| TopLogprob {
            token: bytes.text(id),
            bytes: bytes.get(id).unwrap_or_default().to_vec(),
            logprob: if logprob.is_finite() { logprob } else { FLOOR },
        };
        TokenLogprob {
            chosen: entry(id, numbers.logprob),
            top: numbers.top.iter().map(|&(id, lp)| entry(id, lp)).collect(),
        }
    }
}

impl TopLogprob {
    fn chat(&self) -> Value {
        json!({"token": self.token, "logprob": self.logprob, "bytes": self.bytes})
    }
}

/// The chat shape of `entries`.
pub fn chat_json(entries: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = e.chosen.chat();
            v["top_logprobs"] = e.top.iter().map(TopLogprob::chat).collect();
            v
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// The text-completion shape of `entries`, whose first token starts at
/// character `offset` of the generated text.
pub fn text_json(entries: &[TokenLogprob], offset: usize) -> Value {
    let mut offsets = Vec::with_capacity(entries.len());
    let mut at = offset;
    for e in entries {
        offsets.push(at);
        at += e.chosen.token.chars().count();
    }
    let top: Vec<Value> = entries
        .iter()
        .map(|e| {
            let map: Map<String, Value> = e
                .top
                .iter()
                .map(|t| (t.token.clone(), json!(t.logprob)))
                .collect();
            Value::Object(map)
        })
        .collect();
    json!({
        "tokens": entries.iter().map(|e| e.chosen.token.as_str()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.chosen.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

/// Characters the entries' tokens span (to continue `text_offset` in the
/// next chunk of a stream).
pub fn text_chars(entries: &[TokenLogprob]) -> usize {
    entries.iter().map(|e| e.chosen.token.chars().count()).sum()
}
