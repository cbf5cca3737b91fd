//! Queuing a generation: tokenize and check it (on a blocking thread),
//! hand it to the engine, and wait until the engine starts on it. Both
//! APIs (OpenAI's, Anthropic's) answer from what this returns.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::engine::EngineHandle;
use crate::error::ApiError;
use crate::job::{Event, FinishReason, GenerationRequest, Job, PromptTokens};
use crate::logprobs::TokenLogprob;
use crate::reasoning_gate::ReasoningMarkers;
use crate::text_side::TextSide;
use crate::tools::Answer;
use mistral_loader::constrain::OutputFormat;

/// A request the engine has started on.
pub struct Queued {
    /// Its events after `Started`.
    pub rx: mpsc::UnboundedReceiver<Event>,
    /// The prompt's tokens.
    pub prompt_tokens: PromptTokens,
    /// The model's text side, when the answer is read back in its tool
    /// format.
    pub tools: Option<Arc<TextSide>>,
    /// Whether the answer starts inside reasoning (`None`: not split; see
    /// `ReasoningMarkers`).
    pub reasoning: Option<bool>,
}

/// Tokenizes `generation`, queues it and waits until the engine starts on
/// it; `chat` answers split their reasoning. Errors found before
/// generation starts (context length, ...) come back here.
pub async fn queue(
    engine: &EngineHandle,
    generation: &GenerationRequest,
    chat: bool,
) -> Result<Queued, ApiError> {
    submit(engine, generation, chat).await?.started().await
}

/// Tokenizes and checks `generation` on a blocking thread and queues it:
/// every error the request can get before it runs comes back here; what
/// is returned has not started yet (its `prompt_tokens` are zero until
/// [`Queued::started`] or the stream's `Started` event).
pub async fn submit(
    engine: &EngineHandle,
    generation: &GenerationRequest,
    chat: bool,
) -> Result<Queued, ApiError> {
    let text = engine.text()?;
    let generation = generation.clone();
    let side = text.clone();
    let prepared = blocking(move || job(&side, &generation, chat)).await?;
    let Prepared {
        job,
        rx,
        reasoning,
        tools_read_back,
    } = prepared;
    let tools = tools_read_back.then_some(text);
    engine.submit(job)?;
    Ok(Queued {
        rx,
        prompt_tokens: PromptTokens {
            total: 0,
            cached: 0,
        },
        tools,
        reasoning,
    })
}

/// Runs `work` (tokenizing, a chat template) on a blocking thread, off the
/// async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))?
}

/// A job ready to queue, its event receiver, where its reasoning starts
/// and whether its answer is read back in the tool format.
struct Prepared {
    job: Job,
    rx: mpsc::UnboundedReceiver<Event>,
    reasoning: Option<bool>,
    tools_read_back: bool,
}

/// The job of `generation` (see [`submit`]).
fn job(text: &TextSide, generation: &GenerationRequest, chat: bool) -> Result<Prepared, ApiError> {
    let (prompt_ids, max_tokens) = text.prepare(generation)?;
    let format = text.output_format(generation)?;
    let constraint = format
        .as_ref()
        .map(|(format, field)| text.constraint(format, field))
        .transpose()?;
    let reasoning = match chat {
        true => text.reasoning.map(|m| m.open_after(&prompt_ids)),
        false => None,
    };
    // Constraints start after the reasoning, but for Mistral's tool grammar
    // and a Lark grammar that names the reasoning tokens: those govern the
    // reasoning themselves.
    let own_reasoning = |markers: ReasoningMarkers| match &format {
        _ if generation.tools.is_some() && text.has_protocol() => true,
        Some((OutputFormat::Lark(grammar), _)) => [markers.open, markers.close]
            .iter()
            .any(|id| grammar.contains(&format!("<[{id}]>"))),
        _ => false,
    };
    let reasoning_gate = match (text.reasoning, reasoning, &constraint) {
        (Some(markers), Some(inside), Some(_)) if !own_reasoning(markers) => {
            Some((markers, inside))
        }
        _ => None,
    };
    let (events, rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt_ids,
        max_tokens,
        sampling: generation.sampling.clone(),
        stop: generation.stop.clone(),
        logprobs: generation.logprobs,
        constraint,
        reasoning_gate,
        events,
        received: Instant::now(),
    };
    Ok(Prepared {
        job,
        rx,
        reasoning,
        tools_read_back: generation.tools.is_some(),
    })
}

/// A whole answer, read from a queued request's events.
pub struct Whole {
    /// The answer: text, or (read back in the tool format) calls.
    pub answer: Answer,
    /// The reasoning, apart from the answer (empty when none or not split).
    pub reasoning: String,
    /// The tokens' log-probabilities (if asked for).
    pub logprobs: Vec<TokenLogprob>,
    /// Why it ended.
    pub reason: FinishReason,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// The stop string that ended it, if one did.
    pub matched: Option<String>,
}

impl Queued {
    /// Waits until the engine starts on the request (a queued request
    /// waits for room in the batch and the cache budget).
    pub async fn started(mut self) -> Result<Queued, ApiError> {
        match self.rx.recv().await {
            Some(Event::Started { prompt_tokens }) => {
                self.prompt_tokens = prompt_tokens;
                Ok(self)
            }
            Some(Event::Failed(err)) => Err(err),
            Some(other) => Err(ApiError::internal(format!(
                "engine out of order: {other:?}"
            ))),
            None => Err(ApiError::internal("the engine dropped the request")),
        }
    }

    /// Waits for the whole answer (the non-streamed responses of both
    /// APIs).
    pub async fn collect(mut self) -> Result<Whole, ApiError> {
        let (mut text, mut reasoning, mut logprobs) = (String::new(), String::new(), Vec::new());
        let mut thinking = self.reasoning == Some(true);
        loop {
            match self.rx.recv().await {
                Some(Event::Text {
                    text: t,
                    logprobs: l,
                }) => {
                    match thinking {
                        true => reasoning.push_str(&t),
                        false => text.push_str(&t),
                    }
                    logprobs.extend(l);
                }
                Some(Event::Reasoning(on)) => thinking = on && self.reasoning.is_some(),
                Some(Event::CallsStart) | Some(Event::Started { .. }) => {}
                Some(Event::Finished {
                    reason,
                    completion_tokens,
                    ids,
                    matched,
                }) => {
                    let answer = match &self.tools {
                        Some(side) => side.read_tool_answer(&text, &ids),
                        None => Answer::Content(text),
                    };
                    return Ok(Whole {
                        answer,
                        reasoning,
                        logprobs,
                        reason,
                        completion_tokens,
                        matched,
                    });
                }
                Some(Event::Failed(err)) => return Err(err),
                None => return Err(ApiError::internal("the engine dropped the request")),
            }
        }
    }
}
