//! `mistral_text::mistral_chat::encode_chat` against mistral-common 1.13.1's
//! `encode_chat_completion` (run live, `xtask/python/mistral_chat_ref.py`)
//! on its real tekken file under protocol versions 3, 7, 11 and 13 (past v7
//! with [ARGS], [CALL_ID], [THINK] and [/THINK] listed): a corpus of
//! conversations (system prompts, several turns, merged consecutive
//! messages, tools with nested parameter schemas in a key order that is not
//! sorted, single and parallel tool calls, tool results as JSON and as
//! text, text parts, non-ASCII text, whitespace runs, digits, trailing
//! spaces, reasoning parts, tool results given out of the calls' order)
//! gives the same prompt ids, and what mistral-common refuses under a
//! version (reasoning before v13, say) is refused here too. The assistant
//! turns' tool calls and reasoning are read back from their ids
//! (`parse_assistant`) as they were written, under each version.

mod python;
mod reference;

use mistral_text::mistral_chat::{encode_chat, parse_assistant};
use mistral_text::tekken::Tekken;
use python::run_json;
use serde_json::{json, Value};

fn conversations() -> Vec<Value> {
    let weather = json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        }},
    }});
    let search = json!({"type": "function", "function": {
        "name": "search",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"},
            "filters": {"type": "object", "properties": {
                "year": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
            }},
        }},
    }});
    let call = |id: &str, name: &str, args: &str| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}});
    vec![
        json!({"messages": [{"role": "user", "content": "Hello!"}]}),
        json!({"messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2 + 2?"}]}),
        json!({"messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour !   "},
            {"role": "user", "content": "How   are\tyou?\n\n  Fine  "}]}),
        json!({"messages": [
            {"role": "user", "content": "First part."},
            {"role": "user", "content": "Second part, 1234567 and 3.14."},
            {"role": "system", "content": "A late system message."},
            {"role": "user", "content": [{"type": "text", "text": "Parts"}, {"type": "text", "text": "joined"}]}]}),
        json!({"messages": [
            {"role": "user", "content": "Ünïcödé — 日本語のテキスト 🙂 «ok»"}]}),
        json!({"tools": [weather.clone(), search.clone()], "messages": [
            {"role": "user", "content": "Weather in Paris?"}]}),
        json!({"tools": [weather.clone()], "messages": [
            {"role": "system", "content": "Use tools when useful."},
            {"role": "user", "content": "Weather in Paris for 3 days?"},
            {"role": "assistant", "tool_calls": [call("abc123def", "get_weather", r#"{"days": 3, "city": "Paris"}"#)]},
            {"role": "tool", "tool_call_id": "abc123def", "name": "get_weather",
             "content": r#"{"temperature": 21, "sky": "clear", "wind": {"speed": 3.5, "dir": "NW"}}"#}]}),
        json!({"tools": [weather.clone(), search.clone()], "messages": [
            {"role": "user", "content": "Paris and Rome, and search news"},
            {"role": "assistant", "tool_calls": [
                call("call00001", "get_weather", r#"{"city": "Paris"}"#),
                call("call00002", "get_weather", r#"{"city":"Rome","unit":"celsius"}"#),
                call("call00003", "search", r#"{"query": "news", "filters": {"tags": ["eu", "it"], "year": 2026}}"#)]},
            {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "sunny, 24 C"},
            {"role": "tool", "tool_call_id": "call00002", "name": "get_weather", "content": r#"{"temperature": 27}"#},
            {"role": "tool", "tool_call_id": "call00003", "name": "search", "content": "[\"headline one\", \"headline two\"]"},
            {"role": "assistant", "content": "Paris is sunny (24 C), Rome 27 C."},
            {"role": "user", "content": "Thanks. And tomorrow?"}]}),
        json!({"tools": [search.clone()], "messages": [
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "tool_calls": [call("zzzzzzzzz", "search", "")]},
            {"role": "tool", "tool_call_id": "zzzzzzzzz", "name": "search", "content": ""}]}),
        json!({"messages": [
            {"role": "user", "content": "Tell me a story"},
            {"role": "assistant", "content": "Once upon a time"},
            {"role": "user", "content": "Go on"},
            {"role": "assistant", "content": "there was a model"},
            {"role": "user", "content": "   "}]}),
        json!({"messages": [
            {"role": "system", "content": "S1"},
            {"role": "system", "content": "S2"},
            {"role": "user", "content": "Q"}]}),
        json!({"tools": [weather.clone()], "messages": [
            {"role": "user", "content": "Two cities"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                call("aaaaaaaaa", "get_weather", r#"{"city": "Oslo"}"#),
                call("bbbbbbbbb", "get_weather", r#"{"city": "Lima"}"#)]},
            {"role": "tool", "tool_call_id": "bbbbbbbbb", "name": "get_weather", "content": "warm"},
            {"role": "tool", "tool_call_id": "aaaaaaaaa", "name": "get_weather", "content": "cold"},
            {"role": "user", "content": "Compare them"}]}),
        json!({"messages": [
            {"role": "system", "content": "Think first."},
            {"role": "user", "content": "Is 91 prime?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "91 = 7 * 13, so no.", "closed": true},
                {"type": "text", "text": "No: 91 = 7 x 13."}]},
            {"role": "user", "content": "And 97?"}]}),
        json!({"messages": [
            {"role": "user", "content": "Write code"},
            {"role": "assistant", "content": "def f():\n    return 1\n"},
            {"role": "user", "content": "[INST] literal control text [/INST] <s>"}]}),
    ]
}

#[test]
fn prompt_ids_equal_mistral_commons() {
    let files = run_json("tekken_ref.py", &json!({"files": null}))["files"]
        .as_array()
        .expect("files")
        .clone();
    let file = files
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_owned())
        .find(|p| p.ends_with("tekken_240911.json"))
        .expect("mistral-common's tekken_240911.json");
    let out = tempfile::tempdir().expect("tempdir");
    let convs = conversations();
    let answer = run_json(
        "mistral_chat_ref.py",
        &json!({"file": file, "versions": ["v3", "v7", "v11", "v13"], "conversations": convs,
                "out_dir": out.path()}),
    );
    for version in answer["versions"].as_array().expect("versions") {
        let v = version["version"].as_str().expect("version");
        let tekken = Tekken::from_file(version["file"].as_str().expect("file")).expect("tekken");
        let mut compared = 0;
        let mut refused = 0;
        for (i, (conv, want)) in convs
            .iter()
            .zip(version["ids"].as_array().unwrap())
            .enumerate()
        {
            let messages = conv["messages"].as_array().unwrap();
            let tools = conv
                .get("tools")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(error) = want.get("error") {
                let ours = encode_chat(&tekken, messages, &tools);
                assert!(
                    ours.is_err(),
                    "{v} conversation {i}: mistral-common refuses it ({error}), ours encodes it"
                );
                refused += 1;
                continue;
            }
            let want: Vec<u32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let ours = encode_chat(&tekken, messages, &tools)
                .unwrap_or_else(|e| panic!("{v} conversation {i}: {e}"));
            assert_eq!(
                ours,
                want,
                "{v} conversation {i}: ours {:?}\nmistral-common's {:?}",
                tekken.decode(&ours, mistral_text::tekken::SpecialTokenPolicy::Keep),
                tekken.decode(&want, mistral_text::tekken::SpecialTokenPolicy::Keep)
            );
            compared += 1;
        }
        eprintln!(
            "{v}: {compared} of {} conversations equal mistral-common's ids, {refused} refused by both",
            convs.len()
        );
        assert!(
            compared + 2 >= convs.len(),
            "{v}: mistral-common refused too many"
        );
    }
}

/// Every assistant turn with tool calls or reasoning, encoded as the last
/// turn under each version, reads back as it was written (names, ids where
/// the version writes them, arguments as JSON, reasoning text).
#[test]
fn assistant_turns_read_back_from_their_ids() {
    let files = run_json("tekken_ref.py", &json!({"files": null}))["files"]
        .as_array()
        .expect("files")
        .clone();
    let file = files[0]["path"].as_str().expect("path").to_owned();
    let out = tempfile::tempdir().expect("tempdir");
    // The per-version copies the reference script writes.
    let answer = run_json(
        "mistral_chat_ref.py",
        &json!({"file": file, "versions": ["v3", "v7", "v11", "v13"], "conversations": [],
                "out_dir": out.path()}),
    );
    let mut checked = 0;
    for version in answer["versions"].as_array().expect("versions") {
        let tekken = Tekken::from_file(version["file"].as_str().unwrap()).expect("tekken");
        let v = tekken.version();
        let inst_end = tekken.special_id("[/INST]").expect("[/INST]");
        for conv in conversations() {
            for m in conv["messages"].as_array().unwrap() {
                if m["role"] != "assistant" {
                    continue;
                }
                let messages = [json!({"role": "user", "content": "go"}), m.clone()];
                let Ok(ids) = encode_chat(&tekken, &messages, &[]) else {
                    continue; // not in this version (reasoning before v13, say)
                };
                let start = ids.iter().rposition(|&id| id == inst_end).unwrap() + 1;
                let parsed = parse_assistant(&tekken, &ids[start..]).expect("parse");
                let calls = m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(parsed.tool_calls.len(), calls.len(), "v{v}: {m}");
                for (p, c) in parsed.tool_calls.iter().zip(&calls) {
                    assert_eq!(p.name, c["function"]["name"].as_str().unwrap());
                    let id = c["id"].as_str().filter(|_| v != 13);
                    assert_eq!(p.id.as_deref(), id, "v{v}: call id");
                    let args = c["function"]["arguments"].as_str().unwrap();
                    let want: Value = if args.is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args).unwrap()
                    };
                    assert_eq!(p.arguments, want, "v{v}: arguments");
                    checked += 1;
                }
                let (mut text, mut thinking) = (Vec::new(), None);
                match &m["content"] {
                    Value::String(s) => text.push(s.trim_end_matches(' ').to_owned()),
                    Value::Array(parts) => {
                        for p in parts {
                            match p["type"].as_str() {
                                Some("thinking") => {
                                    thinking = p["thinking"].as_str().map(str::to_owned)
                                }
                                _ => text.push(p["text"].as_str().unwrap().to_owned()),
                            }
                        }
                    }
                    _ => {}
                }
                assert_eq!(parsed.content, text.concat(), "v{v}: text");
                assert_eq!(parsed.reasoning, thinking, "v{v}: reasoning");
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "{checked} things read back");
}
