//! `mistral-cli generate`: stream a completion (or a chat reply) to stdout.
//!
//! Flow: resolve and load the model and tokenizer, build the prompt (raw
//! text, or the model's chat template), run [`Generate`] and feed every id
//! to a [`StopChecker`] (EOS ids from the model's files, `--stop` strings,
//! `--max-tokens`), which holds the streaming detokenizer: what reaches
//! stdout is exactly the one-shot decode of the ids, up to the stop. Ctrl-C
//! ends the loop at the next token; the statistics are printed either way.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mistral_loader::ChatTemplateSource;
use mistral_loader::{
    check_tokenizer_fits, load_chat_template, load_model_config, load_special_tokens,
    load_tokenizer, ChatMessage, Loader, StopChecker, StopCriteria, StreamingDetokenizer,
};
use mlx_rs::Array;
use mlx_rs_core::{Generate, RotatingKVCache};

use crate::args::{KvCacheArgs, ModelArgs, PromptArgs, SamplingArgs, TokenizerModeArg};
use crate::model_source;
use crate::ranks;
use crate::report::GenerationStats;
use crate::speculative::{SpeculativeArgs, Tokens};

/// Arguments of `generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Generate at most this many tokens.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: u32,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    speculative: SpeculativeArgs,
    #[command(flatten)]
    kv: KvCacheArgs,
    /// A system message (chat mode).
    #[arg(long)]
    system: Option<String>,
    /// Format the prompt with the model's chat template (Mistral's
    /// `[INST]` format when it has none). Default: when the model has one.
    #[arg(long, overrides_with = "no_chat")]
    chat: bool,
    /// Use the prompt as plain text, without a chat template.
    #[arg(long)]
    no_chat: bool,
    /// How a chat prompt becomes ids: `mistral` (mistral-common's exact
    /// protocol, from the folder's tekken.json or tokenizer.model.vN:
    /// versions 1, 2, 3, 7, 11 and 13), `hf` (the chat template), or `auto`:
    /// `mistral` when the folder has such a file of a version it implements,
    /// else `hf`.
    #[arg(long, value_enum, default_value_t = TokenizerModeArg::Auto)]
    tokenizer_mode: TokenizerModeArg,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long = "stop", value_name = "STR")]
    stop: Vec<String>,
    /// Print one JSON object (ids, text, statistics) instead of streaming.
    #[arg(long)]
    json: bool,
    /// Split the model over this many processes on this machine (tensor
    /// parallelism over MLX's ring backend on 127.0.0.1); only rank 0
    /// prints. A process started by MLX's launcher (MLX_RANK and
    /// MLX_HOSTFILE, or NCCL's variables) joins its group by itself.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    ranks: u32,
}

/// Runs `generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    args.speculative.check()?;
    if args.no_chat && args.system.is_some() {
        bail!("--system needs chat mode; drop --no-chat");
    }
    let parallel = match ranks::role(args.ranks)? {
        ranks::Role::Launcher => return Ok(()),
        ranks::Role::Worker(parallel) => parallel,
    };
    if parallel.is_some() && args.speculative.enabled() {
        bail!("--draft-model and --prompt-lookup do not work with --ranks yet");
    }
    let quiet = !ranks::prints(&parallel);
    let prompt_text = read_prompt(&args.prompt)?;
    let dir = model_source::resolve(&args.model.model)?;

    let load_start = Instant::now();
    // Arguments and files checked against the config before the weights load.
    let config = load_model_config(&dir)?;
    if args.sampling.top_k >= config.vocab_size {
        bail!(
            "--top-k {} must be below the model's vocabulary size ({}); 0 disables it",
            args.sampling.top_k,
            config.vocab_size
        );
    }
    let tokenizer = load_tokenizer(&dir)?;
    check_tokenizer_fits(&tokenizer, config.vocab_size, &dir)?;
    let special = load_special_tokens(&dir, Some(&tokenizer))?;
    let options = args.model.load_options();
    let (mut model, plan) = Loader::new(&dir)
        .options(options)
        .ranks(parallel.clone())
        .load_planned()?;
    let mut draft = args.speculative.load_draft(&dir, &options)?;
    let load_seconds = load_start.elapsed().as_secs_f64();

    let template = load_chat_template(&dir, &tokenizer)?;
    let chat = if args.no_chat {
        false
    } else {
        args.chat || args.system.is_some() || template.source != ChatTemplateSource::MistralFallback
    };
    let protocol = if chat {
        mistral_loader::load_chat_protocol(&dir, args.tokenizer_mode.into())?
    } else {
        None
    };
    let ids: Vec<u32> = if let Some(mistral) = &protocol {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(serde_json::json!({"role": "system", "content": system}));
        }
        messages.push(serde_json::json!({"role": "user", "content": prompt_text}));
        mistral_loader::mistral_chat::encode_chat(mistral, &messages, &[])?
    } else if chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(prompt_text));
        let rendered = template.render(&messages, true)?;
        encode(&tokenizer, &rendered, false)?
    } else {
        encode(&tokenizer, &prompt_text, true)?
    };
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    if let Some(context) = config.max_position_embeddings {
        if ids.len() > context as usize {
            bail!(
                "the prompt is {} tokens, longer than the model's context \
                 (max_position_embeddings {context})",
                ids.len()
            );
        }
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;

    let criteria = StopCriteria {
        eos_token_ids: special.eos.clone(),
        stop_strings: args.stop.clone(),
        max_tokens: Some(args.max_tokens as usize),
    };
    let mut checker = StopChecker::new(criteria, StreamingDetokenizer::new(&tokenizer, true))?;
    let _ = mlx_rs::memory::reset_peak_memory();
    let prompt = Array::from_slice(&ids, &[1, ids.len() as i32]);
    // Bounded by the window for sliding-window models, a plain cache otherwise.
    let mut cache: Vec<Option<RotatingKVCache>> = Vec::new();
    let mut generator = Generate::new(&mut model, &mut cache, args.sampling.temp, &prompt)
        .top_p(args.sampling.top_p)
        .top_k(args.sampling.top_k)
        .min_p(args.sampling.min_p)
        .max_tokens(args.max_tokens as usize);
    if let Some(quantization) = args.kv.quantization() {
        generator = generator.kv_quantization(quantization);
    }
    if let Some(penalty) = args.sampling.repetition_penalty {
        generator =
            generator.repetition_penalty(penalty, args.sampling.repetition_context_size as usize);
    }
    // Ranks must draw the same tokens: without a seed they share rank 0's.
    let seed = match (args.sampling.seed, &parallel) {
        (None, Some(parallel)) if args.sampling.temp > 0.0 => {
            Some(mlx_rs_core::distributed::shared_seed(parallel.group())?)
        }
        (seed, _) => seed,
    };
    if let Some(seed) = seed {
        generator = generator.seed(seed);
    }
    let generate_options = generator.options().clone();
    drop(generator);
    let mut draft_cache = Vec::new();
    let drafter = args.speculative.drafter(draft.as_mut(), &mut draft_cache);
    let mut generator = Tokens::new(&mut model, &mut cache, &prompt, generate_options, drafter);

    let start = Instant::now();
    let mut first_token_at = None;
    let mut generated = Vec::new();
    let mut text = String::new();
    let mut stdout = std::io::stdout().lock();
    for token in generator.by_ref() {
        let id = token?.item_exact::<u32>();
        first_token_at.get_or_insert_with(Instant::now);
        generated.push(id);
        let step = checker.push(id)?;
        emit(&mut stdout, &mut text, &step.text, args.json || quiet)?;
        if step.stop.is_some() || interrupted.load(Ordering::SeqCst) {
            break;
        }
    }
    let speculative = generator.speculative_stats();
    drop(generator);
    let tail = checker.finish()?;
    emit(&mut stdout, &mut text, &tail, args.json || quiet)?;
    let end = Instant::now();

    let stats = GenerationStats::measure(
        ids.len(),
        generated.len(),
        load_seconds,
        start,
        first_token_at,
        end,
        mlx_rs::memory::peak_memory().unwrap_or(0),
    );
    let stop_reason = match checker.stopped() {
        Some(reason) => format!("{reason:?}"),
        None if interrupted.load(Ordering::SeqCst) => "Interrupted".to_owned(),
        None => "MaxTokens".to_owned(),
    };
    if quiet {
        return Ok(());
    }
    if args.json {
        let mut object = serde_json::json!({
            "prompt_ids": ids,
            "ids": generated,
            "text": text,
            "stop_reason": stop_reason,
            "chat": chat,
            "chat_protocol": if protocol.is_some() { "mistral" } else if chat { "template" } else { "none" },
            "dtype": plan.summary,
            "stats": stats.to_json(),
        });
        if let Some(s) = speculative {
            object["speculative"] = serde_json::json!({
                "steps": s.steps,
                "drafted": s.drafted,
                "accepted": s.accepted,
                "acceptance_rate": s.acceptance_rate(),
            });
        }
        writeln!(stdout, "{object}")?;
    } else {
        writeln!(stdout)?;
        eprintln!("{}", stats.summary());
        eprintln!("Weights: {}", plan.summary);
        if let Some(s) = speculative {
            eprintln!(
                "Speculative: {} of {} drafted tokens accepted ({:.1}%), {} model steps",
                s.accepted,
                s.drafted,
                100.0 * s.acceptance_rate(),
                s.steps
            );
        }
    }
    Ok(())
}

fn emit(stdout: &mut impl Write, text: &mut String, segment: &str, json: bool) -> Result<()> {
    text.push_str(segment);
    if !json && !segment.is_empty() {
        stdout.write_all(segment.as_bytes())?;
        stdout.flush()?;
    }
    Ok(())
}

fn read_prompt(args: &PromptArgs) -> Result<String> {
    if let Some(text) = &args.prompt {
        return Ok(text.clone());
    }
    if let Some(path) = &args.prompt_file {
        return std::fs::read_to_string(path)
            .with_context(|| format!("--prompt-file {}: cannot read it", path.display()));
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the prompt from standard input")?;
    Ok(text)
}

fn encode(tokenizer: &mistral_loader::Tokenizer, text: &str, special: bool) -> Result<Vec<u32>> {
    let encoding = tokenizer
        .encode(text, special)
        .map_err(|err| anyhow::anyhow!("tokenizing the prompt: {err}"))?;
    Ok(encoding.get_ids().to_vec())
}
