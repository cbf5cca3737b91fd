//! [`SequenceSampler`]: the sampling side of one sequence, shared by
//! [`Generate`](super::Generate) and [`BatchGenerate`](super::BatchGenerate):
//! its sampler, its repetition penalty and the recent tokens that penalty
//! looks at. Each step computes, for the sequence's last position,
//! `logprobs = logits - logsumexp(logits)` in the model's dtype (after the
//! penalty on the logits) and samples from them, as mlx-lm does.

use mlx_rs::{
    ops::{concatenate, indexing::TryIndexOp},
    transforms::eval,
    Array, Dtype,
};

use super::GenerateOptions;
use crate::cache::{KeyValueCache, KvQuantization};
use crate::cpu_fused::CpuFast;
use crate::error::{Error, Result};
use crate::language_model::LanguageModel;
use crate::sample::{RepetitionPenalty, Sampler};

/// One sequence's sampler, repetition penalty and recent tokens.
#[derive(Debug, Clone)]
pub(crate) struct SequenceSampler {
    sampler: Sampler,
    penalty: Option<RepetitionPenalty>,
    /// The last tokens fed, as many as the penalty looks at.
    history: Option<Array>,
    /// Whether the normalizer on a CPU stream is our kernel's.
    fast: CpuFast,
}

impl SequenceSampler {
    /// Checks `options`' sampling and penalty and sets them up.
    pub(crate) fn new(options: &GenerateOptions) -> Result<Self> {
        if let Some(p) = &options.repetition_penalty {
            p.validate()?;
        }
        Ok(SequenceSampler {
            sampler: Sampler::new(options.sampling, options.seed)?,
            penalty: options.repetition_penalty.filter(|p| p.is_active()),
            history: None,
            fast: CpuFast::Mlx,
        })
    }

    /// The same, its normalizer by our CPU kernel where `fast` asks for it
    /// (the model's load option, [`LanguageModel::cpu_fast`]).
    pub(crate) fn with_cpu_fast(mut self, fast: CpuFast) -> Self {
        self.fast = fast;
        self
    }

    /// Records `tokens` (1-D) as fed to the model.
    pub(crate) fn remember(&mut self, tokens: &Array) -> Result<()> {
        let Some(penalty) = self.penalty else {
            return Ok(());
        };
        let tokens = tokens.as_dtype(Dtype::Uint32)?;
        let all = match self.history.take() {
            Some(h) => concatenate(&[h, tokens], 0)?,
            None => tokens,
        };
        let n = all.dim(0);
        let keep = penalty.window(n);
        self.history = Some(all.try_index((n - keep)..n)?);
        Ok(())
    }

    /// Samples the next token (`[1]` uint32) from the last position's
    /// `logits` `[1, vocab]`.
    pub(crate) fn sample(&mut self, logits: Array) -> Result<Array> {
        Ok(self.sample_with_logprobs(logits)?.0)
    }

    /// [`SequenceSampler::sample`], also returning the log-probabilities
    /// (`[1, vocab]`) it drew from.
    pub(crate) fn sample_with_logprobs(&mut self, mut logits: Array) -> Result<(Array, Array)> {
        if let (Some(penalty), Some(history)) = (self.penalty, &self.history) {
            logits = penalty.apply(history, &logits)?;
        }
        let normalizer = match crate::cpu_fused::logsumexp(&logits, self.fast)? {
            Some(ours) => ours,
            None => logits.logsumexp(true)?,
        };
        let logprobs = logits.subtract(normalizer)?;
        let token = self.sampler.sample(&logprobs)?;
        Ok((token, logprobs))
    }
}

/// Checks a prompt (`[L]` or `[1, L]` integer ids, not empty, inside the
/// model's vocabulary) and the options that depend on the model; returns
/// the prompt 1-D.
pub(crate) fn checked_prompt<C: KeyValueCache>(
    model: &dyn LanguageModel<C>,
    prompt: &Array,
    options: &GenerateOptions,
) -> Result<Array> {
    if options.prefill_step_size < 1 {
        return Err(Error::InvalidArgument(format!(
            "prefill_step_size must be at least 1, got {}",
            options.prefill_step_size
        )));
    }
    let prompt = match prompt.shape() {
        [_] => prompt.clone(),
        [1, _] => prompt.reshape(&[-1])?,
        shape => {
            return Err(Error::InvalidArgument(format!(
                "prompt must be [1, L] or [L] token ids, got shape {shape:?}"
            )))
        }
    };
    if !crate::is_integer(prompt.dtype()) {
        return Err(Error::InvalidArgument(format!(
            "prompt must hold integer token ids, got {:?}",
            prompt.dtype()
        )));
    }
    if prompt.dim(0) == 0 {
        return Err(Error::InvalidArgument("prompt is empty".into()));
    }
    if let Some(vocab) = model.vocab_size() {
        let top_k = options.sampling.top_k;
        if top_k >= vocab {
            return Err(Error::InvalidArgument(format!(
                "top_k must be below the vocabulary size {vocab} (0 disables it), got {top_k}"
            )));
        }
        crate::check_token_ids(&prompt, vocab)?;
    }
    Ok(prompt)
}

/// Feeds the first `n` tokens of `prompt` (1-D) through the model without
/// keeping their logits, evaluates the caches, and leaves the rest in
/// `prompt` (mlx-lm's prefill: all tokens but the last, in chunks).
pub(crate) fn prefill_chunk<C: KeyValueCache>(
    model: &mut dyn LanguageModel<C>,
    cache: &mut Vec<Option<C>>,
    sequence: &mut SequenceSampler,
    prompt: &mut Array,
    n: i32,
    quantization: Option<&KvQuantization>,
) -> Result<()> {
    let chunk = prompt.try_index(..n)?;
    model.forward(&chunk.reshape(&[1, -1])?, cache)?;
    maybe_quantize(cache, quantization)?;
    eval_caches(cache)?;
    sequence.remember(&chunk)?;
    *prompt = prompt.try_index(n..)?;
    Ok(())
}

/// Switches every cache holding enough positions to quantized storage
/// (mlx-lm's `maybe_quantize_kv_cache`, after each forward call).
pub(crate) fn maybe_quantize<C: KeyValueCache>(
    cache: &mut [Option<C>],
    quantization: Option<&KvQuantization>,
) -> Result<()> {
    if let Some(q) = quantization {
        for c in cache.iter_mut().flatten() {
            c.quantize(q)?;
        }
    }
    Ok(())
}

/// Evaluates what `cache` holds (after a prefill chunk whose logits are not
/// needed).
pub(crate) fn eval_caches<C: KeyValueCache>(cache: &[Option<C>]) -> Result<()> {
    let state: Vec<Array> = cache.iter().flatten().flat_map(|c| c.state()).collect();
    eval(&state)?;
    Ok(())
}
