//! `mistral_text::mistral_chat::encode_chat` against mistral-common 1.13.1's
//! `encode_chat_completion` (run live, `xtask/python/refs/mistral_chat_ref.py`)
//! on its real tokenizer files under every version it accepts for them:
//! tekken_240911.json under protocol v3, v7, v11 and v13 (past v7 with
//! [ARGS], [CALL_ID], [THINK] and [/THINK] listed), tekken_240718.json under
//! v1 and v2, and the SentencePiece files `tokenizer.model.v1`, `.v2`, `.v3`,
//! `.v7` and `.v7m1` under their own. A corpus of conversations (system
//! prompts, several turns, merged consecutive messages, tools with nested
//! parameter schemas in a key order that is not sorted, single and parallel
//! tool calls, tool results as JSON and as text, text parts, non-ASCII text,
//! whitespace runs, digits, trailing spaces, reasoning parts, tool results
//! given out of the calls' order) gives the same prompt ids, and what
//! mistral-common refuses under a version (tools in v1, two results of one
//! turn in v2, reasoning before v13) is refused here too. The assistant
//! turns' tool calls and reasoning are read back from their ids
//! (`parse_assistant`) as they were written, under each version.

mod python;
mod reference;

use mistral_loader::load_mistral_tokenizer;
use mistral_text::mistral_chat::{encode_chat, parse_assistant};
use mistral_text::tekken::SpecialTokenPolicy;
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
    // Floats over every magnitude, written as Python's repr writes them.
    let mut rng = fastrand::Rng::with_seed(5);
    let floats: Vec<f64> = [
        1e-5,
        1e16,
        1e15,
        0.0001,
        2.5e-7,
        -0.5,
        100.0,
        1.7976931348623157e308,
        0.1 + 0.2,
    ]
    .into_iter()
    .chain((0..30).map(|_| (rng.f64() - 0.5) * 10f64.powi(rng.i32(-12..24))))
    .collect();
    let tune = json!({"type": "function", "function": {
        "name": "tune",
        "parameters": {"type": "object", "properties": {
            "rate": {"type": "number", "minimum": 1e-5, "maximum": 1e16, "enum": floats},
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
        json!({"tools": [tune], "messages": [
            {"role": "user", "content": "Tune it"},
            {"role": "assistant", "tool_calls": [call("eeeeeeeee", "tune", r#"{"rate": 1e-05, "n": 3.0, "big": 1e+22}"#)]},
            {"role": "tool", "tool_call_id": "eeeeeeeee", "name": "tune", "content": r#"{"loss": 0.00012, "step": 2e-07}"#},
            {"role": "user", "content": "Again"}]}),
        json!({"tools": [weather.clone()], "messages": [
            {"role": "user", "content": "Both, please"},
            {"role": "assistant", "tool_calls": [
                call("ccccccccc", "get_weather", r#"{"city": "Nice"}"#),
                call("ddddddddd", "get_weather", r#"{"city": "Bern"}"#)]},
            {"role": "tool", "tool_call_id": "ccccccccc", "name": "get_weather", "content": "mild"},
            {"role": "tool", "tool_call_id": "ddddddddd", "name": "get_weather", "content": "snow"}]}),
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

/// mistral-common's SentencePiece files.
fn spm_files() -> Vec<String> {
    run_json("refs.sentencepiece_ref", &json!({"files": null}))["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_owned())
        .collect()
}

/// mistral-common's answers for `convs` under every (file, version) it
/// accepts: tekken_240911.json (images, so v3 on) under v3, v7, v11 and v13,
/// tekken_240718.json under v1 and v2, each SentencePiece file under its
/// own version.
fn references(convs: &[Value], out: &std::path::Path) -> Vec<Value> {
    let files = run_json("refs.tekken_ref", &json!({"files": null}))["files"]
        .as_array()
        .expect("files")
        .clone();
    let tekken = |name: &str| {
        files
            .iter()
            .map(|f| f["path"].as_str().expect("path").to_owned())
            .find(|p| p.ends_with(name))
            .unwrap_or_else(|| panic!("mistral-common's {name}"))
    };
    let mut all = Vec::new();
    for (file, versions, spm) in [
        (
            tekken("tekken_240911.json"),
            json!(["v3", "v7", "v11", "v13"]),
            json!(spm_files()),
        ),
        (tekken("tekken_240718.json"), json!(["v1", "v2"]), json!([])),
    ] {
        let answer = run_json(
            "refs.mistral_chat_ref",
            &json!({"file": file, "versions": versions, "spm_files": spm,
                    "conversations": convs, "out_dir": out}),
        );
        all.extend(
            answer["versions"]
                .as_array()
                .expect("versions")
                .iter()
                .cloned(),
        );
    }
    all
}

#[test]
fn prompt_ids_equal_mistral_commons() {
    let out = tempfile::tempdir().expect("tempdir");
    let convs = conversations();
    let answers = references(&convs, out.path());
    assert!(
        answers.len() >= 11,
        "4 + 2 tokenizer versions, 5 SentencePiece files"
    );
    for version in &answers {
        let path = version["file"].as_str().expect("file");
        let name = std::path::Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy();
        let v = format!("{name} {}", version["version"].as_str().expect("version"));
        let tokenizer = load_mistral_tokenizer(std::path::Path::new(path)).expect("tokenizer");
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
                let ours = encode_chat(&tokenizer, messages, &tools);
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
            let ours = encode_chat(&tokenizer, messages, &tools)
                .unwrap_or_else(|e| panic!("{v} conversation {i}: {e}"));
            assert_eq!(
                ours,
                want,
                "{v} conversation {i}: ours {:?}\nmistral-common's {:?}",
                tokenizer.decode(&ours, SpecialTokenPolicy::Keep),
                tokenizer.decode(&want, SpecialTokenPolicy::Keep)
            );
            compared += 1;
        }
        eprintln!(
            "{v}: {compared} of {} conversations equal mistral-common's ids, {refused} refused by both",
            convs.len()
        );
        // v1 has no tools: the conversations with tools are refused; v2
        // takes one tool result per turn.
        let refusable = match tokenizer.version() {
            1 => 7,
            2 => 3,
            _ => 2,
        };
        assert!(
            compared + refusable >= convs.len(),
            "{v}: mistral-common refused too many"
        );
    }
}

/// Every assistant turn with tool calls or reasoning, encoded as the last
/// turn under each version, reads back as it was written (names, ids where
/// the version writes them, arguments as JSON, reasoning text).
#[test]
fn assistant_turns_read_back_from_their_ids() {
    let out = tempfile::tempdir().expect("tempdir");
    // The per-version copies the reference script writes.
    let answers = references(&[], out.path());
    let mut checked = 0;
    for version in &answers {
        let path = std::path::Path::new(version["file"].as_str().unwrap());
        let tokenizer = load_mistral_tokenizer(path).expect("tokenizer");
        let v = tokenizer.version();
        if v == 1 {
            continue; // v1 writes [/INST] as text, and has no tools to read back
        }
        let inst_end = tokenizer.special_id("[/INST]").expect("[/INST]");
        for conv in conversations() {
            for m in conv["messages"].as_array().unwrap() {
                if m["role"] != "assistant" {
                    continue;
                }
                let messages = [json!({"role": "user", "content": "go"}), m.clone()];
                let Ok(ids) = encode_chat(&tokenizer, &messages, &[]) else {
                    continue; // not in this version (reasoning before v13, say)
                };
                let start = ids.iter().rposition(|&id| id == inst_end).unwrap() + 1;
                let parsed = parse_assistant(&tokenizer, &ids[start..]).expect("parse");
                let calls = m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(parsed.tool_calls.len(), calls.len(), "v{v}: {m}");
                for (p, c) in parsed.tool_calls.iter().zip(&calls) {
                    assert_eq!(p.name, c["function"]["name"].as_str().unwrap());
                    let id = c["id"].as_str().filter(|_| v != 13 && v != 2); // v2, v13 write none
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
