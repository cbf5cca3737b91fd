//! `mistral-server`: an OpenAI-compatible HTTP server for the models
//! `mistral-loader` loads (`mistral-cli serve`).
//!
//! Design:
//! - [`engine`]: one thread owns the model and everything MLX (its streams
//!   and random state are thread-local; arrays are not `Sync`) and runs
//!   requests from a bounded queue. The HTTP side exchanges plain Rust
//!   values with it over channels, so no MLX value crosses threads.
//! - [`routes`]: axum handlers on tokio. Each request is parsed and checked
//!   ([`request`]), queued, and answered from the engine's events: a JSON
//!   body, or server-sent events when `stream` is set.
//! - Errors are OpenAI's error objects ([`ApiError`]) with their statuses;
//!   the body is parsed as JSON whatever its Content-Type, and a body larger
//!   than the limit is a 413.
//!
//! Built so far: chat and text completions (streaming and not), models,
//! health, metrics, tokenize/detokenize, API key, CORS, body limit, a
//! bounded queue (503 when full), and a client that disconnects ends its
//! generation at the next token (or prefill chunk). Up to `max_batch`
//! requests generate at once, continuously batched ([`scheduler`]);
//! finished requests' caches serve later prompts with the same start
//! ([`prompt_cache`]); log-probabilities come in OpenAI's shapes
//! ([`logprobs`]). A model split over processes is served by its rank 0,
//! the others following each step ([`model_state`], [`follow`]).

#![deny(missing_docs)]

pub mod anthropic;
pub mod engine;
pub mod error;
pub mod logprobs;
pub mod metrics;
pub mod mistral_tools;
pub mod model_state;
pub mod prompt_cache;
pub mod queue;
pub mod reasoning_gate;
pub mod request;
pub mod response;
pub mod routes;
pub mod scheduler;
pub mod template_tools;
pub mod tools;

pub use engine::{EngineHandle, ModelSpec};
pub use error::ApiError;
pub use model_state::follow;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model to load.
    pub model: ModelSpec,
    /// The id `/v1/models` lists and requests may name.
    pub model_id: String,
    /// Requests must send `Authorization: Bearer <key>` (not `/health`).
    pub api_key: Option<String>,
    /// Requests waiting beyond the running ones; more get a 503.
    pub max_queue: usize,
    /// Requests generating at once (continuous batching).
    pub max_batch: usize,
    /// Bytes of finished requests' caches kept for later prompts with the
    /// same start (0: none).
    pub prompt_cache_bytes: u64,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub allowed_origins: Vec<String>,
    /// Interval of the keep-alive comments (`: ...` lines) a stream sends
    /// while it has nothing else to send, e.g. during a long prefill.
    pub keep_alive: std::time::Duration,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model could not be loaded.
    #[error("loading the model failed: {0}")]
    Load(String),
    /// A socket or thread error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A bad setting.
    #[error("{0}")]
    Config(String),
}

/// Serves on `listener` until `shutdown` resolves (or the model fails to
/// load). `/health` answers 503 while the model loads.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let metrics = Arc::new(metrics::Metrics::default());
    let (engine, engine_thread) = engine::start(
        config.model.clone(),
        config.max_queue,
        config.max_batch,
        config.prompt_cache_bytes,
        Arc::clone(&metrics),
        loaded_tx,
    )?;
    let router = routes::router(
        Arc::new(routes::AppState {
            engine,
            metrics,
            model_id: config.model_id.clone(),
            api_key: config.api_key.clone(),
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
    let server = tokio::spawn(async move { server.await });
    // Serve until shutdown, or stop if the load fails (a successful load
    // does not match and leaves only the shutdown branch).
    let outcome = tokio::select! {
        _ = shutdown => Ok(()),
        Ok(Err(err)) = loaded_rx => Err(ServeError::Load(err)),
    };
    let _ = stop_tx.send(());
    server
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    // The router (and with it every engine handle) is gone: the engine
    // thread ends; wait for it so that MLX is idle when the process exits.
    tokio::task::spawn_blocking(move || engine_thread.join())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    outcome
}
