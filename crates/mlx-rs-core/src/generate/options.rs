//! [`GenerateOptions`]: everything a generation run can be told, with
//! mlx-lm's defaults.

use crate::cache::KvQuantization;
use crate::sample::{RepetitionPenalty, SamplingOptions};

/// Options of a [`Generate`](super::Generate) run.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Temperature and filters.
    pub sampling: SamplingOptions,
    /// Repetition penalty over recent tokens (prompt included), if any.
    pub repetition_penalty: Option<RepetitionPenalty>,
    /// Seed of the sampler's own random state (see [`crate::Sampler`]).
    pub seed: Option<u64>,
    /// Prompt positions per forward call while prefilling (mlx-lm: 2048).
    pub prefill_step_size: i32,
    /// Stop after this many tokens (`None`: never stop by count).
    pub max_tokens: Option<usize>,
    /// Store keys and values quantized once a cache holds
    /// [`start`](KvQuantization::start) positions, checked after every
    /// forward call as mlx-lm's `maybe_quantize_kv_cache` (`None`: dense).
    pub kv_quantization: Option<KvQuantization>,
}

impl Default for GenerateOptions {
    /// Greedy, no penalty, no seed, prefill steps of 2048, no token limit,
    /// dense keys and values.
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingOptions::default(),
            repetition_penalty: None,
            seed: None,
            prefill_step_size: 2048,
            max_tokens: None,
            kv_quantization: None,
        }
    }
}
