//! [`encode_chat`]: a conversation's prompt ids exactly as mistral-common's
//! `encode_chat_completion` builds them for one of Mistral's tokenizers
//! ([`MistralTokenizer`]: tekken or SentencePiece), rather than as a Jinja
//! template approximates them; [`parse_assistant`]: a generated turn read
//! back.
//!
//! Design notes (mistral-common 1.13.1, protocol versions 1, 2, 3, 7, 11
//! and 13; others are refused by name):
//! - `normalize` merges the request's messages as mistral-common's
//!   normalizer does.
//! - `<s>`, then per message: a user turn `[INST]text[/INST]` (v1: the text
//!   `[INST] text [/INST]`, no control tokens), with the tool list
//!   `[AVAILABLE_TOOLS][...][/AVAILABLE_TOOLS]` before the last user turn
//!   (before the first from v13; none in v1), and up to v3 the system
//!   prompt written before the last user turn's text (the first's in v1);
//!   from v7 a system message is `[SYSTEM_PROMPT]...[/SYSTEM_PROMPT]`. An
//!   assistant turn is its text (trailing spaces cut from v2), reasoning as
//!   `[THINK]...[/THINK]` (v13), then its tool calls: `[TOOL_CALLS][{...}]`
//!   (v2, v3, v7), or per call `[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`
//!   (v11; v13 without the id); then `</s>`. A tool result is
//!   `[TOOL_RESULTS][{"name", "content"}]` (v2), `[TOOL_RESULTS]{"content",
//!   "call_id"}` (v3), `[TOOL_RESULTS]id[TOOL_CONTENT]text` (v7, v11) or
//!   `[TOOL_RESULTS]text` (v13), closed by `[/TOOL_RESULTS]`. v2 leaves out
//!   tool calls and results before the last user turn.
//! - Text is encoded piece by piece as mistral-common does (SentencePiece
//!   puts its `▁` in front of each piece).
//! - JSON is written as Python's `json.dumps(..., ensure_ascii=False)`
//!   writes it (module `json`, floats as Python's `repr`: `1e-05`, `1e+16`,
//!   `100.0`), so the text tokenized is mistral-common's.

mod json;
mod normalize;
mod parse;

use serde_json::{json as value, Value};

use crate::mistral_tokenizer::MistralTokenizer;
use json::{dumps, parse_json, tool_json};
use normalize::{normalize, Chunk, Content, Message};
pub use parse::{parse_assistant, ParsedAssistant, ParsedToolCall};

/// The protocol versions implemented here.
pub const PROTOCOL_VERSIONS: [u32; 6] = [1, 2, 3, 7, 11, 13];

/// A conversation that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum MistralChatError {
    /// The tokenizer's protocol version is not implemented here.
    #[error("the chat protocol of tokenizer version v{0} is not supported (supported: v1, v2, v3, v7, v11, v13)")]
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

/// The prompt ids of `messages` (OpenAI-style objects: `role`, `content` as
/// text or text and `thinking` parts, `tool_calls`, `tool_call_id`,
/// `prefix`) with `tools` (`{"type": "function", "function": {...}}`)
/// available, for `tokenizer`'s protocol version (see the module notes).
pub fn encode_chat(
    tokenizer: &MistralTokenizer,
    messages: &[Value],
    tools: &[Value],
) -> Result<Vec<u32>> {
    let version = tokenizer.version();
    if !PROTOCOL_VERSIONS.contains(&version) {
        return Err(MistralChatError::Version(version));
    }
    let (messages, system_prompt) = normalize(messages, version)?;
    let enc = Encoder { tokenizer, version };
    let users: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m, Message::User(_)))
        .map(|(i, _)| i)
        .collect();
    let tools_at = if version >= 13 {
        users.first()
    } else {
        users.last()
    };
    let last_user = users.last().copied();
    if version == 2 {
        check_v2_results(&messages, last_user)?;
    }
    let tools_text = if tools.is_empty() || version == 1 {
        None
    } else {
        Some(dumps(&Value::Array(
            tools.iter().map(tool_json).collect::<Result<_>>()?,
        )))
    };
    let mut ids = vec![enc.special("<s>")?];
    for (i, message) in messages.iter().enumerate() {
        // v2 leaves tool calls and results before the last user turn out.
        let dropped = version == 2 && last_user.is_some_and(|l| i < l);
        match message {
            Message::User(content) if version == 1 => {
                let system = system_prompt
                    .as_deref()
                    .filter(|_| Some(&i) == users.first());
                ids.extend(enc.v1_user(content, system)?);
            }
            Message::User(content) => {
                if let (true, Some(tools)) = (Some(&i) == tools_at, &tools_text) {
                    ids.push(enc.special("[AVAILABLE_TOOLS]")?);
                    ids.extend(enc.text(tools));
                    ids.push(enc.special("[/AVAILABLE_TOOLS]")?);
                }
                ids.push(enc.special("[INST]")?);
                let system = system_prompt
                    .as_deref()
                    .filter(|_| Some(&i) == users.last());
                ids.extend(enc.user_content(content, system)?);
                ids.push(enc.special("[/INST]")?);
            }
            Message::System(content) => {
                ids.push(enc.special("[SYSTEM_PROMPT]")?);
                ids.extend(enc.chunks(content)?);
                ids.push(enc.special("[/SYSTEM_PROMPT]")?);
            }
            Message::Tool { .. } if version == 1 => {
                return Err(invalid("tool messages need protocol v2 or later (v1)"));
            }
            Message::Tool { .. } if dropped => {}
            Message::Tool { content, name, .. } if version == 2 => {
                let result = value!([{"name": name, "content": parse_json(content)}]);
                ids.push(enc.special("[TOOL_RESULTS]")?);
                ids.extend(enc.text(&dumps(&result)));
                ids.push(enc.special("[/TOOL_RESULTS]")?);
            }
            Message::Tool {
                content, call_id, ..
            } => {
                ids.push(enc.special("[TOOL_RESULTS]")?);
                let call_id = call_id
                    .as_deref()
                    .ok_or_else(|| invalid("a tool message needs its tool_call_id"))?;
                match version {
                    3 => {
                        let result = value!({"content": parse_json(content), "call_id": call_id});
                        ids.extend(enc.text(&dumps(&result)));
                    }
                    7 | 11 => {
                        ids.extend(enc.text(call_id));
                        ids.push(enc.special("[TOOL_CONTENT]")?);
                        ids.extend(enc.text(content));
                    }
                    _ => ids.extend(enc.text(content)),
                }
                ids.push(enc.special("[/TOOL_RESULTS]")?);
            }
            Message::Assistant { content, calls, .. }
                if dropped && !calls.is_empty() && content.is_empty() => {}
            Message::Assistant {
                content,
                calls,
                prefix,
            } => {
                ids.extend(enc.assistant(content, calls)?);
                if !prefix {
                    ids.push(enc.special("</s>")?);
                }
            }
        }
    }
    Ok(ids)
}

/// v2 takes one tool result per assistant turn after the last user turn.
fn check_v2_results(messages: &[Message], last_user: Option<usize>) -> Result<()> {
    let mut after_calls = false;
    let mut results = 0;
    for message in &messages[last_user.unwrap_or(0)..] {
        match message {
            Message::Assistant { calls, .. } => {
                after_calls = !calls.is_empty();
                results = 0;
            }
            Message::Tool { .. } if after_calls => {
                results += 1;
                if results > 1 {
                    return Err(invalid(
                        "protocol v2 takes one tool result per assistant turn",
                    ));
                }
            }
            Message::Tool { .. } => {}
            _ => {
                after_calls = false;
                results = 0;
            }
        }
    }
    Ok(())
}

/// Token helpers of one protocol version.
struct Encoder<'a> {
    tokenizer: &'a MistralTokenizer,
    version: u32,
}

impl Encoder<'_> {
    fn special(&self, text: &'static str) -> Result<u32> {
        self.tokenizer
            .special_id(text)
            .ok_or(MistralChatError::MissingToken(text))
    }

    fn text(&self, s: &str) -> Vec<u32> {
        self.tokenizer.encode(s, false, false)
    }

    /// A v1 user turn: `[INST] text [/INST]` as text, the system prompt
    /// first in the first turn.
    fn v1_user(&self, content: &Content, system: Option<&str>) -> Result<Vec<u32>> {
        let Content::Text(text) = content else {
            return Err(invalid("protocol v1 takes text messages only"));
        };
        Ok(match system {
            Some(system) => self.text(&format!("[INST] {system}\n\n{text} [/INST]")),
            None => self.text(&format!("[INST] {text} [/INST]")),
        })
    }

    /// Content part by part: text as it is, reasoning in `[THINK]` (v13).
    fn chunks(&self, content: &Content) -> Result<Vec<u32>> {
        let chunks = match content {
            Content::Text(t) => return Ok(self.text(t)),
            Content::Chunks(c) => c,
        };
        let mut ids = Vec::new();
        for chunk in chunks {
            match chunk {
                Chunk::Text(t) => ids.extend(self.text(t)),
                Chunk::Think { text, closed } => {
                    if self.version < 13 {
                        return Err(invalid("reasoning parts need protocol v13"));
                    }
                    ids.push(self.special("[THINK]")?);
                    ids.extend(self.text(text));
                    if *closed {
                        ids.push(self.special("[/THINK]")?);
                    }
                }
            }
        }
        Ok(ids)
    }

    /// A user turn's text, with the system prompt first where given (v3).
    fn user_content(&self, content: &Content, system: Option<&str>) -> Result<Vec<u32>> {
        match (content, system) {
            (Content::Text(t), Some(system)) => Ok(self.text(&format!("{system}\n\n{t}"))),
            (Content::Chunks(_), Some(system)) => {
                let mut ids = self.text(&format!("{system}\n\n"));
                ids.extend(self.chunks(content)?);
                Ok(ids)
            }
            (_, None) => self.chunks(content),
        }
    }

    /// An assistant turn's text and tool calls, without `</s>`.
    fn assistant(&self, content: &Content, calls: &[normalize::ToolCall]) -> Result<Vec<u32>> {
        if content.is_empty() && calls.is_empty() {
            return Err(invalid("an assistant message needs content or tool calls"));
        }
        if self.version <= 3 && !content.is_empty() && !calls.is_empty() {
            return Err(invalid(
                "an assistant message cannot have both content and tool calls (up to v3)",
            ));
        }
        if self.version == 1 && !calls.is_empty() {
            return Err(invalid("tool calls need protocol v2 or later (v1)"));
        }
        let mut ids = match content {
            Content::Text(t) if self.version == 1 => self.text(t),
            Content::Text(t) => self.text(t.trim_end_matches(' ')),
            Content::Chunks(_) => self.chunks(content)?,
        };
        if calls.is_empty() {
            return Ok(ids);
        }
        if self.version <= 7 {
            let list: Vec<Value> = calls.iter().map(|c| call_json(c, self.version)).collect();
            ids.push(self.special("[TOOL_CALLS]")?);
            ids.extend(self.text(&dumps(&Value::Array(list))));
            return Ok(ids);
        }
        for call in calls {
            ids.push(self.special("[TOOL_CALLS]")?);
            ids.extend(self.text(&call.name));
            if self.version == 11 && call.id != "null" && !call.id.is_empty() {
                ids.push(self.special("[CALL_ID]")?);
                ids.extend(self.text(&call.id));
            }
            if self.version >= 13 && (call.id.is_empty() || call.id == "null") {
                return Err(invalid("a tool call needs an id (v13)"));
            }
            ids.push(self.special("[ARGS]")?);
            ids.extend(self.text(&dumps(&parse_json(&call.arguments))));
        }
        Ok(ids)
    }
}

/// `{"name", "arguments" (parsed), "id" (unless "null"; not in v2)}`.
fn call_json(call: &normalize::ToolCall, version: u32) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("name".into(), value!(call.name));
    m.insert("arguments".into(), parse_json(&call.arguments));
    if version > 2 && !call.id.is_empty() && call.id != "null" {
        m.insert("id".into(), value!(call.id));
    }
    Value::Object(m)
}
