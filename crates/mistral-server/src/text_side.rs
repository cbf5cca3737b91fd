//! [`TextSide`]: the model's text side (tokenizer, chat template or
//! mistral-common's protocol, end ids, context, tool and reasoning
//! markers), loaded beside the model and shared with the HTTP side, which
//! tokenizes and checks every request with it before it queues.

use std::sync::OnceLock;

use mistral_loader::constrain::{Constraint, ConstraintFactory, OutputFormat};
use mistral_loader::mistral_chat::encode_chat;
use mistral_loader::{
    load_chat_protocol, load_chat_template, load_model_config, load_special_tokens, load_tokenizer,
    ModelChatTemplate, SpecialTokens, TokenBytes, Tokenizer,
};
use serde_json::Value;

use crate::error::ApiError;
use crate::job::{GenerationRequest, Prompt};
use crate::reasoning_gate::ReasoningMarkers;
use crate::template_tools::TemplateTools;
use crate::tools::{Answer, ToolRequest};

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
    /// The model's vocabulary (`top_k` must stay below it).
    vocab_size: Option<usize>,
    /// What a sequence's key/value cache costs (set once the model is
    /// loaded; admission and `max_tokens` defaults use it).
    pub(crate) kv: crate::kv_budget::KvBudget,
}

/// A 400 for a chat template that failed to render the messages.
fn template_failed(e: mistral_loader::ChatError) -> ApiError {
    ApiError::bad_request(format!("the chat template failed: {e}"), Some("messages"))
}

impl TextSide {
    /// Loads the text side of the model at `path`: `mode` picks how chat
    /// prompts become ids, `chat_template` replaces the model's template;
    /// `tensor_parallel` when the model is split over ranks.
    pub fn load(
        path: &std::path::Path,
        mode: mistral_loader::TokenizerMode,
        chat_template: Option<&std::path::Path>,
        tensor_parallel: bool,
    ) -> Result<Self, String> {
        let config = load_model_config(path).map_err(|e| e.to_string())?;
        let tokenizer = load_tokenizer(path).map_err(|e| e.to_string())?;
        mistral_loader::check_tokenizer_fits(&tokenizer, config.vocab_size, path)
            .map_err(|e| e.to_string())?;
        let special = load_special_tokens(path, Some(&tokenizer)).map_err(|e| e.to_string())?;
        let mut template = load_chat_template(path, &tokenizer).map_err(|e| e.to_string())?;
        if let Some(file) = chat_template {
            template = template.replaced_by(file).map_err(|e| e.to_string())?;
        }
        let template_tools = TemplateTools::of(&template.text);
        let protocol = load_chat_protocol(path, mode).map_err(|e| e.to_string())?;
        let reasoning = ReasoningMarkers::of(protocol.as_ref(), &tokenizer);
        let call_marker = match (&protocol, template_tools) {
            (Some(mistral), _) => mistral.special_id("[TOOL_CALLS]"),
            (None, Some(TemplateTools::Hermes)) => tokenizer.token_to_id("<tool_call>"),
            _ => None,
        };
        Ok(TextSide {
            token_bytes: TokenBytes::new(&tokenizer),
            tokenizer,
            template,
            protocol,
            special,
            context: config
                .max_position_embeddings
                .and_then(|c| usize::try_from(c).ok()),
            tensor_parallel,
            constraints: OnceLock::new(),
            reasoning,
            template_tools,
            call_marker,
            vocab_size: usize::try_from(config.vocab_size).ok(),
            kv: crate::kv_budget::KvBudget::default(),
        })
    }

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

    /// Tokenizes `request` and checks everything the engine would refuse:
    /// the context, the cache budget, `top_k` against the vocabulary. Gives
    /// the prompt ids and the token limit (`max_tokens`, by default the
    /// context left, cut to what the cache budget holds). A 400
    /// (`context_length_exceeded` for length) names the field.
    pub fn prepare(&self, request: &GenerationRequest) -> Result<(Vec<u32>, usize), ApiError> {
        if let Some(vocab) = self.vocab_size {
            let top_k = request.sampling.top_k;
            if usize::try_from(top_k).is_ok_and(|k| k >= vocab) {
                return Err(ApiError::bad_request(
                    format!(
                        "`top_k` must be below the vocabulary size {vocab} (0 disables it), \
                         got {top_k}"
                    ),
                    Some("top_k"),
                ));
            }
        }
        let ids = self.encode(&request.prompt, true, request.tools.as_ref())?;
        if ids.is_empty() {
            return Err(ApiError::bad_request("The prompt is empty", None));
        }
        let param = match request.prompt {
            Prompt::Chat(_) => "messages",
            Prompt::Text(_) => "prompt",
        };
        // The model's context, then the cache one request may hold (the
        // server's whole budget): each caps the prompt and max_tokens.
        let context = self
            .context
            .map(|c| {
                fit(
                    &ids,
                    request.max_tokens,
                    c,
                    &format!("This model's context is {c}"),
                    param,
                )
            })
            .transpose()?;
        let (longest, budget) = (self.kv.longest(), self.kv.limit());
        let held = fit(
            &ids,
            request.max_tokens,
            longest,
            &format!("The server's key/value cache budget ({budget} bytes) holds {longest}"),
            param,
        )?;
        let max_tokens = request
            .max_tokens
            .unwrap_or_else(|| context.map_or(held, |c| c.min(held)));
        Ok((ids, max_tokens))
    }
}

/// The tokens `ids` leave for the answer within `limit` tokens; a 400
/// `context_length_exceeded` (on `param`, or on `max_tokens` when that is
/// what does not fit) whose message starts with `limit_is`.
fn fit(
    ids: &[u32],
    max_tokens: Option<usize>,
    limit: usize,
    limit_is: &str,
    param: &str,
) -> Result<usize, ApiError> {
    let n = ids.len();
    if n >= limit {
        let message = format!("{limit_is} tokens; the prompt is {n} tokens");
        return Err(ApiError::context_length(message, param));
    }
    match max_tokens {
        Some(max) if n + max > limit => Err(ApiError::context_length(
            format!("{limit_is} tokens; the prompt ({n} tokens) and max_tokens ({max}) exceed it"),
            "max_tokens",
        )),
        _ => Ok(limit - n),
    }
}
