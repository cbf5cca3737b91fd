//! OpenAI's response objects: `chat.completion`, `chat.completion.chunk`,
//! `text_completion`, and their `usage`.

use serde_json::{json, Value};

use crate::job::{FinishReason, PromptTokens};
use crate::logprobs::{self, TokenLogprob};

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
    /// `entries` in the endpoint's shape (see [`crate::logprobs`]); the
    /// first starts at character `offset` of the generated text.
    pub fn logprobs(&self, entries: &[TokenLogprob], offset: usize) -> Value {
        match self.kind {
            Kind::Chat => logprobs::chat_json(entries),
            Kind::Text => logprobs::text_json(entries, offset),
        }
    }

    /// The whole answer (not streaming); `logprobs` as
    /// [`Header::logprobs`] writes them, or `None` (`null`).
    pub fn complete(
        &self,
        text: &str,
        logprobs: Option<Value>,
        reason: FinishReason,
        usage: Value,
    ) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": reason.as_str(),
            }),
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "logprobs": logprobs,
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

    /// The whole answer of a chat completion that calls tools: `calls` as
    /// `message.tool_calls`, no content, `finish_reason: "tool_calls"`.
    pub fn complete_calls(
        &self,
        calls: Vec<Value>,
        logprobs: Option<Value>,
        usage: Value,
    ) -> Value {
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": null, "tool_calls": calls},
                "logprobs": logprobs,
                "finish_reason": FinishReason::ToolCalls.as_str(),
            }],
            "usage": usage,
        })
    }

    /// The streamed chunks of tool call `index` as OpenAI streams them: its
    /// id, type and name (arguments empty), then its arguments.
    pub fn call_chunks(&self, index: usize, call: &Value) -> [Value; 2] {
        let delta = |d: Value| {
            json!({
                "id": self.id,
                "object": self.object(true),
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": {"tool_calls": [d]}, "logprobs": null,
                             "finish_reason": null}],
            })
        };
        [
            delta(json!({"index": index, "id": call["id"], "type": "function",
                         "function": {"name": call["function"]["name"], "arguments": ""}})),
            delta(json!({"index": index,
                         "function": {"arguments": call["function"]["arguments"]}})),
        ]
    }

    /// A streamed chunk: `first` carries the role (chat), `text` the new
    /// text with its tokens' `logprobs`, `reason` ends the choice.
    pub fn chunk(
        &self,
        first: bool,
        text: &str,
        logprobs: Option<Value>,
        reason: Option<FinishReason>,
    ) -> Value {
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
                    "logprobs": logprobs,
                    "finish_reason": reason.map(FinishReason::as_str),
                })
            }
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "logprobs": logprobs,
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

    /// A streamed chunk of a chat answer's reasoning:
    /// `delta.reasoning_content` (vLLM's and DeepSeek's field).
    pub fn reasoning_chunk(&self, text: &str, logprobs: Option<Value>) -> Value {
        let mut chunk = self.chunk(false, "", logprobs, None);
        chunk["choices"][0]["delta"] = json!({"reasoning_content": text});
        chunk
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
