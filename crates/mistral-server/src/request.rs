//! The request bodies of `/v1/chat/completions` and `/v1/completions`,
//! parsed and checked into a [`GenerationRequest`] for the engine.
//!
//! The body is parsed as JSON whatever its Content-Type. Unknown fields are
//! ignored, as OpenAI's API does; fields this server cannot honour (`n > 1`,
//! non-zero
//! `frequency_penalty` / `presence_penalty`, a `logit_bias`, `echo`,
//! `best_of` > 1, a `suffix`) are a 400
//! naming the field rather than silently dropped. Type errors name the
//! field's path (`messages[0].role`).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::job::{GenerationRequest, Prompt, Sampling};
use mistral_loader::constrain::OutputFormat;

/// Parses `body` as a JSON object.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request(format!("The request body is not valid JSON: {err}"), None)
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object",
            None,
        ));
    }
    Ok(value)
}

/// Reads the fields of `T` from `body` (others are ignored), naming the
/// field at fault.
pub fn fields<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body.clone()).map_err(|err| {
        let path = err.path().to_string();
        let param = (path != ".").then_some(path);
        ApiError::bad_request(
            format!("Invalid request: {}", err.inner()),
            param.as_deref(),
        )
    })
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` and no choices.
    #[serde(default)]
    pub include_usage: bool,
}

/// A message's `content`: a string, or a list of parts of which the text
/// ones are used.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// The part's type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The message text (`null` for an assistant message of tool calls).
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant message's tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// A `tool` message: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A `tool` message: the function that answered (Mistral's v2 protocol
    /// writes it).
    #[serde(default)]
    pub name: Option<String>,
}

/// The fields both endpoints share.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    /// The model asked for (must be the served one when given).
    pub model: Option<String>,
    /// Token limit (`max_completion_tokens` is the newer name).
    pub max_tokens: Option<i64>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// Nucleus mass, 0 to 1.
    pub top_p: Option<f64>,
    /// Extension: keep the k most likely tokens.
    pub top_k: Option<i64>,
    /// Extension: min-p filter, 0 to 1.
    pub min_p: Option<f64>,
    /// Extension: repetition penalty (> 0).
    pub repetition_penalty: Option<f64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is supported.
    pub n: Option<i64>,
    /// `text`, `json_object`, `json_schema` (`json_schema.schema`), and
    /// the extensions `regex` (`regex`) and `grammar` (Lark, `grammar`).
    pub response_format: Option<Value>,
    /// Tool calling is not supported.
    pub tools: Option<Value>,
    /// Chat: whether to return log-probabilities (`true`/`false`); text
    /// completions: how many top tokens to return with them (0 to 5).
    pub logprobs: Option<Value>,
    /// Chat: how many top tokens to return with each token (0 to 20; needs
    /// `logprobs: true`).
    pub top_logprobs: Option<Value>,
    /// Not supported: only 0 (or absent) is accepted.
    pub frequency_penalty: Option<Value>,
    /// Not supported: only 0 (or absent) is accepted.
    pub presence_penalty: Option<Value>,
    /// Not supported: only an empty map (or absent) is accepted.
    pub logit_bias: Option<Value>,
    /// Not supported: only `"none"` (or absent) is accepted.
    pub tool_choice: Option<Value>,
    /// Whether an answer may call several tools (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Completions: not supported, only `false` is accepted.
    pub echo: Option<Value>,
    /// Completions: not supported, only 1 is accepted.
    pub best_of: Option<Value>,
    /// Completions: not supported, only an empty string is accepted.
    pub suffix: Option<Value>,
}

/// The fields of `POST /v1/chat/completions` beyond [`Common`].
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
}

/// `POST /tokenize`.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// Text to encode.
    pub prompt: Option<String>,
    /// Or messages to render with the chat template and encode.
    pub messages: Option<Vec<Message>>,
    /// With `prompt`: add the tokenizer's special tokens (BOS).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// With `messages`: end with the assistant's turn opening.
    #[serde(default = "yes")]
    pub add_generation_prompt: bool,
    /// With `messages`: the tools, written into the prompt as for a chat
    /// completion.
    #[serde(default)]
    pub tools: Option<Value>,
    /// With `tools`: `tool_choice` (`none` leaves the tools out).
    #[serde(default)]
    pub tool_choice: Option<Value>,
}

fn yes() -> bool {
    true
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// The fields of `POST /v1/completions` beyond [`Common`].
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt: a string, or a list holding one string.
    pub prompt: Value,
}

impl ChatRequest {
    /// The conversation as the engine takes it (OpenAI message objects,
    /// content parts joined into text), or a 400 naming the field.
    pub fn into_prompt(self) -> Result<Vec<Value>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_request(
                "`messages` must hold at least one message",
                Some("messages"),
            ));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in self.messages.into_iter().enumerate() {
            let text = match message.content {
                None => None,
                Some(Content::Text(text)) => Some(text),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            ("text", None) => {
                                return Err(ApiError::bad_request(
                                    "a text part needs `text`",
                                    Some(&format!("messages[{i}].content[{j}].text")),
                                ))
                            }
                            (other, _) => {
                                return Err(ApiError::bad_request(
                                    format!(
                                        "content parts of type `{other}` are not supported; only `text`"
                                    ),
                                    Some(&format!("messages[{i}].content[{j}].type")),
                                ))
                            }
                        }
                    }
                    Some(text)
                }
            };
            let mut object = serde_json::Map::new();
            object.insert("role".into(), Value::String(message.role));
            if let Some(text) = text {
                object.insert("content".into(), Value::String(text));
            }
            if let Some(calls) = message.tool_calls {
                object.insert("tool_calls".into(), Value::Array(calls));
            }
            if let Some(id) = message.tool_call_id {
                object.insert("tool_call_id".into(), Value::String(id));
            }
            if let Some(name) = message.name {
                object.insert("name".into(), Value::String(name));
            }
            messages.push(Value::Object(object));
        }
        Ok(messages)
    }
}

impl Endpoint for ChatRequest {
    fn into_generation(self, common: Common, served: &str) -> Result<GenerationRequest, ApiError> {
        let chat = self.into_prompt()?;
        common.into_generation(Prompt::Chat(chat), served)
    }
}

/// The fields of one completion endpoint beyond [`Common`].
pub trait Endpoint: DeserializeOwned {
    /// The engine's request, or a 400 naming the field.
    fn into_generation(self, common: Common, served: &str) -> Result<GenerationRequest, ApiError>;
}

impl Endpoint for CompletionRequest {
    fn into_generation(self, common: Common, served: &str) -> Result<GenerationRequest, ApiError> {
        let prompt = match self.prompt {
            Value::String(text) => text,
            Value::Array(items) if items.len() == 1 && items[0].is_string() => {
                items[0].as_str().unwrap_or_default().to_owned()
            }
            Value::Array(_) => {
                return Err(ApiError::bad_request(
                    "`prompt` must be a string or a list of one string (batches of prompts are not supported)",
                    Some("prompt"),
                ))
            }
            _ => {
                return Err(ApiError::bad_request(
                    "`prompt` must be a string",
                    Some("prompt"),
                ))
            }
        };
        common.into_generation(Prompt::Text(prompt), served)
    }
}

impl Common {
    fn into_generation(self, prompt: Prompt, served: &str) -> Result<GenerationRequest, ApiError> {
        if let Some(model) = &self.model {
            if model != served {
                return Err(ApiError::unknown_model(model, served));
            }
        }
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::bad_request(
                    format!("`n` = {n} is not supported: this server returns one choice (n = 1)"),
                    Some("n"),
                ));
            }
        }
        let format = output_format(self.response_format.as_ref())?;
        let tools = crate::tools::parse(
            self.tools.as_ref(),
            self.tool_choice.as_ref(),
            self.parallel_tool_calls,
        )?;
        if tools.is_some() {
            if !matches!(prompt, Prompt::Chat(_)) {
                return Err(ApiError::bad_request(
                    "`tools` are for chat completions",
                    Some("tools"),
                ));
            }
            if format.is_some() {
                return Err(ApiError::bad_request(
                    "`response_format` cannot be combined with `tools`",
                    Some("response_format"),
                ));
            }
        }
        self.check_unsupported()?;
        let logprobs = self.logprobs(&prompt)?;
        let (max_tokens, max_param) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => (Some(m), "max_completion_tokens"),
            (None, m) => (m, "max_tokens"),
        };
        let max_tokens = match max_tokens {
            None => None,
            Some(m) if m >= 1 => Some(usize::try_from(m).unwrap_or(usize::MAX)),
            Some(m) => {
                return Err(ApiError::bad_request(
                    format!("`{max_param}` must be at least 1, got {m}"),
                    Some(max_param),
                ))
            }
        };
        let temperature = in_range(self.temperature, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
        let top_p = in_range(self.top_p, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
        let min_p = in_range(self.min_p, "min_p", 0.0, 1.0)?.unwrap_or(0.0);
        let top_k = match self.top_k {
            None => 0,
            Some(k) if (0..=i64::from(i32::MAX)).contains(&k) => k as i32,
            Some(k) => {
                return Err(ApiError::bad_request(
                    format!("`top_k` must be 0 (off) or positive, got {k}"),
                    Some("top_k"),
                ))
            }
        };
        let repetition_penalty = match self.repetition_penalty {
            None => None,
            Some(p) if p.is_finite() && p > 0.0 => Some(p as f32),
            Some(p) => {
                return Err(ApiError::bad_request(
                    format!("`repetition_penalty` must be positive, got {p}"),
                    Some("repetition_penalty"),
                ))
            }
        };
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(list)) => list,
        };
        if let Some(i) = stop.iter().position(String::is_empty) {
            return Err(ApiError::bad_request(
                "stop strings must not be empty",
                Some(&format!("stop[{i}]")),
            ));
        }
        Ok(GenerationRequest {
            prompt,
            format,
            tools,
            max_tokens,
            sampling: Sampling {
                temperature: temperature as f32,
                top_p: top_p as f32,
                top_k,
                min_p: min_p as f32,
                repetition_penalty,
                seed: self.seed,
            },
            stop,
            logprobs,
        })
    }

    /// A 400 for a field this server cannot honour given a value that
    /// would change the answer (its neutral value is accepted).
    fn check_unsupported(&self) -> Result<(), ApiError> {
        let neutral: [(&str, &Option<Value>, IsNeutral); 6] = [
            ("frequency_penalty", &self.frequency_penalty, |v| {
                v.as_f64() == Some(0.0)
            }),
            ("presence_penalty", &self.presence_penalty, |v| {
                v.as_f64() == Some(0.0)
            }),
            ("logit_bias", &self.logit_bias, |v| {
                v.as_object().is_some_and(|m| m.is_empty())
            }),
            ("echo", &self.echo, |v| *v == Value::Bool(false)),
            ("best_of", &self.best_of, |v| v.as_u64() == Some(1)),
            ("suffix", &self.suffix, |v| v == ""),
        ];
        for (param, value, is_neutral) in neutral {
            if let Some(v) = value.as_ref().filter(|v| !v.is_null()) {
                if !is_neutral(v) {
                    return Err(ApiError::bad_request(
                        format!("`{param}` = {v} is not supported by this server"),
                        Some(param),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether log-probabilities are wanted, and with how many top tokens
    /// (see the fields' notes), or a 400 naming the field.
    fn logprobs(&self, prompt: &Prompt) -> Result<Option<usize>, ApiError> {
        let given = |v: &Option<Value>| v.clone().filter(|v| !v.is_null());
        let count = |v: &Value, max: u64, param: &str| match v.as_u64() {
            Some(n) if n <= max => Ok(n as usize),
            _ => Err(ApiError::bad_request(
                format!("`{param}` must be an integer from 0 to {max}, got {v}"),
                Some(param),
            )),
        };
        let (logprobs, top) = (given(&self.logprobs), given(&self.top_logprobs));
        match prompt {
            Prompt::Chat(_) => {
                let on = match logprobs {
                    None => false,
                    Some(Value::Bool(on)) => on,
                    Some(v) => {
                        return Err(ApiError::bad_request(
                            format!("`logprobs` must be true or false, got {v}"),
                            Some("logprobs"),
                        ))
                    }
                };
                let top = top.map(|v| count(&v, 20, "top_logprobs")).transpose()?;
                match (on, top) {
                    (true, top) => Ok(Some(top.unwrap_or(0))),
                    (false, None) => Ok(None),
                    (false, Some(_)) => Err(ApiError::bad_request(
                        "`top_logprobs` needs `logprobs: true`",
                        Some("top_logprobs"),
                    )),
                }
            }
            Prompt::Text(_) => {
                if top.is_some() {
                    return Err(ApiError::bad_request(
                        "`top_logprobs` is a chat field; completions take the number of top \
                         tokens in `logprobs`",
                        Some("top_logprobs"),
                    ));
                }
                logprobs.map(|v| count(&v, 5, "logprobs")).transpose()
            }
        }
    }
}

/// Whether a field's value leaves the answer as if it were absent.
type IsNeutral = fn(&Value) -> bool;

/// `value` if it lies in `[lo, hi]`, else a 400 naming `param`.
fn in_range(value: Option<f64>, param: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => Err(ApiError::bad_request(
            format!("`{param}` must be between {lo} and {hi}, got {v}"),
            Some(param),
        )),
        other => Ok(other),
    }
}

/// The output format `response_format` asks for (`None`: free text).
fn output_format(format: Option<&Value>) -> Result<Option<OutputFormat>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let bad = |message: String, field: &str| {
        ApiError::bad_request(message, Some(&format!("response_format{field}")))
    };
    let text = |key: &str| {
        format
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("`{key}` must be a string"), &format!(".{key}")))
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(OutputFormat::JsonObject)),
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .filter(|s| s.is_object() || s.is_boolean())
                .ok_or_else(|| {
                    bad(
                        "a JSON schema object is needed".into(),
                        ".json_schema.schema",
                    )
                })?;
            Ok(Some(OutputFormat::JsonSchema(schema.clone())))
        }
        Some("regex") => Ok(Some(OutputFormat::Regex(text("regex")?))),
        Some("grammar") => Ok(Some(OutputFormat::Lark(text("grammar")?))),
        other => Err(bad(
            format!(
                "type {other:?} is not supported (text, json_object, json_schema, regex, grammar)"
            ),
            ".type",
        )),
    }
}
