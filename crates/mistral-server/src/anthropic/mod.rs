//! Anthropic's Messages API (`POST /v1/messages`) on the same engine.
//!
//! Design notes:
//! - A request is translated into the OpenAI chat request it means (system
//!   prompt, messages with `tool_use` blocks as `tool_calls` and
//!   `tool_result` blocks as `tool` messages, `tools` with `input_schema`
//!   as `parameters`, `tool_choice` `auto`/`any`/`tool`/`none`,
//!   `stop_sequences` as `stop`), which the chat endpoint's parser then
//!   checks; so prompts, tool formats and constraints are the chat
//!   endpoint's, per model.
//! - The answer comes back as a message of content blocks (`thinking`,
//!   `text`, `tool_use`), `stop_reason` `end_turn`, `max_tokens`,
//!   `stop_sequence` or `tool_use`; streamed as Anthropic's event sequence
//!   (`message_start`, per block `content_block_start`/`_delta`/`_stop`,
//!   `message_delta`, `message_stop`).
//! - Errors have Anthropic's shape: `{"type": "error", "error": {"type",
//!   "message"}}`, the type from the HTTP status.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::job::{Event, FinishReason, PromptTokens};
use crate::queue::Queued;
use crate::tools::Answer;

mod request;
pub use request::to_openai;

/// `err` as Anthropic answers errors.
pub fn error_response(err: &ApiError) -> Response {
    (err.status, Json(error_body(err))).into_response()
}

/// Anthropic's error object for `err` (its type from the status).
pub(super) fn error_body(err: &ApiError) -> Value {
    let kind = match err.status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    let message = match &err.param {
        Some(param) => format!("{param}: {}", err.message),
        None => err.message.clone(),
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The message's `usage`.
fn usage(prompt: PromptTokens, output: usize) -> Value {
    json!({"input_tokens": prompt.total - prompt.cached,
           "cache_read_input_tokens": prompt.cached, "output_tokens": output})
}

/// `stop_reason` for how the answer ended.
fn stop_reason(reason: FinishReason, matched: &Option<String>) -> &'static str {
    match (reason, matched) {
        (FinishReason::ToolCalls, _) => "tool_use",
        (FinishReason::Length, _) => "max_tokens",
        (FinishReason::Stop, Some(_)) => "stop_sequence",
        (FinishReason::Stop, None) => "end_turn",
    }
}

/// A `tool_use` block of an OpenAI tool call.
fn tool_use(call: &Value) -> Value {
    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
    let input: Value = serde_json::from_str(arguments).unwrap_or(json!({}));
    json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input})
}

/// The message header fields (`id`, `type`, `role`, `model`).
fn message(id: &str, model: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("type".into(), json!("message"));
    m.insert("role".into(), json!("assistant"));
    m.insert("model".into(), json!(model));
    m
}

/// A fresh `msg_...` id.
pub fn message_id() -> String {
    let nanos = crate::response::unix_time().as_nanos();
    format!("msg_{nanos:x}")
}

/// The answer to a queued request: one message (started), or its event
/// stream (from when it was queued).
pub async fn respond(queued: Queued, model: String, stream: bool) -> Result<Response, ApiError> {
    if stream {
        return Ok(Sse::new(events(queued, model))
            .keep_alive(KeepAlive::new())
            .into_response());
    }
    let prompt_tokens = queued.prompt_tokens;
    let whole = queued.collect().await?;
    let mut content = Vec::new();
    if !whole.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": whole.reasoning, "signature": ""}));
    }
    let (text, calls) = match whole.answer {
        Answer::Calls(calls) => (String::new(), calls),
        Answer::Content(text) => (text, Vec::new()),
    };
    if !text.is_empty() || (content.is_empty() && calls.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    content.extend(calls.iter().map(tool_use));
    let reason = match calls.is_empty() {
        true => whole.reason,
        false => FinishReason::ToolCalls,
    };
    let mut m = message(&message_id(), &model);
    m.insert("content".into(), Value::Array(content));
    m.insert(
        "stop_reason".into(),
        json!(stop_reason(reason, &whole.matched)),
    );
    m.insert("stop_sequence".into(), json!(whole.matched));
    m.insert(
        "usage".into(),
        usage(prompt_tokens, whole.completion_tokens),
    );
    Ok(Json(Value::Object(m)).into_response())
}

/// The open content block of a stream.
#[derive(Clone, Copy, PartialEq)]
enum Block {
    Thinking,
    Text,
}

struct StreamState {
    queued: Queued,
    /// Text held for the tool format (read back at the end).
    held: Option<String>,
    thinking: bool,
    open: Option<Block>,
    index: usize,
    pending: VecDeque<SseEvent>,
    done: bool,
}

impl StreamState {
    fn push(&mut self, name: &str, data: Value) {
        let event = SseEvent::default().event(name).data(data.to_string());
        self.pending.push_back(event);
    }

    /// Ends the block at `index` and moves to the next.
    fn stop_block(&mut self) {
        self.push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": self.index}),
        );
        self.index += 1;
    }

    /// Closes the open text or thinking block, if any.
    fn close(&mut self) {
        if self.open.take().is_some() {
            self.stop_block();
        }
    }

    /// Streams `text` into a block of `kind`, opening it if needed.
    fn write(&mut self, kind: Block, text: &str) {
        if self.open != Some(kind) {
            self.close();
            let block = match kind {
                Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
                Block::Text => json!({"type": "text", "text": ""}),
            };
            self.push(
                "content_block_start",
                json!({"type": "content_block_start", "index": self.index, "content_block": block}),
            );
            self.open = Some(kind);
        }
        let delta = match kind {
            Block::Thinking => json!({"type": "thinking_delta", "thinking": text}),
            Block::Text => json!({"type": "text_delta", "text": text}),
        };
        self.push(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        );
    }

    /// A whole `tool_use` block for `call`.
    fn tool_use(&mut self, call: &Value) {
        self.close();
        let mut block = tool_use(call);
        let input = block["input"].to_string();
        block["input"] = json!({});
        self.push(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.index, "content_block": block}),
        );
        self.push(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.index,
                   "delta": {"type": "input_json_delta", "partial_json": input}}),
        );
        self.stop_block();
    }
}

/// The event stream of a queued request (see the module notes).
fn events(queued: Queued, model: String) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state = StreamState {
        held: queued.tools.as_ref().map(|_| String::new()),
        thinking: queued.reasoning == Some(true),
        queued,
        open: None,
        index: 0,
        pending: VecDeque::new(),
        done: false,
    };
    stream::unfold(state, move |mut s| {
        let model = model.clone();
        async move {
            loop {
                if let Some(event) = s.pending.pop_front() {
                    return Some((Ok(event), s));
                }
                if s.done {
                    return None;
                }
                match s.queued.rx.recv().await {
                    Some(Event::Reasoning(on)) => s.thinking = on && s.queued.reasoning.is_some(),
                    Some(Event::CallsStart) => {}
                    Some(Event::Text { text, .. }) if s.thinking => s.write(Block::Thinking, &text),
                    Some(Event::Text { text, .. }) => match s.held.as_mut() {
                        Some(held) => held.push_str(&text),
                        None => s.write(Block::Text, &text),
                    },
                    Some(Event::Finished {
                        reason,
                        completion_tokens,
                        ids,
                        matched,
                    }) => {
                        let answer = match (s.held.take(), &s.queued.tools) {
                            (Some(held), Some(side)) => Some(side.read_tool_answer(&held, &ids)),
                            _ => None,
                        };
                        let reason = match answer {
                            Some(Answer::Calls(calls)) => {
                                for call in &calls {
                                    s.tool_use(call);
                                }
                                FinishReason::ToolCalls
                            }
                            Some(Answer::Content(text)) => {
                                s.write(Block::Text, &text);
                                reason
                            }
                            None => reason,
                        };
                        if s.index == 0 && s.open.is_none() {
                            s.write(Block::Text, "");
                        }
                        s.close();
                        s.push(
                            "message_delta",
                            json!({"type": "message_delta",
                               "delta": {"stop_reason": stop_reason(reason, &matched),
                                         "stop_sequence": matched},
                               "usage": {"output_tokens": completion_tokens}}),
                        );
                        s.push("message_stop", json!({"type": "message_stop"}));
                        s.done = true;
                    }
                    Some(Event::Failed(err)) => {
                        s.push("error", error_body(&err));
                        s.done = true;
                    }
                    // The stream opened when the request was queued; the message
                    // starts with its prompt's count once the engine takes it.
                    Some(Event::Started { prompt_tokens }) => {
                        let mut m = message(&message_id(), &model);
                        m.insert("content".into(), json!([]));
                        m.insert("stop_reason".into(), Value::Null);
                        m.insert("stop_sequence".into(), Value::Null);
                        m.insert("usage".into(), usage(prompt_tokens, 0));
                        s.push(
                            "message_start",
                            json!({"type": "message_start", "message": Value::Object(m)}),
                        );
                    }
                    None => {
                        let err = ApiError::internal("the engine dropped the request");
                        s.push("error", error_body(&err));
                        s.done = true;
                    }
                }
            }
        }
    })
}
