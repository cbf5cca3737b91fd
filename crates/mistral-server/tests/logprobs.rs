//! Log-probabilities over HTTP with the real SmolLM2 (their numbers are
//! checked against mlx-lm by the `openai` client check): OpenAI's chat and
//! legacy completion shapes, one entry per returned token whose bytes spell
//! the text, the top tokens most likely first with the greedy token on top,
//! streamed entries equal to the whole answer's, and bad values rejected.

mod common;

use std::sync::{Mutex, MutexGuard, OnceLock};

use common::{error_object, post, post_stream, start, Server, MODEL_ID};
use serde_json::{json, Value};

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| start(None, 1 << 20))
}

/// Held by each test for its whole run, so that its requests run alone in
/// the shared server. Continuous batching puts concurrent requests into one
/// batch, and a sequence's log-probabilities then come from products with
/// more rows, which round differently (a CI run saw the streamed answer's
/// values move by about 2e-6 from the step another test's request joined).
/// Equal answers are promised for equal batches, so the comparison runs
/// alone.
fn alone() -> MutexGuard<'static, ()> {
    static ALONE: Mutex<()> = Mutex::new(());
    ALONE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
        "temperature": 0,
        "max_tokens": 20,
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

fn bytes_of(entry: &Value) -> Vec<u8> {
    entry["bytes"]
        .as_array()
        .expect("bytes")
        .iter()
        .map(|b| u8::try_from(b.as_u64().expect("byte")).expect("byte range"))
        .collect()
}

/// Checks one chat entry: its text is its bytes, its top list is sorted,
/// `top` long, and starts with the (greedy) token itself.
fn check_entry(entry: &Value, top: usize) {
    let bytes = bytes_of(entry);
    assert_eq!(
        entry["token"].as_str().expect("token"),
        String::from_utf8_lossy(&bytes),
        "{entry}"
    );
    let logprob = entry["logprob"].as_f64().expect("logprob");
    assert!(logprob <= 0.0, "{entry}");
    let tops = entry["top_logprobs"].as_array().expect("top_logprobs");
    assert_eq!(tops.len(), top, "{entry}");
    let values: Vec<f64> = tops
        .iter()
        .map(|t| t["logprob"].as_f64().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{entry}");
    if top > 0 {
        assert_eq!(
            bytes_of(&tops[0]),
            bytes,
            "greedy is the most likely: {entry}"
        );
        assert_eq!(values[0], logprob, "{entry}");
    }
}

#[test]
fn chat_log_probabilities_spell_the_answer_and_stream_the_same() {
    let _alone = alone();
    let (status, body) = post(
        server(),
        "/v1/chat/completions",
        &chat(json!({"logprobs": true, "top_logprobs": 3})),
    );
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    let text = choice["message"]["content"].as_str().expect("content");
    let content = choice["logprobs"]["content"].as_array().expect("content");
    assert!(choice["logprobs"]["refusal"].is_null());
    // One entry per returned token (an end-of-sequence token is not listed).
    let tokens = body["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    match choice["finish_reason"].as_str() {
        Some("length") => assert_eq!(content.len(), tokens),
        _ => assert_eq!(content.len() + 1, tokens),
    }
    for entry in content {
        check_entry(entry, 3);
    }
    let spelled: Vec<u8> = content.iter().flat_map(bytes_of).collect();
    assert_eq!(String::from_utf8(spelled).expect("UTF-8"), text);

    // Streamed: the same entries, spread over the chunks.
    let events = post_stream(
        server(),
        "/v1/chat/completions",
        &chat(json!({"logprobs": true, "top_logprobs": 3, "stream": true})),
    );
    let mut streamed = Vec::new();
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).expect("chunk");
        if let Some(list) = chunk["choices"][0]["logprobs"]["content"].as_array() {
            streamed.extend(list.iter().cloned());
        }
    }
    assert_eq!(&streamed, content);

    // Without top_logprobs: the tokens alone; without logprobs: null.
    let (_, plain) = post(
        server(),
        "/v1/chat/completions",
        &chat(json!({"logprobs": true})),
    );
    let plain = plain["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("content")
        .clone();
    assert_eq!(plain.len(), content.len());
    for (a, b) in plain.iter().zip(content) {
        check_entry(a, 0);
        assert_eq!((&a["token"], &a["logprob"]), (&b["token"], &b["logprob"]));
    }
    let (_, none) = post(server(), "/v1/chat/completions", &chat(json!({})));
    assert!(none["choices"][0]["logprobs"].is_null(), "{none}");
}

#[test]
fn completion_log_probabilities_have_the_legacy_shape() {
    let _alone = alone();
    let body = json!({
        "model": MODEL_ID,
        "prompt": "The capital of France is",
        "temperature": 0,
        "max_tokens": 8,
        "logprobs": 2,
    });
    let (status, whole) = post(server(), "/v1/completions", &body);
    assert_eq!(status, 200, "{whole}");
    let choice = &whole["choices"][0];
    let text = choice["text"].as_str().expect("text");
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let values = lp["token_logprobs"].as_array().expect("token_logprobs");
    let tops = lp["top_logprobs"].as_array().expect("top_logprobs");
    let offsets = lp["text_offset"].as_array().expect("text_offset");
    assert_eq!(values.len(), tokens.len());
    assert_eq!(tops.len(), tokens.len());
    assert_eq!(offsets.len(), tokens.len());
    assert_eq!(tokens.concat(), text);
    let mut at = 0;
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(offsets[i].as_u64(), Some(at as u64), "{lp}");
        at += token.chars().count();
        let top = tops[i].as_object().expect("top map");
        assert!((1..=2).contains(&top.len()), "{lp}");
        assert_eq!(top.get(*token), Some(&values[i]), "greedy on top: {lp}");
    }

    // Streamed: the same tokens and offsets.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (mut s_tokens, mut s_offsets) = (Vec::new(), Vec::new());
    for event in post_stream(server(), "/v1/completions", &streamed) {
        if event == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&event).expect("chunk");
        let lp = &chunk["choices"][0]["logprobs"];
        if let Some(list) = lp["tokens"].as_array() {
            s_tokens.extend(list.iter().map(|t| t.as_str().unwrap().to_owned()));
            s_offsets.extend(lp["text_offset"].as_array().unwrap().iter().cloned());
        }
    }
    assert_eq!(s_tokens, tokens);
    assert_eq!(&s_offsets, offsets);
}

#[test]
fn bad_log_probability_fields_are_rejected() {
    let _alone = alone();
    let cases = [
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": "yes"})),
            "logprobs",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": true, "top_logprobs": -1})),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"top_logprobs": 2})),
            "top_logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 2, "logprobs": 6}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 2, "logprobs": true}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 2, "top_logprobs": 2}),
            "top_logprobs",
        ),
    ];
    for (path, body, param) in cases {
        let (status, answer) = post(server(), path, &body);
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(error_object(&answer)["param"], param, "{body} -> {answer}");
    }
    let (status, _) = post(
        server(),
        "/v1/chat/completions",
        &chat(json!({"logprobs": false})),
    );
    assert_eq!(status, 200);
}
