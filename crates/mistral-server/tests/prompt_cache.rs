//! The prompt cache end to end: a chat's second turn reuses the first
//! turn's cache (`cached_tokens` > 0) and reaches its first token sooner
//! than the same request on a server that keeps no cache; the cache stays
//! under its byte limit.

mod common;

use common::{metric, post, post_stream, start_configured, Server, MODEL_ID};
use serde_json::{json, Value};

/// A long system prompt, so that the prefix is worth reusing.
fn system() -> String {
    "You are a patient assistant who answers in plain words. ".repeat(60)
}

fn turn_two(first_answer: &str) -> Value {
    json!({
        "model": MODEL_ID,
        "messages": [
            {"role": "system", "content": system()},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": first_answer},
            {"role": "user", "content": "And of Italy?"},
        ],
        "temperature": 0,
        "max_tokens": 16,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

/// Streams `body` and returns its usage chunk's `usage`.
fn stream_usage(server: &Server, body: &Value) -> Value {
    let events = post_stream(server, "/v1/chat/completions", body);
    events
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).expect("chunk"))
        .find(|c| c["usage"].is_object())
        .map(|c| c["usage"].clone())
        .expect("usage chunk")
}

/// The server's sum of times to first token (it measures from the
/// request's arrival).
fn ttft_sum(server: &Server) -> f64 {
    metric(server, "mistral_time_to_first_token_seconds_sum")
}

#[test]
fn a_second_chat_turn_reuses_the_first_turns_cache() {
    let warm = start_configured(|c| c.prompt_cache_bytes = 1 << 30);
    let cold = start_configured(|c| c.prompt_cache_bytes = 0);
    let first = json!({
        "model": MODEL_ID,
        "messages": [
            {"role": "system", "content": system()},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0,
        "max_tokens": 16,
    });
    let (status, answer) = post(&warm, "/v1/chat/completions", &first);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let first_prompt = answer["usage"]["prompt_tokens"]
        .as_u64()
        .expect("prompt tokens");
    let reply = answer["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned();

    let body = turn_two(&reply);
    let before = (ttft_sum(&warm), ttft_sum(&cold));
    let warm_usage = stream_usage(&warm, &body);
    let cold_usage = stream_usage(&cold, &body);
    let warm_ttft = ttft_sum(&warm) - before.0;
    let cold_ttft = ttft_sum(&cold) - before.1;
    let cached = warm_usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached");
    eprintln!(
        "second turn: {} prompt tokens, {cached} cached; time to first token {warm_ttft:.3} s with the cache, {cold_ttft:.3} s without",
        warm_usage["prompt_tokens"]
    );
    assert!(
        cached >= first_prompt,
        "only {cached} of the first turn's {first_prompt} tokens were reused"
    );
    assert_eq!(cold_usage["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(warm_usage["prompt_tokens"], cold_usage["prompt_tokens"]);
    assert!(
        warm_ttft < cold_ttft,
        "cached {warm_ttft:.3} s, cold {cold_ttft:.3} s"
    );
    assert_eq!(metric(&warm, "mistral_prompt_cache_hits_total"), 1.0);
    assert_eq!(metric(&cold, "mistral_prompt_cache_bytes"), 0.0);
    assert!(metric(&warm, "mistral_prompt_cache_bytes") > 0.0);
}

#[test]
fn the_cache_stays_under_its_limit() {
    // SmolLM2 keeps 30 layers x 2 x 3 heads x 64 floats per position (float32 on
    // the CPU): about 46 KB, so 4 MB holds one request of ~90 tokens at most.
    let limit = 4u64 << 20;
    let server = start_configured(|c| c.prompt_cache_bytes = limit);
    for i in 0..6 {
        let body = json!({
            "messages": [{"role": "user", "content": format!("Request {i}: name a colour.")}],
            "temperature": 0,
            "max_tokens": 8,
        });
        let (status, answer) = post(&server, "/v1/chat/completions", &body);
        assert_eq!(status, 200, "{answer}");
        let held = metric(&server, "mistral_prompt_cache_bytes");
        assert!(
            held <= limit as f64,
            "{held} bytes held over a limit of {limit}"
        );
        assert!(held > 0.0, "nothing kept after request {i}");
    }
}

/// With a quantized cache (`--kv-bits 4 --kv-group-size 32
/// --quantized-kv-start 0`) a finished request's cache is kept quantized:
/// the prompt cache holds well under half the bytes it holds for the same
/// request on a dense server (4 bits and a 16-bit scale and bias per 32
/// elements: under a third of bf16, under a fifth of f32).
#[test]
fn a_quantized_cache_is_kept_quantized() {
    let q = mlx_rs_core::KvQuantization::new(4, 32, 0).expect("settings");
    let dense = start_configured(|c| c.prompt_cache_bytes = 1 << 30);
    let quantized = start_configured(|c| c.kv_quantization = Some(q));
    let request = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 4,
    });
    for server in [&dense, &quantized] {
        let (status, answer) = post(server, "/v1/chat/completions", &request);
        assert_eq!(status, 200, "{answer}");
    }
    let held = |s: &Server| metric(s, "mistral_prompt_cache_bytes");
    let (dense_bytes, quantized_bytes) = (held(&dense), held(&quantized));
    eprintln!("prompt cache: {dense_bytes} bytes dense, {quantized_bytes} quantized");
    assert!(
        quantized_bytes > 0.0 && quantized_bytes < 0.35 * dense_bytes,
        "{quantized_bytes} bytes quantized against {dense_bytes} dense"
    );
}
