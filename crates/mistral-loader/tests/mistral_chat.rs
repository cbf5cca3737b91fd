//! `mistral_text::mistral_chat::encode_chat` against mistral-common 1.13.1's
//! `encode_chat_completion` (run live, `xtask/python/mistral_chat_ref.py`)
//! on its real tekken file under protocol versions 3 and 7: a corpus of
//! conversations (system prompts, several turns, merged consecutive
//! messages, tools with nested parameter schemas in a key order that is not
//! sorted, single and parallel tool calls, tool results as JSON and as
//! text, text parts, non-ASCII text, whitespace runs, digits, trailing
//! spaces) gives the same prompt ids. The assistant turns' tool calls are
//! read back from their ids (`parse_assistant`) as they were written.

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
        &json!({"file": file, "versions": ["v3", "v7"], "conversations": convs,
                "out_dir": out.path()}),
    );
    for version in answer["versions"].as_array().expect("versions") {
        let v = version["version"].as_str().expect("version");
        let tekken = Tekken::from_file(version["file"].as_str().expect("file")).expect("tekken");
        let mut compared = 0;
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
                eprintln!("{v} conversation {i}: mistral-common refuses it: {error}");
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
            "{v}: {compared} of {} conversations equal mistral-common's ids",
            convs.len()
        );
        assert_eq!(compared, convs.len(), "{v}: mistral-common refused some");
    }
}

/// Every assistant turn with tool calls, encoded as the last turn, reads
/// back as its calls (names, ids, arguments as JSON).
#[test]
fn tool_calls_read_back_from_their_ids() {
    let files = run_json("tekken_ref.py", &json!({"files": null}))["files"]
        .as_array()
        .expect("files")
        .clone();
    let tekken = Tekken::from_file(files[0]["path"].as_str().expect("path")).expect("tekken");
    let inst_end = tekken.special_id("[/INST]").expect("[/INST]");
    let mut checked = 0;
    for conv in conversations() {
        for m in conv["messages"].as_array().unwrap() {
            let Some(calls) = m.get("tool_calls").and_then(Value::as_array) else {
                continue;
            };
            let messages = [json!({"role": "user", "content": "go"}), m.clone()];
            let ids = encode_chat(&tekken, &messages, &[]).expect("encode");
            let start = ids.iter().rposition(|&id| id == inst_end).expect("[/INST]") + 1;
            let (content, parsed) = parse_assistant(&tekken, &ids[start..]).expect("parse");
            assert_eq!(content, "");
            assert_eq!(parsed.len(), calls.len());
            for (p, c) in parsed.iter().zip(calls) {
                assert_eq!(p.name, c["function"]["name"].as_str().unwrap());
                assert_eq!(p.id.as_deref(), c["id"].as_str());
                let args = c["function"]["arguments"].as_str().unwrap();
                let want: Value = if args.is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(args).unwrap()
                };
                assert_eq!(p.arguments, want);
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "{checked} tool calls checked");
}
