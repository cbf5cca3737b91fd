//! mistral-common's request normalizer: OpenAI-style messages into the
//! messages the instruct tokenizer encodes.
//!
//! Consecutive messages of one role are merged (texts joined by a blank
//! line, tool calls concatenated with their arguments re-serialized as
//! JSON); tool messages stay one each (from v11 sorted in the order of the
//! calls they answer). Up to v3 the system messages become one system
//! prompt; from v7 each is a message. Up to v3 a conversation that does not
//! start with a user turn gets an empty one first.

use serde_json::Value;

use super::json::{named_function, normalize_json};
use super::{invalid, Result};

/// A piece of content.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Chunk {
    /// Text.
    Text(String),
    /// Reasoning (`{"type": "thinking", "thinking": ..., "closed": ...}`).
    Think { text: String, closed: bool },
}

/// A message's content: plain text, or chunks when any is not text.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Content {
    Text(String),
    Chunks(Vec<Chunk>),
}

impl Content {
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Content::Text(t) => t.is_empty(),
            Content::Chunks(c) => c.is_empty(),
        }
    }
}

/// A tool call of an assistant message.
#[derive(Debug, Clone)]
pub(super) struct ToolCall {
    pub(super) id: String,
    pub(super) name: String,
    /// The arguments as (normalized) JSON text.
    pub(super) arguments: String,
}

/// A message after normalization.
#[derive(Debug, Clone)]
pub(super) enum Message {
    User(Content),
    Assistant {
        content: Content,
        calls: Vec<ToolCall>,
        prefix: bool,
    },
    Tool {
        content: String,
        call_id: Option<String>,
        /// The function's name (written by v2 only).
        name: Option<String>,
    },
    System(Content),
}

/// The normalized messages and (up to v3) the system prompt.
pub(super) fn normalize(
    messages: &[Value],
    version: u32,
) -> Result<(Vec<Message>, Option<String>)> {
    let mut out: Vec<Message> = Vec::new();
    let mut systems: Vec<String> = Vec::new();
    let mut latest_call_ids: Vec<String> = Vec::new();
    let mut i = 0;
    while i < messages.len() {
        let role = role_of(&messages[i], i)?;
        let end = (i..messages.len())
            .find(|&j| role_of(&messages[j], j).ok() != Some(role))
            .unwrap_or(messages.len());
        let group = &messages[i..end];
        match role {
            "user" => out.push(Message::User(aggregate(group)?)),
            "system" => {
                for m in group {
                    let content = aggregate(std::slice::from_ref(m))?;
                    if version >= 7 {
                        out.push(Message::System(content));
                    } else {
                        match content {
                            Content::Text(t) if t.is_empty() => {}
                            Content::Text(t) => systems.push(t),
                            Content::Chunks(_) => {
                                return Err(invalid("a system message can only hold text (v3)"))
                            }
                        }
                    }
                }
            }
            "tool" => {
                let mut tools = Vec::new();
                for m in group {
                    let Content::Text(content) = aggregate(std::slice::from_ref(m))? else {
                        return Err(invalid("a tool message can only hold text"));
                    };
                    let content = if version >= 7 {
                        content
                    } else {
                        normalize_json(&content)
                    };
                    let call_id = m
                        .get("tool_call_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let name = m.get("name").and_then(Value::as_str).map(str::to_owned);
                    tools.push((content, call_id, name));
                }
                if version >= 11 {
                    // In the order of the calls they answer, then as given.
                    let rank = |id: &Option<String>| {
                        let id = id.as_deref().unwrap_or("null");
                        latest_call_ids
                            .iter()
                            .position(|c| c == id)
                            .unwrap_or(usize::MAX)
                    };
                    let mut indexed: Vec<_> = tools.into_iter().enumerate().collect();
                    indexed.sort_by_key(|(k, (_, id, _))| (rank(id), *k));
                    tools = indexed.into_iter().map(|(_, t)| t).collect();
                }
                out.extend(
                    tools
                        .into_iter()
                        .map(|(content, call_id, name)| Message::Tool {
                            content,
                            call_id,
                            name,
                        }),
                );
                latest_call_ids.clear();
            }
            "assistant" => {
                let mut calls = Vec::new();
                let mut prefix = false;
                for m in group {
                    if let Some(list) = m.get("tool_calls").filter(|v| !v.is_null()) {
                        let list = list
                            .as_array()
                            .ok_or_else(|| invalid("tool_calls must be a list"))?;
                        for call in list {
                            calls.push(tool_call(call)?);
                        }
                    }
                    prefix |= m.get("prefix").and_then(Value::as_bool).unwrap_or(false);
                }
                latest_call_ids.extend(calls.iter().map(|c| c.id.clone()));
                out.push(Message::Assistant {
                    content: aggregate(group)?,
                    calls,
                    prefix,
                });
            }
            other => return Err(invalid(format!("messages[{i}]: unknown role {other:?}"))),
        }
        i = end;
    }
    let first_is_user = matches!(out.first(), Some(Message::User(_)));
    if out.is_empty() || (version < 7 && !first_is_user) {
        out.insert(0, Message::User(Content::Text(String::new())));
    }
    let system = (!systems.is_empty()).then(|| systems.join("\n\n"));
    Ok((out, system))
}

fn role_of(message: &Value, i: usize) -> Result<&str> {
    message
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("messages[{i}]: no role")))
}

/// The messages' contents merged as mistral-common merges them: texts of
/// different messages and neighbouring text parts joined by a blank line,
/// empty ones skipped; plain text unless a part is not text.
fn aggregate(messages: &[Value]) -> Result<Content> {
    const JOIN: &str = "\n\n";
    let mut all: Vec<Chunk> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let flush = |all: &mut Vec<Chunk>, current: &mut Vec<String>| {
        if !current.is_empty() {
            all.push(Chunk::Text(current.concat()));
            current.clear();
        }
    };
    for m in messages {
        let needs_separator = !current.is_empty();
        match m.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => {
                let join = if needs_separator { JOIN } else { "" };
                current.push(format!("{join}{s}"));
            }
            Some(Value::Array(chunks)) => {
                for chunk in chunks {
                    match chunk.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            let text = chunk.get("text").and_then(Value::as_str).unwrap_or("");
                            if text.is_empty() {
                                continue;
                            }
                            // Parts of one message and messages: both a blank line.
                            let join = if current.is_empty() { "" } else { JOIN };
                            current.push(format!("{join}{text}"));
                        }
                        Some("thinking") => {
                            flush(&mut all, &mut current);
                            let text =
                                chunk
                                    .get("thinking")
                                    .and_then(Value::as_str)
                                    .ok_or_else(|| {
                                        invalid("a thinking part needs its `thinking` text")
                                    })?;
                            let closed =
                                chunk.get("closed").and_then(Value::as_bool).unwrap_or(true);
                            all.push(Chunk::Think {
                                text: text.to_owned(),
                                closed,
                            });
                        }
                        _ => {
                            return Err(invalid(
                                "only text and thinking parts are supported in content",
                            ))
                        }
                    }
                }
            }
            Some(other) => return Err(invalid(format!("content must be text, got {other}"))),
        }
    }
    if all.is_empty() {
        return Ok(Content::Text(current.concat()));
    }
    flush(&mut all, &mut current);
    Ok(Content::Chunks(all))
}

fn tool_call(call: &Value) -> Result<ToolCall> {
    let (function, name) = named_function(call, "a tool call")?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => super::json::dumps(other),
    };
    Ok(ToolCall {
        id: call
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("null")
            .to_owned(),
        name: name.to_owned(),
        arguments: normalize_json(&arguments),
    })
}
