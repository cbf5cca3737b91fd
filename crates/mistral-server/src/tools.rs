//! Tool calls (OpenAI's `tools`, `tool_choice`, `parallel_tool_calls`) for
//! models whose prompt has no tool format of its own: the tools go into a
//! system message, and the answer is constrained to one JSON object, either
//! `{"tool_calls": [{"name", "arguments"}, ...]}` or (with `tool_choice`
//! `auto`) `{"response": "text"}`, as llama.cpp's generic tool format does.
//!
//! Design notes:
//! - The constraint is a JSON schema built from the tools (each call's
//!   `name` a constant, its `arguments` the tool's `parameters`), so the
//!   calls always parse and name a real tool; `required` and a named
//!   function drop the `response` branch; `parallel_tool_calls: false`
//!   allows one call.
//! - The conversation's earlier calls and results are written the same
//!   way: an assistant message with `tool_calls` becomes that JSON, a `tool`
//!   message a user message `{"tool_response": {"tool_call_id", "content"}}`
//!   (templates without tools know only the usual roles).
//! - Read back: `tool_calls` become OpenAI's `message.tool_calls` (ids
//!   `call_...`, arguments as a JSON string, `finish_reason: "tool_calls"`),
//!   `response` the message's content; text that does not parse (an answer
//!   cut by `max_tokens`) stays content.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::error::ApiError;
use mistral_loader::ChatMessage;

/// Which tools the answer may call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// A call or a text answer, as the model chooses.
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Named(String),
}

/// The request's tools.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    /// Each tool's `function` object (`name`, `description`, `parameters`).
    pub functions: Vec<Value>,
    /// `tool_choice`.
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true).
    pub parallel: bool,
}

fn bad(message: impl Into<String>, field: &str) -> ApiError {
    ApiError::bad_request(message, Some(field))
}

/// The request's tools, `None` without tools or with `tool_choice: "none"`.
pub fn parse(
    tools: Option<&Value>,
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<ToolRequest>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => return Err(bad("`tools` must be a list", "tools")),
    };
    let mut functions = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                "only tools of type `function` are supported",
                &format!("tools[{i}].type"),
            ));
        }
        let function = tool
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| {
                bad(
                    "a tool needs a `function` object",
                    &format!("tools[{i}].function"),
                )
            })?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() {
            return Err(bad(
                "a function needs a name",
                &format!("tools[{i}].function.name"),
            ));
        }
        if let Some(p) = function.get("parameters").filter(|p| !p.is_object()) {
            return Err(bad(
                format!("`parameters` must be a JSON schema object, not {p}"),
                &format!("tools[{i}].function.parameters"),
            ));
        }
        functions.push(function.clone());
    }
    let name_of = |f: &Value| f["name"].as_str().unwrap_or_default().to_owned();
    let choice_given = choice.is_some_and(|c| !c.is_null());
    let choice = match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(v) if v.get("type").and_then(Value::as_str) == Some("function") => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a named tool choice needs `function.name`", "tool_choice"))?;
            if !functions.iter().any(|f| name_of(f) == name) {
                return Err(bad(
                    format!("`tool_choice` names {name:?}, which is not among `tools`"),
                    "tool_choice",
                ));
            }
            ToolChoice::Named(name.to_owned())
        }
        Some(v) => {
            return Err(bad(
                format!("`tool_choice` must be none, auto, required or a named function, not {v}"),
                "tool_choice",
            ))
        }
    };
    if functions.is_empty() {
        // As OpenAI: a tool choice (other than none) needs tools.
        return match choice_given {
            false => Ok(None),
            true => Err(bad(
                "`tool_choice` is only allowed with `tools`",
                "tool_choice",
            )),
        };
    }
    Ok(Some(ToolRequest {
        functions,
        choice,
        parallel: parallel.unwrap_or(true),
    }))
}

impl ToolRequest {
    /// The tools as a request lists them (`{"type": "function", "function":
    /// ...}`): what mistral-common's protocol and chat templates take.
    pub fn listed(&self) -> Vec<Value> {
        self.functions
            .iter()
            .map(|f| json!({"type": "function", "function": f}))
            .collect()
    }

    /// The functions the answer may call.
    pub(crate) fn callable(&self) -> Vec<&Value> {
        self.functions
            .iter()
            .filter(|f| match &self.choice {
                ToolChoice::Named(n) => f["name"].as_str() == Some(n),
                _ => true,
            })
            .collect()
    }

    /// The system message that lists the tools and the answer's format.
    pub fn system_text(&self) -> String {
        let listed: Vec<Value> = self.callable().into_iter().cloned().collect();
        let tools = serde_json::to_string(&listed).unwrap_or_default();
        let calls = r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<its parameters>}}]}"#;
        let text = r#"{"response": "<your answer>"}"#;
        match self.choice {
            ToolChoice::Auto => format!(
                "You can call these tools:\n{tools}\nAnswer with one JSON object: {calls} to call \
                 tools, or {text} to answer directly."
            ),
            _ => format!(
                "You can call these tools:\n{tools}\nAnswer with one JSON object that calls tools: \
                 {calls}"
            ),
        }
    }

    /// The JSON schema of one call of a function the answer may call:
    /// `{"name": the function's name, key: its parameters}` (each tool
    /// format names the arguments its own way).
    pub fn any_call(&self, key: &str) -> Value {
        let calls: Vec<Value> = self
            .callable()
            .into_iter()
            .map(|f| {
                let mut properties = serde_json::Map::new();
                properties.insert("name".into(), json!({"const": f["name"]}));
                properties.insert(key.into(), parameters(f));
                json!({"type": "object", "properties": properties,
                       "required": ["name", key], "additionalProperties": false})
            })
            .collect();
        json!({"anyOf": calls})
    }

    /// The JSON schema of a list of `call`s: one or more, or exactly one
    /// when parallel calls are off.
    pub fn call_list(&self, call: Value) -> Value {
        let mut list = json!({"type": "array", "items": call, "minItems": 1});
        if !self.parallel {
            list["maxItems"] = json!(1);
        }
        list
    }

    /// The JSON schema of the answer (see the module notes).
    pub fn schema(&self) -> Value {
        let list = self.call_list(self.any_call("arguments"));
        let call = json!({"type": "object", "properties": {"tool_calls": list},
                          "required": ["tool_calls"], "additionalProperties": false});
        match self.choice {
            ToolChoice::Auto => json!({"anyOf": [call, {
                "type": "object", "properties": {"response": {"type": "string"}},
                "required": ["response"], "additionalProperties": false,
            }]}),
            _ => call,
        }
    }
}

/// A tool's `parameters` schema (any object when it has none).
pub fn parameters(function: &Value) -> Value {
    function
        .get("parameters")
        .cloned()
        .unwrap_or(json!({"type": "object"}))
}

/// The conversation `messages` (OpenAI objects) as a chat template without
/// tools takes them: earlier calls and results written in this format (see
/// the module notes), and `tools`' system text, if any, in the first
/// system message or a new one before the rest.
pub fn generic_prompt(messages: &[Value], tools: Option<&ToolRequest>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = messages
        .iter()
        .map(|m| {
            let role = m["role"].as_str().unwrap_or_default();
            let text = m["content"].as_str().unwrap_or_default();
            let calls = m["tool_calls"].as_array().map_or(&[][..], Vec::as_slice);
            match role {
                "assistant" if !calls.is_empty() && text.is_empty() => {
                    ChatMessage::new(role, calls_text(calls))
                }
                "tool" => ChatMessage::new("user", result_text(m["tool_call_id"].as_str(), text)),
                _ => ChatMessage::new(role, text),
            }
        })
        .collect();
    if let Some(tools) = tools {
        match out.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{}", first.content, tools.system_text());
            }
            _ => out.insert(0, ChatMessage::system(tools.system_text())),
        }
    }
    out
}

/// An assistant message's earlier `tool_calls` as the answer format writes
/// them.
fn calls_text(calls: &[Value]) -> String {
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            let f = &c["function"];
            let arguments = match &f["arguments"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or(json!(s)),
                other => other.clone(),
            };
            json!({"name": f["name"], "arguments": arguments})
        })
        .collect();
    json!({"tool_calls": calls}).to_string()
}

/// A `tool` message's result as the user message that carries it.
fn result_text(call_id: Option<&str>, content: &str) -> String {
    json!({"tool_response": {"tool_call_id": call_id, "content": content}}).to_string()
}

/// A generated answer read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Text (the `response`, or text that is not the format).
    Content(String),
    /// OpenAI `tool_calls` objects.
    Calls(Vec<Value>),
}

/// Reads a generated answer (see the module notes).
pub fn read_answer(text: &str) -> Answer {
    let Ok(value) = serde_json::from_str::<Value>(text.trim()) else {
        return Answer::Content(text.to_owned());
    };
    if let Some(response) = value.get("response").and_then(Value::as_str) {
        return Answer::Content(response.to_owned());
    }
    let Some(calls) = value.get("tool_calls").and_then(Value::as_array) else {
        return Answer::Content(text.to_owned());
    };
    Answer::Calls(
        calls
            .iter()
            .map(|c| {
                let name = c["name"].as_str().unwrap_or_default();
                openai_call(name, c.get("arguments").unwrap_or(&json!({})))
            })
            .collect(),
    )
}

/// An OpenAI `tool_calls` entry with a fresh id: `arguments` as a JSON
/// string.
pub fn openai_call(name: &str, arguments: &Value) -> Value {
    json!({"id": call_id(), "type": "function", "function": {
        "name": name, "arguments": arguments.to_string(),
    }})
}

/// A fresh `call_...` id.
fn call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("call_{nanos:016x}{n:08x}")
}

#[cfg(test)]
mod tests {
    //! The request's tool fields and the answers read back, against
    //! hand-written OpenAI shapes.

    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
               {"type": "function", "function": {"name": "search"}}])
    }

    #[test]
    fn tool_fields_parse_or_name_the_field() {
        let tools = weather();
        let named = json!({"type": "function", "function": {"name": "search"}});
        let t = parse(Some(&tools), Some(&named), Some(false))
            .unwrap()
            .unwrap();
        assert_eq!(t.choice, ToolChoice::Named("search".into()));
        assert!(!t.parallel);
        // Only the named tool may be called, with no text branch and one call.
        let schema = t.schema();
        assert_eq!(schema["properties"]["tool_calls"]["maxItems"], 1);
        let calls = &schema["properties"]["tool_calls"]["items"]["anyOf"];
        assert_eq!(calls.as_array().unwrap().len(), 1);
        assert_eq!(calls[0]["properties"]["name"]["const"], "search");
        assert_eq!(
            calls[0]["properties"]["arguments"],
            json!({"type": "object"})
        );
        let auto = parse(Some(&tools), None, None).unwrap().unwrap();
        assert_eq!(auto.schema()["anyOf"].as_array().unwrap().len(), 2);
        assert!(parse(Some(&tools), Some(&json!("none")), None)
            .unwrap()
            .is_none());
        assert!(parse(None, None, None).unwrap().is_none());
        let field = |r: Result<Option<ToolRequest>, ApiError>| {
            r.expect_err("refused").body()["error"]["param"].clone()
        };
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        assert_eq!(
            field(parse(Some(&tools), Some(&unknown), None)),
            "tool_choice"
        );
        assert_eq!(
            field(parse(None, Some(&json!("required")), None)),
            "tool_choice"
        );
        assert_eq!(field(parse(Some(&json!({})), None, None)), "tools");
        let no_name = json!([{"type": "function", "function": {"description": "x"}}]);
        assert_eq!(
            field(parse(Some(&no_name), None, None)),
            "tools[0].function.name"
        );
        let retrieval = json!([{"type": "retrieval"}]);
        assert_eq!(field(parse(Some(&retrieval), None, None)), "tools[0].type");
    }

    #[test]
    fn answers_read_back_as_calls_or_text() {
        let Answer::Calls(calls) = read_answer(
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "search", "arguments": {}}]}"#,
        ) else {
            panic!("calls expected");
        };
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
        assert_eq!(calls[0]["type"], "function");
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        assert_eq!(
            read_answer(r#"{"response": "Hello"}"#),
            Answer::Content("Hello".into())
        );
        // Cut by max_tokens: the text stays.
        let cut = r#"{"tool_calls": [{"name": "get_we"#;
        assert_eq!(read_answer(cut), Answer::Content(cut.into()));
        // Earlier calls and results as the prompt writes them.
        let earlier = json!([{"id": "call_1", "type": "function",
                              "function": {"name": "search", "arguments": "{\"q\": 1}"}}]);
        assert_eq!(
            calls_text(earlier.as_array().unwrap()),
            r#"{"tool_calls":[{"name":"search","arguments":{"q":1}}]}"#
        );
        assert_eq!(
            result_text(Some("call_1"), "sunny"),
            r#"{"tool_response":{"tool_call_id":"call_1","content":"sunny"}}"#
        );
    }
}
