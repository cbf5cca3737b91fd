//! [`encode_chat`]: a conversation's prompt ids exactly as mistral-common's
//! `encode_chat_completion` builds them for a [`Tekken`] tokenizer, rather
//! than as a Jinja template approximates them.
//!
//! Design notes (mistral-common 1.13.1's normalizer and instruct
//! tokenizers, protocol versions 3 and 7; others are refused by name):
//! - Normalizing: consecutive messages of one role are merged (texts joined
//!   by a blank line, tool calls concatenated, their arguments re-serialized
//!   as JSON); tool messages stay one each. Up to v3 the system messages
//!   become one system prompt, written before the last user message's text;
//!   from v7 each is its own `[SYSTEM_PROMPT]...[/SYSTEM_PROMPT]`.
//! - `<s>`, then per message: a user turn `[INST]text[/INST]`, with the tool
//!   list `[AVAILABLE_TOOLS][...][/AVAILABLE_TOOLS]` before the last one; an
//!   assistant turn's text (trailing spaces cut) and/or `[TOOL_CALLS][...]`,
//!   then `</s>`; a tool result `[TOOL_RESULTS]{...}[/TOOL_RESULTS]` (v3) or
//!   `[TOOL_RESULTS]id[TOOL_CONTENT]text[/TOOL_RESULTS]` (v7).
//! - JSON is written as Python's `json.dumps(..., ensure_ascii=False)`
//!   writes it (`", "` and `": "` separators, keys in the order given), so
//!   the text tokenized is mistral-common's. Floats are the one place the
//!   two may differ (Python writes `1e-05`, this `1e-5`).

use serde_json::{json, Map, Value};

use crate::tekken::Tekken;

/// A conversation that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum MistralChatError {
    /// The tokenizer's protocol version is not implemented here.
    #[error("the chat protocol of tokenizer version v{0} is not supported (supported: v3, v7)")]
    Version(u32),
    /// A message or tool is malformed; the text names which.
    #[error("{0}")]
    Invalid(String),
    /// The tokenizer lacks a control token the protocol needs.
    #[error("the tokenizer has no control token {0}")]
    MissingToken(&'static str),
}

type Result<T> = std::result::Result<T, MistralChatError>;

fn invalid(message: impl Into<String>) -> MistralChatError {
    MistralChatError::Invalid(message.into())
}

/// A tool call of an assistant message.
#[derive(Debug, Clone)]
struct ToolCall {
    id: String,
    name: String,
    /// The arguments as JSON text.
    arguments: String,
}

/// A message after normalization.
#[derive(Debug, Clone)]
enum Message {
    User(String),
    Assistant {
        content: String,
        calls: Vec<ToolCall>,
        prefix: bool,
    },
    Tool {
        content: String,
        call_id: Option<String>,
    },
    System(String),
}

/// The prompt ids of `messages` (OpenAI-style objects: `role`, `content` as
/// text or text parts, `tool_calls`, `tool_call_id`, `prefix`) with `tools`
/// (`{"type": "function", "function": {...}}`) available, for `tekken`'s
/// protocol version (see the module notes).
pub fn encode_chat(tekken: &Tekken, messages: &[Value], tools: &[Value]) -> Result<Vec<u32>> {
    let version = tekken.version();
    if version != 3 && version != 7 {
        return Err(MistralChatError::Version(version));
    }
    let (messages, system_prompt) = normalize(messages, version)?;
    let special = |text: &'static str| {
        tekken
            .special_id(text)
            .ok_or(MistralChatError::MissingToken(text))
    };
    let text = |s: &str| tekken.encode(s, false, false);
    let last_user = messages.iter().rposition(|m| matches!(m, Message::User(_)));
    let tools_text = if tools.is_empty() {
        None
    } else {
        Some(dumps(&Value::Array(
            tools.iter().map(tool_json).collect::<Result<_>>()?,
        )))
    };
    let mut ids = vec![special("<s>")?];
    for (i, message) in messages.iter().enumerate() {
        match message {
            Message::User(content) => {
                let is_last = Some(i) == last_user;
                if let (true, Some(tools)) = (is_last, &tools_text) {
                    ids.push(special("[AVAILABLE_TOOLS]")?);
                    ids.extend(text(tools));
                    ids.push(special("[/AVAILABLE_TOOLS]")?);
                }
                ids.push(special("[INST]")?);
                match (&system_prompt, is_last) {
                    (Some(system), true) => ids.extend(text(&format!("{system}\n\n{content}"))),
                    _ => ids.extend(text(content)),
                }
                ids.push(special("[/INST]")?);
            }
            Message::System(content) => {
                ids.push(special("[SYSTEM_PROMPT]")?);
                ids.extend(text(content));
                ids.push(special("[/SYSTEM_PROMPT]")?);
            }
            Message::Tool { content, call_id } => {
                ids.push(special("[TOOL_RESULTS]")?);
                let call_id = call_id
                    .as_deref()
                    .ok_or_else(|| invalid("a tool message needs its tool_call_id"))?;
                if version == 3 {
                    let result = json!({"content": parse_json(content), "call_id": call_id});
                    ids.extend(text(&dumps(&result)));
                } else {
                    ids.extend(text(call_id));
                    ids.push(special("[TOOL_CONTENT]")?);
                    ids.extend(text(content));
                }
                ids.push(special("[/TOOL_RESULTS]")?);
            }
            Message::Assistant {
                content,
                calls,
                prefix,
            } => {
                if version == 3 && !calls.is_empty() && !content.is_empty() {
                    return Err(invalid(
                        "an assistant message cannot have both content and tool calls (v3)",
                    ));
                }
                if content.is_empty() && calls.is_empty() {
                    return Err(invalid("an assistant message needs content or tool calls"));
                }
                if !content.is_empty() {
                    ids.extend(text(content.trim_end_matches(' ')));
                }
                if !calls.is_empty() {
                    let calls: Vec<Value> = calls.iter().map(call_json).collect();
                    ids.push(special("[TOOL_CALLS]")?);
                    ids.extend(text(&dumps(&Value::Array(calls))));
                }
                if !prefix {
                    ids.push(special("</s>")?);
                }
            }
        }
    }
    Ok(ids)
}

/// mistral-common's normalizer (see the module notes): the messages, and
/// up to v3 the system prompt.
fn normalize(messages: &[Value], version: u32) -> Result<(Vec<Message>, Option<String>)> {
    let mut out: Vec<Message> = Vec::new();
    let mut systems: Vec<String> = Vec::new();
    let mut i = 0;
    while i < messages.len() {
        let role = role_of(&messages[i], i)?;
        let end = (i..messages.len())
            .find(|&j| role_of(&messages[j], j).ok() != Some(role))
            .unwrap_or(messages.len());
        let group = &messages[i..end];
        match role {
            "user" => out.push(Message::User(join(group)?)),
            "system" => {
                for m in group {
                    let content = join(std::slice::from_ref(m))?;
                    if version >= 7 {
                        out.push(Message::System(content));
                    } else if !content.is_empty() {
                        systems.push(content);
                    }
                }
            }
            "tool" => {
                for m in group {
                    let content = join(std::slice::from_ref(m))?;
                    let content = if version >= 7 {
                        content
                    } else {
                        normalize_json(&content)
                    };
                    let call_id = m
                        .get("tool_call_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    out.push(Message::Tool { content, call_id });
                }
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
                out.push(Message::Assistant {
                    content: join(group)?,
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
        out.insert(0, Message::User(String::new()));
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

/// The messages' texts joined as mistral-common joins them: parts of one
/// message and messages by a blank line, empty ones skipped.
fn join(messages: &[Value]) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for m in messages {
        match m.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => parts.push(s),
            Some(Value::Array(chunks)) => {
                for chunk in chunks {
                    match (chunk.get("type").and_then(Value::as_str), chunk.get("text")) {
                        (Some("text"), Some(Value::String(t))) => parts.push(t),
                        _ => return Err(invalid("only text parts are supported in content")),
                    }
                }
            }
            Some(other) => return Err(invalid(format!("content must be text, got {other}"))),
        }
    }
    Ok(parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n"))
}

fn tool_call(call: &Value) -> Result<ToolCall> {
    let function = call
        .get("function")
        .ok_or_else(|| invalid("a tool call needs a function"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a tool call's function needs a name"))?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => dumps(other),
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

/// `{"name", "arguments" (parsed), "id" (unless "null")}`.
fn call_json(call: &ToolCall) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(call.name));
    m.insert("arguments".into(), parse_json(&call.arguments));
    if !call.id.is_empty() && call.id != "null" {
        m.insert("id".into(), json!(call.id));
    }
    Value::Object(m)
}

/// A tool as mistral-common dumps it: `type`, then the function's `name`,
/// `description` (default empty) and `parameters`.
fn tool_json(tool: &Value) -> Result<Value> {
    let function = tool
        .get("function")
        .ok_or_else(|| invalid("a tool needs a function"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a tool's function needs a name"))?;
    let parameters = function
        .get("parameters")
        .cloned()
        .ok_or_else(|| invalid(format!("tool {name:?} needs parameters")))?;
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    f.insert(
        "description".into(),
        function.get("description").cloned().unwrap_or(json!("")),
    );
    f.insert("parameters".into(), parameters);
    let mut t = Map::new();
    t.insert("type".into(), json!("function"));
    t.insert("function".into(), Value::Object(f));
    Ok(Value::Object(t))
}

/// JSON text re-serialized (empty -> `{}`); text that is not JSON stays.
fn normalize_json(text: &str) -> String {
    if text.is_empty() {
        return "{}".to_owned();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => dumps(&v),
        Err(_) => text.to_owned(),
    }
}

/// Parsed JSON, or the text itself as a string.
fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `json.dumps(value, ensure_ascii=False)`.
fn dumps(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    serde::Serialize::serialize(value, &mut ser).expect("a JSON value serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Python's default JSON separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// A tool call read back from generated ids.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedToolCall {
    /// The call's id, when the model wrote one.
    pub id: Option<String>,
    /// The function's name.
    pub name: String,
    /// The arguments, as JSON.
    pub arguments: Value,
}

/// An assistant turn's generated `ids` read back as mistral-common's
/// protocol writes it: the text before `[TOOL_CALLS]`, and the JSON list of
/// calls after it (`</s>` and other control tokens dropped).
pub fn parse_assistant(tekken: &Tekken, ids: &[u32]) -> Result<(String, Vec<ParsedToolCall>)> {
    use crate::tekken::SpecialTokenPolicy::Ignore;
    let decode = |ids: &[u32]| {
        tekken
            .decode(ids, Ignore)
            .map_err(|e| invalid(format!("generated ids: {e}")))
    };
    let marker = tekken.special_id("[TOOL_CALLS]");
    let Some(at) = marker.and_then(|m| ids.iter().position(|&id| id == m)) else {
        return Ok((decode(ids)?, Vec::new()));
    };
    let content = decode(&ids[..at])?;
    let calls_text = decode(&ids[at + 1..])?;
    let calls: Value = serde_json::from_str(calls_text.trim()).map_err(|e| {
        invalid(format!(
            "the text after [TOOL_CALLS] is not a JSON list: {e}"
        ))
    })?;
    let calls = calls
        .as_array()
        .ok_or_else(|| invalid("the text after [TOOL_CALLS] is not a JSON list"))?
        .iter()
        .map(|c| {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("a generated tool call has no name"))?;
            Ok(ParsedToolCall {
                id: c.get("id").and_then(Value::as_str).map(str::to_owned),
                name: name.to_owned(),
                arguments: c.get("arguments").cloned().unwrap_or(json!({})),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((content, calls))
}
