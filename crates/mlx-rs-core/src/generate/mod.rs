//! [`Generate`]: an iterator of sampled tokens over a [`LanguageModel`] and
//! a caller-owned cache, after mlx-lm 0.32.2's `generate_step`.
//!
//! Design:
//! - the first `next()` prefills: all prompt tokens but the last go through
//!   the model in chunks of `prefill_step_size`, evaluating only the caches;
//!   the last token's logits give the first sample;
//! - each step computes `logprobs = logits - logsumexp(logits)` in the
//!   model's dtype (after the repetition penalty, if any, on the logits) and
//!   hands them to the [`Sampler`];
//! - pipelining: before a token is returned, the graph of the step that
//!   feeds it to the model is built and started with
//!   `mlx_rs::transforms::async_eval`, so the model computes the next token
//!   while the caller consumes this one (mlx-lm's overlap);
//! - prompt-cache reuse: the cache is never reset. Every token returned is
//!   already fed to the cache (as in mlx-lm's `generate_step`, whose last
//!   step also feeds its last token), so after a run the cache holds the
//!   prompt and every token returned; a next chat turn passes only the new tokens
//!   (those after [`cache_offset`](crate::cache_offset)) with the same cache.
//!   The rotating cache makes this exact for sliding-window models also after
//!   it has wrapped;
//! - quantized keys and values: with
//!   [`GenerateOptions::kv_quantization`], after every forward call each
//!   cache holding at least `start` positions switches to quantized storage
//!   (mlx-lm's `maybe_quantize_kv_cache`), so the first call, at least, runs
//!   on dense keys as mlx-lm's does.
//!
//! [`SpeculativeGenerate`] gives the same items, verifying several tokens
//! per forward pass where a [`Drafter`] (a draft model, or prompt lookup)
//! guesses them.

mod batch;
mod constraint;
mod draft;
mod logprobs;
mod options;
mod prompt_lookup;
mod sequence;
mod speculative;
mod step_times;
pub(crate) mod verify;

pub use batch::{BatchGenerate, BatchModel, BatchToken, Prefill};
pub use constraint::TokenConstraint;
pub use draft::{DraftModel, Drafter};
pub use logprobs::TokenLogprobs;
pub use options::GenerateOptions;
pub use prompt_lookup::PromptLookup;
pub use speculative::{SpeculativeGenerate, SpeculativeStats};
pub use step_times::StepTimes;

use std::time::Instant;

use mlx_rs::{
    ops::indexing::TryIndexOp,
    transforms::{async_eval, eval},
    Array,
};

use crate::cache::{KeyValueCache, KvQuantization};
use crate::error::{Error, Result};
use crate::language_model::LanguageModel;
use crate::sample::{RepetitionPenalty, SamplingOptions};
use sequence::{checked_prompt, maybe_quantize, prefill_chunk, SequenceSampler};

enum Stage {
    /// Not started: the prompt (1-D, ids) is still to be prefilled.
    Prompt(Array),
    /// The next token to return, whose step is not yet built.
    Next(Array),
    /// Finished or failed.
    Done,
}

/// Generates tokens one by one; each item is a `[1]` `uint32` array
/// (`.item::<u32>()` gives the id).
pub struct Generate<'a, C: KeyValueCache> {
    model: &'a mut dyn LanguageModel<C>,
    cache: &'a mut Vec<Option<C>>,
    options: GenerateOptions,
    /// Sampler, penalty and recent tokens (set up by the first `next()`).
    sequence: Option<SequenceSampler>,
    stage: Stage,
    produced: usize,
    times: StepTimes,
}

impl<'a, C: KeyValueCache> Generate<'a, C> {
    /// Generation at temperature `temp` (0: greedy) continuing `prompt`
    /// (`[1, L]` or `[L]` integer ids) after whatever `cache` holds (start
    /// with an empty `Vec`). Other options: the builder methods, before the
    /// first `next()`.
    pub fn new(
        model: &'a mut dyn LanguageModel<C>,
        cache: &'a mut Vec<Option<C>>,
        temp: f32,
        prompt: &Array,
    ) -> Self {
        let mut options = GenerateOptions::default();
        options.sampling.temperature = temp;
        Self::with_options(model, cache, prompt, options)
    }

    /// Generation with all options given at once.
    pub fn with_options(
        model: &'a mut dyn LanguageModel<C>,
        cache: &'a mut Vec<Option<C>>,
        prompt: &Array,
        options: GenerateOptions,
    ) -> Self {
        Generate {
            model,
            cache,
            options,
            sequence: None,
            stage: Stage::Prompt(prompt.clone()),
            produced: 0,
            times: StepTimes::default(),
        }
    }

    /// Replaces the sampling options (temperature and filters).
    pub fn sampling(mut self, sampling: SamplingOptions) -> Self {
        self.options.sampling = sampling;
        self
    }

    /// Nucleus sampling: keep the most likely tokens up to mass `top_p`
    /// (applied when `0 < top_p < 1`).
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.options.sampling.top_p = top_p;
        self
    }

    /// Keep only the `top_k` most likely tokens (0: off).
    pub fn top_k(mut self, top_k: i32) -> Self {
        self.options.sampling.top_k = top_k;
        self
    }

    /// Drop tokens less likely than `min_p` times the most likely (0: off).
    pub fn min_p(mut self, min_p: f32) -> Self {
        self.options.sampling.min_p = min_p;
        self
    }

    /// Repetition penalty over the last `context_size` tokens (mlx-lm's
    /// default context is 20; 0 means all tokens, and a penalty of 0 none,
    /// as in mlx-lm).
    pub fn repetition_penalty(mut self, penalty: f32, context_size: usize) -> Self {
        self.options.repetition_penalty = Some(RepetitionPenalty {
            penalty,
            context_size,
        });
        self
    }

    /// Seed for reproducible sampling (same ids as mlx-lm after
    /// `mx.random.seed(seed)`).
    pub fn seed(mut self, seed: u64) -> Self {
        self.options.seed = Some(seed);
        self
    }

    /// Prompt positions per forward call while prefilling (default 2048).
    pub fn prefill_step_size(mut self, size: i32) -> Self {
        self.options.prefill_step_size = size;
        self
    }

    /// Stop after `max_tokens` tokens.
    pub fn max_tokens(mut self, max_tokens: usize) -> Self {
        self.options.max_tokens = Some(max_tokens);
        self
    }

    /// Store keys and values quantized as `quantization` says (see
    /// [`GenerateOptions::kv_quantization`]).
    pub fn kv_quantization(mut self, quantization: KvQuantization) -> Self {
        self.options.kv_quantization = Some(quantization);
        self
    }

    /// The options in effect.
    pub fn options(&self) -> &GenerateOptions {
        &self.options
    }

    /// Tokens returned so far.
    pub fn produced(&self) -> usize {
        self.produced
    }

    /// Where the decode steps so far spent their time (see [`StepTimes`]).
    pub fn step_times(&self) -> StepTimes {
        self.times
    }

    /// Feeds `tokens` (1-D) and samples the next token from the last
    /// position's logits.
    fn step(&mut self, tokens: &Array) -> Result<Array> {
        let input = tokens.reshape(&[1, -1])?;
        let logits = self.model.forward(&input, self.cache)?;
        maybe_quantize(self.cache, self.options.kv_quantization.as_ref())?;
        let sequence = match self.sequence.as_mut() {
            Some(s) => s,
            None => return Err(Error::InvalidArgument("sampler not set up".into())),
        };
        sequence.remember(tokens)?;
        sequence.sample(logits.try_index((.., -1, ..))?)
    }

    /// Checks the options and prompt, prefills and samples the first token.
    fn start(&mut self, prompt: Array) -> Result<Array> {
        let mut prompt = checked_prompt(&*self.model, &prompt, &self.options)?;
        let mut sequence =
            SequenceSampler::new(&self.options)?.with_cpu_fast(self.model.cpu_fast());
        // As mlx-lm: prefill all but the last token in chunks.
        while prompt.dim(0) > 1 {
            let n = self.options.prefill_step_size.min(prompt.dim(0) - 1);
            let quantization = self.options.kv_quantization.as_ref();
            prefill_chunk(
                &mut *self.model,
                self.cache,
                &mut sequence,
                &mut prompt,
                n,
                quantization,
            )?;
        }
        self.sequence = Some(sequence);
        let y = self.step(&prompt)?;
        async_eval([&y])?;
        Ok(y)
    }

    fn advance(&mut self) -> Result<Option<Array>> {
        if self
            .options
            .max_tokens
            .is_some_and(|max| self.produced >= max)
        {
            return Ok(None);
        }
        let y = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Done => return Ok(None),
            Stage::Prompt(prompt) => self.start(prompt)?,
            Stage::Next(y) => y,
        };
        // Feed `y` now, so the model works on the next token while the
        // caller uses this one, and the cache holds every returned token.
        let decoding = self.produced > 0;
        let started = Instant::now();
        let next = self.step(&y)?;
        let built = Instant::now();
        async_eval([&next])?;
        let dispatched = Instant::now();
        eval([&y])?;
        if decoding {
            self.times.steps += 1;
            self.times.build += built - started;
            self.times.dispatch += dispatched - built;
            self.times.wait += dispatched.elapsed();
        }
        self.stage = Stage::Next(next);
        self.produced += 1;
        Ok(Some(y))
    }
}

/// Waits for the step still in flight (the one `async_eval` started for the
/// token after the last one returned). MLX 0.32 can corrupt its heap when a
/// thread, or the process, ends while a stream still runs work: a program
/// that stops after `take(n)` and returns (as the Quick Start does) aborted
/// in up to one exit in seven without this wait
/// (`mistral-loader/tests/exit_after_generation.rs`).
impl<C: KeyValueCache> Drop for Generate<'_, C> {
    fn drop(&mut self) {
        if let Stage::Next(next) = &self.stage {
            // An error here already reached the caller or cannot be acted on.
            let _ = eval([next]);
        }
    }
}

impl<C: KeyValueCache> Iterator for Generate<'_, C> {
    type Item = Result<Array>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.advance() {
            Ok(token) => token.map(Ok),
            Err(e) => {
                self.stage = Stage::Done;
                Some(Err(e))
            }
        }
    }
}
