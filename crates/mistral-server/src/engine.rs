//! The engine: one thread that owns the model, its tokenizer and chat
//! template, and MLX's per-thread state (default stream, random state),
//! and runs generation requests from a bounded queue.
//!
//! MLX arrays are `Send` but not `Sync`, and MLX's default stream and
//! random state are thread-local, so the HTTP side never touches MLX: it
//! sends a [`Job`] (plain Rust values) and receives [`Event`]s over a
//! channel of its own. A job whose event channel is closed (the client went
//! away) ends at its next token, or between prefill chunks.
//!
//! Up to `max_batch` requests run at once, continuously batched (see
//! [`crate::scheduler`]).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use mistral_loader::constrain::{Constraint, ConstraintFactory, OutputFormat};
use mistral_loader::{
    load_chat_protocol, load_chat_template, load_model_config, load_model_parallel,
    load_model_planned, load_special_tokens, load_tokenizer, LoadOptions, ModelChatTemplate,
    SpecialTokens, TokenBytes, Tokenizer,
};
use mistral_model::{Mistral, TensorParallel};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::logprobs::TokenLogprob;
use crate::metrics::Metrics;
pub use crate::reasoning_gate::ReasoningMarkers;
use crate::scheduler;
use crate::template_tools::TemplateTools;
use crate::tools::{Answer, ToolRequest};
use mistral_loader::mistral_chat::encode_chat;

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Messages (OpenAI objects: text content, `tool_calls`,
    /// `tool_call_id`, `name`), through mistral-common's protocol or the
    /// model's chat template.
    Chat(Vec<Value>),
    /// Plain text, encoded with the tokenizer's special tokens (BOS).
    Text(String),
}

/// Sampling options of one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// Temperature (0: greedy).
    pub temperature: f32,
    /// Nucleus mass (applied when below 1).
    pub top_p: f32,
    /// Keep the k most likely tokens (0: off).
    pub top_k: i32,
    /// Min-p filter (0: off).
    pub min_p: f32,
    /// Repetition penalty over the last 20 tokens, as mlx-lm's default.
    pub repetition_penalty: Option<f32>,
    /// Seed of the request's own random state.
    pub seed: Option<u64>,
}

/// One generation, as the HTTP side hands it over.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// What the output must be (`response_format`), if constrained.
    pub format: Option<OutputFormat>,
    /// The tools the answer may call (see [`crate::tools`]).
    pub tools: Option<ToolRequest>,
    /// Token limit (`None`: up to the model's context).
    pub max_tokens: Option<usize>,
    /// Sampling.
    pub sampling: Sampling,
    /// Stop strings (not included in the text).
    pub stop: Vec<String>,
    /// Log-probabilities with this many top tokens (`None`: none).
    pub logprobs: Option<usize>,
}

/// Why a generation ended, in OpenAI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// The token limit or the model's context.
    Length,
    /// The answer calls tools.
    ToolCalls,
}

impl FinishReason {
    /// `"stop"`, `"length"` or `"tool_calls"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// A prompt's token counts, for `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptTokens {
    /// All prompt tokens.
    pub total: usize,
    /// Those taken from the prompt cache instead of prefilled.
    pub cached: usize,
}

/// What the engine reports about a job, in order: `Started`, any number of
/// `Text`, then `Finished`; or `Failed` at any point.
#[derive(Debug)]
pub enum Event {
    /// The prompt is tokenized and accepted.
    Started {
        /// Prompt tokens.
        prompt_tokens: PromptTokens,
    },
    /// Text that became final, with the log-probabilities (if asked
    /// for) of the tokens returned since the last `Text`.
    Text {
        /// The text.
        text: String,
        /// The tokens' log-probabilities.
        logprobs: Vec<TokenLogprob>,
    },
    /// The answer enters (`true`) or leaves reasoning: the text before
    /// this event belongs to the phase before it.
    Reasoning(bool),
    /// The answer's tool calls start here (the tool format's call token):
    /// the text before this event is content.
    CallsStart,
    /// The end.
    Finished {
        /// Why it ended.
        reason: FinishReason,
        /// Generated tokens.
        completion_tokens: usize,
        /// The generated ids (the tool formats read them back).
        ids: Vec<u32>,
        /// The stop string that ended it, if one did.
        matched: Option<String>,
    },
    /// The request failed (a 4xx before `Started`, a 500 after).
    Failed(ApiError),
}

/// A tokenized request and where its events go.
#[derive(Debug)]
pub struct Job {
    /// The prompt's token ids (checked against the context).
    pub prompt_ids: Vec<u32>,
    /// Token limit (fits the context).
    pub max_tokens: usize,
    /// Sampling.
    pub sampling: Sampling,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Log-probabilities with this many top tokens (`None`: none).
    pub logprobs: Option<usize>,
    /// The output constraint (`response_format`), if any.
    pub constraint: Option<Constraint>,
    /// The model's reasoning markers, when the constraint starts after
    /// the reasoning, and whether the answer starts inside it.
    pub reasoning_gate: Option<(ReasoningMarkers, bool)>,
    /// Where the events go (unbounded: the engine never waits on a
    /// client; a request's events are bounded by its `max_tokens`).
    pub events: mpsc::UnboundedSender<Event>,
    /// When the request arrived (time to first token counts from here).
    pub received: Instant,
}

/// The model's text side (tokenizer, chat template, end ids, context),
/// shared with the HTTP side once loaded: requests are tokenized and
/// checked there, before they queue.
#[derive(Debug)]
pub struct TextSide {
    pub(crate) tokenizer: Tokenizer,
    template: ModelChatTemplate,
    /// mistral-common's protocol, when chat prompts are built with it.
    protocol: Option<mistral_loader::MistralTokenizer>,
    pub(crate) special: SpecialTokens,
    /// Each token's bytes (log-probabilities).
    pub(crate) token_bytes: TokenBytes,
    context: Option<usize>,
    /// Whether the model is split over ranks (no constrained output there).
    tensor_parallel: bool,
    /// llguidance's view of the tokenizer, built on first use.
    constraints: OnceLock<Result<ConstraintFactory, String>>,
    /// The tokens that open and close reasoning, if the model has them.
    pub(crate) reasoning: Option<ReasoningMarkers>,
    /// The tool-call format the chat template writes, if it has one.
    template_tools: Option<TemplateTools>,
    /// The single token that starts a call in the model's tool format
    /// (`[TOOL_CALLS]`, a one-token `<tool_call>`), if it has one: text
    /// before it streams as content.
    pub(crate) call_marker: Option<u32>,
}

/// A 400 for a chat template that failed to render the messages.
fn template_failed(e: mistral_loader::ChatError) -> ApiError {
    ApiError::bad_request(format!("the chat template failed: {e}"), Some("messages"))
}

impl TextSide {
    /// Whether chat prompts go through mistral-common's protocol.
    pub fn has_protocol(&self) -> bool {
        self.protocol.is_some()
    }

    /// The model's context length (`max_position_embeddings`), if known.
    pub fn context(&self) -> Option<usize> {
        self.context
    }

    /// A fresh constraint for `format` (from the request's `field`); a 400
    /// names what cannot be used.
    pub fn constraint(&self, format: &OutputFormat, field: &str) -> Result<Constraint, ApiError> {
        let refused = |message: String| ApiError::bad_request(message, Some(field));
        if self.tensor_parallel {
            return Err(refused(
                "response_format is not supported when the model is split over ranks".into(),
            ));
        }
        let factory = self.constraints.get_or_init(|| {
            let eos = self.special.eos.first().copied().ok_or_else(|| {
                "the model has no end-of-sequence token to end a constrained answer".to_owned()
            })?;
            ConstraintFactory::new(&self.tokenizer, &self.token_bytes, eos)
                .map_err(|e| e.to_string())
        });
        let factory = factory.as_ref().map_err(|e| refused(e.clone()))?;
        factory
            .create(format)
            .map_err(|e| refused(format!("{field} cannot be used: {e}")))
    }

    /// The prompt's token ids: chat messages through mistral-common's
    /// protocol or the chat template (`add_generation_prompt`), with
    /// `tools` in the model's tool format; plain text with the tokenizer's
    /// special tokens.
    pub fn encode(
        &self,
        prompt: &Prompt,
        add_generation_prompt: bool,
        tools: Option<&ToolRequest>,
    ) -> Result<Vec<u32>, ApiError> {
        match prompt {
            Prompt::Chat(chat) => match &self.protocol {
                Some(mistral) => {
                    let listed = match tools {
                        Some(_) if mistral.version() < 2 => {
                            return Err(ApiError::bad_request(
                                format!(
                                    "this model's chat protocol (v{}) has no tool format",
                                    mistral.version()
                                ),
                                Some("tools"),
                            ))
                        }
                        Some(tools) => tools.listed(),
                        None => Vec::new(),
                    };
                    encode_chat(mistral, chat, &listed).map_err(|e| {
                        ApiError::bad_request(
                            format!("mistral-common's chat protocol refused it: {e}"),
                            Some("messages"),
                        )
                    })
                }
                None if self.template_tools.is_some() => {
                    let listed = tools.map(|t| Value::Array(t.listed()));
                    let messages = crate::template_tools::template_messages(chat);
                    let rendered = self
                        .template
                        .render_with_tools(&messages, listed.as_ref(), add_generation_prompt)
                        .map_err(template_failed)?;
                    self.encode_text(&rendered, false)
                }
                None => {
                    let messages = crate::tools::generic_prompt(chat, tools);
                    let rendered = self
                        .template
                        .render(&messages, add_generation_prompt)
                        .map_err(template_failed)?;
                    // The template writes the special tokens itself.
                    self.encode_text(&rendered, false)
                }
            },
            Prompt::Text(text) => self.encode_text(text, true),
        }
    }

    /// What `request`'s output must be, with the request field it comes
    /// from: its `response_format`, or its tools in the model's format.
    pub fn output_format(
        &self,
        request: &GenerationRequest,
    ) -> Result<Option<(OutputFormat, &'static str)>, ApiError> {
        Ok(match (&request.tools, &self.protocol) {
            (Some(tools), Some(mistral)) => {
                let grammar = crate::mistral_tools::grammar(mistral, tools)
                    .map_err(|e| ApiError::bad_request(e, Some("tools")))?;
                Some((OutputFormat::Lark(grammar), "tools"))
            }
            (Some(tools), None) => match self.template_tools {
                Some(format) => Some((OutputFormat::Lark(format.grammar(tools)), "tools")),
                None => Some((OutputFormat::JsonSchema(tools.schema()), "tools")),
            },
            (None, _) => request
                .format
                .clone()
                .map(|format| (format, "response_format")),
        })
    }

    /// A finished answer to a request with tools (its `text` and generated
    /// `ids`) read back as calls or text, in the model's tool format.
    pub fn read_tool_answer(&self, text: &str, ids: &[u32]) -> Answer {
        match (&self.protocol, self.template_tools) {
            (Some(mistral), _) => crate::mistral_tools::read(mistral, ids),
            (None, Some(format)) => {
                // The markers may be special tokens: decoded with them,
                // less the end-of-sequence token.
                let kept: Vec<u32> = ids
                    .iter()
                    .copied()
                    .filter(|id| !self.special.eos.contains(id))
                    .collect();
                let whole = self.tokenizer.decode(&kept, false);
                format.read(whole.as_deref().unwrap_or(text))
            }
            (None, None) => crate::tools::read_answer(text),
        }
    }

    /// `text`'s token ids, with the tokenizer's special tokens (BOS) or
    /// without.
    pub fn encode_text(&self, text: &str, special: bool) -> Result<Vec<u32>, ApiError> {
        let encoding = self
            .tokenizer
            .encode(text, special)
            .map_err(|e| ApiError::internal(format!("tokenizing: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens skipped); a 400 for ids outside
    /// the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ApiError> {
        let size = self.tokenizer.get_vocab_size(true);
        if let Some(bad) = ids.iter().position(|&id| id as usize >= size) {
            return Err(ApiError::bad_request(
                format!(
                    "token id {} is outside the vocabulary (0..{size})",
                    ids[bad]
                ),
                Some(&format!("tokens[{bad}]")),
            ));
        }
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ApiError::internal(format!("detokenizing: {e}")))
    }

    /// Tokenizes `request` and fits it to the context: the job for the
    /// engine, less its event channel. A 400 `context_length_exceeded`
    /// when the prompt (with `max_tokens`) does not fit.
    pub fn prepare(&self, request: &GenerationRequest) -> Result<(Vec<u32>, usize), ApiError> {
        let ids = self.encode(&request.prompt, true, request.tools.as_ref())?;
        if ids.is_empty() {
            return Err(ApiError::bad_request("The prompt is empty", None));
        }
        let param = match request.prompt {
            Prompt::Chat(_) => "messages",
            Prompt::Text(_) => "prompt",
        };
        let max_tokens = match (self.context, request.max_tokens) {
            (Some(context), _) if ids.len() >= context => {
                return Err(ApiError::context_length(
                    format!(
                        "This model's context is {context} tokens; the prompt is {} tokens",
                        ids.len()
                    ),
                    param,
                ))
            }
            (Some(context), Some(max)) if ids.len() + max > context => {
                return Err(ApiError::context_length(
                    format!(
                        "This model's context is {context} tokens; the prompt ({} tokens) and \
                         max_tokens ({max}) exceed it",
                        ids.len()
                    ),
                    "max_tokens",
                ))
            }
            (Some(context), None) => context - ids.len(),
            (_, Some(max)) => max,
            (None, None) => usize::MAX,
        };
        Ok((ids, max_tokens))
    }
}

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

/// The HTTP side's handle on the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Job>,
    /// Set once the model is loaded.
    text: Arc<OnceLock<Arc<TextSide>>>,
    metrics: Arc<Metrics>,
}

impl EngineHandle {
    /// Whether the model is loaded.
    pub fn is_ready(&self) -> bool {
        self.text.get().is_some()
    }

    /// The text side, or a 503 while the model loads.
    pub fn text(&self) -> Result<Arc<TextSide>, ApiError> {
        self.text
            .get()
            .cloned()
            .ok_or_else(|| ApiError::unavailable("The model is still loading"))
    }

    /// Queues `job`; a 503 while loading or when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        if !self.is_ready() {
            return Err(ApiError::unavailable("The model is still loading"));
        }
        // Counted before it can be picked up, so the gauge never dips below.
        Metrics::bump(&self.metrics.queued);
        self.jobs.try_send(job).map_err(|err| {
            Metrics::drop_one(&self.metrics.queued);
            match err {
                mpsc::error::TrySendError::Full(_) => {
                    ApiError::unavailable("The server is busy: its queue is full; retry later")
                }
                mpsc::error::TrySendError::Closed(_) => {
                    ApiError::internal("The engine has stopped")
                }
            }
        })?;
        Metrics::bump(&self.metrics.requests);
        Ok(())
    }
}

/// Starts the engine thread: it loads `spec`, then serves jobs from a
/// queue of `queue` places, running up to `max_batch` at once. `loaded`
/// receives the outcome of the load.
pub fn start(
    spec: ModelSpec,
    queue: usize,
    max_batch: usize,
    prompt_cache_bytes: u64,
    metrics: Arc<Metrics>,
    loaded: oneshot::Sender<Result<(), String>>,
) -> std::io::Result<(EngineHandle, EngineThread)> {
    let (jobs_tx, jobs_rx) = mpsc::channel(queue.max(1));
    let text = Arc::new(OnceLock::new());
    let (shared, counters) = (Arc::clone(&text), Arc::clone(&metrics));
    let thread = std::thread::Builder::new()
        .name("mlx-engine".into())
        .spawn(move || match Loaded::load(&spec) {
            Ok(engine) => {
                let _ = shared.set(Arc::clone(&engine.text));
                let _ = loaded.send(Ok(()));
                let Loaded { mut model, text } = engine;
                scheduler::serve(
                    &mut model,
                    &text,
                    jobs_rx,
                    &counters,
                    max_batch,
                    prompt_cache_bytes,
                    spec.tensor_parallel.clone(),
                );
            }
            Err(err) => {
                let _ = loaded.send(Err(err));
            }
        })?;
    let engine_thread = EngineThread {
        thread,
        text: Arc::clone(&text),
    };
    let handle = EngineHandle {
        jobs: jobs_tx,
        text,
        metrics,
    };
    Ok((handle, engine_thread))
}

/// The engine thread, to wait for at shutdown: MLX must not be freeing
/// arrays on it while the process exits.
#[derive(Debug)]
pub struct EngineThread {
    thread: std::thread::JoinHandle<()>,
    text: Arc<OnceLock<Arc<TextSide>>>,
}

impl EngineThread {
    /// Waits for the thread, which ends once every [`EngineHandle`] is
    /// dropped and its running requests end (their clients are gone by
    /// then). A model still loading is not waited for.
    pub fn join(self) {
        if self.text.get().is_some() {
            let _ = self.thread.join();
        }
    }
}

/// Everything the engine thread owns.
struct Loaded {
    model: Mistral,
    text: Arc<TextSide>,
}

impl Loaded {
    fn load(spec: &ModelSpec) -> Result<Self, String> {
        let path = &spec.path;
        let config = load_model_config(path).map_err(|e| e.to_string())?;
        let tokenizer = load_tokenizer(path).map_err(|e| e.to_string())?;
        mistral_loader::check_tokenizer_fits(&tokenizer, config.vocab_size, path)
            .map_err(|e| e.to_string())?;
        let special = load_special_tokens(path, Some(&tokenizer)).map_err(|e| e.to_string())?;
        let mut template = load_chat_template(path, &tokenizer).map_err(|e| e.to_string())?;
        if let Some(file) = &spec.chat_template {
            template = template.replaced_by(file).map_err(|e| e.to_string())?;
        }
        let template_tools = TemplateTools::of(&template.text);
        let protocol = load_chat_protocol(path, spec.tokenizer_mode).map_err(|e| e.to_string())?;
        let reasoning = ReasoningMarkers::of(protocol.as_ref(), &tokenizer);
        let call_marker = match (&protocol, template_tools) {
            (Some(mistral), _) => mistral.special_id("[TOOL_CALLS]"),
            (None, Some(TemplateTools::Hermes)) => tokenizer.token_to_id("<tool_call>"),
            _ => None,
        };
        let (model, _plan) = match &spec.tensor_parallel {
            Some(parallel) => load_model_parallel(path, &spec.options, parallel.clone()),
            None => load_model_planned(path, &spec.options),
        }
        .map_err(|e| e.to_string())?;
        Ok(Loaded {
            model,
            text: Arc::new(TextSide {
                token_bytes: TokenBytes::new(&tokenizer),
                tokenizer,
                template,
                protocol,
                special,
                context: config
                    .max_position_embeddings
                    .and_then(|c| usize::try_from(c).ok()),
                tensor_parallel: spec.tensor_parallel.is_some(),
                constraints: OnceLock::new(),
                reasoning,
                template_tools,
                call_marker,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Where an answer's reasoning starts, on hand-written prompt ids.

    use super::ReasoningMarkers;

    #[test]
    fn an_answer_starts_in_reasoning_when_the_prompt_left_it_open() {
        let m = ReasoningMarkers { open: 7, close: 8 };
        assert!(!m.open_after(&[1, 2, 3]));
        assert!(m.open_after(&[1, 7]), "a template that ends with <think>");
        assert!(
            !m.open_after(&[1, 7, 4, 8, 5]),
            "an earlier turn's closed reasoning"
        );
        assert!(m.open_after(&[1, 7, 8, 2, 7, 3]));
    }
}
