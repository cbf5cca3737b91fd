//! A bounded soak on 127.0.0.1 with the real SmolLM2: waves of mixed
//! traffic (streamed and whole chats, log-probabilities, text completions,
//! seeded sampling, a second chat turn, bad requests, clients that leave
//! mid-stream and during a long prefill), 8 clients a wave over a batch of
//! 4, a bounded number of waves inside a time limit.
//!
//! Memory: whenever the server is idle after a wave, MLX's active memory
//! (`/metrics`) is at most what it was before the soak (the weights) plus
//! what the prompt cache holds, plus a small slack; and the prompt cache
//! never holds more than its limit (sampled all along). A leaked cache (an
//! abandoned request's, a batch's rows) would pile up wave after wave. At
//! the end the server answers the first request exactly as before.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{metric, post, post_stream, start_configured, stream_and_leave, Server, MODEL_ID};
use serde_json::{json, Value};

/// The prompt cache's limit.
const LIMIT: f64 = 24.0 * 1024.0 * 1024.0;
/// Live MLX memory allowed beyond the weights and the prompt cache when
/// idle (random keys and other small arrays).
const SLACK: f64 = 4.0 * 1024.0 * 1024.0;
const WAVES: usize = 8;
const TIME_LIMIT: Duration = Duration::from_secs(900);

fn system() -> String {
    "You are a careful assistant. Answer briefly and plainly. ".repeat(25)
}

fn chat(messages: Value, extra: Value) -> Value {
    let mut body =
        json!({"model": MODEL_ID, "messages": messages, "temperature": 0, "max_tokens": 12});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

fn ask(question: &str) -> Value {
    json!([{"role": "system", "content": system()}, {"role": "user", "content": question}])
}

fn first_question() -> Value {
    chat(
        json!([{"role": "user", "content": "What is the capital of France?"}]),
        json!({"max_tokens": 16}),
    )
}

fn answer_text(body: &Value) -> String {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {body}"))
        .to_owned()
}

/// Client `i` of wave `w`.
fn client(server: &Server, w: usize, i: usize, first: &str) {
    let topics = ["rivers", "mountains", "stars", "bread", "music", "trees"];
    let topic = topics[(w + i) % topics.len()];
    match i {
        0 => {
            let body = chat(
                ask(&format!("Say one thing about {topic}.")),
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            );
            let events = post_stream(server, "/v1/chat/completions", &body);
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        }
        1 => {
            let body = chat(
                ask(&format!("Name a word about {topic}.")),
                json!({"logprobs": true, "top_logprobs": 2}),
            );
            let (status, answer) = post(server, "/v1/chat/completions", &body);
            assert_eq!(status, 200, "{answer}");
            assert!(answer["choices"][0]["logprobs"]["content"].is_array());
        }
        2 => {
            let body = json!({"prompt": format!("A short note on {topic}:"), "max_tokens": 8, "temperature": 0});
            let (status, answer) = post(server, "/v1/completions", &body);
            assert_eq!(status, 200, "{answer}");
        }
        3 => stream_and_leave(
            server,
            "/v1/chat/completions",
            &chat(
                ask(&format!("Write a long essay on {topic}.")),
                json!({"stream": true, "max_tokens": 200}),
            ),
        ),
        4 => {
            let long = format!("Summarise this. {}", "The sky is blue today. ".repeat(300));
            stream_and_leave(
                server,
                "/v1/chat/completions",
                &chat(
                    json!([{"role": "user", "content": long}]),
                    json!({"stream": true}),
                ),
            );
        }
        5 => {
            let bad = chat(ask("hi"), json!({"temperature": -1}));
            let (status, answer) = post(server, "/v1/chat/completions", &bad);
            assert_eq!(status, 400, "{answer}");
        }
        6 => {
            let body = chat(
                json!([
                    {"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": first},
                    {"role": "user", "content": format!("And something about {topic}?")},
                ]),
                json!({}),
            );
            let (status, answer) = post(server, "/v1/chat/completions", &body);
            assert_eq!(status, 200, "{answer}");
        }
        _ => {
            let body = chat(
                ask(&format!("A fact about {topic}, please.")),
                json!({"temperature": 0.8, "top_p": 0.9, "seed": w, "stream": true}),
            );
            post_stream(server, "/v1/chat/completions", &body);
        }
    }
}

/// Waits until nothing runs or waits; then MLX's active memory, once the
/// engine has looked again.
fn idle_memory(server: &Server) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(server, "mistral_requests_running") > 0.0
        || metric(server, "mistral_queue_depth") > 0.0
    {
        assert!(Instant::now() < deadline, "the server did not go idle");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    (
        metric(server, "mistral_mlx_active_memory_bytes"),
        metric(server, "mistral_prompt_cache_bytes"),
    )
}

#[test]
fn mixed_traffic_with_disconnects_stays_within_the_cache_bound() {
    let server = start_configured(|c| {
        c.prompt_cache_bytes = LIMIT as u64;
        // Dequantized weights: a CPU prefill several times faster than
        // MLX's quantized product.
        c.model.options.dtype = mistral_loader::ComputeDtype::Auto;
        c.max_batch = 4;
        c.max_queue = 16;
    });
    let start = Instant::now();
    let (status, answer) = post(&server, "/v1/chat/completions", &first_question());
    assert_eq!(status, 200, "{answer}");
    let first = answer_text(&answer);
    let (active, cached) = idle_memory(&server);
    let weights = active - cached;
    eprintln!(
        "before: {:.1} MB active, {:.1} MB cached",
        active / 1e6,
        cached / 1e6
    );

    let stop = AtomicBool::new(false);
    let most_cached = std::thread::scope(|scope| {
        let monitor = scope.spawn(|| {
            let mut most: f64 = 0.0;
            while !stop.load(Ordering::Relaxed) {
                most = most.max(metric(&server, "mistral_prompt_cache_bytes"));
                std::thread::sleep(Duration::from_millis(200));
            }
            most
        });
        for w in 0..WAVES {
            std::thread::scope(|wave| {
                for i in 0..8 {
                    let (server, first) = (&server, first.as_str());
                    wave.spawn(move || client(server, w, i, first));
                }
            });
            let (active, cached) = idle_memory(&server);
            eprintln!(
                "wave {w}: {:.1} MB active ({:.1} MB above the weights), {:.1} MB cached, {:.0} s",
                active / 1e6,
                (active - weights) / 1e6,
                cached / 1e6,
                start.elapsed().as_secs_f64()
            );
            assert!(
                cached <= LIMIT,
                "wave {w}: the prompt cache holds {cached} bytes"
            );
            assert!(
                active <= weights + cached + SLACK,
                "wave {w}: {active} bytes active, weights {weights} + cache {cached} + slack"
            );
            assert!(
                start.elapsed() < TIME_LIMIT,
                "the soak ran past its time limit"
            );
        }
        stop.store(true, Ordering::Relaxed);
        monitor.join().expect("monitor")
    });
    assert!(
        most_cached <= LIMIT,
        "the prompt cache reached {most_cached} bytes"
    );
    assert!(most_cached > 0.0, "the prompt cache was used");
    assert!(metric(&server, "mistral_requests_abandoned_total") >= 2.0 * WAVES as f64);
    assert!(metric(&server, "mistral_prompt_cache_hits_total") > 0.0);
    let (status, again) = post(&server, "/v1/chat/completions", &first_question());
    assert_eq!(status, 200, "{again}");
    assert_eq!(answer_text(&again), first, "the same answer after the soak");
    eprintln!(
        "peak MLX active memory {:.1} MB; {:.0} s in all",
        metric(&server, "mistral_mlx_peak_memory_bytes") / 1e6,
        start.elapsed().as_secs_f64()
    );
}
