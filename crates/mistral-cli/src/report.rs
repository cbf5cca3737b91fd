//! The statistics `generate` prints: throughput, time to first token, memory.

use serde_json::{json, Value};
use std::time::Instant;

/// What one generation measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationStats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds to load the model and tokenizer.
    pub load_seconds: f64,
    /// Seconds from the start to the first generated token (the prefill).
    pub time_to_first_token: f64,
    /// Prompt tokens per second of the prefill.
    pub prompt_tps: f64,
    /// Generated tokens per second after the first.
    pub generation_tps: f64,
    /// MLX's peak memory use, in bytes.
    pub peak_memory_bytes: usize,
}

impl GenerationStats {
    /// Derives the rates from token counts and instants.
    pub fn measure(
        prompt_tokens: usize,
        generated_tokens: usize,
        load_seconds: f64,
        start: Instant,
        first_token: Option<Instant>,
        end: Instant,
        peak_memory_bytes: usize,
    ) -> Self {
        let first = first_token.unwrap_or(end);
        let ttft = first.duration_since(start).as_secs_f64();
        let decode = end.duration_since(first).as_secs_f64();
        let rate = |count: usize, seconds: f64| {
            if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            }
        };
        GenerationStats {
            prompt_tokens,
            generated_tokens,
            load_seconds,
            time_to_first_token: ttft,
            prompt_tps: rate(prompt_tokens, ttft),
            generation_tps: rate(generated_tokens.saturating_sub(1), decode),
            peak_memory_bytes,
        }
    }

    /// The statistics as a JSON object.
    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "load_seconds": self.load_seconds,
            "time_to_first_token_seconds": self.time_to_first_token,
            "prompt_tokens_per_second": self.prompt_tps,
            "generation_tokens_per_second": self.generation_tps,
            "peak_memory_bytes": self.peak_memory_bytes,
        })
    }

    /// Three lines for stderr, as mlx-lm prints them.
    pub fn summary(self) -> String {
        format!(
            "Prompt: {} tokens, {:.3} tokens-per-sec (time to first token {:.3} s)\n\
             Generation: {} tokens, {:.3} tokens-per-sec\n\
             Peak memory: {:.3} GB (load {:.2} s)",
            self.prompt_tokens,
            self.prompt_tps,
            self.time_to_first_token,
            self.generated_tokens,
            self.generation_tps,
            self.peak_memory_bytes as f64 / 1e9,
            self.load_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_follow_counts_and_times() {
        let start = Instant::now();
        let first = start + Duration::from_millis(500);
        let end = first + Duration::from_secs(2);
        let stats = GenerationStats::measure(100, 21, 1.0, start, Some(first), end, 3);
        assert!((stats.prompt_tps - 100.0 / 0.5).abs() < 1e-9);
        assert!((stats.generation_tps - 20.0 / 2.0).abs() < 1e-9);
        assert!((stats.time_to_first_token - 0.5).abs() < 1e-9);
        let none = GenerationStats::measure(5, 0, 0.0, start, None, start, 0);
        assert_eq!(none.generation_tps, 0.0);
    }
}
