//! [`BatchGenerate`]: continuous batching over one model, after mlx-lm
//! 0.32.2's `BatchGenerator`. Sequences join and leave a running batch
//! between decode steps.
//!
//! Design:
//! - a sequence is first prefilled alone ([`Prefill`], in chunks the caller
//!   can interleave with decode steps of the batch), over a one-row
//!   [`BatchKVCache`]; [`BatchGenerate::join`] feeds its last prompt token,
//!   samples its first token and appends its cache rows to the batch's
//!   (each row keeps its own cache, see [`BatchKVCache`]);
//! - [`BatchGenerate::step`] feeds every row's pending token in one forward
//!   of `[B, 1]` and samples each row's next token from its own logits row
//!   with its own sampler, penalty and random state (so greedy rows get the
//!   ids of their solo runs, and a seeded row its solo draws);
//! - pipelining as [`Generate`](super::Generate): the step that feeds a
//!   token is built and started with `async_eval` before that token is
//!   returned, so every token returned is already in the cache;
//! - [`BatchGenerate::remove`] drops rows (finished, or their client left)
//!   with their cache rows and pending tokens;
//! - a sequence asked for log-probabilities ([`Prefill::with_logprobs`])
//!   gets its token's and the top ones with each token, computed in the
//!   step that samples it;
//! - a sequence with an output constraint ([`Prefill::with_constraint`])
//!   samples only what it allows: a step with such a row reads the fed
//!   tokens while the device runs the forward, and masks those rows'
//!   logits (see [`super::constraint`]);
//! - a sequence whose options ask for quantized keys and values
//!   ([`GenerateOptions::kv_quantization`]) has its cache rows quantized
//!   after each forward call once they hold enough positions, as
//!   [`Generate`](super::Generate) does; other rows stay dense.

use mlx_rs::{
    ops::{concatenate, indexing::TryIndexOp},
    transforms::{async_eval, eval},
    Array,
};

use super::constraint::{masked, TokenConstraint};
use super::logprobs::{PendingLogprobs, TokenLogprobs};
use super::sequence::{checked_prompt, maybe_quantize, prefill_chunk, SequenceSampler};
use super::GenerateOptions;
use crate::cache::{BatchKVCache, KeyValueCache, KvQuantization};
use crate::error::{Error, Result};
use crate::language_model::LanguageModel;

/// The model type a batch runs on.
pub type BatchModel = dyn LanguageModel<BatchKVCache>;

/// A sequence being prefilled alone before it joins a batch.
#[derive(Debug)]
pub struct Prefill {
    id: u64,
    cache: Vec<Option<BatchKVCache>>,
    /// The prompt tokens not fed yet (at least the last one).
    prompt: Array,
    sequence: SequenceSampler,
    step_size: i32,
    top_logprobs: Option<i32>,
    constraint: Option<Box<dyn TokenConstraint>>,
    kv_quantization: Option<KvQuantization>,
}

impl Prefill {
    /// Checks `prompt` (`[L]` or `[1, L]` ids) and `options` against the
    /// model; `id` names the sequence in the batch's output.
    pub fn new(
        model: &BatchModel,
        id: u64,
        prompt: &Array,
        options: &GenerateOptions,
    ) -> Result<Self> {
        let prompt = checked_prompt(model, prompt, options)?;
        Ok(Prefill {
            id,
            cache: Vec::new(),
            prompt,
            sequence: SequenceSampler::new(options)?,
            step_size: options.prefill_step_size,
            top_logprobs: None,
            constraint: None,
            kv_quantization: options.kv_quantization,
        })
    }

    /// As [`Prefill::new`], continuing from `cache`, which holds the first
    /// `reused` tokens of `prompt` (a cached prefix: a one-row cache of
    /// exactly `reused` positions, e.g. from
    /// [`BatchGenerate::sequence_cache`] trimmed to it). At least one
    /// prompt token must be left to feed.
    pub fn with_cache(
        model: &BatchModel,
        id: u64,
        prompt: &Array,
        options: &GenerateOptions,
        cache: Vec<Option<BatchKVCache>>,
        reused: i32,
    ) -> Result<Self> {
        let mut prefill = Prefill::new(model, id, prompt, options)?;
        let len = prefill.prompt.dim(0);
        if !(0..len).contains(&reused) {
            return Err(Error::InvalidArgument(format!(
                "a cached prefix of {reused} tokens for a prompt of {len} leaves none to feed"
            )));
        }
        if let Some(bad) = cache
            .iter()
            .flatten()
            .find(|c| c.offset() != reused || c.rows() > 1)
        {
            return Err(Error::InvalidArgument(format!(
                "a cached prefix of {reused} tokens comes with a cache of {} rows and {} positions",
                bad.rows(),
                bad.offset()
            )));
        }
        let prefix = prefill.prompt.try_index(..reused)?;
        prefill.sequence.remember(&prefix)?;
        prefill.prompt = prefill.prompt.try_index(reused..)?;
        if reused > 0 {
            prefill.cache = cache;
        }
        Ok(prefill)
    }

    /// Asks for each token's log-probability and the `top` most likely
    /// tokens of its step (0: none; capped at the vocabulary), in
    /// [`BatchToken::logprobs`].
    pub fn with_logprobs(mut self, top: usize) -> Self {
        self.top_logprobs = Some(i32::try_from(top).unwrap_or(i32::MAX));
        self
    }

    /// Samples only the tokens `constraint` allows (from the first).
    pub fn with_constraint(mut self, constraint: Box<dyn TokenConstraint>) -> Self {
        self.constraint = Some(constraint);
        self
    }

    /// The sequence's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Prompt tokens still to prefill (the last one is fed when the
    /// sequence joins).
    pub fn remaining(&self) -> i32 {
        self.prompt.dim(0) - 1
    }

    /// Prefills up to `budget` more prompt tokens, in chunks of the
    /// options' `prefill_step_size`.
    pub fn advance(&mut self, model: &mut BatchModel, budget: i32) -> Result<()> {
        let mut left = budget;
        while self.remaining() > 0 && left > 0 {
            let n = self.step_size.min(self.remaining()).min(left);
            prefill_chunk(
                model,
                &mut self.cache,
                &mut self.sequence,
                &mut self.prompt,
                n,
                self.kv_quantization.as_ref(),
            )?;
            left -= n;
        }
        Ok(())
    }
}

/// One running sequence.
#[derive(Debug)]
struct Row {
    id: u64,
    sequence: SequenceSampler,
    /// How many top tokens to report, if log-probabilities are wanted.
    top_logprobs: Option<i32>,
    /// The log-probabilities of its pending token.
    logprobs: Option<PendingLogprobs>,
    constraint: Option<Box<dyn TokenConstraint>>,
    kv_quantization: Option<KvQuantization>,
}

impl Row {
    /// Samples from `logits` (`[1, vocab]`), masked by the row's constraint;
    /// the token's log-probabilities become the pending ones, and the
    /// previous pending ones are returned.
    fn sample(&mut self, mut logits: Array) -> Result<(Array, Option<PendingLogprobs>)> {
        if let Some(constraint) = self.constraint.as_deref_mut() {
            logits = masked(&logits, constraint)?;
        }
        let (token, logprobs) = self.sequence.sample_with_logprobs(logits)?;
        let pending = self
            .top_logprobs
            .map(|top| PendingLogprobs::new(&logprobs, &token, top))
            .transpose()?;
        Ok((token, std::mem::replace(&mut self.logprobs, pending)))
    }
}

/// A token [`BatchGenerate::step`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchToken {
    /// The sequence's id.
    pub id: u64,
    /// The token.
    pub token: u32,
    /// Its log-probabilities, if the sequence asked for them.
    pub logprobs: Option<TokenLogprobs>,
}

/// A running batch of sequences (see the module notes).
#[derive(Debug, Default)]
pub struct BatchGenerate {
    cache: Vec<Option<BatchKVCache>>,
    rows: Vec<Row>,
    /// Each row's next token to feed, `[B]` uint32 (sampled, maybe still
    /// being computed).
    pending: Option<Array>,
}

impl BatchGenerate {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of running sequences.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no sequence is running.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The running sequences' ids, in row order.
    pub fn ids(&self) -> Vec<u64> {
        self.rows.iter().map(|r| r.id).collect()
    }

    /// The cache of sequence `id` alone, in buffers of its own (see
    /// [`BatchKVCache::row`]): every token it was fed, prompt and returned
    /// tokens. `None` for an unknown id.
    pub fn sequence_cache(&self, id: u64) -> Result<Option<Vec<Option<BatchKVCache>>>> {
        let Some(index) = self.rows.iter().position(|r| r.id == id) else {
            return Ok(None);
        };
        let cache = self
            .cache
            .iter()
            .map(|c| c.as_ref().map(|c| c.row(index)).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(cache))
    }

    /// Finishes `prefill` (whatever is left of its prompt), feeds its last
    /// prompt token, samples its first token and adds it to the batch; that
    /// token comes out of the next [`step`](BatchGenerate::step).
    pub fn join(&mut self, model: &mut BatchModel, mut prefill: Prefill) -> Result<()> {
        if self.rows.iter().any(|r| r.id == prefill.id) {
            return Err(Error::InvalidArgument(format!(
                "sequence {} is already in the batch",
                prefill.id
            )));
        }
        prefill.advance(model, i32::MAX)?;
        let Prefill {
            id,
            mut cache,
            prompt: last,
            sequence,
            top_logprobs,
            constraint,
            kv_quantization,
            ..
        } = prefill;
        let mut row = Row {
            id,
            sequence,
            top_logprobs,
            logprobs: None,
            constraint,
            kv_quantization,
        };
        let logits = model.forward(&last.reshape(&[1, -1])?, &mut cache)?;
        maybe_quantize(&mut cache, kv_quantization.as_ref())?;
        row.sequence.remember(&last)?;
        let (first, _) = row.sample(logits.try_index((.., -1, ..))?)?;
        let mut started = vec![&first];
        started.extend(row.logprobs.iter().flat_map(PendingLogprobs::arrays));
        async_eval(started)?;
        if self.rows.is_empty() {
            self.cache = cache;
        } else {
            for (mine, theirs) in self.cache.iter_mut().zip(&cache) {
                match (mine, theirs) {
                    (Some(mine), Some(theirs)) => mine.extend(theirs)?,
                    _ => return Err(Error::InvalidArgument("a layer has no cache".into())),
                }
            }
        }
        self.pending = Some(match self.pending.take() {
            Some(pending) => concatenate(&[pending, first], 0)?,
            None => first,
        });
        self.rows.push(row);
        Ok(())
    }

    /// Feeds every row's pending token and starts sampling the next ones;
    /// returns the fed tokens in row order (empty when no sequence runs).
    pub fn step(&mut self, model: &mut BatchModel) -> Result<Vec<BatchToken>> {
        let Some(fed) = self.pending.take() else {
            return Ok(Vec::new());
        };
        let b = self.rows.len() as i32;
        let logits = model.forward(&fed.reshape(&[b, 1])?, &mut self.cache)?;
        for (i, row) in self.rows.iter().enumerate() {
            if let Some(q) = &row.kv_quantization {
                for cache in self.cache.iter_mut().flatten() {
                    cache.quantize_row(i, q)?;
                }
            }
        }
        if self.rows.iter().any(|r| r.constraint.is_some()) {
            // The constraints take the fed tokens before the next masks
            // exist: read them while the device runs the forward.
            async_eval([&logits])?;
            eval([&fed])?;
            let tokens = fed
                .try_as_slice::<u32>()
                .map_err(|e| Error::InvalidArgument(format!("sampled tokens: {e}")))?;
            for (row, &token) in self.rows.iter_mut().zip(tokens) {
                if let Some(c) = row.constraint.as_deref_mut() {
                    c.consume(token).map_err(Error::Constraint)?;
                }
            }
        }
        let mut next = Vec::with_capacity(self.rows.len());
        let mut fed_logprobs = Vec::with_capacity(self.rows.len());
        for (i, row) in (0..b).zip(self.rows.iter_mut()) {
            row.sequence.remember(&fed.try_index(i..i + 1)?)?;
            let (token, previous) = row.sample(logits.try_index((i..i + 1, -1, ..))?)?;
            next.push(token);
            fed_logprobs.push(previous);
        }
        let next = concatenate(&next, 0)?;
        let mut started = vec![&next];
        started.extend(
            self.rows
                .iter()
                .flat_map(|r| r.logprobs.iter().flat_map(PendingLogprobs::arrays)),
        );
        async_eval(started)?;
        eval([&fed])?;
        let tokens = fed
            .try_as_slice::<u32>()
            .map_err(|e| Error::InvalidArgument(format!("sampled tokens: {e}")))?;
        let out = self
            .rows
            .iter()
            .zip(tokens.iter().copied())
            .zip(fed_logprobs)
            .map(|((row, token), logprobs)| {
                Ok(BatchToken {
                    id: row.id,
                    token,
                    logprobs: logprobs.map(PendingLogprobs::read).transpose()?,
                })
            })
            .collect::<Result<_>>()?;
        self.pending = Some(next);
        Ok(out)
    }

    /// Removes the sequences `ids` (unknown ids are ignored) with their
    /// cache rows and pending tokens.
    pub fn remove(&mut self, ids: &[u64]) -> Result<()> {
        let keep: Vec<usize> = (0..self.rows.len())
            .filter(|&i| !ids.contains(&self.rows[i].id))
            .collect();
        if keep.len() == self.rows.len() {
            return Ok(());
        }
        if keep.is_empty() {
            *self = BatchGenerate::new();
            return Ok(());
        }
        for cache in self.cache.iter_mut().flatten() {
            cache.retain(&keep)?;
        }
        if let Some(pending) = self.pending.take() {
            let index = Array::from_slice(
                &keep.iter().map(|&i| i as i32).collect::<Vec<_>>(),
                &[keep.len() as i32],
            );
            self.pending = Some(pending.take_axis(&index, 0)?);
        }
        let mut i = 0;
        self.rows.retain(|_| {
            i += 1;
            keep.contains(&(i - 1))
        });
        Ok(())
    }
}

/// Waits for the step still in flight, as [`Generate`](super::Generate)'s
/// drop does (MLX 0.32 can corrupt its heap when a thread or the process
/// ends while a stream still runs work); also when
/// [`remove`](BatchGenerate::remove) empties the batch.
impl Drop for BatchGenerate {
    fn drop(&mut self) {
        if let Some(pending) = &self.pending {
            // An error here already reached the caller or cannot be acted on.
            let _ = eval([pending]);
        }
    }
}
