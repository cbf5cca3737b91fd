//! OpenAI's response objects: `chat.completion`, `chat.completion.chunk`,
//! `text_completion`, and their `usage`.

use serde_json::{json, Value};

use crate::engine::{FinishReason, PromptTokens};

/// Time since the Unix epoch (`created` fields, response ids).
pub fn unix_time() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Which endpoint a response is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

/// What every object of one response shares.
#[derive(Debug, Clone)]
pub struct Header {
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model id.
    pub model: String,
    /// The endpoint.
    pub kind: Kind,
}

/// `usage`, with `prompt_tokens_details.cached_tokens` (the prompt tokens
/// the prompt cache held).
pub fn usage(prompt: PromptTokens, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt.total,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt.total + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": prompt.cached},
    })
}

impl Header {
    /// The whole answer (not streaming).
    pub fn complete(&self, text: &str, reason: FinishReason, usage: Value) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": reason.as_str(),
            }),
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": reason.as_str(),
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        })
    }

    /// A streamed chunk: `first` carries the role (chat), `text` the new
    /// text, `reason` ends the choice.
    pub fn chunk(&self, first: bool, text: &str, reason: Option<FinishReason>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else if reason.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({
                    "index": 0,
                    "delta": delta,
                    "logprobs": null,
                    "finish_reason": reason.map(FinishReason::as_str),
                })
            }
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": reason.map(FinishReason::as_str),
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    /// The last chunk of a stream with `stream_options.include_usage`.
    pub fn usage_chunk(&self, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }
}
