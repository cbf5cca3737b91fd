//! Continuous batching end to end: 8 streaming clients at once each get
//! their solo temperature-0 answer, and the engine's decode steps really
//! ran several requests together; a client that leaves during its prefill
//! stops it; a stream waiting on a long prefill gets keep-alive comments.

mod common;

use common::{
    metric, post, post_raw, post_stream, start_configured, stream_and_leave_once_started, MODEL_ID,
};
use serde_json::{json, Value};

const PROMPTS: [&str; 8] = [
    "Name three colours.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Count from one to ten in words.",
    "Give me a short tip for learning to cook.",
    "What is two plus two?",
    "Describe a cat in one sentence.",
    "List four fruits.",
];

fn body(prompt: &str, stream: bool) -> Value {
    json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 48,
        "stream": stream,
    })
}

/// A streamed greedy chat whose prompt is a sentence `repeats` times (300:
/// about 3000 tokens).
fn long_prompt_stream(repeats: usize, max_tokens: u32) -> Value {
    json!({
        "messages": [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. ".repeat(repeats)}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": true,
    })
}

#[test]
fn eight_concurrent_streams_get_their_solo_answers() {
    // No prompt cache: each request prefills its own prompt, as alone.
    let server = start_configured(|c| c.prompt_cache_bytes = 0);
    // Solo: one request at a time.
    let solo: Vec<String> = PROMPTS
        .iter()
        .map(|p| {
            let (status, answer) = post(&server, "/v1/chat/completions", &body(p, false));
            assert_eq!(status, 200, "{answer}");
            answer["choices"][0]["message"]["content"]
                .as_str()
                .expect("content")
                .to_owned()
        })
        .collect();
    let (steps, rows) = (
        metric(&server, "mistral_batch_steps_total"),
        metric(&server, "mistral_batch_rows_total"),
    );
    assert_eq!(steps, rows, "solo requests decode one row per step");

    // Together: 8 streaming clients released at once.
    let barrier = std::sync::Barrier::new(PROMPTS.len());
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = PROMPTS
            .iter()
            .map(|p| {
                let (server, barrier) = (&server, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let events = post_stream(server, "/v1/chat/completions", &body(p, true));
                    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                    events[..events.len() - 1]
                        .iter()
                        .map(|e| serde_json::from_str::<Value>(e).expect("chunk JSON"))
                        .filter_map(|c| {
                            c["choices"][0]["delta"]["content"]
                                .as_str()
                                .map(str::to_owned)
                        })
                        .collect::<String>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    for (i, (got, want)) in together.iter().zip(&solo).enumerate() {
        assert_eq!(got, want, "client {i} ({:?})", PROMPTS[i]);
    }
    let steps = metric(&server, "mistral_batch_steps_total") - steps;
    let rows = metric(&server, "mistral_batch_rows_total") - rows;
    let mean = rows / steps;
    eprintln!("8 concurrent clients: {rows} rows in {steps} decode steps (mean batch {mean:.2})");
    assert!(
        mean > 2.0,
        "the requests hardly ran together: mean batch {mean:.2}"
    );
    assert_eq!(metric(&server, "mistral_requests_running"), 0.0);
}

/// A client that leaves while its long prompt is being prefilled stops
/// that prefill within a chunk or two (the prefilled-tokens counter shows
/// it), and the next request is served.
#[test]
fn a_client_that_leaves_during_prefill_stops_it() {
    let server = start_configured(|c| c.prompt_cache_bytes = 0);
    let request = long_prompt_stream(300, 8);
    stream_and_leave_once_started(&server, "/v1/chat/completions", &request);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while metric(&server, "mistral_requests_running") > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned prefill never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let prompt_tokens = metric(&server, "mistral_prompt_tokens_total");
    let prefilled = metric(&server, "mistral_prefilled_tokens_total");
    eprintln!("the abandoned request prefilled {prefilled} of its {prompt_tokens} prompt tokens");
    assert!(
        prompt_tokens > 2000.0,
        "the prompt is {prompt_tokens} tokens"
    );
    assert!(
        prefilled <= 2.0 * 512.0,
        "the prefill went on after its client left: {prefilled} of {prompt_tokens} tokens"
    );
    assert_eq!(metric(&server, "mistral_requests_abandoned_total"), 1.0);
    assert_eq!(metric(&server, "mistral_generated_tokens_total"), 0.0);
    let (status, answer) = post(&server, "/v1/chat/completions", &body("Say hi.", false));
    assert_eq!(status, 200, "{answer}");
}

/// While a long prompt is prefilled, its open stream (the role chunk is
/// sent before the prefill) gets SSE comments at the keep-alive interval
/// (200 ms here, 10 s by default), then its answer.
#[test]
fn a_stream_waiting_on_a_long_prefill_gets_keep_alive_comments() {
    let server = start_configured(|c| {
        c.prompt_cache_bytes = 0;
        c.keep_alive = std::time::Duration::from_millis(200);
        // Dequantized weights: a CPU prefill several times faster than
        // MLX's quantized product.
        c.model.options.dtype = mistral_loader::ComputeDtype::Auto;
    });
    let request = long_prompt_stream(50, 2);
    let started = std::time::Instant::now();
    let (status, text) = post_raw(
        &server,
        "/v1/chat/completions",
        &request.to_string(),
        "application/json",
        None,
    );
    let took = started.elapsed();
    assert_eq!(status, 200, "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let first_data = lines.iter().position(|l| l.starts_with("data:"));
    let first_content = lines.iter().position(|l| {
        l.starts_with("data:") && l.contains("\"content\"") && !l.contains("\"role\"")
    });
    let (Some(first_data), Some(first_content)) = (first_data, first_content) else {
        panic!("no role or content chunk: {text}");
    };
    let comments = lines[first_data..first_content]
        .iter()
        .filter(|l| l.starts_with(':'))
        .count();
    eprintln!(
        "{comments} keep-alive comments during a {:.1} s request",
        took.as_secs_f64()
    );
    assert!(
        comments >= 1,
        "no keep-alive comment before the first token:\n{text}"
    );
    assert_eq!(lines.last(), Some(&"data: [DONE]"), "{text}");
}
