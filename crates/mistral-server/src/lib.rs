//! `mistral-server`: an OpenAI-compatible HTTP server for the models
//! `mistral-loader` loads (`mistral-cli serve`).
//!
//! Design:
//! - `engine`: one thread owns the model and everything MLX (its streams
//!   and random state are thread-local; arrays are not `Sync`), publishes
//!   its [`Health`], and runs the loop of `scheduler` over a bounded
//!   queue. The HTTP side exchanges plain Rust values with it (`job`), so
//!   no MLX value crosses threads.
//! - `routes`: axum handlers on tokio. Each request is parsed and checked
//!   (`request`), tokenized and checked against the model (`text_side`,
//!   on a blocking thread), queued (`queue`), and answered from the
//!   engine's events: a JSON body, or server-sent events when `stream` is
//!   set. Everything the engine would refuse is refused before the 200.
//! - Errors are OpenAI's error objects ([`ApiError`]) with their statuses;
//!   the body is parsed as JSON whatever its Content-Type; a body larger
//!   than the limit is a 413, one that cannot be read a 400.
//! - Memory: every request reserves the key/value cache it may grow to
//!   (`kv_budget`); requests wait while the budget is taken.
//! - Operation: the key guards every route but the health probes; an
//!   engine that fails turns `/health` to 503 and ends [`serve`] with the
//!   reason; a shutdown stops accepting, lets running requests finish for
//!   a grace period and cuts off the rest.
//!
//! Finished requests' caches serve later prompts with the same start
//! (`prompt_cache`); log-probabilities come in OpenAI's shapes
//! (`logprobs`). A model split over processes is served by its rank 0,
//! the others following each step (`model_state`, [`follow`]).

#![deny(missing_docs)]

mod anthropic;
mod engine;
mod error;
mod job;
mod kv_budget;
mod logprobs;
mod metrics;
mod mistral_tools;
mod model_state;
mod prompt_cache;
mod queue;
mod reasoning_gate;
mod request;
mod response;
mod routes;
mod scheduler;
mod template_tools;
mod text_side;
mod tools;

pub use engine::{EngineHandle, Health, ModelSpec};
pub use error::ApiError;
pub use model_state::follow;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model to load.
    pub model: ModelSpec,
    /// The id `/v1/models` lists and requests may name.
    pub model_id: String,
    /// Requests must send the key (`Authorization: Bearer <key>` or
    /// `x-api-key`) on every route but the health probes.
    pub api_key: Option<String>,
    /// `/metrics` answers without the key.
    pub metrics_public: bool,
    /// Requests waiting beyond the running ones; more get a 503.
    pub max_queue: usize,
    /// Requests generating at once (continuous batching).
    pub max_batch: usize,
    /// Bytes of finished requests' caches kept for later prompts with the
    /// same start (0: none).
    pub prompt_cache_bytes: u64,
    /// Bytes the running requests' key/value caches and the prompt cache
    /// may hold together (`None`: half of the memory left after the
    /// weights); requests wait for room.
    pub max_kv_bytes: Option<u64>,
    /// Store every request's keys and values quantized (`--kv-bits`) once
    /// its cache holds the given start; the prompt cache keeps them so.
    pub kv_quantization: Option<mlx_rs_core::KvQuantization>,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub allowed_origins: Vec<String>,
    /// Interval of the keep-alive comments (`: ...` lines) a stream sends
    /// while it has nothing else to send (queued, or a long prefill).
    pub keep_alive: Duration,
    /// How long running requests may go on after a shutdown begins before
    /// they are cut off.
    pub shutdown_grace: Duration,
    /// Keep serving (with `/health` at 503) when the engine fails, instead
    /// of returning the failure.
    pub keep_running_on_engine_failure: bool,
    /// Test hook: the engine panics after this many decode steps.
    pub fail_after_steps: Option<u64>,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine failed: the model did not load, it panicked, or the ranks
    /// of a split model lost each other.
    #[error("the engine failed: {0}")]
    Engine(String),
    /// A socket or thread error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A bad setting.
    #[error("{0}")]
    Config(String),
}

/// How long the server waits for connections after their requests were cut
/// off (or the engine failed) before it drops them.
const LAST_WAIT: Duration = Duration::from_secs(5);

/// Serves on `listener` until `shutdown` resolves, then stops accepting,
/// lets running requests finish for the grace period, cuts off the rest and
/// returns. Returns the engine's failure (unless told to keep running).
/// `/health` answers 503 while the model loads.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let options = engine::EngineOptions {
        queue: config.max_queue,
        max_batch: config.max_batch,
        prompt_cache_bytes: config.prompt_cache_bytes,
        max_kv_bytes: config.max_kv_bytes,
        kv_quantization: config.kv_quantization,
        fail_after_steps: config.fail_after_steps,
    };
    let (engine, engine_thread) =
        engine::start(config.model.clone(), options, Arc::clone(&metrics))?;
    let mut health = engine.watch();
    let aborter = engine.clone();
    let router = routes::router(
        Arc::new(routes::AppState {
            engine,
            metrics,
            model_id: config.model_id.clone(),
            api_key: config.api_key.as_deref().map(routes::ApiKey::new),
            metrics_public: config.metrics_public,
            max_body_bytes: config.max_body_bytes,
            keep_alive: config.keep_alive,
            created: response::unix_time().as_secs(),
        }),
        &config.allowed_origins,
    )
    .map_err(ServeError::Config)?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(async move { server.await });
    let keep_running = config.keep_running_on_engine_failure;
    let failed = async move {
        loop {
            if let Health::Failed(reason) = &*health.borrow_and_update() {
                if !keep_running {
                    return reason.clone();
                }
            }
            if health.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let outcome = tokio::select! {
        _ = shutdown => Ok(()),
        reason = failed => Err(ServeError::Engine(reason)),
    };
    // Stop accepting; running requests have the grace period (none when
    // the engine is gone), then are cut off.
    let _ = stop_tx.send(());
    let grace = match outcome {
        Ok(()) => config.shutdown_grace,
        Err(_) => Duration::ZERO,
    };
    let mut finished = tokio::time::timeout(grace, &mut server).await;
    if finished.is_err() {
        aborter.abort();
        finished = tokio::time::timeout(LAST_WAIT, &mut server).await;
    }
    drop(aborter);
    match finished {
        Ok(joined) => joined.map_err(|e| std::io::Error::other(e.to_string()))??,
        Err(_) => server.abort(),
    }
    // The router (and with it every engine handle) is gone: the engine
    // thread ends; wait for it so that MLX is idle when the process exits.
    tokio::task::spawn_blocking(move || engine_thread.join())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    outcome
}
