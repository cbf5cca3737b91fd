//! Tool calls in the formats chat templates declare: the tools and earlier
//! calls go to the template (as transformers' `apply_chat_template(messages,
//! tools=tools)` passes them), the answer is constrained by a grammar of the
//! template's call format, and read back from the generated text.
//!
//! Design notes:
//! - The format is found in the template's text: `<tool_call>` is the
//!   Hermes format (Qwen 2.5/3, Hermes, SmolLM3: per call
//!   `<tool_call>{"name", "arguments"}</tool_call>`), `<|python_tag|>` the
//!   Llama 3.x JSON format (`{"name", "parameters"}`, one call). A template
//!   with neither gets the generic format ([`crate::tools`]).
//! - Earlier calls reach the template with their `arguments` as objects,
//!   as templates that write `arguments | tojson` expect (vLLM does the
//!   same).
//! - The grammars mirror the Mistral ones ([`crate::mistral_tools`]): each
//!   call's name is one of the tools and its arguments follow the tool's
//!   `parameters`; `auto` leaves text free until a call starts.

use serde_json::{json, Value};

use crate::tools::{Answer, ToolChoice, ToolRequest};
use mistral_loader::constrain::single_line;

/// A chat template's tool-call format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateTools {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` per call.
    Hermes,
    /// `{"name": ..., "parameters": {...}}`, after an optional
    /// `<|python_tag|>`.
    Llama3,
}

impl TemplateTools {
    /// The format the template `text` writes calls in, if any.
    pub fn of(text: &str) -> Option<Self> {
        if !text.contains("tools") {
            None
        } else if text.contains("<tool_call>") {
            Some(TemplateTools::Hermes)
        } else if text.contains("<|python_tag|>") {
            Some(TemplateTools::Llama3)
        } else {
            None
        }
    }

    /// The Lark grammar of an answer to a request with `tools`.
    pub fn grammar(self, tools: &ToolRequest) -> String {
        let key = match self {
            TemplateTools::Hermes => "arguments",
            TemplateTools::Llama3 => "parameters",
        };
        let call = single_line(&tools.any_call(key));
        let fcalls = match self {
            TemplateTools::Hermes => {
                let one = format!(
                    "SAFE_WS? \"<tool_call>\" SAFE_WS? %json {call} SAFE_WS? \"</tool_call>\""
                );
                match tools.parallel {
                    true => format!("({one})+"),
                    false => one,
                }
            }
            TemplateTools::Llama3 => format!("%json {call}"),
        };
        let body = match tools.choice {
            ToolChoice::Auto => "content | (content? fcalls)",
            _ => "fcalls",
        };
        format!(
            "start: {body}\nfcalls: {fcalls}\ncontent: (/(.|\\n)+/)+\nSAFE_WS: /[ \\t\\r\\n]{{1,8}}/\n"
        )
    }

    /// A generated answer's `text` (special tokens kept) read back.
    pub fn read(self, text: &str) -> Answer {
        let calls = match self {
            TemplateTools::Hermes => hermes_calls(text),
            TemplateTools::Llama3 => llama3_calls(text),
        };
        match calls {
            Some(calls) if !calls.is_empty() => Answer::Calls(
                calls
                    .into_iter()
                    .map(|(name, arguments)| crate::tools::openai_call(&name, &arguments))
                    .collect(),
            ),
            _ => Answer::Content(text.to_owned()),
        }
    }
}

/// `{"name", "arguments" | "parameters"}` as a name and its arguments.
fn name_and_arguments(value: &Value) -> Option<(String, Value)> {
    let name = value.get("name")?.as_str()?.to_owned();
    let arguments = value
        .get("arguments")
        .or_else(|| value.get("parameters"))
        .cloned()
        .unwrap_or(json!({}));
    Some((name, arguments))
}

/// The calls of a Hermes answer: each `<tool_call>...</tool_call>` span
/// (the last may be unclosed); `None` if one does not parse.
fn hermes_calls(text: &str) -> Option<Vec<(String, Value)>> {
    let mut calls = Vec::new();
    for part in text.split("<tool_call>").skip(1) {
        let body = part.split("</tool_call>").next().unwrap_or(part);
        let value: Value = serde_json::from_str(body.trim()).ok()?;
        calls.push(name_and_arguments(&value)?);
    }
    Some(calls)
}

/// The call of a Llama 3.x answer: the whole text (after an optional
/// `<|python_tag|>`) as one JSON object, or several joined by `;`.
fn llama3_calls(text: &str) -> Option<Vec<(String, Value)>> {
    let text = text.trim();
    let text = text.strip_prefix("<|python_tag|>").unwrap_or(text).trim();
    if !text.starts_with('{') {
        return None;
    }
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Some(vec![name_and_arguments(&value)?]);
    }
    text.split(';')
        .map(|piece| {
            let value: Value = serde_json::from_str(piece.trim()).ok()?;
            name_and_arguments(&value)
        })
        .collect()
}

/// The request's messages as a template with tools reads them: earlier
/// calls' `arguments` as objects.
pub fn template_messages(raw: &[Value]) -> Value {
    let messages = raw
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    let arguments = &mut call["function"]["arguments"];
                    if let Some(parsed) = arguments
                        .as_str()
                        .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    {
                        *arguments = parsed;
                    }
                }
            }
            m
        })
        .collect();
    Value::Array(messages)
}

#[cfg(test)]
mod tests {
    //! Answers in each format read back; the formats found in templates.

    use super::*;

    #[test]
    fn hermes_answers_read_back_as_calls() {
        let text =
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n\
                    </tool_call>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \
                    \"x\"}}\n</tool_call><|im_end|>";
        let Answer::Calls(calls) = TemplateTools::Hermes.read(text) else {
            panic!("calls expected");
        };
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(calls[1]["function"]["name"], "search");
        let text = "Plain text, no call.";
        assert_eq!(
            TemplateTools::Hermes.read(text),
            Answer::Content(text.into())
        );
        let broken = "<tool_call>{\"name\": \"get_weather\", \"argu";
        assert_eq!(
            TemplateTools::Hermes.read(broken),
            Answer::Content(broken.into())
        );
    }

    #[test]
    fn llama3_answers_read_back_as_calls() {
        let text =
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}";
        let Answer::Calls(calls) = TemplateTools::Llama3.read(text) else {
            panic!("calls expected");
        };
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Rome\"}");
        let two = "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {}}";
        let Answer::Calls(calls) = TemplateTools::Llama3.read(two) else {
            panic!("calls expected");
        };
        assert_eq!(calls.len(), 2);
        assert!(matches!(
            TemplateTools::Llama3.read("The weather is fine."),
            Answer::Content(_)
        ));
    }

    #[test]
    fn formats_are_found_in_templates() {
        let hermes = "{% if tools %}<tools>{{ tools }}</tools> write <tool_call>{% endif %}";
        assert_eq!(TemplateTools::of(hermes), Some(TemplateTools::Hermes));
        let llama = "{% if tools %}{{ tools }}{% endif %}<|python_tag|>";
        assert_eq!(TemplateTools::of(llama), Some(TemplateTools::Llama3));
        assert_eq!(TemplateTools::of("{{ messages }}"), None);
    }
}
