//! `max_kv_bytes` bounds memory: a burst of long requests against the real
//! SmolLM2 waits for room instead of growing the caches, measured with
//! MLX's own peak of active memory; every request finishes; a request that
//! cannot fit alone is refused.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{metric, post, start_configured, Server, MODEL_ID};
use serde_json::{json, Value};

/// Requests in the burst.
const BURST: usize = 8;

fn long_request(i: usize) -> Value {
    let facts = (0..40)
        .map(|n| format!("Fact {n}: the number {} is listed.", n * 7 + i))
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": format!("{facts} Which number came first?")}],
        "temperature": 0,
        "max_tokens": 24,
    })
}

fn server(budget: Option<u64>) -> Server {
    start_configured(|c| {
        c.prompt_cache_bytes = 0;
        c.max_kv_bytes = budget;
        // Dequantized weights: a CPU prefill several times faster than
        // MLX's quantized product.
        c.model.options.dtype = mistral_loader::ComputeDtype::Auto;
        c.max_batch = BURST;
        c.max_queue = 2 * BURST;
    })
}

/// Runs `work` while sampling the metric `name`: `work`'s result and the
/// largest value seen.
fn sampling<T>(server: &Server, name: &str, work: impl FnOnce() -> T) -> (T, f64) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut most: f64 = 0.0;
            while !done.load(Ordering::Relaxed) {
                most = most.max(metric(server, name));
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        });
        let out = work();
        done.store(true, Ordering::Relaxed);
        (out, sampler.join().expect("sampler"))
    })
}

#[test]
fn a_burst_of_long_requests_stays_within_the_cache_budget() {
    // One request alone: what it reserves, and MLX's peak above the
    // weights while it runs (its cache and its activations).
    let solo = server(None);
    let ((status, body), reserved) = sampling(&solo, "mistral_kv_reserved_bytes", || {
        post(&solo, "/v1/chat/completions", &long_request(0))
    });
    assert_eq!(status, 200, "{body}");
    assert!(reserved > 0.0, "the request reserved its cache");
    let weights = metric(&solo, "mistral_mlx_active_memory_bytes");
    let solo_excess = metric(&solo, "mistral_mlx_peak_memory_bytes") - weights;
    drop(solo);

    // Room for two such requests at once; eight arrive together.
    let budget = (2.5 * reserved) as u64;
    let burst = server(Some(budget));
    let start = Instant::now();
    let (statuses, most_running) = sampling(&burst, "mistral_requests_running", || {
        std::thread::scope(|scope| {
            let clients: Vec<_> = (0..BURST)
                .map(|i| {
                    let burst = &burst;
                    scope.spawn(move || post(burst, "/v1/chat/completions", &long_request(i)).0)
                })
                .collect();
            clients
                .into_iter()
                .map(|c| c.join().expect("client"))
                .collect::<Vec<_>>()
        })
    });
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every request finished: {statuses:?}"
    );
    let peak = metric(&burst, "mistral_mlx_peak_memory_bytes");
    let weights = metric(&burst, "mistral_mlx_active_memory_bytes");
    eprintln!(
        "budget {:.1} MB; one request reserves {:.1} MB and peaks {:.1} MB above the weights; \
         the burst of {BURST} peaked {:.1} MB above the weights with at most {most_running} \
         running; {:.0} s",
        budget as f64 / 1e6,
        reserved / 1e6,
        solo_excess / 1e6,
        (peak - weights) / 1e6,
        start.elapsed().as_secs_f64()
    );
    assert!(most_running <= 2.0, "{most_running} requests ran at once");
    // Two caches within the budget, and one prefill's activations at a
    // time: never the eight caches the burst would hold unbounded.
    assert!(
        peak - weights <= budget as f64 + solo_excess,
        "the burst peaked {} bytes above the weights; budget {budget} + one request's {solo_excess}",
        peak - weights
    );
    drop(burst);

    // A request that cannot fit even alone is a 400 naming the budget;
    // without max_tokens, the limit is what the budget leaves.
    let small = server(Some((reserved / 2.0) as u64));
    let (status, body) = post(&small, "/v1/chat/completions", &long_request(0));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("budget"), "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    let short = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Say hi."}],
        "temperature": 0,
    });
    let (status, body) = post(&small, "/v1/chat/completions", &short);
    assert_eq!(status, 200, "{body}");
}
