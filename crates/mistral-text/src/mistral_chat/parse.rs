//! A generated assistant turn read back: its text, its reasoning
//! (`[THINK]...[/THINK]`), and its tool calls in either form the protocol
//! writes (`[TOOL_CALLS][{...}]`, or per call
//! `[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`).

use serde_json::{json, Value};

use super::{invalid, Result};
use crate::mistral_tokenizer::MistralTokenizer;
use crate::tekken::SpecialTokenPolicy;

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

/// A generated assistant turn.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedAssistant {
    /// The answer's text.
    pub content: String,
    /// The reasoning between `[THINK]` and `[/THINK]` (or the end), if any.
    pub reasoning: Option<String>,
    /// The tool calls.
    pub tool_calls: Vec<ParsedToolCall>,
}

/// Reads an assistant turn's generated `ids` (see the module notes);
/// `</s>` and other control tokens are dropped from the texts.
pub fn parse_assistant(tekken: &MistralTokenizer, ids: &[u32]) -> Result<ParsedAssistant> {
    let decode = |ids: &[u32]| {
        tekken
            .decode(ids, SpecialTokenPolicy::Ignore)
            .map_err(|e| invalid(format!("generated ids: {e}")))
    };
    let find =
        |token: Option<u32>, ids: &[u32]| token.and_then(|t| ids.iter().position(|&i| i == t));
    let mut out = ParsedAssistant::default();
    let kept = match find(tekken.special_id("[THINK]"), ids) {
        Some(start) => {
            let after = &ids[start + 1..];
            let end = find(tekken.special_id("[/THINK]"), after).unwrap_or(after.len());
            out.reasoning = Some(decode(&after[..end])?);
            [&ids[..start], after.get(end + 1..).unwrap_or(&[])].concat()
        }
        None => ids.to_vec(),
    };
    parse_rest(tekken, &kept, out)
}

fn parse_rest(
    tekken: &MistralTokenizer,
    ids: &[u32],
    mut out: ParsedAssistant,
) -> Result<ParsedAssistant> {
    let decode = |ids: &[u32]| {
        tekken
            .decode(ids, SpecialTokenPolicy::Ignore)
            .map_err(|e| invalid(format!("generated ids: {e}")))
    };
    let Some(calls_token) = tekken.special_id("[TOOL_CALLS]") else {
        out.content = decode(ids)?;
        return Ok(out);
    };
    let mut parts = ids.split(|&i| i == calls_token);
    out.content = decode(parts.next().unwrap_or(&[]))?;
    let args = tekken.special_id("[ARGS]");
    let call_id = tekken.special_id("[CALL_ID]");
    for part in parts {
        match args.and_then(|a| part.iter().position(|&i| i == a)) {
            // name [CALL_ID] id [ARGS] arguments (v11, v13)
            Some(at) => {
                let head = &part[..at];
                let (name, id) = match call_id.and_then(|c| head.iter().position(|&i| i == c)) {
                    Some(c) => (decode(&head[..c])?, Some(decode(&head[c + 1..])?)),
                    None => (decode(head)?, None),
                };
                let text = decode(&part[at + 1..])?;
                let arguments = serde_json::from_str(text.trim()).map_err(|e| {
                    invalid(format!(
                        "the arguments of tool call {name:?} are not JSON: {e}"
                    ))
                })?;
                out.tool_calls.push(ParsedToolCall {
                    id,
                    name,
                    arguments,
                });
            }
            // a JSON list of {name, arguments, id} (v3, v7)
            None => {
                let text = decode(part)?;
                let calls: Value = serde_json::from_str(text.trim()).map_err(|e| {
                    invalid(format!(
                        "the text after [TOOL_CALLS] is not a JSON list: {e}"
                    ))
                })?;
                for c in calls
                    .as_array()
                    .ok_or_else(|| invalid("the text after [TOOL_CALLS] is not a JSON list"))?
                {
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("a generated tool call has no name"))?;
                    out.tool_calls.push(ParsedToolCall {
                        id: c.get("id").and_then(Value::as_str).map(str::to_owned),
                        name: name.to_owned(),
                        arguments: c.get("arguments").cloned().unwrap_or(json!({})),
                    });
                }
            }
        }
    }
    Ok(out)
}
