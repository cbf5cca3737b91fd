//! The messages between the HTTP side and the engine: what a request asks
//! for ([`GenerationRequest`]), the tokenized [`Job`] the engine runs, and
//! the [`Event`]s it sends back. Plain Rust values: no MLX value crosses
//! threads.

use std::time::Instant;

use mistral_loader::constrain::{Constraint, OutputFormat};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::logprobs::TokenLogprob;
use crate::reasoning_gate::ReasoningMarkers;
use crate::tools::ToolRequest;

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
