//! [`SpeculativeGenerate`]: [`Generate`](super::Generate)'s tokens, several
//! per forward pass of the target model where a [`Drafter`] guesses them.
//!
//! Each step: the drafter proposes up to `k` tokens after the sequence so
//! far; the target runs once over its pending token and the `k` drafts,
//! which gives its distribution at each of the `k + 1` positions; the
//! drafts are accepted from the first on while the verdict allows (see
//! `verify.rs`: equality with the target's choice when greedy, Leviathan
//! et al.'s rejection sampling otherwise), and the first rejected one is
//! replaced by the target's own token (or, all accepted, the target's token
//! after the last draft is added). The cache positions of rejected drafts
//! are trimmed; both caches stay exact.
//!
//! Greedy output is the target's greedy output; sampled output follows the
//! target's sampling distribution (temperature, top-p, min-p, top-k and
//! repetition penalty applied as [`Generate`](super::Generate) applies
//! them), though not the same ids as a seeded `Generate`: the draws differ.
//!
//! Windowed caches: a [`RotatingKVCache`] past its window can give back
//! only its newest position ([`KeyValueCache::max_trim`]), so once a step
//! would take a windowed layer past its window, at most one token is
//! drafted ([`TrimAhead`]).
//!
//! A quantized KV cache ([`GenerateOptions::kv_quantization`]) applies to
//! the target's cache, switched after each forward call as in
//! [`Generate`](super::Generate); a draft model's cache stays dense.
//!
//! The cache: after a run the target's cache holds the prompt and every
//! token returned except the last (which the next step would have fed);
//! each step ends with its tokens evaluated, nothing left in flight.

use std::collections::VecDeque;

use mlx_rs::{ops::indexing::TryIndexOp, transforms::eval, Array, Dtype};

use super::draft::Drafter;
use super::sequence::{checked_prompt, eval_caches, maybe_quantize};
use super::verify::{draw, judge, Scorer};
use super::GenerateOptions;
use crate::cache::{trim_cache, KeyValueCache, TrimAhead};
use crate::error::{Error, Result};
use crate::language_model::LanguageModel;

/// Counts of a speculative run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpeculativeStats {
    /// Forward passes of the target model after the prompt's.
    pub steps: usize,
    /// Tokens the drafter proposed.
    pub drafted: usize,
    /// Proposed tokens the target accepted.
    pub accepted: usize,
}

impl SpeculativeStats {
    /// Accepted over drafted tokens (0 when none were drafted).
    pub fn acceptance_rate(&self) -> f64 {
        match self.drafted {
            0 => 0.0,
            n => self.accepted as f64 / n as f64,
        }
    }
}

/// Generates tokens as [`Generate`](super::Generate) does (each item a
/// `[1]` `uint32` array), verifying drafted tokens several at a time.
pub struct SpeculativeGenerate<'a, C: KeyValueCache + TrimAhead> {
    model: &'a mut dyn LanguageModel<C>,
    cache: &'a mut Vec<Option<C>>,
    drafter: Drafter<'a, C>,
    options: GenerateOptions,
    /// The prompt until the first `next()`.
    prompt: Option<Array>,
    scorer: Option<Scorer>,
    /// Prompt and tokens produced; the last is not yet in the target cache.
    tokens: Vec<u32>,
    /// Tokens produced but not yet returned.
    ready: VecDeque<u32>,
    produced: usize,
    done: bool,
    stats: SpeculativeStats,
}

impl<'a, C: KeyValueCache + TrimAhead> SpeculativeGenerate<'a, C> {
    /// Generation continuing `prompt` (`[1, L]` or `[L]` integer ids) after
    /// whatever `cache` holds, with drafts from `drafter`.
    pub fn with_options(
        model: &'a mut dyn LanguageModel<C>,
        cache: &'a mut Vec<Option<C>>,
        drafter: Drafter<'a, C>,
        prompt: &Array,
        options: GenerateOptions,
    ) -> Self {
        SpeculativeGenerate {
            model,
            cache,
            drafter,
            options,
            prompt: Some(prompt.clone()),
            scorer: None,
            tokens: Vec::new(),
            ready: VecDeque::new(),
            produced: 0,
            done: false,
            stats: SpeculativeStats::default(),
        }
    }

    /// The options in effect.
    pub fn options(&self) -> &GenerateOptions {
        &self.options
    }

    /// Tokens returned so far.
    pub fn produced(&self) -> usize {
        self.produced
    }

    /// Steps, drafted and accepted tokens so far.
    pub fn stats(&self) -> SpeculativeStats {
        self.stats
    }

    /// Checks the prompt and options and prefills all prompt tokens but
    /// the last.
    fn start(&mut self, prompt: &Array) -> Result<()> {
        let prompt = checked_prompt(&*self.model, prompt, &self.options)?;
        if let (Some(target), Some(draft)) = (self.model.vocab_size(), self.drafter.vocab_size()) {
            if target != draft {
                return Err(Error::InvalidArgument(format!(
                    "the draft model's vocabulary ({draft} tokens) differs from the target's ({target})"
                )));
            }
        }
        self.scorer = Some(Scorer::new(&self.options)?);
        let ids = prompt.as_dtype(Dtype::Uint32)?;
        ids.eval()?;
        self.tokens = ids
            .try_as_slice::<u32>()
            .map_err(|e| Error::InvalidArgument(format!("prompt ids: {e}")))?
            .to_vec();
        let step = self.options.prefill_step_size as usize;
        let body = &self.tokens[..self.tokens.len() - 1];
        for chunk in body.chunks(step) {
            self.model.forward(&row(chunk), self.cache)?;
            maybe_quantize(self.cache, self.options.kv_quantization.as_ref())?;
            eval_caches(self.cache)?;
        }
        Ok(())
    }

    /// The most drafts whose rejection the target's caches can trim.
    fn trimmable(&self, max: usize) -> usize {
        (0..=max)
            .rev()
            .find(|&k| {
                self.cache
                    .iter()
                    .flatten()
                    .all(|c| c.trimmable_after(k as i32 + 1) >= k as i32)
            })
            .unwrap_or(0)
    }

    /// One step: draft, verify, keep the accepted tokens and the target's
    /// next one in `ready`.
    fn step(&mut self) -> Result<()> {
        let remaining = self
            .options
            .max_tokens
            .map_or(usize::MAX, |m| m - self.produced);
        let max = self.trimmable(self.drafter.num_draft_tokens().min(remaining - 1));
        let scorer = match self.scorer.as_mut() {
            Some(s) => s,
            None => return Err(Error::InvalidArgument("generation not started".into())),
        };
        let proposal =
            self.drafter
                .propose(&self.tokens, max, scorer, self.options.prefill_step_size)?;
        let drafts = &proposal.tokens[..proposal.tokens.len().min(max)];
        let k = drafts.len();
        let mut input = Vec::with_capacity(k + 1);
        input.extend(self.tokens.last().copied());
        input.extend_from_slice(drafts);
        let logits = self.model.forward(&row(&input), self.cache)?;
        maybe_quantize(self.cache, self.options.kv_quantization.as_ref())?;
        let logprobs = scorer.logprobs(&logits, &self.tokens, drafts)?;
        let (accepted, next) = if scorer.greedy() {
            let best =
                mlx_rs::ops::indexing::argmax_axis(&logprobs, -1, None)?.as_dtype(Dtype::Uint32)?;
            best.eval()?;
            let best = host_u32(&best)?;
            let n = drafts.iter().zip(&best).take_while(|(d, b)| d == b).count();
            (n, best[n])
        } else {
            let p = scorer.probabilities(&logprobs)?;
            let bonus = draw(&p.try_index(k as i32..)?, &scorer.key()?)?;
            if k == 0 {
                bonus.eval()?;
                (0, host_u32(&bonus)?[0])
            } else {
                let q = proposal
                    .probs
                    .as_ref()
                    .map(|q| q.try_index(..k as i32))
                    .transpose()?;
                let drafted = Array::from_slice(drafts, &[k as i32]);
                let key = scorer.key()?;
                let (ok, replacement) =
                    judge(&p.try_index(..k as i32)?, q.as_ref(), &drafted, &key)?;
                eval([&ok, &replacement, &bonus])?;
                let ok = ok
                    .try_as_slice::<bool>()
                    .map_err(|e| Error::InvalidArgument(format!("verdicts: {e}")))?
                    .to_vec();
                let n = ok.iter().take_while(|&&a| a).count();
                let next = match n < k {
                    true => host_u32(&replacement)?[n],
                    false => host_u32(&bonus)?[0],
                };
                (n, next)
            }
        };
        let rejected = (k - accepted) as i32;
        if rejected > 0 && trim_cache(self.cache, rejected)? != rejected {
            return Err(Error::InvalidArgument(format!(
                "the cache cannot trim the {rejected} rejected draft positions"
            )));
        }
        let kept: Vec<u32> = drafts[..accepted].iter().copied().chain([next]).collect();
        self.tokens.extend_from_slice(&kept);
        self.ready.extend(kept);
        self.stats.steps += 1;
        self.stats.drafted += k;
        self.stats.accepted += accepted;
        Ok(())
    }

    fn advance(&mut self) -> Result<Option<Array>> {
        if self.done
            || self
                .options
                .max_tokens
                .is_some_and(|max| self.produced >= max)
        {
            return Ok(None);
        }
        if let Some(prompt) = self.prompt.take() {
            self.start(&prompt)?;
        }
        if self.ready.is_empty() {
            self.step()?;
        }
        match self.ready.pop_front() {
            Some(id) => {
                self.produced += 1;
                Ok(Some(Array::from_slice(&[id], &[1])))
            }
            None => Err(Error::InvalidArgument("a step produced no token".into())),
        }
    }
}

impl<C: KeyValueCache + TrimAhead> Iterator for SpeculativeGenerate<'_, C> {
    type Item = Result<Array>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.advance() {
            Ok(token) => token.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// `ids` as a `[1, L]` model input.
fn row(ids: &[u32]) -> Array {
    Array::from_slice(ids, &[1, ids.len() as i32])
}

/// The ids of an evaluated 1-D uint32 array.
fn host_u32(a: &Array) -> Result<Vec<u32>> {
    Ok(a.try_as_slice::<u32>()
        .map_err(|e| Error::InvalidArgument(format!("token ids: {e}")))?
        .to_vec())
}
