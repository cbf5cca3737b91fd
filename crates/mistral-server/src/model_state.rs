//! What the scheduler does to the model, kept apart from what it does for
//! clients, so that the ranks of a model split over processes
//! (`mistral-cli serve --ranks N`) can all do it.
//!
//! Rank 0 runs the HTTP side and the [`scheduler`](crate::scheduler); the
//! other ranks hold their shares of the model and [`follow`] it: every
//! forward pass on rank 0 must meet the same forward pass on every rank, or
//! the collectives inside the model (`all_sum`) would pair wrong. So each
//! turn of its loop, before the turn's first forward pass, rank 0 sends a
//! `Turn` (JSON, through [`broadcast_bytes`]):
//! - the sequences that left the batch after the previous decode step, with
//!   the tokens they were fed (their caches are kept under them in the
//!   prompt cache; each following rank also checks them against its own
//!   tokens, and stops with an error if they differ, rather than serve
//!   from a model whose ranks disagree);
//! - the requests it admitted: prompt, sampling (with a seed, which rank 0
//!   picks for a request that sampled without one, so that every rank draws
//!   the same tokens), log-probabilities, and whether it started them (a
//!   request whose client left, or whose stop strings were bad, only took
//!   its cached prefix);
//! - what happens to the oldest prefill: a chunk, or dropped (its client
//!   left).
//!
//! Everything else follows from that and the state every rank holds alike:
//! a prefill whose prompt is in joins the batch, a decode step runs when the
//! batch has rows, a failed step empties the batch. Every rank applies a
//! turn through the same `ModelState` methods.

use std::collections::{HashMap, VecDeque};

use mistral_model::{Mistral, TensorParallel};
use mlx_rs::Array;
use mlx_rs_core::distributed::broadcast_bytes;
use mlx_rs_core::{
    BatchGenerate, BatchKVCache, BatchToken, GenerateOptions, KvQuantization, Prefill,
    RepetitionPenalty, SamplingOptions,
};
use serde::{Deserialize, Serialize};

use crate::job::Sampling;
use crate::kv_budget::PREFILL_CHUNK;
use crate::prompt_cache::PromptCache;

/// Repetition penalty context, as mlx-lm's default.
const PENALTY_CONTEXT: usize = 20;

/// A cached prefix: its length and its cache.
pub(crate) type Cached = Option<(usize, Vec<Option<BatchKVCache>>)>;

/// One request rank 0 admitted (see the module notes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Admit {
    pub id: u64,
    pub prompt: Vec<u32>,
    pub sampling: Sampling,
    pub logprobs: Option<usize>,
    /// Whether it was started (else it only took its cached prefix).
    pub start: bool,
}

/// A sequence leaving the batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Leave {
    pub id: u64,
    /// The tokens it was fed: its prompt and what it generated.
    pub tokens: Vec<u32>,
    /// Whether its cache goes into the prompt cache (under `tokens`).
    pub keep: bool,
}

/// What happens to the oldest prefill in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PrefillOp {
    /// Its next chunk.
    Advance,
    /// Dropped: its client left.
    Drop,
}

/// One turn of rank 0's loop, as the other ranks need it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Turn {
    /// Sequences that left the batch after the previous step.
    pub leave: Vec<Leave>,
    pub admit: Vec<Admit>,
    pub prefill: Option<PrefillOp>,
    /// Rank 0 has stopped serving.
    pub end: bool,
    /// The prompt cache shrinks to this many bytes first (room for an
    /// admitted request).
    pub evict_to: Option<u64>,
    /// Every running and prefilling sequence is dropped first (the end of
    /// a shutdown's grace period).
    pub clear: bool,
}

/// What a turn's prefill did.
pub(crate) enum Advanced {
    /// Nothing was prefilling.
    Idle,
    /// The oldest prefill was dropped.
    Dropped,
    /// A chunk went in; more to come.
    Continues,
    /// Its prompt is in: the sequence joined the batch.
    Joined,
    /// The chunk or the join failed: the prefill is gone.
    Failed(mlx_rs_core::Error),
}

/// The model's side of serving: the batch, the prefills waiting to join it
/// (oldest first) and the prompt cache. The same on every rank.
pub(crate) struct ModelState {
    pub batch: BatchGenerate,
    pub prefills: VecDeque<Prefill>,
    pub kept: PromptCache,
    /// Every request's cache quantization (the server's setting).
    pub kv_quantization: Option<KvQuantization>,
}

impl ModelState {
    pub fn new(prompt_cache_bytes: u64, kv_quantization: Option<KvQuantization>) -> Self {
        ModelState {
            batch: BatchGenerate::new(),
            prefills: VecDeque::new(),
            kept: PromptCache::new(prompt_cache_bytes),
            kv_quantization,
        }
    }

    /// Drops every running and prefilling sequence.
    pub fn clear(&mut self) {
        self.batch = BatchGenerate::new();
        self.prefills.clear();
    }

    /// Whether nothing runs or waits to.
    pub fn is_idle(&self) -> bool {
        self.batch.is_empty() && self.prefills.is_empty()
    }

    /// The longest cached prefix of `prompt`, taken out of the prompt cache.
    pub fn take_cached(&mut self, prompt: &[u32]) -> Cached {
        self.kept.take(prompt).ok().flatten()
    }

    /// Starts prefilling `admit` (from `cached`, if any) behind the others.
    pub fn start(
        &mut self,
        model: &Mistral,
        admit: &Admit,
        cached: Cached,
        constraint: Option<Box<dyn mlx_rs_core::TokenConstraint>>,
    ) -> mlx_rs_core::Result<()> {
        let prompt = Array::from_slice(&admit.prompt, &[admit.prompt.len() as i32]);
        let options = options(&admit.sampling, self.kv_quantization);
        let prefill = match cached {
            Some((n, cache)) => {
                Prefill::with_cache(model, admit.id, &prompt, &options, cache, n as i32)
            }
            None => Prefill::new(model, admit.id, &prompt, &options),
        }?;
        let prefill = match admit.logprobs {
            Some(top) => prefill.with_logprobs(top),
            None => prefill,
        };
        self.prefills.push_back(match constraint {
            Some(c) => prefill.with_constraint(c),
            None => prefill,
        });
        Ok(())
    }

    /// Applies `op` to the oldest prefill: one chunk (joining the batch
    /// once its prompt is in), or dropping it.
    pub fn prefill(&mut self, model: &mut Mistral, op: PrefillOp) -> Advanced {
        let Some(prefill) = self.prefills.front_mut() else {
            return Advanced::Idle;
        };
        if op == PrefillOp::Drop {
            self.prefills.pop_front();
            return Advanced::Dropped;
        }
        if let Err(err) = prefill.advance(model, PREFILL_CHUNK) {
            self.prefills.pop_front();
            return Advanced::Failed(err);
        }
        if prefill.remaining() > 0 {
            return Advanced::Continues;
        }
        let prefill = self.prefills.pop_front().expect("front exists");
        match self.batch.join(model, prefill) {
            Ok(()) => Advanced::Joined,
            Err(err) => Advanced::Failed(err),
        }
    }

    /// One decode step of the batch (none when it is empty); a failed step
    /// empties the batch.
    pub fn step(&mut self, model: &mut Mistral) -> Option<mlx_rs_core::Result<Vec<BatchToken>>> {
        if self.batch.is_empty() {
            return None;
        }
        let stepped = self.batch.step(model);
        if stepped.is_err() {
            self.batch = BatchGenerate::new();
        }
        Some(stepped)
    }

    /// Takes the sequences `leave` out of the batch, keeping the caches
    /// marked so in the prompt cache; a failed removal empties the batch.
    pub fn leave(&mut self, leave: &[Leave]) -> mlx_rs_core::Result<()> {
        for l in leave.iter().filter(|l| l.keep) {
            // A cache that cannot be copied is simply not kept.
            if let Ok(Some(cache)) = self.batch.sequence_cache(l.id) {
                self.kept.insert(l.tokens.clone(), cache);
            }
        }
        let ids: Vec<u64> = leave.iter().map(|l| l.id).collect();
        let removed = self.batch.remove(&ids);
        if removed.is_err() {
            self.batch = BatchGenerate::new();
        }
        removed
    }
}

/// The generation options of a request, its cache quantized as
/// `kv_quantization` says.
pub(crate) fn options(
    sampling: &Sampling,
    kv_quantization: Option<KvQuantization>,
) -> GenerateOptions {
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
        kv_quantization,
    }
}

/// Rank 0's side of a split model: sends each [`Turn`] to the other ranks.
pub(crate) struct Leader {
    parallel: TensorParallel,
    /// Seeds for requests that sample without one: rank 0's clock, then
    /// counting up.
    next_seed: u64,
}

impl Leader {
    /// Leads the other ranks of `parallel` (`None` when the model is whole).
    pub fn new(parallel: Option<TensorParallel>) -> Option<Self> {
        let parallel = parallel.filter(|p| p.size() > 1)?;
        let next_seed = mlx_rs_core::clock_seed();
        Some(Leader {
            parallel,
            next_seed,
        })
    }

    /// `sampling` with a seed of its own when it samples without one.
    pub fn seeded(&mut self, mut sampling: Sampling) -> Sampling {
        if sampling.seed.is_none() && sampling.temperature > 0.0 {
            self.next_seed = self.next_seed.wrapping_add(1);
            sampling.seed = Some(self.next_seed);
        }
        sampling
    }

    /// Sends `turn` to the other ranks.
    pub fn send(&self, turn: &Turn) -> Result<(), String> {
        let bytes = serde_json::to_vec(turn).map_err(|e| e.to_string())?;
        broadcast_bytes(&bytes, self.parallel.group())
            .map(|_| ())
            .map_err(|e| format!("sending the turn to the other ranks: {e}"))
    }
}

/// A rank other than 0 of a split model: does to its share of `model` what
/// rank 0's turns say, until rank 0 stops serving. An error when a turn
/// cannot be received (rank 0 is gone) or read.
pub fn follow(
    model: &mut Mistral,
    parallel: &TensorParallel,
    prompt_cache_bytes: u64,
    kv_quantization: Option<KvQuantization>,
) -> Result<(), String> {
    // Rank 0 measures its cache with a forward pass; this rank's pairs with it.
    crate::kv_budget::KvBudget::measure(model, Some(0), kv_quantization)?;
    let mut state = ModelState::new(prompt_cache_bytes, kv_quantization);
    // Each running sequence's tokens, to check against rank 0's.
    let mut fed: HashMap<u64, Vec<u32>> = HashMap::new();
    loop {
        let bytes = broadcast_bytes(&[], parallel.group())
            .map_err(|e| format!("receiving rank 0's turn: {e}"))?;
        let turn: Turn =
            serde_json::from_slice(&bytes).map_err(|e| format!("reading rank 0's turn: {e}"))?;
        for l in &turn.leave {
            if let Some(mine) = fed.remove(&l.id) {
                if mine != l.tokens {
                    return Err(format!(
                        "rank {} fed request {} other tokens than rank 0 did: the ranks disagree",
                        parallel.rank(),
                        l.id
                    ));
                }
            }
        }
        // Failures here are rank 0's failures too (the same work on the same
        // state): it tells its clients; this rank goes on as it does.
        let _ = state.leave(&turn.leave);
        if turn.clear {
            state.clear();
            fed.clear();
        }
        if turn.end {
            return Ok(());
        }
        if let Some(bytes) = turn.evict_to {
            state.kept.evict_to(bytes);
        }
        for admit in &turn.admit {
            let cached = state.take_cached(&admit.prompt);
            // Constrained output is refused when split over ranks.
            if admit.start && state.start(model, admit, cached, None).is_ok() {
                fed.insert(admit.id, admit.prompt.clone());
            }
        }
        if let Some(op) = turn.prefill {
            if let Advanced::Dropped | Advanced::Failed(_) = state.prefill(model, op) {
                let batch = state.batch.ids();
                fed.retain(|id, _| {
                    batch.contains(id) || state.prefills.iter().any(|p| p.id() == *id)
                });
            }
        }
        match state.step(model) {
            Some(Ok(tokens)) => {
                for token in tokens {
                    if let Some(ids) = fed.get_mut(&token.id) {
                        ids.push(token.token);
                    }
                }
            }
            Some(Err(_)) => fed.clear(),
            None => {}
        }
    }
}
