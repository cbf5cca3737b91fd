//! Chat prompts from Jinja `chat_template`s, rendered with minijinja.
//!
//! Design notes:
//! - A template is compiled once ([`ChatTemplate::new`]) and rendered per
//!   conversation with the variables Hugging Face's `apply_chat_template`
//!   passes: `messages` (a list of `{role, content}` maps), `bos_token`,
//!   `eos_token`, `add_generation_prompt`.
//! - The environment matches Hugging Face's: `trim_blocks` and
//!   `lstrip_blocks` on, a `raise_exception(message)` function that fails the
//!   render with the template's message, and Python string/dict methods
//!   (`.strip()`, `.startswith()`, `.items()`, ...) through minijinja-contrib's
//!   `pycompat`, which HF templates use as if they were Python, and
//!   transformers' `tojson` (Python's `json.dumps`, keys in order).
//! - Nothing model-specific lives here; which template a model uses, and the
//!   Mistral fallback, are mistral-loader's job.

use minijinja::{Environment, ErrorKind};
use serde::Serialize;

/// Name of the one template in a [`ChatTemplate`]'s environment.
const TEMPLATE_NAME: &str = "chat_template";

/// Errors of chat templates.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template is not valid Jinja.
    #[error("invalid chat template: {message}")]
    Syntax {
        /// minijinja's message, with the line.
        message: String,
    },

    /// Rendering failed: the template called `raise_exception` (e.g. for an
    /// unsupported role or message order), or used a value wrongly.
    #[error("cannot render chat template: {message}")]
    Render {
        /// The template's or minijinja's message.
        message: String,
    },
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The variables besides `messages` a chat template is rendered with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatTemplateArgs {
    /// The BOS token's text (`<s>` for Mistral).
    pub bos_token: String,
    /// The EOS token's text (`</s>` for Mistral).
    pub eos_token: String,
    /// Whether to end the prompt with the start of an assistant turn (for
    /// templates that have one; Mistral's do not need it).
    pub add_generation_prompt: bool,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source` (Jinja).
    pub fn new(source: impl Into<String>) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.into())
            .map_err(|e| ChatError::Syntax {
                message: format!("{e:#}"),
            })?;
        Ok(ChatTemplate { env })
    }

    /// Renders the prompt for `messages` (OpenAI-style objects, with
    /// `tool_calls` and `tool` messages as templates with tools read them)
    /// and `tools` (`{"type": "function", "function": {...}}` objects, the
    /// template's `tools`; `None` leaves it undefined), as transformers'
    /// `apply_chat_template(messages, tools=tools)` does.
    pub fn render_with_tools(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        args: &ChatTemplateArgs,
    ) -> Result<String, ChatError> {
        let render_error = |e: minijinja::Error| ChatError::Render {
            message: format!("{e:#}"),
        };
        let template = self.env.get_template(TEMPLATE_NAME).map_err(render_error)?;
        let tools = tools.map(minijinja::Value::from_serialize);
        template
            .render(minijinja::context! {
                messages => minijinja::Value::from_serialize(messages),
                tools => tools,
                bos_token => args.bos_token,
                eos_token => args.eos_token,
                add_generation_prompt => args.add_generation_prompt,
            })
            .map_err(render_error)
    }

    /// Renders the prompt for `messages`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        args: &ChatTemplateArgs,
    ) -> Result<String, ChatError> {
        let render_error = |e: minijinja::Error| ChatError::Render {
            message: format!("{e:#}"),
        };
        let template = self.env.get_template(TEMPLATE_NAME).map_err(render_error)?;
        template
            .render(minijinja::context! {
                messages => messages,
                bos_token => args.bos_token,
                eos_token => args.eos_token,
                add_generation_prompt => args.add_generation_prompt,
            })
            .map_err(render_error)
    }
}

/// `value | tojson(indent=n)`: JSON as transformers' chat templates get it
/// (Python's `json.dumps(value, ensure_ascii=False, indent=n)`; its other
/// arguments are accepted and ignored).
fn tojson(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    for other in ["ensure_ascii", "separators", "sort_keys"] {
        let _: Option<minijinja::Value> = kwargs.get(other)?;
    }
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(crate::python_json::dumps(&json, indent))
}

/// `raise_exception(message)`: fails the render with the template's message.
fn raise_exception(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}
