//! `mistral-cli generate` on a folder as Mistral publishes it: a tiny
//! random model in Mistral's own layout (`params.json`,
//! `consolidated.safetensors`) beside mistral-common's real
//! `tekken_240911.json`, no `tokenizer.json` and no `config.json`. In chat
//! mode the prompt ids are mistral-common's `encode_chat_completion` ids for
//! the same system and user messages (run live,
//! `xtask/python/refs/mistral_chat_ref.py`); `--tokenizer-mode hf` uses the chat
//! template instead. `mistral-cli serve` on the same folder tokenizes chat
//! messages (`POST /tokenize`) to the same ids. The same holds for a folder
//! with mistral-common's SentencePiece `tokenizer.model.v7` instead.

mod common;

use common::cli;
#[path = "../../mistral-loader/tests/reference/test_env.rs"]
mod test_env;
#[path = "../../mistral-loader/tests/reference/tiny_native.rs"]
mod tiny_native;
use serde_json::{json, Value};
use tiny_native::write_model;

/// Runs the reference script `module` (see [`tiny_native::run_python`]).
fn run_python(module: &str, stdin: Option<&Value>) -> String {
    tiny_native::run_python(test_env::python_module(module), stdin)
}

/// The path of `name` in mistral-common's data folder.
fn mistral_common_file(name: &str) -> String {
    tiny_native::mistral_common_file(&test_env::python(), name)
}

/// `generate --json` in chat mode with `system` and `user` on `model`,
/// two greedy tokens, with `--tokenizer-mode mode` when given.
fn chat_json(model: &str, system: &str, user: &str, mode: Option<&str>) -> Value {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--system",
        system,
        "--prompt",
        user,
        "--chat",
        "--max-tokens",
        "2",
        "--temp",
        "0",
        "--json",
    ];
    args.extend(mode.iter().flat_map(|m| ["--tokenizer-mode", m]));
    let out = cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn chat_prompts_of_a_mistral_folder_are_mistral_commons_ids() {
    let tekken = mistral_common_file("tekken_240911.json");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&tekken, dir.path().join("tekken.json")).expect("copy tekken.json");
    write_model(dir.path(), 131_072);
    let model = dir.path().display().to_string();
    let (system, user) = ("Be brief.", "Hello there, ünïcödé 123");
    let generate = |mode: &str| chat_json(&model, system, user, Some(mode));
    let ours = generate("auto");
    assert_eq!(ours["chat_protocol"], "mistral");
    let refs = tempfile::tempdir().expect("tempdir");
    let answer: Value = serde_json::from_str(&run_python(
        "refs.mistral_chat_ref",
        Some(
            &json!({"file": tekken, "versions": ["v3"], "out_dir": refs.path(),
                     "conversations": [{"messages": [
                         {"role": "system", "content": system},
                         {"role": "user", "content": user}]}]}),
        ),
    ))
    .expect("answer");
    assert_eq!(ours["prompt_ids"], answer["versions"][0]["ids"][0]);
    assert_eq!(ours["ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(generate("mistral")["prompt_ids"], ours["prompt_ids"]);
    let template = generate("hf");
    assert_eq!(template["chat_protocol"], "template");

    // The server builds chat prompts the same way.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server =
        common::cli_command(&["serve", "--model", &model, "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mistral-cli serve");
    let body = json!({"messages": [{"role": "system", "content": system},
                                   {"role": "user", "content": user}]});
    let mut answer = None;
    for _ in 0..600 {
        if let Some(reply) = post(port, "/tokenize", &body) {
            answer = Some(reply);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    let answer = answer.expect("the server answered /tokenize within 60 s");
    assert_eq!(answer["tokens"], ours["prompt_ids"], "{answer}");
}

#[test]
fn chat_prompts_of_a_sentencepiece_folder_are_mistral_commons_ids() {
    let spm = mistral_common_file("mistral_instruct_tokenizer_241114.model.v7");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&spm, dir.path().join("tokenizer.model.v7")).expect("copy");
    write_model(dir.path(), 32_768);
    let model = dir.path().display().to_string();
    let (system, user) = ("Be brief.", "Hello  there, ünïcödé 123 ");
    // No --tokenizer-mode: auto picks the protocol from the file.
    let ours = chat_json(&model, system, user, None);
    assert_eq!(ours["chat_protocol"], "mistral");
    let answer: Value = serde_json::from_str(&run_python(
        "refs.mistral_chat_ref",
        Some(&json!({"spm_files": [spm], "conversations": [{"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user}]}]})),
    ))
    .expect("answer");
    assert_eq!(answer["versions"][0]["version"], "v7");
    assert_eq!(ours["prompt_ids"], answer["versions"][0]["ids"][0]);
}

/// `POST path` with a JSON body over plain HTTP; `None` until the server
/// answers 200.
fn post(port: u16, path: &str, body: &Value) -> Option<Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    if !reply.starts_with("HTTP/1.1 200") {
        return None;
    }
    let (_, json) = reply.split_once("\r\n\r\n")?;
    serde_json::from_str(json).ok()
}
