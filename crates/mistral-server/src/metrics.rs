//! [`Metrics`]: counters the engine and the routes update, served at
//! `GET /metrics` in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Server-wide counters (monotonic, except those marked as gauges).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Generation requests accepted into the queue.
    pub requests: AtomicU64,
    /// Requests answered with an error status (4xx, 5xx) before generating.
    pub rejected: AtomicU64,
    /// Prompt tokens of the requests run.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated (including those of abandoned requests).
    pub generated_tokens: AtomicU64,
    /// Gauge: requests waiting in the queue.
    pub queued: AtomicU64,
    /// Gauge: requests running.
    pub running: AtomicU64,
    /// Requests whose client left before the end.
    pub abandoned: AtomicU64,
    /// Sum of times to first token (queue wait included), microseconds.
    pub ttft_micros: AtomicU64,
    /// Requests that produced a first token.
    pub ttft_count: AtomicU64,
    /// Time spent generating after the first token, microseconds.
    pub decode_micros: AtomicU64,
    /// Tokens generated after the first one of each request.
    pub decode_tokens: AtomicU64,
    /// Prompt tokens actually prefilled (less than `prompt_tokens` when a
    /// client leaves during its prefill).
    pub prefilled_tokens: AtomicU64,
    /// Requests whose prompt started with a cached prefix.
    pub prompt_cache_hits: AtomicU64,
    /// Prompt tokens taken from the prompt cache.
    pub cached_tokens: AtomicU64,
    /// Gauge: bytes the prompt cache holds.
    pub prompt_cache_bytes: AtomicU64,
    /// Decode steps of the batch.
    pub batch_steps: AtomicU64,
    /// Rows over all decode steps (mean batch size = this / steps).
    pub batch_rows: AtomicU64,
    /// Gauge: MLX's active memory (bytes of live arrays: the weights, the
    /// running requests' caches, the prompt cache), as the engine last
    /// saw it.
    pub mlx_active_bytes: AtomicU64,
    /// Gauge: bytes MLX's allocator keeps for reuse.
    pub mlx_cache_bytes: AtomicU64,
    /// Gauge: MLX's peak active memory since the model loaded.
    pub mlx_peak_bytes: AtomicU64,
    /// Gauge: the key/value cache budget (`--max-kv-bytes`).
    pub kv_budget_bytes: AtomicU64,
    /// Gauge: cache bytes the running requests reserved.
    pub kv_reserved_bytes: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Subtracts one from a gauge (never below zero).
    pub fn drop_one(gauge: &AtomicU64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Reads MLX's memory figures into the gauges (on the engine thread;
    /// a figure MLX cannot give is left as it was).
    pub fn sample_mlx_memory(&self) {
        let set = |gauge: &AtomicU64, value: mlx_rs::error::Result<usize>| {
            if let Ok(v) = value {
                gauge.store(v as u64, Ordering::Relaxed);
            }
        };
        set(&self.mlx_active_bytes, mlx_rs::memory::active_memory());
        set(&self.mlx_cache_bytes, mlx_rs::memory::cache_memory());
        set(&self.mlx_peak_bytes, mlx_rs::memory::peak_memory());
    }

    /// Adds `duration` in microseconds to `sum`.
    pub fn add_time(sum: &AtomicU64, duration: Duration) {
        sum.fetch_add(
            u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let seconds = |c: &AtomicU64| get(c) as f64 / 1e6;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        metric(
            "mistral_requests_total",
            "counter",
            "Generation requests accepted.",
            get(&self.requests).to_string(),
        );
        metric(
            "mistral_requests_rejected_total",
            "counter",
            "Generation requests refused with an error status.",
            get(&self.rejected).to_string(),
        );
        metric(
            "mistral_requests_abandoned_total",
            "counter",
            "Requests whose client left before the end.",
            get(&self.abandoned).to_string(),
        );
        metric(
            "mistral_prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            get(&self.prompt_tokens).to_string(),
        );
        metric(
            "mistral_generated_tokens_total",
            "counter",
            "Tokens generated.",
            get(&self.generated_tokens).to_string(),
        );
        metric(
            "mistral_queue_depth",
            "gauge",
            "Requests waiting.",
            get(&self.queued).to_string(),
        );
        metric(
            "mistral_requests_running",
            "gauge",
            "Requests generating.",
            get(&self.running).to_string(),
        );
        metric(
            "mistral_time_to_first_token_seconds_sum",
            "counter",
            "Sum of times to first token, queue wait included.",
            seconds(&self.ttft_micros).to_string(),
        );
        metric(
            "mistral_time_to_first_token_seconds_count",
            "counter",
            "Requests that produced a first token.",
            get(&self.ttft_count).to_string(),
        );
        metric(
            "mistral_decode_seconds_sum",
            "counter",
            "Time generating after each first token.",
            seconds(&self.decode_micros).to_string(),
        );
        metric(
            "mistral_prefilled_tokens_total",
            "counter",
            "Prompt tokens prefilled (a prefill stops when its client leaves).",
            get(&self.prefilled_tokens).to_string(),
        );
        metric(
            "mistral_prompt_cache_hits_total",
            "counter",
            "Requests whose prompt started with a cached prefix.",
            get(&self.prompt_cache_hits).to_string(),
        );
        metric(
            "mistral_prompt_cache_tokens_total",
            "counter",
            "Prompt tokens taken from the prompt cache instead of prefilled.",
            get(&self.cached_tokens).to_string(),
        );
        metric(
            "mistral_prompt_cache_bytes",
            "gauge",
            "Bytes the prompt cache holds.",
            get(&self.prompt_cache_bytes).to_string(),
        );
        metric(
            "mistral_batch_steps_total",
            "counter",
            "Decode steps of the running batch.",
            get(&self.batch_steps).to_string(),
        );
        metric(
            "mistral_batch_rows_total",
            "counter",
            "Requests over all decode steps (mean batch size = this / mistral_batch_steps_total).",
            get(&self.batch_rows).to_string(),
        );
        metric(
            "mistral_mlx_active_memory_bytes",
            "gauge",
            "MLX active memory: live arrays (weights, running caches, prompt cache).",
            get(&self.mlx_active_bytes).to_string(),
        );
        metric(
            "mistral_mlx_cache_memory_bytes",
            "gauge",
            "Memory MLX's allocator keeps for reuse.",
            get(&self.mlx_cache_bytes).to_string(),
        );
        metric(
            "mistral_mlx_peak_memory_bytes",
            "gauge",
            "MLX's peak active memory since the model loaded.",
            get(&self.mlx_peak_bytes).to_string(),
        );
        metric(
            "mistral_kv_budget_bytes",
            "gauge",
            "The key/value cache budget of the running requests and the prompt cache.",
            get(&self.kv_budget_bytes).to_string(),
        );
        metric(
            "mistral_kv_reserved_bytes",
            "gauge",
            "Key/value cache bytes the running requests reserved.",
            get(&self.kv_reserved_bytes).to_string(),
        );
        metric("mistral_decode_tokens_total", "counter", "Tokens generated after each first token (decode tok/s = this / mistral_decode_seconds_sum).", get(&self.decode_tokens).to_string());
        out
    }
}
