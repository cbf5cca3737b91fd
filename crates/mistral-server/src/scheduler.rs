//! The engine thread's loop: continuous batching over
//! [`mlx_rs_core::BatchGenerate`].
//!
//! Each turn of the loop:
//! 1. admits queued jobs while fewer than `max_batch` run (waiting for one
//!    when nothing runs): the longest cached prefix of the prompt is taken
//!    from the `PromptCache`, `Started` goes out (with the cached count),
//!    the stop checker and the job's `Prefill` are set up;
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
//!
//! What the loop does to the model goes through
//! `ModelState`; when the model is split
//! over ranks, each turn is also sent to the other ranks, which do the same
//! (see [`model_state`](crate::model_state)).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mistral_loader::{StopChecker, StopCriteria, StopReason, StreamingDetokenizer};
use mistral_model::{Mistral, TensorParallel};
use mlx_rs_core::BatchToken;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::job::{Event, FinishReason, Job, PromptTokens};
use crate::logprobs::TokenLogprob;
use crate::metrics::Metrics;
use crate::model_state::{Admit, Advanced, Leader, Leave, ModelState, PrefillOp, Turn};
use crate::reasoning_gate::ReasoningGate;
use crate::text_side::TextSide;

/// A job with its stop checker and timing.
struct Active<'t> {
    job: Job,
    checker: StopChecker<'t>,
    first_at: Option<Instant>,
    /// The tokens returned so far (each already fed to its cache).
    generated: Vec<u32>,
    /// Log-probabilities of tokens whose text is still held back.
    logprobs: Vec<TokenLogprob>,
    /// The cache bytes reserved for it (see [`crate::kv_budget`]).
    reserved: u64,
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
        if let Some(markers) = text.reasoning {
            let phase = (id == markers.open)
                .then_some(true)
                .or((id == markers.close).then_some(false));
            if let Some(on) = phase {
                if !self.send(Event::Reasoning(on)) {
                    return Progress::Left;
                }
            }
        }
        if text.call_marker == Some(id) && !self.send(Event::CallsStart) {
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
        let ids = std::mem::take(&mut self.generated);
        let matched = match self.checker.stopped() {
            Some(StopReason::StopString { text, .. }) => Some(text.clone()),
            _ => None,
        };
        let _ = self.send(Event::Finished {
            reason,
            completion_tokens: self.checker.token_count(),
            ids,
            matched,
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
        .map_err(|e| ApiError::internal(format!("stop strings: {e}")))
}

/// How much the loop runs at once.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests generating at once.
    pub max_batch: usize,
    /// Bytes of finished requests' caches kept for later prompts.
    pub prompt_cache_bytes: u64,
    /// Quantized keys and values for every request, if asked for.
    pub kv_quantization: Option<mlx_rs_core::KvQuantization>,
    /// Test hook: panic after this many decode steps.
    pub fail_after_steps: Option<u64>,
}

/// The running and waiting jobs.
#[derive(Default)]
struct Jobs<'t> {
    /// The jobs of `state.prefills`, in the same order.
    prefilling: VecDeque<Active<'t>>,
    running: HashMap<u64, Active<'t>>,
    /// A job taken from the queue that waits for cache memory.
    waiting: Option<Job>,
}

impl<'t> Jobs<'t> {
    /// The cache bytes the running and prefilling jobs reserved.
    fn reserved(&self) -> u64 {
        let prefilling = self.prefilling.iter().map(|a| a.reserved);
        prefilling
            .chain(self.running.values().map(|a| a.reserved))
            .sum()
    }

    /// Ends every job (and the waiting one) with `err`.
    fn fail_all(&mut self, err: &ApiError, metrics: &Metrics) {
        for active in self
            .prefilling
            .drain(..)
            .chain(self.running.drain().map(|(_, a)| a))
        {
            active.end(Progress::Failed(err.clone()), metrics);
        }
        if let Some(job) = self.waiting.take() {
            refuse(job, err, metrics);
        }
    }
}

/// Ends a job that was still queued with `err`.
fn refuse(job: Job, err: &ApiError, metrics: &Metrics) {
    Metrics::drop_one(&metrics.queued);
    let _ = job.events.send(Event::Failed(err.clone()));
}

/// The error of requests cut off at the end of a shutdown's grace period.
fn aborted() -> ApiError {
    ApiError::unavailable("The server is shutting down: the request was cut off")
}

/// Serves jobs until the queue closes (see the module notes), leading
/// the other ranks of `parallel` when the model is split; running requests
/// end with an error once `abort` is set. An error when the ranks can no
/// longer agree.
pub fn serve(
    model: &mut Mistral,
    text: &TextSide,
    mut jobs: mpsc::Receiver<Job>,
    metrics: &Metrics,
    limits: &Limits,
    abort: &AtomicBool,
    parallel: Option<TensorParallel>,
) -> Result<(), String> {
    let max_batch = limits.max_batch.max(1);
    let mut leader = Leader::new(parallel);
    let mut state = ModelState::new(limits.prompt_cache_bytes, limits.kv_quantization);
    let mut work = Jobs::default();
    let mut next_id = 0u64;
    let mut steps = 0u64;
    let mut open = true;
    let mut turn = Turn::default();
    metrics
        .kv_budget_bytes
        .store(text.kv.limit(), Ordering::Relaxed);
    loop {
        metrics.sample_mlx_memory();
        if abort.load(Ordering::Relaxed) {
            // The grace period is over: end everything, running or queued.
            let err = aborted();
            work.fail_all(&err, metrics);
            if !state.is_idle() {
                turn.clear = true;
                state.clear();
            }
            while let Ok(job) = jobs.try_recv() {
                refuse(job, &err, metrics);
            }
        }
        // 1. Admit.
        while open && state.batch.len() + state.prefills.len() < max_batch {
            let job = match work.waiting.take() {
                Some(job) => Some(job),
                None if state.is_idle() => jobs.blocking_recv(),
                None => match jobs.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                },
            };
            let Some(mut job) = job else {
                open = false;
                break;
            };
            // The cache it may grow to must fit beside the running ones';
            // the prompt cache gives way first.
            let need = text
                .kv
                .cost(job.prompt_ids.len().saturating_add(job.max_tokens));
            let wanted = work.reserved().saturating_add(need);
            let room = text.kv.limit().saturating_sub(wanted);
            if state.kept.bytes() > room {
                state.kept.evict_to(room);
                turn.evict_to = Some(room);
            }
            if wanted > text.kv.limit() && !state.is_idle() {
                work.waiting = Some(job);
                break;
            }
            Metrics::drop_one(&metrics.queued);
            next_id += 1;
            if let Some(leader) = leader.as_mut() {
                job.sampling = leader.seeded(job.sampling);
            }
            let admit = Admit {
                id: next_id,
                prompt: job.prompt_ids.clone(),
                sampling: job.sampling.clone(),
                logprobs: job.logprobs,
                start: false,
            };
            let cached = state.take_cached(&job.prompt_ids);
            let constraint = job.constraint.take().map(|c| {
                let vocab = text.tokenizer.get_vocab_size(true);
                match job.reasoning_gate {
                    Some((markers, inside)) => {
                        Box::new(ReasoningGate::new(Constrained(c), markers, vocab, inside))
                            as Box<dyn mlx_rs_core::TokenConstraint>
                    }
                    None => Box::new(Constrained(c)),
                }
            });
            let reused = cached.as_ref().map_or(0, |(n, _)| *n);
            let admitted = admit_job(text, job, reused, need, metrics);
            let admit = Admit {
                start: admitted.is_some(),
                ..admit
            };
            if let Some(active) = admitted {
                match state.start(model, &admit, cached, constraint) {
                    Ok(()) => work.prefilling.push_back(active),
                    Err(err) => active.end(
                        Progress::Failed(fault("starting the request failed", &err)),
                        metrics,
                    ),
                }
            }
            turn.admit.push(admit);
        }
        metrics
            .kv_reserved_bytes
            .store(work.reserved(), Ordering::Relaxed);
        let end = !open && state.is_idle();
        // 2. What happens to the oldest prefill; then the other ranks hear
        // of the turn, before its first forward pass.
        let op = turn_prefill(&work.prefilling);
        turn.prefill = op;
        turn.end = end;
        if let Some(leader) = &leader {
            if let Err(err) = leader.send(&std::mem::take(&mut turn)) {
                // The ranks cannot agree any more: stop serving.
                work.fail_all(&ApiError::internal(err.clone()), metrics);
                return Err(err);
            }
        }
        turn = Turn::default();
        if end {
            return Ok(());
        }
        let (front, before) = state
            .prefills
            .front()
            .map_or((0, 0), |p| (p.id(), p.remaining()));
        match op.map(|op| state.prefill(model, op)) {
            None | Some(Advanced::Idle) => {}
            Some(Advanced::Dropped) => {
                let active = work.prefilling.pop_front().expect("front exists");
                active.end(Progress::Left, metrics);
            }
            Some(Advanced::Continues) => {
                let now = state.prefills.front().map_or(0, |p| p.remaining());
                Metrics::add(&metrics.prefilled_tokens, (before - now) as usize);
            }
            Some(Advanced::Joined) => {
                Metrics::add(&metrics.prefilled_tokens, before as usize);
                let active = work.prefilling.pop_front().expect("front exists");
                work.running.insert(front, active);
            }
            Some(Advanced::Failed(err)) => {
                let active = work.prefilling.pop_front().expect("front exists");
                active.end(Progress::Failed(fault("prefill failed", &err)), metrics);
            }
        }
        // 3. One decode step.
        let stepped = state.step(model);
        if stepped.is_some() {
            steps += 1;
            if limits.fail_after_steps.is_some_and(|n| steps >= n) {
                panic!("test hook: the engine fails after {steps} decode steps");
            }
        }
        match stepped {
            None => {}
            Some(Ok(tokens)) => {
                Metrics::bump(&metrics.batch_steps);
                Metrics::add(&metrics.batch_rows, tokens.len());
                let mut done = Vec::new();
                for token in tokens {
                    let id = token.id;
                    let Some(active) = work.running.get_mut(&id) else {
                        continue;
                    };
                    match active.push(token, text, metrics) {
                        Progress::Continue => {}
                        progress => done.push((id, progress)),
                    }
                }
                // Leaving sequences' caches are kept under the tokens they
                // were fed.
                let keep = state.kept.limit() > 0;
                turn.leave = done
                    .iter()
                    .filter_map(|(id, _)| {
                        let active = work.running.get(id)?;
                        let mut tokens = active.job.prompt_ids.clone();
                        tokens.extend(&active.generated);
                        Some(Leave {
                            id: *id,
                            tokens,
                            keep,
                        })
                    })
                    .collect();
                let removed = state.leave(&turn.leave);
                metrics
                    .prompt_cache_bytes
                    .store(state.kept.bytes(), Ordering::Relaxed);
                for (id, progress) in done {
                    if let Some(active) = work.running.remove(&id) {
                        active.end(progress, metrics);
                    }
                }
                if let Err(err) = removed {
                    fail_all(
                        &mut work.running,
                        &fault("batch update failed", &err),
                        metrics,
                    );
                }
            }
            Some(Err(err)) => fail_all(
                &mut work.running,
                &fault("generation failed", &err),
                metrics,
            ),
        }
    }
}

/// What happens to the oldest prefill this turn (dropped when its client
/// left).
fn turn_prefill(prefilling: &VecDeque<Active<'_>>) -> Option<PrefillOp> {
    prefilling.front().map(|active| {
        if active.job.events.is_closed() {
            PrefillOp::Drop
        } else {
            PrefillOp::Advance
        }
    })
}

fn fault(what: &str, err: &dyn std::fmt::Display) -> ApiError {
    ApiError::internal(format!("{what}: {err}"))
}

/// Ends every running job with `err` (the batch has been emptied).
fn fail_all(running: &mut HashMap<u64, Active<'_>>, err: &ApiError, metrics: &Metrics) {
    for (_, active) in running.drain() {
        active.end(Progress::Failed(err.clone()), metrics);
    }
}

/// Starts `job` (its cached prefix of `reused` tokens taken, `reserved`
/// cache bytes set aside): `Started`,
/// its stop checker. `None` when its client already left or it failed (its
/// events say so).
fn admit_job<'t>(
    text: &'t TextSide,
    job: Job,
    reused: usize,
    reserved: u64,
    metrics: &Metrics,
) -> Option<Active<'t>> {
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
    if reused > 0 {
        Metrics::bump(&metrics.prompt_cache_hits);
        Metrics::add(&metrics.cached_tokens, reused);
    }
    Some(Active {
        job,
        checker,
        first_at: None,
        generated: Vec::new(),
        logprobs: Vec::new(),
        reserved,
    })
}

/// A request's output constraint as the batch applies it.
#[derive(Debug)]
struct Constrained(mistral_loader::constrain::Constraint);

impl mlx_rs_core::TokenConstraint for Constrained {
    fn consume(&mut self, token: u32) -> Result<(), String> {
        self.0.consume(token).map_err(|e| e.to_string())
    }

    fn allowed(&mut self) -> Result<Vec<u32>, String> {
        self.0.allowed().map_err(|e| e.to_string())
    }
}
