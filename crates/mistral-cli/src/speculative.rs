//! `--draft-model`, `--num-draft-tokens` and `--prompt-lookup` of
//! `generate` and `bench`: loading and checking the draft model, and the
//! token iterator that is either plain or speculative.

use anyhow::{bail, Result};
use clap::Args;
use mistral_loader::{load_model_config, load_tokenizer, LoadOptions};
use mistral_model::Mistral;
use mlx_rs::Array;
use mlx_rs_core::{
    Drafter, Generate, GenerateOptions, KeyValueCache, SpeculativeGenerate, SpeculativeStats,
    TrimAhead,
};
use std::path::Path;

use crate::model_source;

/// Speculative decoding options.
#[derive(Args, Debug, Clone)]
pub struct SpeculativeArgs {
    /// Speculative decoding with this draft model (a directory, GGUF file
    /// or cached Hugging Face repo id, loaded with the target's --dtype):
    /// it proposes tokens, the model checks them in one pass. It must share
    /// the model's vocabulary.
    #[arg(long, conflicts_with = "prompt_lookup")]
    pub draft_model: Option<String>,
    /// Tokens the draft model proposes per step (default 3).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub num_draft_tokens: Option<u32>,
    /// Speculative decoding by prompt lookup: propose up to N tokens per
    /// step by finding the latest n-gram of the text so far earlier in the
    /// prompt or output (helps where the output copies the prompt).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub prompt_lookup: Option<u32>,
}

impl SpeculativeArgs {
    /// Draft tokens per step without `--num-draft-tokens`.
    pub const DEFAULT_DRAFT_TOKENS: u32 = 3;

    /// Checks the flags go together.
    pub fn check(&self) -> Result<()> {
        if self.num_draft_tokens.is_some() && self.draft_model.is_none() {
            bail!("--num-draft-tokens needs --draft-model (prompt lookup takes its count: --prompt-lookup N)");
        }
        Ok(())
    }

    /// Whether any speculative decoding is asked for.
    pub fn enabled(&self) -> bool {
        self.draft_model.is_some() || self.prompt_lookup.is_some()
    }

    /// Loads the draft model, if one is asked for, after checking that it
    /// shares the target's (at `target`) vocabulary.
    pub fn load_draft(&self, target: &Path, options: &LoadOptions) -> Result<Option<Mistral>> {
        let Some(name) = &self.draft_model else {
            return Ok(None);
        };
        let dir = model_source::resolve(name).map_err(|e| {
            anyhow::anyhow!("--draft-model: {}", e.to_string().replace("--model ", ""))
        })?;
        let (ours, theirs) = (load_model_config(target)?, load_model_config(&dir)?);
        if ours.vocab_size != theirs.vocab_size {
            bail!(
                "--draft-model {name}: its vocabulary has {} tokens, the model's {}; \
                 the draft must share the model's tokenizer",
                theirs.vocab_size,
                ours.vocab_size
            );
        }
        if !same_tokens(target, &dir, ours.vocab_size)? {
            bail!("--draft-model {name}: its tokenizer differs from the model's");
        }
        Ok(Some(mistral_loader::load_model_with(&dir, options)?))
    }

    /// The drafter these options ask for (`None`: plain decoding).
    pub fn drafter<'a, C: KeyValueCache + TrimAhead>(
        &self,
        draft: Option<&'a mut Mistral>,
        cache: &'a mut Vec<Option<C>>,
    ) -> Option<Drafter<'a, C>> {
        match (draft, self.prompt_lookup) {
            (Some(model), _) => Some(Drafter::model(
                model,
                cache,
                self.num_draft_tokens.unwrap_or(Self::DEFAULT_DRAFT_TOKENS) as usize,
            )),
            (None, Some(n)) => Some(Drafter::prompt_lookup(n as usize)),
            (None, None) => None,
        }
    }
}

/// Whether the tokenizers at `a` and `b` spell a sample of ids alike.
fn same_tokens(a: &Path, b: &Path, vocab: i32) -> Result<bool> {
    let (ta, tb) = (load_tokenizer(a)?, load_tokenizer(b)?);
    for id in (0..vocab as u32).step_by(97) {
        let (sa, sb) = (ta.decode(&[id], false), tb.decode(&[id], false));
        if sa.ok() != sb.ok() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Plain or speculative tokens, as one iterator.
pub enum Tokens<'a, C: KeyValueCache + TrimAhead> {
    /// [`Generate`].
    Plain(Generate<'a, C>),
    /// [`SpeculativeGenerate`].
    Speculative(SpeculativeGenerate<'a, C>),
}

impl<'a, C: KeyValueCache + TrimAhead> Tokens<'a, C> {
    /// `plain`, or with a drafter the same options run speculatively.
    pub fn new(
        model: &'a mut Mistral,
        cache: &'a mut Vec<Option<C>>,
        prompt: &Array,
        options: GenerateOptions,
        drafter: Option<Drafter<'a, C>>,
    ) -> Self {
        match drafter {
            Some(drafter) => Tokens::Speculative(SpeculativeGenerate::with_options(
                model, cache, drafter, prompt, options,
            )),
            None => Tokens::Plain(Generate::with_options(model, cache, prompt, options)),
        }
    }

    /// Steps, drafted and accepted tokens of a speculative run.
    pub fn speculative_stats(&self) -> Option<SpeculativeStats> {
        match self {
            Tokens::Plain(_) => None,
            Tokens::Speculative(s) => Some(s.stats()),
        }
    }

    /// Where plain decode steps spent their time.
    pub fn step_times(&self) -> mlx_rs_core::StepTimes {
        match self {
            Tokens::Plain(g) => g.step_times(),
            Tokens::Speculative(_) => Default::default(),
        }
    }
}

impl<C: KeyValueCache + TrimAhead> Iterator for Tokens<'_, C> {
    type Item = mlx_rs_core::Result<Array>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Tokens::Plain(g) => g.next(),
            Tokens::Speculative(s) => s.next(),
        }
    }
}
