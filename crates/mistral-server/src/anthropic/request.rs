//! Anthropic's Messages requests translated into the OpenAI chat requests
//! they mean (see the parent module's notes).

use serde_json::{json, Map, Value};

use crate::error::ApiError;

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
            assert_eq!(err.status.as_u16(), 400, "{field}");
        }
    }
}
