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

use crate::engine::{Event, FinishReason, PromptTokens};
use crate::error::ApiError;
use crate::queue::Queued;
use crate::tools::Answer;

fn bad(message: impl Into<String>, field: &str) -> ApiError {
    ApiError::bad_request(message, Some(field))
}

/// The OpenAI chat request that `body` (a Messages request) means, and
/// whether it streams.
pub fn to_openai(body: &Value) -> Result<(Value, bool), ApiError> {
    let mut out = Map::new();
    let Some(max_tokens) = body.get("max_tokens").filter(|v| !v.is_null()) else {
        return Err(bad("`max_tokens` is required", "max_tokens"));
    };
    out.insert("max_tokens".into(), max_tokens.clone());
    for (ours, theirs) in [
        ("model", "model"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stop", "stop_sequences"),
    ] {
        if let Some(v) = body.get(theirs).filter(|v| !v.is_null()) {
            out.insert(ours.into(), v.clone());
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(bad(
                format!("`stream` must be true or false, got {v}"),
                "stream",
            ))
        }
    };
    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text = text_of(blocks, "system")?;
            messages.push(json!({"role": "system", "content": text}));
        }
        Some(_) => return Err(bad("`system` must be text or text blocks", "system")),
    }
    let Some(list) = body.get("messages").and_then(Value::as_array) else {
        return Err(bad("`messages` must be a list", "messages"));
    };
    for (i, message) in list.iter().enumerate() {
        messages.extend(message_to_openai(message, &format!("messages[{i}]"))?);
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        let Some(tools) = tools.as_array() else {
            return Err(bad("`tools` must be a list", "tools"));
        };
        let functions = tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool_to_openai(t, &format!("tools[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert("tools".into(), Value::Array(functions));
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = tool_choice_to_openai(choice)?;
        out.insert("tool_choice".into(), choice);
        if let Some(parallel) = parallel {
            out.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    Ok((Value::Object(out), stream))
}

/// The text of `blocks`, all of type `text` (`field` names them in errors).
fn text_of(blocks: &[Value], field: &str) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, block) in blocks.iter().enumerate() {
        match (block["type"].as_str(), block["text"].as_str()) {
            (Some("text"), Some(t)) => text.push_str(t),
            _ => {
                return Err(bad(
                    "only text blocks are supported here",
                    &format!("{field}[{j}]"),
                ))
            }
        }
    }
    Ok(text)
}

/// One Messages message as OpenAI messages: a user turn's `tool_result`
/// blocks become `tool` messages (first, in order), its text a user
/// message; an assistant turn's `tool_use` blocks become `tool_calls`.
fn message_to_openai(message: &Value, field: &str) -> Result<Vec<Value>, ApiError> {
    let role = match message["role"].as_str() {
        Some(r @ ("user" | "assistant")) => r,
        _ => {
            return Err(bad(
                "`role` must be \"user\" or \"assistant\"",
                &format!("{field}.role"),
            ))
        }
    };
    let blocks = match &message["content"] {
        Value::String(s) => return Ok(vec![json!({"role": role, "content": s})]),
        Value::Array(blocks) => blocks,
        _ => {
            return Err(bad(
                "`content` must be text or a list of blocks",
                &format!("{field}.content"),
            ))
        }
    };
    let (mut out, mut text, mut calls) = (Vec::new(), String::new(), Vec::new());
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{field}.content[{j}]");
        match (role, block["type"].as_str()) {
            (_, Some("text")) => {
                let t = block["text"]
                    .as_str()
                    .ok_or_else(|| bad("a text block needs `text`", &format!("{at}.text")))?;
                text.push_str(t);
            }
            // Earlier reasoning is not sent back to the model.
            (_, Some("thinking" | "redacted_thinking")) => {}
            ("assistant", Some("tool_use")) => {
                let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str()) else {
                    return Err(bad("a tool_use block needs `id` and `name`", &at));
                };
                let input = block.get("input").cloned().unwrap_or(json!({}));
                calls.push(json!({"id": id, "type": "function",
                                  "function": {"name": name, "arguments": input.to_string()}}));
            }
            ("user", Some("tool_result")) => {
                let id = block["tool_use_id"].as_str().ok_or_else(|| {
                    bad(
                        "a tool_result block needs `tool_use_id`",
                        &format!("{at}.tool_use_id"),
                    )
                })?;
                let content = match &block["content"] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => text_of(parts, &format!("{at}.content"))?,
                    _ => return Err(bad("`content` must be text or text blocks", &at)),
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            (_, other) => {
                return Err(bad(
                    format!(
                        "{} blocks are not supported in {role} messages",
                        other.unwrap_or("untyped")
                    ),
                    &format!("{at}.type"),
                ))
            }
        }
    }
    match role {
        "assistant" if !calls.is_empty() => {
            let content = (!text.is_empty()).then_some(text);
            out.push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
        }
        _ if !text.is_empty() || out.is_empty() => out.push(json!({"role": role, "content": text})),
        _ => {}
    }
    Ok(out)
}

/// A Messages tool (`name`, `description`, `input_schema`) as an OpenAI
/// function tool.
fn tool_to_openai(tool: &Value, field: &str) -> Result<Value, ApiError> {
    if let Some(kind) = tool["type"].as_str().filter(|k| *k != "custom") {
        return Err(bad(
            format!("server tools (`{kind}`) are not supported; only client tools"),
            &format!("{field}.type"),
        ));
    }
    let name = tool["name"]
        .as_str()
        .ok_or_else(|| bad("a tool needs a `name`", &format!("{field}.name")))?;
    let schema = tool.get("input_schema").cloned().ok_or_else(|| {
        bad(
            "a tool needs an `input_schema`",
            &format!("{field}.input_schema"),
        )
    })?;
    let mut function = json!({"name": name, "parameters": schema});
    if let Some(d) = tool.get("description").filter(|d| !d.is_null()) {
        function["description"] = d.clone();
    }
    Ok(json!({"type": "function", "function": function}))
}

/// A Messages `tool_choice` as OpenAI's, and `parallel_tool_calls` when
/// `disable_parallel_tool_use` is given.
fn tool_choice_to_openai(choice: &Value) -> Result<(Value, Option<bool>), ApiError> {
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|off| !off);
    let openai = match choice["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice["name"]
                .as_str()
                .ok_or_else(|| bad("`tool_choice.name` is required", "tool_choice.name"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(bad(
                "`tool_choice.type` must be auto, any, tool or none",
                "tool_choice.type",
            ))
        }
    };
    Ok((openai, parallel))
}

/// `err` as Anthropic answers errors.
pub fn error_response(err: &ApiError) -> Response {
    (err.status, Json(error_body(err))).into_response()
}

/// Anthropic's error object for `err` (its type from the status).
fn error_body(err: &ApiError) -> Value {
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

/// What the answer's pieces are while it is read.
#[derive(Default)]
struct Pieces {
    thinking: String,
    text: String,
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

/// The answer to a queued request: one message, or its event stream.
pub async fn respond(queued: Queued, model: String, stream: bool) -> Result<Response, ApiError> {
    if stream {
        return Ok(Sse::new(events(queued, model))
            .keep_alive(KeepAlive::new())
            .into_response());
    }
    let Queued {
        mut rx,
        prompt_tokens,
        tools,
        reasoning,
    } = queued;
    let mut pieces = Pieces::default();
    let mut thinking = reasoning == Some(true);
    loop {
        match rx.recv().await {
            Some(Event::Text { text, .. }) => match thinking {
                true => pieces.thinking.push_str(&text),
                false => pieces.text.push_str(&text),
            },
            Some(Event::Reasoning(on)) => thinking = on && reasoning.is_some(),
            Some(Event::CallsStart) => {}
            Some(Event::Finished {
                reason,
                completion_tokens,
                ids,
                matched,
            }) => {
                let mut content = Vec::new();
                if !pieces.thinking.is_empty() {
                    content.push(json!({"type": "thinking", "thinking": pieces.thinking,
                                        "signature": ""}));
                }
                let (text, calls) = match tools.map(|t| t.read_tool_answer(&pieces.text, &ids)) {
                    Some(Answer::Calls(calls)) => (String::new(), calls),
                    Some(Answer::Content(text)) => (text, Vec::new()),
                    None => (pieces.text, Vec::new()),
                };
                if !text.is_empty() || (content.is_empty() && calls.is_empty()) {
                    content.push(json!({"type": "text", "text": text}));
                }
                content.extend(calls.iter().map(tool_use));
                let reason = match calls.is_empty() {
                    true => reason,
                    false => FinishReason::ToolCalls,
                };
                let mut m = message(&message_id(), &model);
                m.insert("content".into(), Value::Array(content));
                m.insert("stop_reason".into(), json!(stop_reason(reason, &matched)));
                m.insert("stop_sequence".into(), json!(matched));
                m.insert("usage".into(), usage(prompt_tokens, completion_tokens));
                return Ok(Json(Value::Object(m)).into_response());
            }
            Some(Event::Failed(err)) => return Err(err),
            Some(Event::Started { .. }) => {}
            None => return Err(ApiError::internal("the engine dropped the request")),
        }
    }
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

    /// Closes the open block, if any.
    fn close(&mut self) {
        if self.open.take().is_some() {
            self.push(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.index}),
            );
            self.index += 1;
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
        self.open = Some(Block::Text);
        self.close();
    }
}

/// The event stream of a queued request (see the module notes).
fn events(queued: Queued, model: String) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let mut m = message(&message_id(), &model);
    m.insert("content".into(), json!([]));
    m.insert("stop_reason".into(), Value::Null);
    m.insert("stop_sequence".into(), Value::Null);
    m.insert("usage".into(), usage(queued.prompt_tokens, 0));
    let mut state = StreamState {
        held: queued.tools.as_ref().map(|_| String::new()),
        thinking: queued.reasoning == Some(true),
        queued,
        open: None,
        index: 0,
        pending: VecDeque::new(),
        done: false,
    };
    state.push(
        "message_start",
        json!({"type": "message_start", "message": Value::Object(m)}),
    );
    stream::unfold(state, |mut s| async move {
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
                Some(Event::Started { .. }) => {}
                None => {
                    let err = ApiError::internal("the engine dropped the request");
                    s.push("error", error_body(&err));
                    s.done = true;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    //! Messages requests translated, against hand-written OpenAI shapes.

    use super::*;

    #[test]
    fn a_tool_conversation_becomes_openai_messages() {
        let body = json!({
            "model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief."}],
            "stop_sequences": ["END"],
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "t1", "name": "get_weather",
                     "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny"},
                    {"type": "text", "text": "Thanks"}]},
            ],
        });
        let (openai, stream) = to_openai(&body).expect("valid");
        assert!(!stream);
        assert_eq!(openai["stop"], json!(["END"]));
        assert_eq!(openai["tool_choice"], "required");
        assert_eq!(openai["parallel_tool_calls"], false);
        assert_eq!(
            openai["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        let messages = openai["messages"].as_array().expect("messages");
        assert_eq!(
            messages[0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(messages[2]["content"], "Let me look.");
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "Sunny"})
        );
        assert_eq!(messages[4], json!({"role": "user", "content": "Thanks"}));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let base = || json!({"max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]});
        let cases: [(&str, Value, &str); 5] = [
            ("max_tokens", Value::Null, "max_tokens"),
            (
                "messages",
                json!([{"role": "system", "content": "x"}]),
                "messages[0].role",
            ),
            (
                "messages",
                json!([{"role": "user", "content": [{"type": "image"}]}]),
                "messages[0].content[0].type",
            ),
            (
                "tools",
                json!([{"type": "web_search_20250305", "name": "w"}]),
                "tools[0].type",
            ),
            (
                "tool_choice",
                json!({"type": "sometimes"}),
                "tool_choice.type",
            ),
        ];
        for (field, value, named) in cases {
            let mut body = base();
            match value {
                Value::Null => {
                    body.as_object_mut().expect("object").remove(field);
                }
                v => body[field] = v,
            }
            let err = to_openai(&body).expect_err(field);
            assert_eq!(err.param.as_deref(), Some(named), "{field}");
            assert_eq!(error_body(&err)["error"]["type"], "invalid_request_error");
        }
    }
}
