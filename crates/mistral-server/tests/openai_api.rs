//! The server end to end over HTTP on 127.0.0.1 with the real SmolLM2:
//! response shapes, streaming against the whole answer, limits and stop
//! strings, and every kind of bad request.

mod common;

use std::sync::OnceLock;

use common::{
    error_object, get, metric, post, post_raw, post_stream, preflight, start, stream_and_leave,
    Server, MODEL_ID,
};
use serde_json::{json, Value};

const BODY_LIMIT: usize = 64 * 1024;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| start(None, BODY_LIMIT))
}

fn chat_body(content: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

fn chat_text(body: &Value) -> String {
    let (status, response) = post(server(), "/v1/chat/completions", body);
    assert_eq!(status, 200, "{response}");
    response["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned()
}

#[test]
fn health_and_models() {
    let s = server();
    let (status, body) = get(s, "/health", None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(s, "/v1/models", None);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], MODEL_ID);
    assert_eq!(body["data"][0]["object"], "model");
}

#[test]
fn chat_completion_has_openai_shape_and_usage() {
    let (status, body) = post(
        server(),
        "/v1/chat/completions",
        &chat_body("What is the capital of France?", 24),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("chatcmpl-")));
    assert_eq!(body["model"], MODEL_ID);
    assert!(body["created"].as_u64().is_some());
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert!(matches!(
        choice["finish_reason"].as_str(),
        Some("stop" | "length")
    ));
    let usage = &body["usage"];
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt_tokens");
    let completion = usage["completion_tokens"]
        .as_u64()
        .expect("completion_tokens");
    assert!(prompt > 5 && (1..=24).contains(&completion), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
    // Other tests on this server may have left this prompt in its cache.
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached_tokens");
    assert!(cached < prompt, "{usage}");
}

#[test]
fn streamed_chat_equals_the_whole_answer() {
    let body = chat_body("Name three colours.", 32);
    let whole = chat_text(&body);
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let events = post_stream(server(), "/v1/chat/completions", &streaming);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    let id = chunks[0]["id"].as_str().expect("id");
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let (usage_chunk, choice_chunks) = chunks.split_last().expect("chunks");
    assert_eq!(usage_chunk["choices"], json!([]), "{usage_chunk}");
    let finishing: Vec<&Value> = choice_chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishing.len(), 1, "exactly one chunk with finish_reason");
    let text: String = choice_chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, whole, "streamed text at temperature 0");
    let completion = usage_chunk["usage"]["completion_tokens"]
        .as_u64()
        .expect("usage");
    assert!((1..=32).contains(&completion));
}

#[test]
fn max_tokens_ends_with_length() {
    for field in ["max_tokens", "max_completion_tokens"] {
        let body = json!({
            "messages": [{"role": "user", "content": "Write a long story about a ship."}],
            "temperature": 0,
            field: 5,
        });
        let (status, response) = post(server(), "/v1/chat/completions", &body);
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["choices"][0]["finish_reason"], "length", "{field}");
        assert_eq!(response["usage"]["completion_tokens"], 5, "{field}");
    }
}

#[test]
fn a_stop_string_ends_the_text_before_it() {
    let body = chat_body("Write two sentences about the sea.", 40);
    let whole = chat_text(&body);
    // A stop string taken from the answer itself: its second word.
    let word = whole
        .split_whitespace()
        .nth(1)
        .expect("an answer of at least two words")
        .to_owned();
    let at = whole.find(&word).expect("the word is in the text");
    let mut stopping = body.clone();
    stopping["stop"] = json!([word.clone(), "unlikely-stop-string"]);
    let (status, response) = post(server(), "/v1/chat/completions", &stopping);
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
    let text = response["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert_eq!(text, &whole[..at], "text up to the stop string {word:?}");
}

#[test]
fn text_completions_stream_and_not() {
    let body = json!({"prompt": "The capital of France is", "temperature": 0, "max_tokens": 8});
    let (status, response) = post(server(), "/v1/completions", &body);
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["object"], "text_completion");
    let whole = response["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(!whole.is_empty());
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let events = post_stream(server(), "/v1/completions", &streaming);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).expect("chunk"))
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, whole);
    // The completion fields this server cannot honour.
    for (field, value) in [
        ("echo", json!(true)),
        ("best_of", json!(2)),
        ("suffix", json!("!")),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let (status, answer) = post(server(), "/v1/completions", &bad);
        assert_eq!(status, 400, "{answer}");
        assert_eq!(error_object(&answer)["param"], field);
    }
    let mut neutral = body.clone();
    for (field, value) in [
        ("echo", json!(false)),
        ("best_of", json!(1)),
        ("suffix", json!("")),
    ] {
        neutral[field] = value;
    }
    let (status, answer) = post(server(), "/v1/completions", &neutral);
    assert_eq!(status, 200, "{answer}");
}

/// Posts `body` and checks the status and the error's `param` (and `code`).
fn rejects(body: &str, status: u16, param: Option<&str>, code: Option<&str>) {
    let (got, text) = post_raw(
        server(),
        "/v1/chat/completions",
        body,
        "application/json",
        None,
    );
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(got, status, "{body} -> {text}");
    let error = error_object(&value);
    assert_eq!(error["param"].as_str(), param, "{body} -> {text}");
    if let Some(code) = code {
        assert_eq!(error["code"], code, "{body} -> {text}");
    }
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_goes_on() {
    let ok = r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#;
    rejects("{not json", 400, None, None);
    rejects("[1, 2]", 400, None, None);
    rejects(r#"{"max_tokens": 2}"#, 400, None, None);
    rejects(r#"{"messages": []}"#, 400, Some("messages"), None);
    rejects(
        r#"{"messages": [{"role": 7, "content": "hi"}]}"#,
        400,
        Some("messages[0].role"),
        None,
    );
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}"#,
        400,
        Some("temperature"),
        None,
    );
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "top_p": 2}"#,
        400,
        Some("top_p"),
        None,
    );
    // What the engine would refuse is refused before the 200, streamed or
    // not.
    for stream in [false, true] {
        rejects(
            &format!(
                r#"{{"messages": [{{"role": "user", "content": "hi"}}], "top_k": 100000000, "stream": {stream}}}"#
            ),
            400,
            Some("top_k"),
            None,
        );
    }
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#,
        400,
        Some("temperature"),
        None,
    );
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "n": 2}"#,
        400,
        Some("n"),
        None,
    );
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}"#,
        400,
        Some("max_tokens"),
        None,
    );
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}"#,
        400,
        Some("tools[0].function"),
        None,
    );
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}"#,
        400,
        Some("response_format.type"),
        None,
    );
    for (field, value) in [
        ("frequency_penalty", "0.5"),
        ("presence_penalty", "-1"),
        ("logit_bias", r#"{"50256": -100}"#),
        ("tool_choice", r#""auto""#),
    ] {
        rejects(
            &format!(
                r#"{{"messages": [{{"role": "user", "content": "hi"}}], "{field}": {value}}}"#
            ),
            400,
            Some(field),
            None,
        );
    }
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4"}"#,
        404,
        Some("model"),
        Some("model_not_found"),
    );
    rejects(
        r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000000}"#,
        400,
        Some("max_tokens"),
        Some("context_length_exceeded"),
    );
    // Too large a body.
    let big = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "a".repeat(BODY_LIMIT)
    );
    rejects(&big, 413, None, None);
    // JSON whatever the Content-Type; unknown fields ignored.
    let (status, text) = post_raw(server(), "/v1/chat/completions", ok, "text/plain", None);
    assert_eq!(status, 200, "{text}");
    // Unknown fields and the neutral values of unsupported ones.
    let with_unknown = r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "user": "x", "frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {}, "tool_choice": "none"}"#;
    let (status, text) = post_raw(
        server(),
        "/v1/chat/completions",
        with_unknown,
        "application/json",
        None,
    );
    assert_eq!(status, 200, "{text}");
    // An unknown route.
    let (status, text) = get(server(), "/v1/nothing", None);
    assert_eq!(status, 404);
    error_object(&serde_json::from_str(&text).expect("JSON"));
}

#[test]
fn an_api_key_guards_everything_but_health() {
    let keyed = start(Some("sesame"), BODY_LIMIT);
    for probe in ["/health", "/health/ready", "/health/live"] {
        assert_eq!(get(&keyed, probe, None).0, 200, "{probe}");
    }
    let (status, text) = get(&keyed, "/v1/models", None);
    assert_eq!(status, 401);
    assert_eq!(
        error_object(&serde_json::from_str(&text).expect("JSON"))["type"],
        "authentication_error"
    );
    assert_eq!(get(&keyed, "/v1/models", Some("wrong")).0, 401);
    assert_eq!(get(&keyed, "/v1/models", Some("sesam")).0, 401, "a prefix");
    assert_eq!(get(&keyed, "/v1/models", Some("sesame!")).0, 401, "longer");
    assert_eq!(get(&keyed, "/v1/models", Some("sesame")).0, 200);
    for path in ["/metrics", "/models", "/v1/unknown"] {
        assert_eq!(get(&keyed, path, None).0, 401, "{path} without the key");
    }
    assert_eq!(get(&keyed, "/metrics", Some("sesame")).0, 200);
    let ok = r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#;
    for path in [
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/completions",
        "/completions",
        "/v1/messages",
        "/tokenize",
        "/detokenize",
    ] {
        let (status, text) = post_raw(&keyed, path, ok, "application/json", None);
        assert_eq!(status, 401, "{path} without the key: {text}");
    }
    let (status, text) = post_raw(
        &keyed,
        "/v1/chat/completions",
        ok,
        "application/json",
        Some("sesame"),
    );
    assert_eq!(status, 200, "{text}");
    // The scheme in any case, and Anthropic's header.
    for (name, value) in [
        ("Authorization", "bearer sesame"),
        ("Authorization", "BEARER  sesame"),
        ("x-api-key", "sesame"),
    ] {
        let status = common::get_with(&keyed, "/v1/models", name, value).0;
        assert_eq!(status, 200, "{name}: {value}");
    }
    assert_eq!(
        common::get_with(&keyed, "/v1/models", "Authorization", "Basic sesame").0,
        401
    );
    // `--metrics-public` opens /metrics alone.
    let open = common::start_configured(|c| {
        c.api_key = Some("sesame".into());
        c.metrics_public = true;
    });
    assert_eq!(get(&open, "/metrics", None).0, 200);
    assert_eq!(get(&open, "/v1/models", None).0, 401);
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let (status, body) = post(
        server(),
        "/tokenize",
        &json!({"prompt": "Hello world, again.", "add_special_tokens": false}),
    );
    assert_eq!(status, 200, "{body}");
    let tokens = body["tokens"].clone();
    assert_eq!(
        body["count"].as_u64(),
        tokens.as_array().map(|t| t.len() as u64)
    );
    assert!(body["max_model_len"].as_u64().is_some_and(|n| n > 1000));
    let (status, back) = post(server(), "/detokenize", &json!({"tokens": tokens}));
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["prompt"], "Hello world, again.");
    // A chat's ids are what a chat completion counts as its prompt.
    let messages = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let (_, chat_ids) = post(server(), "/tokenize", &json!({"messages": messages}));
    let (_, answer) = post(
        server(),
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 1}),
    );
    assert_eq!(answer["usage"]["prompt_tokens"], chat_ids["count"]);
    // Bad input.
    let (status, body) = post(server(), "/detokenize", &json!({"tokens": [4000000000u32]}));
    assert_eq!(status, 400);
    assert_eq!(error_object(&body)["param"], "tokens[0]");
    let (status, body) = post(server(), "/tokenize", &json!({}));
    assert_eq!(status, 400, "{body}");
    error_object(&body);
}

/// A counter from `/metrics`.
#[test]
fn a_client_that_leaves_mid_stream_frees_the_engine() {
    // Its own server, so that its counters see only this test.
    let server = start(None, BODY_LIMIT);
    // A long streamed generation, abandoned after its first bytes.
    let body = json!({
        "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
        "temperature": 0,
        "max_tokens": 4000,
        "stream": true,
    });
    stream_and_leave(&server, "/v1/chat/completions", &body);
    // The abandoned request stops at its next token; by the time this one
    // is answered it has left the batch.
    let (status, answer) = post(&server, "/v1/chat/completions", &chat_body("Say hi.", 4));
    assert_eq!(status, 200, "{answer}");
    let completion = answer["usage"]["completion_tokens"]
        .as_f64()
        .expect("usage");
    let abandoned_tokens = metric(&server, "mistral_generated_tokens_total") - completion;
    assert!(
        abandoned_tokens < 100.0,
        "the abandoned request went on for {abandoned_tokens} of its 4000 tokens"
    );
    assert_eq!(metric(&server, "mistral_requests_abandoned_total"), 1.0);
    assert_eq!(metric(&server, "mistral_requests_total"), 2.0);
    assert_eq!(metric(&server, "mistral_queue_depth"), 0.0);
    assert_eq!(metric(&server, "mistral_requests_running"), 0.0);
    eprintln!("the abandoned request generated {abandoned_tokens} tokens");
}

#[test]
fn sampling_fields_reach_the_sampler() {
    let greedy = chat_text(&chat_body("Name a fruit and describe it.", 16));
    let sampled = |extra: Value| {
        let mut body = chat_body("Name a fruit and describe it.", 16);
        body["temperature"] = json!(1.0);
        for (key, value) in extra.as_object().expect("object") {
            body[key] = value.clone();
        }
        chat_text(&body)
    };
    // Keeping only the most likely token is greedy decoding, at any
    // temperature: top_k 1, or min_p 1 (only the top probability passes).
    assert_eq!(sampled(json!({"top_k": 1, "seed": 1})), greedy, "top_k = 1");
    assert_eq!(
        sampled(json!({"min_p": 1.0, "seed": 2})),
        greedy,
        "min_p = 1"
    );
    // A seed makes sampling repeat.
    let seeded = json!({"seed": 1234, "top_p": 0.9});
    assert_eq!(sampled(seeded.clone()), sampled(seeded), "same seed");
    // A repetition penalty of 1 changes nothing.
    let mut body = chat_body("Name a fruit and describe it.", 16);
    body["repetition_penalty"] = json!(1.0);
    assert_eq!(chat_text(&body), greedy, "repetition_penalty = 1");
}

#[test]
fn routes_without_v1_answer_the_same() {
    let body = chat_body("What is the capital of France?", 8);
    let (status, short) = post(server(), "/chat/completions", &body);
    assert_eq!(status, 200, "{short}");
    assert_eq!(
        short["choices"][0]["message"]["content"],
        json!(chat_text(&body))
    );
    let (status, text) = post(
        server(),
        "/completions",
        &json!({"prompt": "Paris is", "max_tokens": 2}),
    );
    assert_eq!(status, 200, "{text}");
    let (status, models) = get(server(), "/models", None);
    assert_eq!(status, 200, "{models}");
}

#[test]
fn cors_allows_only_the_origins_given() {
    // Without --allowed-origins: no CORS headers.
    assert_eq!(
        preflight(server(), "/v1/chat/completions", "http://example.com").1,
        None
    );
    let cors = common::start_with(Some("k"), BODY_LIMIT, vec!["http://app.example".into()]);
    let (status, allowed) = preflight(&cors, "/v1/chat/completions", "http://app.example");
    assert_eq!(status, 200);
    assert_eq!(allowed.as_deref(), Some("http://app.example"));
    assert_eq!(
        preflight(&cors, "/v1/chat/completions", "http://evil.example").1,
        None
    );
}
