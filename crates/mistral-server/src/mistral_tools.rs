//! Tool calls in Mistral's own format, for models whose prompts are built
//! with mistral-common's protocol: the tools go into `[AVAILABLE_TOOLS]`
//! (see `mistral_text::mistral_chat`), the answer is constrained by a Lark
//! grammar over the control tokens, and the generated ids are read back
//! with the protocol's parser.
//!
//! Design notes:
//! - The grammar follows mistral-common's `guidance` grammars (v11 and
//!   later): per call `[TOOL_CALLS] name [ARGS] {arguments}` with optional
//!   whitespace, repeated when parallel calls are allowed; with `auto` free
//!   text or calls (`[THINK]...[/THINK]` first where the tokenizer has it).
//!   Unlike mistral-common's non-strict default, every call's name is one
//!   of the tools and its arguments follow that tool's `parameters`.
//! - Before v11 the calls are one JSON list, `[TOOL_CALLS][{"name",
//!   "arguments", "id"?}]`, constrained by its JSON schema.
//! - Control tokens are named by id (`<[9]>`), as llguidance reads them;
//!   JSON has no free whitespace (a sampled answer cannot run on in it).
//! - Calls read back get the id the model wrote, else a fresh one of nine
//!   letters and digits (the form mistral-common accepts back).

use std::sync::atomic::{AtomicU64, Ordering};

use mistral_loader::constrain::single_line;
use mistral_loader::mistral_chat::parse_assistant;
use mistral_loader::MistralTokenizer;
use serde_json::{json, Value};

use crate::tools::{parameters, Answer, ToolChoice, ToolRequest};

/// The Lark grammar of an answer to a request with `tools` (see the module
/// notes); an error when the tokenizer lacks a control token it needs.
pub fn grammar(tokenizer: &MistralTokenizer, tools: &ToolRequest) -> Result<String, String> {
    let token = |text: &str| {
        tokenizer
            .special_id(text)
            .map(|id| format!("<[{id}]>"))
            .ok_or_else(|| format!("the tokenizer has no {text} token for tool calls"))
    };
    let calls_token = token("[TOOL_CALLS]")?;
    let callable = tools.callable();
    let schema =
        |f: &Value| serde_json::to_string(&single_line(&parameters(f))).unwrap_or_default();
    let fcalls = if tokenizer.version() >= 11 {
        let args = token("[ARGS]")?;
        let each: Vec<String> = callable
            .iter()
            .map(|f| {
                let name = serde_json::to_string(&f["name"]).unwrap_or_default();
                format!(
                    "({calls_token} SAFE_WS? {name} {args} SAFE_WS? %json {} SAFE_WS?)",
                    schema(f)
                )
            })
            .collect();
        let one = each.join(" | ");
        match tools.parallel {
            true => format!("({one})+"),
            false => format!("({one})"),
        }
    } else {
        // Each call may carry the id mistral-common writes back.
        let mut call = tools.any_call("arguments");
        for item in call["anyOf"].as_array_mut().into_iter().flatten() {
            item["properties"]["id"] = json!({"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"});
        }
        let list = tools.call_list(call);
        format!("{calls_token} SAFE_WS? %json {}", single_line(&list))
    };
    let think = match (
        tokenizer.special_id("[THINK]"),
        tokenizer.special_id("[/THINK]"),
    ) {
        (Some(open), Some(close)) if tokenizer.version() >= 13 => {
            format!("think: <[{open}]> content <[{close}]>\n")
        }
        _ => String::new(),
    };
    let maybe_think = if think.is_empty() { "" } else { "think? " };
    let body = match tools.choice {
        ToolChoice::Auto if think.is_empty() => "content | (content? fcalls)".to_owned(),
        ToolChoice::Auto => format!("{maybe_think}(content | fcalls)"),
        _ => format!("{maybe_think}fcalls"),
    };
    Ok(format!(
        "start: {body}\nfcalls: {fcalls}\ncontent: (/(.|\\n)+/)+\n{think}SAFE_WS: /[ \\t\\r\\n]{{1,8}}/\n"
    ))
}

/// A generated answer (its `ids`) read back: calls, or text.
pub fn read(tokenizer: &MistralTokenizer, ids: &[u32]) -> Answer {
    let parsed = match parse_assistant(tokenizer, ids) {
        Ok(parsed) => parsed,
        Err(_) => {
            let text = tokenizer
                .decode(ids, mistral_loader::tekken::SpecialTokenPolicy::Ignore)
                .unwrap_or_default();
            return Answer::Content(text);
        }
    };
    if parsed.tool_calls.is_empty() {
        return Answer::Content(parsed.content);
    }
    Answer::Calls(
        parsed
            .tool_calls
            .into_iter()
            .map(|c| {
                let id = c.id.filter(|id| id != "null").unwrap_or_else(call_id);
                json!({"id": id, "type": "function", "function": {
                    "name": c.name.trim(), "arguments": c.arguments.to_string(),
                }})
            })
            .collect(),
    )
}

/// A fresh call id: nine letters and digits.
fn call_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // A splitmix64 step over the time and a counter: distinct per call.
    let mut x = nanos
        ^ NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (0..9)
        .map(|_| {
            let c = ALPHABET[(x % 62) as usize] as char;
            x /= 62;
            c
        })
        .collect()
}
