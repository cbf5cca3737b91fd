//! The model's chat template: found in its directory, or Mistral's format.
//!
//! Design notes:
//! - Where the template comes from, first found wins: `chat_template.jinja`
//!   (what `transformers` and `mlx_lm.convert` write today), then
//!   `tokenizer_config.json`'s `chat_template`: a string, or a list of
//!   `{"name", "template"}` objects of which `"default"` is used.
//! - Without either, Mistral's own instruct format is used, as mistral-common
//!   encodes it: `<s>[INST]user[/INST]assistant</s>[INST]...`, with a system
//!   message put before the *last* user message (v0.3; v0.1 vocabularies, in
//!   which `[INST]` is plain text, get v0.1's format with the system message
//!   before the *first* user message, `[INST] user [/INST] assistant</s>`).
//! - The v0.3 text after `[INST]` must reach the tokenizer so that it yields
//!   mistral-common's `▁` before the first word: a tokenizer that prefixes
//!   `▁` to every text segment (SentencePiece-like normalizer) needs no space
//!   there; one that prefixes only at the start of the input (`Metaspace`
//!   with `prepend_scheme: "first"`, the Hugging Face v0.3 files) needs a
//!   space (after `[INST]` and before the assistant's text, which follows
//!   the special `[/INST]`). The fallback asks the tokenizer which it is.
//! - `bos_token`/`eos_token` strings come from `tokenizer_config.json`
//!   (`"<s>"` or `{"content": "<s>"}`), else Mistral's `<s>`/`</s>`.
//! - A rendered prompt already holds BOS: encode it without adding special
//!   tokens.

use std::path::{Path, PathBuf};

use mistral_text::{ChatMessage, ChatTemplate, ChatTemplateArgs};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{LoadError, Result};
use crate::safetensors_files::check_model_dir;
use crate::tokenizer::TOKENIZER_CONFIG_FILE;

/// File name of a stand-alone chat template.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// Mistral's BOS text, used when `tokenizer_config.json` names none.
pub const DEFAULT_BOS_TOKEN: &str = "<s>";
/// Mistral's EOS text, used when `tokenizer_config.json` names none.
pub const DEFAULT_EOS_TOKEN: &str = "</s>";

/// Head shared by the fallback templates: splits off a system message and
/// finds the user message that gets it (`pick_first`: the first, else the last).
fn fallback_head(pick_first: bool) -> String {
    let pick = if pick_first {
        "{%- if ns.user < 0 %}{%- set ns.user = loop.index0 %}{%- endif %}"
    } else {
        "{%- set ns.user = loop.index0 %}"
    };
    format!(
        "{{%- if messages and messages[0]['role'] == 'system' %}}\
         {{%- set system = messages[0]['content'] %}}\
         {{%- set turns = messages[1:] %}}\
         {{%- else %}}{{%- set turns = messages %}}{{%- endif %}}\
         {{%- set ns = namespace(user=-1) %}}\
         {{%- for m in turns %}}{{%- if m['role'] == 'user' %}}{pick}{{%- endif %}}{{%- endfor %}}\
         {{{{- bos_token }}}}\
         {{%- for m in turns %}}\
         {{%- if m['role'] == 'user' %}}\
         {{%- if system is defined and loop.index0 == ns.user %}}\
         {{%- set text = system + '\\n\\n' + m['content'] %}}\
         {{%- else %}}{{%- set text = m['content'] %}}{{%- endif %}}"
    )
}

/// Tail shared by the fallback templates: user text `user`, assistant `assistant`.
fn fallback_tail(user: &str, assistant: &str) -> String {
    format!(
        "{user}\
         {{%- elif m['role'] == 'assistant' %}}{assistant}\
         {{%- else %}}{{{{- raise_exception('Mistral chat: only system, user and assistant \
         roles are supported, found ' + m['role']) }}}}\
         {{%- endif %}}{{%- endfor %}}"
    )
}

/// Mistral v0.3's format. `space_after_inst`: see the module notes (it
/// also puts a space before assistant text, which follows `[/INST]`).
pub fn mistral_v3_template(space_after_inst: bool) -> String {
    let (user, assistant) = if space_after_inst {
        (
            "{{- '[INST] ' + text + '[/INST]' }}",
            "{{- ' ' + m['content'] + eos_token }}",
        )
    } else {
        (
            "{{- '[INST]' + text + '[/INST]' }}",
            "{{- m['content'] + eos_token }}",
        )
    };
    fallback_head(false) + &fallback_tail(user, assistant)
}

/// Mistral v0.1's format (`[INST]` as plain text).
pub fn mistral_v1_template() -> String {
    fallback_head(true)
        + &fallback_tail(
            "{{- '[INST] ' + text + ' [/INST]' }}",
            "{{- ' ' + m['content'] + eos_token }}",
        )
}

/// Where a model's chat template came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplateSource {
    /// `chat_template.jinja`.
    JinjaFile(PathBuf),
    /// `tokenizer_config.json`'s `chat_template`.
    TokenizerConfig(PathBuf),
    /// A GGUF file's `tokenizer.chat_template`.
    Gguf(PathBuf),
    /// None in the directory: Mistral's format (see the module notes).
    MistralFallback,
}

/// A model's chat template, ready to render.
#[derive(Debug)]
pub struct ModelChatTemplate {
    /// The compiled template.
    pub template: ChatTemplate,
    /// Where it came from.
    pub source: ChatTemplateSource,
    /// Its Jinja text.
    pub text: String,
    /// The BOS token's text.
    pub bos_token: String,
    /// The EOS token's text.
    pub eos_token: String,
}

impl ModelChatTemplate {
    /// This model's template replaced by the Jinja file `file` (vLLM's
    /// `--chat-template`, llama-server's `--chat-template-file`), with the
    /// same BOS/EOS texts; errors name the file.
    pub fn replaced_by(self, file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|source| LoadError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let dir = file.parent().unwrap_or(file);
        compile(
            text,
            ChatTemplateSource::JinjaFile(file.to_path_buf()),
            dir,
            self.bos_token,
            self.eos_token,
        )
    }

    /// Renders the prompt for OpenAI-style `messages` with `tools` (see
    /// [`ChatTemplate::render_with_tools`]).
    pub fn render_with_tools(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> std::result::Result<String, mistral_text::ChatError> {
        self.template.render_with_tools(
            messages,
            tools,
            &ChatTemplateArgs {
                bos_token: self.bos_token.clone(),
                eos_token: self.eos_token.clone(),
                add_generation_prompt,
            },
        )
    }

    /// Renders the prompt for `messages` (it starts with BOS: encode it
    /// without adding special tokens).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, mistral_text::ChatError> {
        self.template.render(
            messages,
            &ChatTemplateArgs {
                bos_token: self.bos_token.clone(),
                eos_token: self.eos_token.clone(),
                add_generation_prompt,
            },
        )
    }
}

/// Loads the chat template of the model in `dir` (see the module notes);
/// `tokenizer` is that model's, used only to shape the fallback.
pub fn load_chat_template(
    dir: impl AsRef<Path>,
    tokenizer: &Tokenizer,
) -> Result<ModelChatTemplate> {
    let dir = dir.as_ref();
    if let Some(file) = crate::gguf::find_gguf(dir)? {
        return gguf_chat_template(&file, tokenizer);
    }
    check_model_dir(dir)?;
    let config_path = dir.join(TOKENIZER_CONFIG_FILE);
    let config = read_config(&config_path)?;
    let jinja_path = dir.join(CHAT_TEMPLATE_FILE);

    let (text, source) = if jinja_path.is_file() {
        let text = std::fs::read_to_string(&jinja_path).map_err(|source| LoadError::Io {
            path: jinja_path.clone(),
            source,
        })?;
        (text, ChatTemplateSource::JinjaFile(jinja_path))
    } else if let Some(text) = config
        .as_ref()
        .map(|c| template_field(&config_path, c))
        .transpose()?
        .flatten()
    {
        (
            text,
            ChatTemplateSource::TokenizerConfig(config_path.clone()),
        )
    } else {
        (
            fallback_template(tokenizer),
            ChatTemplateSource::MistralFallback,
        )
    };

    let token = |field: &str, default: &str| -> Result<String> {
        match &config {
            Some(c) => Ok(token_text(&config_path, c, field)?.unwrap_or_else(|| default.into())),
            None => Ok(default.into()),
        }
    };
    let (bos_token, eos_token) = (
        token("bos_token", DEFAULT_BOS_TOKEN)?,
        token("eos_token", DEFAULT_EOS_TOKEN)?,
    );
    compile(text, source, dir, bos_token, eos_token)
}

/// Compiles `text`; a template that does not compile is an error naming
/// the file it came from (`dir` for the built-in fallback).
fn compile(
    text: String,
    source: ChatTemplateSource,
    dir: &Path,
    bos_token: String,
    eos_token: String,
) -> Result<ModelChatTemplate> {
    let template = ChatTemplate::new(text.clone()).map_err(|e| LoadError::ChatTemplate {
        path: match &source {
            ChatTemplateSource::JinjaFile(p)
            | ChatTemplateSource::TokenizerConfig(p)
            | ChatTemplateSource::Gguf(p) => p.clone(),
            ChatTemplateSource::MistralFallback => dir.to_path_buf(),
        },
        source: e,
    })?;
    Ok(ModelChatTemplate {
        template,
        source,
        text,
        bos_token,
        eos_token,
    })
}

/// The chat template of the GGUF file `path` (`tokenizer.chat_template`,
/// else Mistral's format), with its BOS/EOS texts from the token list.
fn gguf_chat_template(path: &Path, tokenizer: &Tokenizer) -> Result<ModelChatTemplate> {
    let gguf = crate::gguf::GgufFile::open(path)?;
    let meta = gguf.metadata();
    let (text, source) = match meta.str(crate::gguf::CHAT_TEMPLATE_KEY)? {
        Some(text) => (
            text.to_owned(),
            ChatTemplateSource::Gguf(path.to_path_buf()),
        ),
        None => (
            fallback_template(tokenizer),
            ChatTemplateSource::MistralFallback,
        ),
    };
    let token = |key: &str, default: &str| -> Result<String> {
        Ok(crate::gguf::token_text(meta, key)?.unwrap_or_else(|| default.to_owned()))
    };
    let (bos_token, eos_token) = (
        token("tokenizer.ggml.bos_token_id", DEFAULT_BOS_TOKEN)?,
        token("tokenizer.ggml.eos_token_id", DEFAULT_EOS_TOKEN)?,
    );
    compile(text, source, path, bos_token, eos_token)
}

/// The Mistral format that fits `tokenizer` (see the module notes).
pub fn fallback_template(tokenizer: &Tokenizer) -> String {
    let Some(inst) = tokenizer.token_to_id("[INST]") else {
        return mistral_v1_template();
    };
    if !tokenizer.get_added_vocabulary().is_special_token("[INST]") {
        return mistral_v1_template();
    }
    // Does the text right after a special token get the `▁` prefix?
    let encode = |text: &str| {
        tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    };
    let word = encode("Hello");
    let mut prefixed = vec![inst];
    prefixed.extend_from_slice(&word);
    let space_after_inst = encode("[INST]Hello") != prefixed;
    mistral_v3_template(space_after_inst)
}

/// Reads `tokenizer_config.json` if it exists.
fn read_config(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| LoadError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn invalid(path: &Path, field: &str, reason: &str) -> LoadError {
    LoadError::InvalidField {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// `chat_template`: a string, or a list of named templates ("default" used).
fn template_field(path: &Path, config: &Value) -> Result<Option<String>> {
    const FIELD: &str = "chat_template";
    match config.get(FIELD) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(items)) => {
            for item in items {
                let name = item.get("name").and_then(Value::as_str);
                let template = item.get("template").and_then(Value::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => return Ok(Some(t.to_string())),
                    (Some(_), Some(_)) => {}
                    _ => {
                        return Err(invalid(
                            path,
                            FIELD,
                            "list items must be {\"name\": string, \"template\": string}",
                        ))
                    }
                }
            }
            Err(invalid(
                path,
                FIELD,
                "a list of named templates without one named \"default\"",
            ))
        }
        Some(_) => Err(invalid(
            path,
            FIELD,
            "expected a string or a list of named templates",
        )),
    }
}

/// `bos_token` / `eos_token` as text: `"<s>"` or `{"content": "<s>"}`.
fn token_text(path: &Path, config: &Value, field: &str) -> Result<Option<String>> {
    match config.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(invalid(path, field, "object without a string `content`")),
        },
        Some(_) => Err(invalid(
            path,
            field,
            "expected a token string or {\"content\": ...}",
        )),
    }
}
