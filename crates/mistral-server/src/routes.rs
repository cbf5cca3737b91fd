//! The HTTP routes, the API-key check and CORS.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::engine::{EngineHandle, Health};
use crate::error::ApiError;
use crate::job::{Event, FinishReason, GenerationRequest, Prompt, PromptTokens};
use crate::metrics::Metrics;
use crate::queue::{blocking, queue, submit, Queued};
use crate::request::{
    fields, parse_body, ChatRequest, Common, CompletionRequest, DetokenizeRequest, Endpoint,
    TokenizeRequest,
};
use crate::response::{unix_time, usage, Header, Kind};
use crate::text_side::TextSide;
use crate::tools::Answer;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The engine.
    pub engine: EngineHandle,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The served model id.
    pub model_id: String,
    /// The API key, if one is required.
    pub api_key: Option<ApiKey>,
    /// `/metrics` answers without the key.
    pub metrics_public: bool,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Keep-alive interval of streams.
    pub keep_alive: Duration,
    /// When the server started (Unix seconds; `/v1/models`' `created`).
    pub created: u64,
}

/// The API key, kept as its SHA-256 digest: a request's key is hashed and
/// the digests compared in constant time, so neither the time of the
/// comparison nor an early exit tells the key's length or its bytes.
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl ApiKey {
    /// The key `key`.
    pub fn new(key: &str) -> Self {
        ApiKey(Sha256::digest(key.as_bytes()).into())
    }

    /// Whether `given` is the key.
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// The router: every route, the API-key check (all but the health
/// probes, and `/metrics` when public), CORS for `origins`.
pub fn router(state: Arc<AppState>, origins: &[String]) -> Result<Router, String> {
    let mut api = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/messages", post(messages))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|request: Request| async move { ApiError::no_route(request.uri().path()) });
    let mut open = Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(health))
        .route("/health/live", get(live));
    match state.metrics_public {
        true => open = open.route("/metrics", get(metrics)),
        false => api = api.route("/metrics", get(metrics)),
    }
    let api = api.layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        require_key,
    ));
    let mut app = open.merge(api).with_state(state);
    if !origins.is_empty() {
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::from(Any)
        } else {
            let values = origins
                .iter()
                .map(|o| {
                    HeaderValue::from_str(o)
                        .map_err(|_| format!("--allowed-origins: bad origin {o:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            AllowOrigin::list(values)
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::HeaderName::from_static("x-api-key"),
                    header::HeaderName::from_static("anthropic-version"),
                ]),
        );
    }
    Ok(app)
}

/// 401 unless the request carries the key, as `Authorization: Bearer
/// <key>` (the scheme in any case) or (Anthropic's header) `x-api-key`.
async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let given = bearer
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .unwrap_or("");
        if !key.matches(given) {
            let err = ApiError::unauthorized();
            return match request.uri().path() {
                "/v1/messages" => crate::anthropic::error_response(&err),
                _ => err.into_response(),
            };
        }
    }
    next.run(request).await
}

/// `/health` and `/health/ready`: 200 while the engine serves; 503 with
/// the state (and the reason of a failure) otherwise.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (status, body) = match state.engine.health() {
        Health::Serving => (StatusCode::OK, json!({"status": "ok"})),
        Health::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "loading"}),
        ),
        Health::Stopped => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "stopping"}),
        ),
        Health::Failed(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "failed", "reason": reason}),
        ),
    };
    (status, Json(body)).into_response()
}

/// `/health/live`: 200 unless the engine has failed (a model still loading
/// is alive), for a supervisor's liveness probe.
async fn live(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.health() {
        Health::Failed(_) => health(State(state)).await,
        _ => (StatusCode::OK, Json(json!({"status": "alive"}))).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_id,
            "object": "model",
            "created": state.created,
            "owned_by": "mistral-mlx",
        }],
    }))
}

async fn chat(State(state): State<Arc<AppState>>, body: Body) -> Response {
    generate::<ChatRequest>(&state, body, Kind::Chat).await
}

async fn completions(State(state): State<Arc<AppState>>, body: Body) -> Response {
    generate::<CompletionRequest>(&state, body, Kind::Text).await
}

/// `POST /v1/messages`: Anthropic's Messages API (see [`crate::anthropic`]).
async fn messages(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let body = json_body(body, state.max_body_bytes).await?;
        let (openai, stream) = crate::anthropic::to_openai(&body)?;
        let common: Common = fields(&openai)?;
        let request: ChatRequest = fields(&openai)?;
        let generation = request.into_generation(common, &state.model_id)?;
        // A stream opens once queued (keep-alives while it waits).
        let queued = match stream {
            true => submit(&state.engine, &generation, true).await?,
            false => queue(&state.engine, &generation, true).await?,
        };
        crate::anthropic::respond(queued, state.model_id.clone(), stream).await
    };
    result.await.unwrap_or_else(|err| {
        Metrics::bump(&state.metrics.rejected);
        crate::anthropic::error_response(&err)
    })
}

/// Both completion endpoints: read and check the body (`R` holds the
/// endpoint's own fields), then answer from the engine.
async fn generate<R: Endpoint>(state: &AppState, body: Body, kind: Kind) -> Response {
    let result = async {
        let body = json_body(body, state.max_body_bytes).await?;
        let common: Common = fields(&body)?;
        let request: R = fields(&body)?;
        let stream = common.stream;
        let usage_wanted = common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let generation = request.into_generation(common, &state.model_id)?;
        respond(state, kind, generation, stream, usage_wanted).await
    };
    result.await.unwrap_or_else(|err| {
        Metrics::bump(&state.metrics.rejected);
        err.into_response()
    })
}

/// `POST /tokenize` (vLLM's shape): `{"prompt": text}` or `{"messages":
/// [...], "add_generation_prompt": bool}` (default true) gives `{"tokens",
/// "count", "max_model_len"}`; a prompt is encoded with the tokenizer's
/// special tokens unless `"add_special_tokens": false`.
async fn tokenize(State(state): State<Arc<AppState>>, body: Body) -> Result<Json<Value>, ApiError> {
    let body = json_body(body, state.max_body_bytes).await?;
    let request: TokenizeRequest = fields(&body)?;
    let text = state.engine.text()?;
    let context = text.context();
    let tokens = blocking(move || match (request.prompt, request.messages) {
        (Some(prompt), None) => text.encode_text(&prompt, request.add_special_tokens),
        (None, Some(messages)) => {
            let chat = ChatRequest { messages }.into_prompt()?;
            let tools =
                crate::tools::parse(request.tools.as_ref(), request.tool_choice.as_ref(), None)?;
            text.encode(
                &Prompt::Chat(chat),
                request.add_generation_prompt,
                tools.as_ref(),
            )
        }
        _ => Err(ApiError::bad_request(
            "give exactly one of `prompt` and `messages`",
            Some("prompt"),
        )),
    })
    .await?;
    Ok(Json(json!({
        "tokens": tokens,
        "count": tokens.len(),
        "max_model_len": context,
    })))
}

/// `POST /detokenize`: `{"tokens": [...]}` gives `{"prompt": text}`.
async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body, state.max_body_bytes).await?;
    let request: DetokenizeRequest = fields(&body)?;
    let side = state.engine.text()?;
    let text = blocking(move || side.decode(&request.tokens)).await?;
    Ok(Json(json!({"prompt": text})))
}

/// The body as a JSON object: a 413 beyond `limit` bytes, a 400 if it
/// cannot be read or is not one.
async fn json_body(body: Body, limit: usize) -> Result<Value, ApiError> {
    use futures_util::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(ApiError::unreadable)?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    parse_body(&bytes)
}

/// A fresh response id.
fn response_id(kind: Kind) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = unix_time().as_nanos() as u64;
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Text => "cmpl",
    };
    format!("{prefix}-{nanos:x}{n:04x}")
}

/// Queues the request and answers from the engine's events. Every error a
/// request can get before it runs (context length, ...) is the response's
/// status; later ones end the stream with an error event. A stream starts
/// as soon as the request is queued, with keep-alive comments while it
/// waits.
async fn respond(
    state: &AppState,
    kind: Kind,
    generation: GenerationRequest,
    stream: bool,
    usage_wanted: bool,
) -> Result<Response, ApiError> {
    let chat = kind == Kind::Chat;
    let header = Header {
        id: response_id(kind),
        created: unix_time().as_secs(),
        model: state.model_id.clone(),
        kind,
    };
    let logprobs_wanted = generation.logprobs.is_some();
    if stream {
        let queued = submit(&state.engine, &generation, chat).await?;
        let events = sse_events(queued, header, usage_wanted, logprobs_wanted);
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(state.keep_alive))
            .into_response());
    }
    let queued = queue(&state.engine, &generation, chat).await?;
    let queued_tokens = queued.prompt_tokens;
    let whole = queued.collect().await?;
    let logprobs = logprobs_wanted.then(|| header.logprobs(&whole.logprobs, 0));
    let usage = usage(queued_tokens, whole.completion_tokens);
    let mut body = match whole.answer {
        Answer::Calls(calls) => header.complete_calls(calls, logprobs, usage),
        Answer::Content(content) => header.complete(&content, logprobs, whole.reason, usage),
    };
    if !whole.reasoning.is_empty() {
        body["choices"][0]["message"]["reasoning_content"] = Value::String(whole.reasoning);
    }
    Ok(Json(body).into_response())
}

struct StreamState {
    rx: mpsc::UnboundedReceiver<Event>,
    header: Header,
    prompt_tokens: PromptTokens,
    usage_wanted: bool,
    logprobs_wanted: bool,
    /// Characters of text streamed so far (text completions' `text_offset`).
    offset: usize,
    /// Tool mode: the answer is held until it ends, then read back (by the
    /// text side) as calls or text.
    held: Option<(String, Arc<TextSide>)>,
    /// Whether the answer is inside its reasoning now (`None`: not split).
    reasoning: Option<bool>,
    /// Tool mode with a call token: text streams as content until the
    /// calls start, and only what follows is held.
    free_until_call: bool,
    pending: VecDeque<String>,
    done: bool,
}

/// The SSE stream: a first chunk (with the role, for chat), one chunk per
/// piece of text, a chunk with `finish_reason`, the usage chunk if asked,
/// then `[DONE]`; an error ends the stream with an error event.
fn sse_events(
    queued: Queued,
    header: Header,
    usage_wanted: bool,
    logprobs_wanted: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let Queued {
        rx,
        prompt_tokens,
        tools,
        reasoning,
    } = queued;
    let mut pending = VecDeque::new();
    if header.kind == Kind::Chat {
        pending.push_back(header.chunk(true, "", None, None).to_string());
    }
    let state = StreamState {
        rx,
        header,
        prompt_tokens,
        usage_wanted,
        logprobs_wanted,
        offset: 0,
        free_until_call: tools.as_ref().is_some_and(|t| t.call_marker.is_some()),
        held: tools.map(|t| (String::new(), t)),
        reasoning,
        pending,
        done: false,
    };
    stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            if s.done {
                return None;
            }
            match s.rx.recv().await {
                Some(Event::Reasoning(on)) => {
                    if s.reasoning.is_some() {
                        s.reasoning = Some(on);
                    }
                }
                Some(Event::CallsStart) => s.free_until_call = false,
                Some(Event::Text { text, logprobs }) => {
                    let thinking = s.reasoning == Some(true);
                    match s.held.as_mut() {
                        Some((held, _)) if !thinking && !s.free_until_call => held.push_str(&text),
                        _ => {
                            let entries = s
                                .logprobs_wanted
                                .then(|| s.header.logprobs(&logprobs, s.offset));
                            s.offset += crate::logprobs::text_chars(&logprobs);
                            let chunk = match thinking {
                                true => s.header.reasoning_chunk(&text, entries),
                                false => s.header.chunk(false, &text, entries, None),
                            };
                            s.pending.push_back(chunk.to_string());
                        }
                    }
                }
                Some(Event::Finished {
                    reason,
                    completion_tokens,
                    ids,
                    ..
                }) => {
                    let reason = match s.held.take() {
                        Some((held, side)) => match side.read_tool_answer(&held, &ids) {
                            Answer::Calls(calls) => {
                                for (index, call) in calls.iter().enumerate() {
                                    for chunk in s.header.call_chunks(index, call) {
                                        s.pending.push_back(chunk.to_string());
                                    }
                                }
                                FinishReason::ToolCalls
                            }
                            // With a call token, the text before it has been
                            // streamed; what was held (after a call token
                            // that did not parse) follows.
                            Answer::Content(content) => {
                                let rest = match side.call_marker {
                                    Some(_) => held,
                                    None => content,
                                };
                                if !rest.is_empty() {
                                    let chunk = s.header.chunk(false, &rest, None, None);
                                    s.pending.push_back(chunk.to_string());
                                }
                                reason
                            }
                        },
                        None => reason,
                    };
                    s.pending
                        .push_back(s.header.chunk(false, "", None, Some(reason)).to_string());
                    if s.usage_wanted {
                        let u = usage(s.prompt_tokens, completion_tokens);
                        s.pending.push_back(s.header.usage_chunk(u).to_string());
                    }
                    s.pending.push_back("[DONE]".to_owned());
                    s.done = true;
                }
                Some(Event::Failed(err)) => {
                    s.pending.push_back(err.body().to_string());
                    s.done = true;
                }
                Some(Event::Started { prompt_tokens }) => s.prompt_tokens = prompt_tokens,
                None => {
                    let err = ApiError::internal("the engine dropped the request");
                    s.pending.push_back(err.body().to_string());
                    s.done = true;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    //! The stream's framing when the engine fails mid-answer, which a real
    //! model does not do on demand: the events are fed by hand.

    use super::*;

    /// The `data:` payloads of a stream fed `events`.
    fn stream_of(events: Vec<Option<Event>>) -> Vec<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        for event in events.into_iter().flatten() {
            tx.send(event).expect("send");
        }
        drop(tx);
        let header = Header {
            id: "chatcmpl-test".into(),
            created: 0,
            model: "m".into(),
            kind: Kind::Chat,
        };
        let prompt = PromptTokens {
            total: 3,
            cached: 0,
        };
        let queued = Queued {
            rx,
            prompt_tokens: prompt,
            tools: None,
            reasoning: None,
        };
        let sse = Sse::new(sse_events(queued, header, true, false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let bytes = runtime
            .block_on(axum::body::to_bytes(
                sse.into_response().into_body(),
                1 << 20,
            ))
            .expect("body");
        String::from_utf8(bytes.to_vec())
            .expect("UTF-8")
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }

    fn text(t: &str) -> Option<Event> {
        Some(Event::Text {
            text: t.into(),
            logprobs: Vec::new(),
        })
    }

    #[test]
    fn an_engine_fault_mid_stream_is_an_error_event_and_the_end() {
        let data = stream_of(vec![
            text("Hel"),
            Some(Event::Failed(ApiError::internal("boom"))),
        ]);
        assert_eq!(data.len(), 3, "{data:?}");
        let role: Value = serde_json::from_str(&data[0]).unwrap();
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        let chunk: Value = serde_json::from_str(&data[1]).unwrap();
        assert_eq!(chunk["choices"][0]["delta"]["content"], "Hel");
        let error: Value = serde_json::from_str(&data[2]).unwrap();
        assert_eq!(error["error"]["message"], "boom");
        assert_eq!(error["error"]["type"], "server_error");

        // An engine that drops the request says so, and no [DONE] follows.
        let data = stream_of(vec![text("Hel")]);
        let error: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(error["error"]["message"].is_string(), "{data:?}");

        // A normal end: the finish chunk, the usage chunk, [DONE].
        let data = stream_of(vec![
            text("Hi"),
            Some(Event::Finished {
                reason: FinishReason::Stop,
                completion_tokens: 1,
                ids: vec![1],
                matched: None,
            }),
        ]);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 4);
    }
}
