//! `mistral-cli serve`: the OpenAI-compatible server of `mistral-server`
//! on a tokio runtime, until Ctrl-C. With `--ranks N` the model is split
//! over N processes: rank 0 serves HTTP, the others follow its every step
//! (`mistral_server::follow`).

use anyhow::{Context, Result};
use clap::Args;
use mistral_loader::Loader;
use mistral_server::{serve, ModelSpec, ServerConfig};

use crate::args::TokenizerModeArg;
use crate::args::{KvCacheArgs, ModelArgs};
use crate::model_source;
use crate::ranks;

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// How chat prompts become ids: `mistral` (mistral-common's exact
    /// protocol, from the folder's tekken.json or tokenizer.model.vN:
    /// versions 1, 2, 3, 7, 11 and 13), `hf` (the chat template), or `auto`:
    /// `mistral` when the folder has such a file of a version it implements,
    /// else `hf`.
    #[arg(long, value_enum, default_value_t = TokenizerModeArg::Auto)]
    tokenizer_mode: TokenizerModeArg,
    /// A Jinja chat template that replaces the model's (as vLLM's
    /// `--chat-template`); a template that declares a tool-call format
    /// (Hermes `<tool_call>`, Llama 3 JSON) gets tools in that format.
    #[arg(long)]
    chat_template: Option<std::path::PathBuf>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model id `/v1/models` lists (default: the model's folder or file
    /// name).
    #[arg(long)]
    model_id: Option<String>,
    /// Require the key (`Authorization: Bearer KEY` or `x-api-key: KEY`) on
    /// every route but /health, /health/ready and /health/live (or set
    /// MISTRAL_MLX_API_KEY).
    #[arg(long, env = "MISTRAL_MLX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Let /metrics answer without the API key.
    #[arg(long)]
    metrics_public: bool,
    /// Requests that may wait while the batch is full; more get a 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue: u32,
    /// Requests generating at once, continuously batched (1: one at a
    /// time).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_batch: u32,
    /// Bytes of finished requests' key/value caches kept for later prompts
    /// that start the same way (a chat's next turn); least recently used
    /// first out; 0 keeps none.
    #[arg(long, default_value_t = 1 << 30)]
    prompt_cache_bytes: u64,
    /// Bytes the running requests' key/value caches and the prompt cache
    /// may hold together; a request reserves what its prompt and
    /// max_tokens may need and waits for room (default: half of the memory
    /// left after the weights, printed at start).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_kv_bytes: Option<u64>,
    /// Every request's keys and values stored quantized (the budget counts
    /// the quantized bytes).
    #[command(flatten)]
    kv: KvCacheArgs,
    /// Seconds running requests may go on after Ctrl-C or SIGTERM before
    /// they are cut off (a second signal exits at once).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86400))]
    shutdown_grace_secs: u64,
    /// Keep serving (with /health at 503 and the reason) when the engine
    /// fails, instead of exiting with an error for a supervisor to restart.
    #[arg(long)]
    keep_running_on_engine_failure: bool,
    /// Test hook: the engine panics after this many decode steps.
    #[arg(long, hide = true)]
    test_fail_after_steps: Option<u64>,
    /// The largest request body accepted (bytes; 413 beyond).
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    max_body_bytes: u64,
    /// Origins allowed to call the API from a browser (CORS), comma
    /// separated; `*` for any. Default: none.
    #[arg(long, value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Seconds between keep-alive comments on a quiet stream (a long
    /// prefill), so that proxies and clients do not time out.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    keep_alive_secs: u64,
    /// Split the model over this many processes on this machine (see
    /// `generate --ranks`); rank 0 listens and schedules, the others follow
    /// each of its steps.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    ranks: u32,
    /// Not supported by `serve` yet (refused at start): speculative
    /// decoding is in `generate` and `bench`.
    #[arg(long, hide = true)]
    draft_model: Option<String>,
    /// Not supported by `serve` yet (refused at start).
    #[arg(long, hide = true)]
    prompt_lookup: Option<String>,
}

/// Runs `serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    if args.draft_model.is_some() || args.prompt_lookup.is_some() {
        anyhow::bail!(
            "--draft-model and --prompt-lookup are not supported by serve yet \
             (continuous batching does not verify drafts); use generate or bench"
        );
    }
    let path = model_source::resolve(&args.model.model)?;
    let parallel = match ranks::role(args.ranks)? {
        ranks::Role::Launcher => return Ok(()),
        ranks::Role::Worker(parallel) => parallel,
    };
    if let Some(parallel) = parallel.as_ref().filter(|p| p.rank() != 0) {
        let options = args.model.load_options();
        let (mut model, _) = Loader::new(&path)
            .options(options)
            .ranks(Some(parallel.clone()))
            .load_planned()?;
        let kv = args.kv.quantization();
        return mistral_server::follow(&mut model, parallel, args.prompt_cache_bytes, kv)
            .map_err(|e| anyhow::anyhow!("rank {}: {e}", parallel.rank()));
    }
    let model_id = args.model_id.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| args.model.model.clone())
    });
    let config = ServerConfig {
        model: ModelSpec {
            path,
            options: args.model.load_options(),
            tensor_parallel: parallel,
            tokenizer_mode: args.tokenizer_mode.into(),
            chat_template: args.chat_template.clone(),
        },
        model_id,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        metrics_public: args.metrics_public,
        max_kv_bytes: args.max_kv_bytes,
        kv_quantization: args.kv.quantization(),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_secs),
        keep_running_on_engine_failure: args.keep_running_on_engine_failure,
        fail_after_steps: args.test_fail_after_steps,
        max_queue: args.max_queue as usize,
        max_batch: args.max_batch as usize,
        prompt_cache_bytes: args.prompt_cache_bytes,
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        allowed_origins: args.allowed_origins.clone(),
        keep_alive: std::time::Duration::from_secs(args.keep_alive_secs),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let bound = listener.local_addr()?;
        eprintln!(
            "serving {} on http://{bound} (OpenAI API under /v1; /health is 200 once loaded)",
            config.model_id
        );
        let grace = args.shutdown_grace_secs;
        let shutdown = async move {
            signal().await;
            eprintln!(
                "shutting down: no new requests; running ones have {grace} s to finish \
                 (a second Ctrl-C exits at once)"
            );
            tokio::spawn(async {
                signal().await;
                eprintln!("second signal: exiting now");
                std::process::exit(130);
            });
        };
        serve(listener, config, shutdown).await?;
        Ok(())
    })
}

/// Ctrl-C, or (on Unix) SIGTERM, as a supervisor sends to stop a process.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
