//! [`Drafter`]: what proposes the tokens a speculative step verifies: a
//! small draft model with a cache of its own, or prompt lookup.

use mlx_rs::{
    ops::{concatenate, indexing::TryIndexOp},
    transforms::async_eval,
    Array,
};

use super::prompt_lookup::PromptLookup;
use super::sequence::eval_caches;
use super::verify::Scorer;
use crate::cache::{cache_offset, trim_cache, KeyValueCache, TrimAhead};
use crate::error::{Error, Result};
use crate::language_model::LanguageModel;

/// Proposes tokens for [`SpeculativeGenerate`](super::SpeculativeGenerate)
/// to verify.
pub enum Drafter<'a, C: KeyValueCache> {
    /// A draft model sharing the target's vocabulary, run token by token
    /// on a cache of its own.
    Model(DraftModel<'a, C>),
    /// N-gram lookup in the prompt and the output so far.
    PromptLookup(PromptLookup),
}

impl<'a, C: KeyValueCache + TrimAhead> Drafter<'a, C> {
    /// A draft model proposing `num_draft_tokens` tokens per step, with
    /// `cache` (start with an empty `Vec`; the drafter fills and trims it).
    pub fn model(
        model: &'a mut dyn LanguageModel<C>,
        cache: &'a mut Vec<Option<C>>,
        num_draft_tokens: usize,
    ) -> Self {
        Drafter::Model(DraftModel {
            model,
            cache,
            num_draft_tokens,
            cached: Vec::new(),
        })
    }

    /// Prompt lookup proposing up to `num_draft_tokens` tokens per step.
    pub fn prompt_lookup(num_draft_tokens: usize) -> Self {
        Drafter::PromptLookup(PromptLookup::new(num_draft_tokens))
    }

    /// The most tokens proposed per step.
    pub fn num_draft_tokens(&self) -> usize {
        match self {
            Drafter::Model(m) => m.num_draft_tokens,
            Drafter::PromptLookup(p) => p.num_draft_tokens,
        }
    }

    /// The draft model's vocabulary size, where it knows it.
    pub(crate) fn vocab_size(&self) -> Option<i32> {
        match self {
            Drafter::Model(m) => m.model.vocab_size(),
            Drafter::PromptLookup(_) => None,
        }
    }

    /// Up to `max` tokens to follow `history` (every token so far).
    pub(crate) fn propose(
        &mut self,
        history: &[u32],
        max: usize,
        scorer: &mut Scorer,
        prefill_step_size: i32,
    ) -> Result<Proposal> {
        match self {
            Drafter::PromptLookup(lookup) => Ok(Proposal {
                tokens: lookup.propose(history, max),
                probs: None,
            }),
            Drafter::Model(m) => m.propose(history, max, scorer, prefill_step_size),
        }
    }
}

/// Drafted tokens, and for a sampled draft model the distributions
/// (`[k, vocab]` float32) they were drawn from.
pub(crate) struct Proposal {
    pub(crate) tokens: Vec<u32>,
    pub(crate) probs: Option<Array>,
}

/// A draft model and its cache (see [`Drafter::model`]).
pub struct DraftModel<'a, C: KeyValueCache> {
    model: &'a mut dyn LanguageModel<C>,
    cache: &'a mut Vec<Option<C>>,
    num_draft_tokens: usize,
    /// The tokens its cache holds, in order.
    cached: Vec<u32>,
}

impl<C: KeyValueCache + TrimAhead> DraftModel<'_, C> {
    /// Brings the cache to the longest prefix it shares with `history` and
    /// at least one token short of it (the last token's logits are needed).
    /// Returns how many tokens of `history` the cache then holds.
    fn rewind(&mut self, history: &[u32]) -> Result<usize> {
        let shared = self
            .cached
            .iter()
            .zip(history)
            .take_while(|(a, b)| a == b)
            .count()
            .min(history.len() - 1);
        let extra = (self.cached.len() - shared) as i32;
        if extra > 0 && trim_cache(self.cache, extra)? != extra {
            // A windowed cache that cannot go back: start over.
            self.cache.clear();
            self.cached.clear();
            return Ok(0);
        }
        self.cached.truncate(shared);
        Ok(shared)
    }

    /// How many tokens may be drafted so that a rejection of all of them can
    /// be trimmed: the cache takes the `fresh` unfed tokens, then all drafts
    /// but the last.
    fn trimmable(&self, fresh: usize, max: usize) -> usize {
        (0..=max)
            .rev()
            .find(|&k| {
                let len = (fresh + k.saturating_sub(1)) as i32;
                let need = k.saturating_sub(1) as i32;
                self.cache
                    .iter()
                    .flatten()
                    .all(|c| c.trimmable_after(len) >= need)
            })
            .unwrap_or(0)
    }

    fn propose(
        &mut self,
        history: &[u32],
        max: usize,
        scorer: &mut Scorer,
        prefill_step_size: i32,
    ) -> Result<Proposal> {
        let max = max.min(self.num_draft_tokens);
        if max == 0 {
            return Ok(Proposal {
                tokens: Vec::new(),
                probs: None,
            });
        }
        let start = self.rewind(history)?;
        if cache_offset(self.cache) != start as i32 {
            return Err(Error::InvalidArgument(format!(
                "draft cache holds {} positions, expected {start}",
                cache_offset(self.cache)
            )));
        }
        let mut fresh = &history[start..];
        let k = self.trimmable(fresh.len(), max);
        // Long unfed runs (the prompt) go in chunks, caches evaluated.
        while fresh.len() as i32 > prefill_step_size {
            let (chunk, rest) = fresh.split_at(prefill_step_size as usize);
            self.model.forward(&row(chunk), self.cache)?;
            eval_caches(self.cache)?;
            self.cached.extend_from_slice(chunk);
            fresh = rest;
        }
        let mut seen = history.to_vec();
        let mut logits = self.model.forward(&row(fresh), self.cache)?;
        self.cached.extend_from_slice(fresh);
        let mut drafts = Vec::with_capacity(k);
        let mut probs = Vec::with_capacity(k);
        for i in 0..k {
            let last = logits.try_index((.., -1.., ..))?;
            let logprobs = scorer.logprobs(&last, &seen, &[])?;
            let (token, p) = scorer.pick(&logprobs)?;
            async_eval([&token])?;
            probs.extend(p);
            if i + 1 < k {
                logits = self.model.forward(&token.reshape(&[1, 1])?, self.cache)?;
            }
            // The draft's own history needs the id on the host.
            let id = token
                .try_index(0)?
                .try_item_exact::<u32>()
                .map_err(|e| Error::InvalidArgument(format!("drafted id: {e}")))?;
            seen.push(id);
            drafts.push(id);
            if i + 1 < k {
                self.cached.push(id);
            }
        }
        let probs = match probs.is_empty() {
            true => None,
            false => Some(concatenate(&probs, 0)?),
        };
        Ok(Proposal {
            tokens: drafts,
            probs,
        })
    }
}

/// `ids` as a `[1, L]` model input.
fn row(ids: &[u32]) -> Array {
    Array::from_slice(ids, &[1, ids.len() as i32])
}
