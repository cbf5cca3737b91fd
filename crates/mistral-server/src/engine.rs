//! The engine: one thread that owns the model and MLX's per-thread state
//! (default stream, random state) and runs generation requests from a
//! bounded queue, continuously batched (see [`crate::scheduler`], its loop).
//!
//! MLX arrays are `Send` but not `Sync`, and MLX's default stream and
//! random state are thread-local, so the HTTP side never touches MLX: it
//! sends a [`Job`] (plain Rust values, see [`crate::job`]) and receives
//! [`Event`](crate::job::Event)s over a channel of its own. A job whose
//! event channel is closed (the client went away) ends at its next token,
//! or between prefill chunks.
//!
//! The thread's state is published as a [`Health`]: loading, serving, or
//! failed with the reason (a load error, a panic, a lost rank), which
//! `/health` reports and [`crate::serve`] watches.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use mistral_loader::{LoadOptions, Loader};
use mistral_model::TensorParallel;
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;
use crate::job::Job;
use crate::kv_budget::KvBudget;
use crate::metrics::Metrics;
use crate::scheduler::{self, Limits};
use crate::text_side::TextSide;

/// How the engine loads its model.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// A model directory or GGUF file.
    pub path: PathBuf,
    /// How to load it.
    pub options: LoadOptions,
    /// The group the model is split over (`mistral-cli serve --ranks N`):
    /// this process is its rank 0 and the others [`follow`](crate::follow)
    /// it; `None` for a whole model.
    pub tensor_parallel: Option<TensorParallel>,
    /// How chat prompts become ids: the chat template, or mistral-common's
    /// protocol from the folder's `tekken.json` or `tokenizer.model.vN`.
    pub tokenizer_mode: mistral_loader::TokenizerMode,
    /// A Jinja file that replaces the model's chat template, if given.
    pub chat_template: Option<PathBuf>,
}

/// What the engine thread is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Loading the model.
    Loading,
    /// Serving requests.
    Serving,
    /// Stopped serving because of the reason given (it will not recover).
    Failed(String),
    /// Stopped after a shutdown.
    Stopped,
}

/// The HTTP side's handle on the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Job>,
    /// Set once the model is loaded.
    text: Arc<OnceLock<Arc<TextSide>>>,
    health: watch::Receiver<Health>,
    /// Set at the end of a shutdown's grace period: running requests end.
    abort: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl EngineHandle {
    /// What the engine is doing now.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Whether the engine is serving.
    pub fn is_ready(&self) -> bool {
        *self.health.borrow() == Health::Serving
    }

    /// A receiver that sees every change of the engine's [`Health`].
    pub fn watch(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }

    /// Ends every running and queued request with an error (the end of a
    /// shutdown's grace period).
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    /// The text side, or a 503 while the model loads or once the engine
    /// has failed.
    pub fn text(&self) -> Result<Arc<TextSide>, ApiError> {
        match self.health() {
            Health::Serving => {}
            Health::Loading => return Err(ApiError::unavailable("The model is still loading")),
            Health::Failed(reason) => {
                return Err(ApiError::unavailable(format!(
                    "The engine failed: {reason}"
                )))
            }
            Health::Stopped => return Err(ApiError::unavailable("The server is shutting down")),
        }
        self.text
            .get()
            .cloned()
            .ok_or_else(|| ApiError::unavailable("The model is still loading"))
    }

    /// Queues `job`; a 503 when the engine is not serving or the queue is
    /// full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.text()?;
        // Counted before it can be picked up, so the gauge never dips below.
        Metrics::bump(&self.metrics.queued);
        self.jobs.try_send(job).map_err(|err| {
            Metrics::drop_one(&self.metrics.queued);
            match err {
                mpsc::error::TrySendError::Full(_) => {
                    ApiError::unavailable("The server is busy: its queue is full; retry later")
                }
                mpsc::error::TrySendError::Closed(_) => {
                    ApiError::unavailable("The engine has stopped")
                }
            }
        })?;
        Metrics::bump(&self.metrics.requests);
        Ok(())
    }
}

/// How the engine runs, besides its model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Places in the queue of waiting requests.
    pub queue: usize,
    /// Requests generating at once.
    pub max_batch: usize,
    /// Bytes of finished requests' caches kept for later prompts.
    pub prompt_cache_bytes: u64,
    /// Bytes of key/value cache the running requests may hold (`None`: a
    /// share of the memory left after the weights).
    pub max_kv_bytes: Option<u64>,
    /// Quantized keys and values for every request, if asked for.
    pub kv_quantization: Option<mlx_rs_core::KvQuantization>,
    /// Test hook: the engine panics after this many decode steps.
    pub fail_after_steps: Option<u64>,
}

/// Starts the engine thread: it loads `spec`, then serves jobs; its
/// [`Health`] says how that goes.
pub fn start(
    spec: ModelSpec,
    options: EngineOptions,
    metrics: Arc<Metrics>,
) -> std::io::Result<(EngineHandle, EngineThread)> {
    let (jobs_tx, jobs_rx) = mpsc::channel(options.queue.max(1));
    let text = Arc::new(OnceLock::new());
    let (health_tx, health_rx) = watch::channel(Health::Loading);
    let abort = Arc::new(AtomicBool::new(false));
    let (shared, counters, stop) = (Arc::clone(&text), Arc::clone(&metrics), Arc::clone(&abort));
    let thread = std::thread::Builder::new()
        .name("mlx-engine".into())
        .spawn(move || {
            let run = || {
                run(
                    &spec, &options, jobs_rx, &shared, &health_tx, &counters, &stop,
                )
            };
            let health = match catch_unwind(AssertUnwindSafe(run)) {
                Ok(Ok(())) => Health::Stopped,
                Ok(Err(reason)) => Health::Failed(reason),
                Err(panic) => {
                    Health::Failed(format!("the engine panicked: {}", panic_text(&panic)))
                }
            };
            health_tx.send_replace(health);
        })?;
    let handle = EngineHandle {
        jobs: jobs_tx,
        text,
        health: health_rx.clone(),
        abort,
        metrics,
    };
    Ok((
        handle,
        EngineThread {
            thread,
            health: health_rx,
        },
    ))
}

/// The engine thread's work: load, publish the text side, serve.
fn run(
    spec: &ModelSpec,
    options: &EngineOptions,
    jobs: mpsc::Receiver<Job>,
    shared: &OnceLock<Arc<TextSide>>,
    health: &watch::Sender<Health>,
    metrics: &Metrics,
    abort: &AtomicBool,
) -> Result<(), String> {
    let loading = |e: String| format!("loading the model failed: {e}");
    let mut text = TextSide::load(
        &spec.path,
        spec.tokenizer_mode,
        spec.chat_template.as_deref(),
        spec.tensor_parallel.is_some(),
    )
    .map_err(loading)?;
    let (mut model, _plan) = Loader::new(&spec.path)
        .options(spec.options)
        .ranks(spec.tensor_parallel.clone())
        .load_planned()
        .map_err(|e| loading(e.to_string()))?;
    text.kv = KvBudget::measure(&model, options.max_kv_bytes, options.kv_quantization)
        .map_err(loading)?;
    eprintln!("{}", text.kv.describe());
    // The peak that `/metrics` reports counts from here, not the load's.
    let _ = mlx_rs::memory::reset_peak_memory();
    let text = Arc::new(text);
    let _ = shared.set(Arc::clone(&text));
    health.send_replace(Health::Serving);
    let limits = Limits {
        max_batch: options.max_batch,
        prompt_cache_bytes: options.prompt_cache_bytes,
        kv_quantization: options.kv_quantization,
        fail_after_steps: options.fail_after_steps,
    };
    scheduler::serve(
        &mut model,
        &text,
        jobs,
        metrics,
        &limits,
        abort,
        spec.tensor_parallel.clone(),
    )
}

/// The message of a panic's payload.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The engine thread, to wait for at shutdown: MLX must not be freeing
/// arrays on it while the process exits.
#[derive(Debug)]
pub struct EngineThread {
    thread: std::thread::JoinHandle<()>,
    health: watch::Receiver<Health>,
}

impl EngineThread {
    /// Waits for the thread, which ends once every [`EngineHandle`] is
    /// dropped and its running requests end (their clients are gone by
    /// then). A model still loading is not waited for.
    pub fn join(self) {
        if *self.health.borrow() != Health::Loading {
            let _ = self.thread.join();
        }
    }
}
