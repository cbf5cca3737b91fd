//! The engine thread's loop: continuous batching over
//! [`mlx_rs_core::BatchGenerate`].
//!
//! Each turn of the loop:
//! 1. admits queued jobs while fewer than `max_batch` run (waiting for one
//!    when nothing runs): the longest cached prefix of the prompt is taken
//!    from the [`PromptCache`], `Started` goes out (with the cached count),
//!    the stop checker and the job's [`Prefill`] are set up;
//! 2. prefills one chunk (the options' `prefill_step_size`) of the oldest
//!    admitted job, which joins the batch once its prompt is in; a job whose
//!    client left is dropped between chunks;
//! 3. runs one decode step of the batch and hands each row's token to its
//!    job: text goes out as it becomes final; a job that stops (end of
//!    sequence, stop string, token limit) or whose client left leaves the
//!    batch, its cache kept in the prompt cache with the tokens it was fed.
//!    A job that asked for log-probabilities gets each token's with the
//!    text it makes (held back with it).
//!
//! Prefill chunks and decode steps alternate, so a long prompt delays the
//! running requests by one chunk per token, not by its whole prefill. A
//! job's chunks are the same whether it runs alone or not, and each row is
//! sampled from its own logits with its own sampler, so its greedy output
//! is its solo output.
//!
//! Events go over unbounded channels: a slow client never stalls the
//! batch (its text is bounded by its `max_tokens`).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use mistral_loader::{StopChecker, StopCriteria, StopReason, StreamingDetokenizer};
use mistral_model::Mistral;
use mlx_rs::Array;
use mlx_rs_core::{
    BatchGenerate, BatchToken, GenerateOptions, Prefill, RepetitionPenalty, SamplingOptions,
};
use tokio::sync::mpsc;

use crate::engine::{Event, FinishReason, Job, PromptTokens, Sampling, TextSide};
use crate::error::ApiError;
use crate::logprobs::TokenLogprob;
use crate::metrics::Metrics;
use crate::prompt_cache::PromptCache;

/// Prompt tokens prefilled per chunk (one chunk between decode steps).
pub const PREFILL_CHUNK: i32 = 512;

/// Repetition penalty context, as mlx-lm's default.
const PENALTY_CONTEXT: usize = 20;

/// A job with its stop checker and timing.
struct Active<'t> {
    job: Job,
    checker: StopChecker<'t>,
    first_at: Option<Instant>,
    /// The tokens returned so far (each already fed to its cache).
    generated: Vec<u32>,
    /// Log-probabilities of tokens whose text is still held back.
    logprobs: Vec<TokenLogprob>,
}

/// What a token did to its job.
enum Progress {
    Continue,
    /// Stopped normally: send the tail and `Finished`.
    Stopped,
    /// The client left.
    Left,
    /// Detokenizing failed.
    Failed(ApiError),
}

impl<'t> Active<'t> {
    fn send(&self, event: Event) -> bool {
        self.job.events.send(event).is_ok()
    }

    /// Sends `text` with the log-probabilities held so far.
    fn send_text(&mut self, text: String) -> bool {
        let logprobs = std::mem::take(&mut self.logprobs);
        self.send(Event::Text { text, logprobs })
    }

    fn push(&mut self, token: BatchToken, text: &TextSide, metrics: &Metrics) -> Progress {
        let id = token.token;
        Metrics::bump(&metrics.generated_tokens);
        match self.first_at {
            None => {
                self.first_at = Some(Instant::now());
                Metrics::add_time(&metrics.ttft_micros, self.job.received.elapsed());
                Metrics::bump(&metrics.ttft_count);
            }
            Some(_) => Metrics::bump(&metrics.decode_tokens),
        }
        self.generated.push(id);
        if self.job.events.is_closed() {
            return Progress::Left; // even while its detokenizer holds text back
        }
        let step = match self.checker.push(id) {
            Ok(step) => step,
            Err(e) => return Progress::Failed(ApiError::internal(format!("detokenizing: {e}"))),
        };
        if let Some(numbers) = &token.logprobs {
            if !matches!(step.stop, Some(StopReason::Eos(_))) {
                let entry = TokenLogprob::new(id, numbers, &text.token_bytes);
                self.logprobs.push(entry);
            }
        }
        if !step.text.is_empty() && !self.send_text(step.text) {
            return Progress::Left;
        }
        match step.stop {
            Some(_) => Progress::Stopped,
            None => Progress::Continue,
        }
    }

    /// Sends the last events of a job that left the batch.
    fn end(mut self, progress: Progress, metrics: &Metrics) {
        Metrics::drop_one(&metrics.running);
        if let Some(first) = self.first_at {
            Metrics::add_time(&metrics.decode_micros, first.elapsed());
        }
        match progress {
            Progress::Continue | Progress::Stopped => {}
            Progress::Left => return Metrics::bump(&metrics.abandoned),
            Progress::Failed(err) => {
                let _ = self.send(Event::Failed(err));
                return;
            }
        }
        let tail = match self.checker.finish() {
            Ok(tail) => tail,
            Err(e) => {
                let _ = self.send(Event::Failed(ApiError::internal(format!(
                    "detokenizing: {e}"
                ))));
                return;
            }
        };
        if (!tail.is_empty() || !self.logprobs.is_empty()) && !self.send_text(tail) {
            return Metrics::bump(&metrics.abandoned);
        }
        let reason = match self.checker.stopped() {
            Some(StopReason::Eos(_)) | Some(StopReason::StopString { .. }) => FinishReason::Stop,
            Some(StopReason::MaxTokens) | None => FinishReason::Length,
        };
        let _ = self.send(Event::Finished {
            reason,
            completion_tokens: self.checker.token_count(),
        });
    }
}

/// `job`'s stop checker: end ids, stop strings, token limit.
fn stop_checker<'t>(job: &Job, text: &'t TextSide) -> Result<StopChecker<'t>, ApiError> {
    let criteria = StopCriteria {
        eos_token_ids: text.special.eos.clone(),
        stop_strings: job.stop.clone(),
        max_tokens: Some(job.max_tokens),
    };
    StopChecker::new(criteria, StreamingDetokenizer::new(&text.tokenizer, true))
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("stop")))
}

/// The generation options of a request.
fn options(sampling: &Sampling) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingOptions {
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            min_p: sampling.min_p,
            top_k: sampling.top_k,
        },
        repetition_penalty: sampling
            .repetition_penalty
            .map(|penalty| RepetitionPenalty {
                penalty,
                context_size: PENALTY_CONTEXT,
            }),
        seed: sampling.seed,
        prefill_step_size: PREFILL_CHUNK,
        max_tokens: None,
    }
}

/// Serves jobs until the queue closes (see the module notes).
pub fn serve(
    model: &mut Mistral,
    text: &TextSide,
    mut jobs: mpsc::Receiver<Job>,
    metrics: &Metrics,
    max_batch: usize,
    prompt_cache_bytes: u64,
) {
    let max_batch = max_batch.max(1);
    let mut kept = PromptCache::new(prompt_cache_bytes);
    let mut batch = BatchGenerate::new();
    let mut prefilling: VecDeque<(Prefill, Active<'_>)> = VecDeque::new();
    let mut running: HashMap<u64, Active<'_>> = HashMap::new();
    let mut next_id = 0u64;
    let mut open = true;
    loop {
        metrics.sample_mlx_memory();
        // 1. Admit.
        while open && batch.len() + prefilling.len() < max_batch {
            let idle = batch.is_empty() && prefilling.is_empty();
            let job = if idle {
                jobs.blocking_recv()
            } else {
                match jobs.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(job) = job else {
                open = false;
                break;
            };
            Metrics::drop_one(&metrics.queued);
            next_id += 1;
            if let Some(admitted) = admit(model, text, job, next_id, &mut kept, metrics) {
                prefilling.push_back(admitted);
            }
        }
        if !open && batch.is_empty() && prefilling.is_empty() {
            return;
        }
        // 2. One prefill chunk; the job joins the batch once its prompt is in.
        if let Some((prefill, active)) = prefilling.front_mut() {
            let outcome = if active.job.events.is_closed() {
                Err(Progress::Left)
            } else {
                let before = prefill.remaining();
                let advanced = prefill.advance(model, PREFILL_CHUNK);
                Metrics::add(
                    &metrics.prefilled_tokens,
                    (before - prefill.remaining()) as usize,
                );
                advanced.map_err(|err| Progress::Failed(fault("prefill failed", &err)))
            };
            match outcome {
                Err(progress) => {
                    let (_, active) = prefilling.pop_front().expect("front exists");
                    active.end(progress, metrics);
                }
                Ok(()) if prefill.remaining() == 0 => {
                    let (prefill, active) = prefilling.pop_front().expect("front exists");
                    let id = prefill.id();
                    match batch.join(model, prefill) {
                        Ok(()) => {
                            running.insert(id, active);
                        }
                        Err(err) => {
                            active.end(Progress::Failed(fault("prefill failed", &err)), metrics)
                        }
                    }
                }
                Ok(()) => {}
            }
        }
        // 3. One decode step.
        if batch.is_empty() {
            continue;
        }
        match batch.step(model) {
            Ok(tokens) => {
                Metrics::bump(&metrics.batch_steps);
                Metrics::add(&metrics.batch_rows, tokens.len());
                let mut done = Vec::new();
                for token in tokens {
                    let id = token.id;
                    let Some(active) = running.get_mut(&id) else {
                        continue;
                    };
                    match active.push(token, text, metrics) {
                        Progress::Continue => {}
                        progress => done.push((id, progress)),
                    }
                }
                let ids: Vec<u64> = done.iter().map(|(id, _)| *id).collect();
                keep_caches(&batch, &running, &ids, &mut kept, metrics);
                let removed = batch.remove(&ids);
                for (id, progress) in done {
                    if let Some(active) = running.remove(&id) {
                        active.end(progress, metrics);
                    }
                }
                if let Err(err) = removed {
                    fail_all(
                        &mut batch,
                        &mut running,
                        &fault("batch update failed", &err),
                        metrics,
                    );
                }
            }
            Err(err) => fail_all(
                &mut batch,
                &mut running,
                &fault("generation failed", &err),
                metrics,
            ),
        }
    }
}

fn fault(what: &str, err: &dyn std::fmt::Display) -> ApiError {
    ApiError::internal(format!("{what}: {err}"))
}

/// Ends every running job with `err` and empties the batch.
fn fail_all(
    batch: &mut BatchGenerate,
    running: &mut HashMap<u64, Active<'_>>,
    err: &ApiError,
    metrics: &Metrics,
) {
    *batch = BatchGenerate::new();
    for (_, active) in running.drain() {
        active.end(Progress::Failed(err.clone()), metrics);
    }
}

/// Keeps the caches of the sequences `ids` (leaving the batch) in the
/// prompt cache, with the tokens they were fed.
fn keep_caches(
    batch: &BatchGenerate,
    running: &HashMap<u64, Active<'_>>,
    ids: &[u64],
    kept: &mut PromptCache,
    metrics: &Metrics,
) {
    if kept.limit() == 0 {
        return;
    }
    for id in ids {
        let (Some(active), Ok(Some(cache))) = (running.get(id), batch.sequence_cache(*id)) else {
            continue; // a cache that cannot be copied is simply not kept
        };
        let mut tokens = active.job.prompt_ids.clone();
        tokens.extend(&active.generated);
        kept.insert(tokens, cache);
    }
    metrics
        .prompt_cache_bytes
        .store(kept.bytes(), std::sync::atomic::Ordering::Relaxed);
}

/// Starts `job`: the longest cached prefix of its prompt, `Started`, its
/// stop checker and its prefill. `None` when its client already left or it
/// failed (its events say so).
fn admit<'t>(
    model: &Mistral,
    text: &'t TextSide,
    job: Job,
    id: u64,
    kept: &mut PromptCache,
    metrics: &Metrics,
) -> Option<(Prefill, Active<'t>)> {
    let cached = kept.take(&job.prompt_ids).ok().flatten();
    let reused = cached.as_ref().map_or(0, |(n, _)| *n);
    let started = Event::Started {
        prompt_tokens: PromptTokens {
            total: job.prompt_ids.len(),
            cached: reused,
        },
    };
    if job.events.send(started).is_err() {
        Metrics::bump(&metrics.abandoned); // the client left while queued
        return None;
    }
    Metrics::add(&metrics.prompt_tokens, job.prompt_ids.len());
    let checker = match stop_checker(&job, text) {
        Ok(checker) => checker,
        Err(err) => {
            let _ = job.events.send(Event::Failed(err));
            return None;
        }
    };
    Metrics::bump(&metrics.running);
    let active = Active {
        job,
        checker,
        first_at: None,
        generated: Vec::new(),
        logprobs: Vec::new(),
    };
    if reused > 0 {
        Metrics::bump(&metrics.prompt_cache_hits);
        Metrics::add(&metrics.cached_tokens, reused);
    }
    let ids = &active.job.prompt_ids;
    let prompt = Array::from_slice(ids, &[ids.len() as i32]);
    let options = options(&active.job.sampling);
    let prefill = match cached {
        Some((n, cache)) => Prefill::with_cache(model, id, &prompt, &options, cache, n as i32),
        None => Prefill::new(model, id, &prompt, &options),
    }
    .map(|p| match active.job.logprobs {
        Some(top) => p.with_logprobs(top),
        None => p,
    });
    match prefill {
        Ok(prefill) => Some((prefill, active)),
        Err(err) => {
            active.end(
                Progress::Failed(ApiError::bad_request(err.to_string(), None)),
                metrics,
            );
            None
        }
    }
}
