//! The tokenizer and the BOS/EOS token ids.
//!
//! Design notes:
//! - `tokenizer.json` is loaded by the `tokenizers` crate (built with
//!   `fancy-regex`, no Oniguruma).
//! - BOS/EOS ids come from up to three files, all optional:
//!   `generation_config.json` and `config.json` (`bos_token_id`,
//!   `eos_token_id`: an integer, a list of integers, or null), and
//!   `tokenizer_config.json` (`bos_token`, `eos_token`: a string or an
//!   `{"content": ...}` object, resolved through the tokenizer's vocabulary,
//!   added tokens included).
//! - BOS: the first one found, in that order of files. EOS: the union of all
//!   three, in that order, without repeats; generation should stop on any of
//!   them (what mlx-lm and `transformers` generation do).
//! - A file that exists but is invalid JSON, or a field of the wrong type, is
//!   an error naming the file and field, not silently ignored.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{LoadError, Result};
use crate::safetensors_files::{check_model_dir, CONFIG_FILE};
pub use crate::special_tokens::SpecialTokens;

/// File name of the tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File name of the generation defaults.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// File name of the tokenizer's settings.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Mistral's own tokenizer file.
pub const TEKKEN_FILE: &str = "tekken.json";

/// Mistral's own tokenizer file of `dir`, if it has one: `tekken.json`,
/// else a SentencePiece `tokenizer.model.vN` (the highest version when there
/// are several).
pub fn mistral_tokenizer_file(dir: &Path) -> Option<PathBuf> {
    let tekken = dir.join(TEKKEN_FILE);
    if tekken.is_file() {
        return Some(tekken);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let suffix = name.strip_prefix("tokenizer.model.v")?;
            let version = mistral_text::sentencepiece::file_version(&p).ok()?;
            Some(((version, suffix.to_owned()), p))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
}

/// Reads Mistral's own tokenizer file at `path`: tekken when its name ends
/// in `.json`, else SentencePiece.
pub fn load_mistral_tokenizer(path: &Path) -> Result<mistral_text::MistralTokenizer> {
    let refused = |message: String| LoadError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        let tekken =
            mistral_text::tekken::Tekken::from_file(path).map_err(|e| refused(e.to_string()))?;
        return Ok(tekken.into());
    }
    let spm = mistral_text::sentencepiece::SentencePiece::from_file(path)
        .map_err(|e| refused(e.to_string()))?;
    Ok(spm.into())
}

/// Loads `dir/tokenizer.json`, else Mistral's own tokenizer file
/// ([`mistral_tokenizer_file`]: `tekken.json` through
/// [`mistral_text::tekken::Tekken::to_tokenizer`], `tokenizer.model.vN`
/// through [`mistral_text::sentencepiece::SentencePiece::to_tokenizer`]),
/// or the tokenizer in a GGUF file's metadata when `dir` is a GGUF model
/// (see [`crate::gguf::find_gguf`]).
pub fn load_tokenizer(dir: impl AsRef<Path>) -> Result<mistral_text::Tokenizer> {
    let dir = dir.as_ref();
    if let Some(file) = crate::gguf::find_gguf(dir)? {
        let gguf = crate::gguf::GgufFile::open(file)?;
        return crate::gguf::gguf_tokenizer(gguf.metadata()).map(mistral_text::Tokenizer::new);
    }
    check_model_dir(dir)?;
    let path = dir.join(TOKENIZER_FILE);
    if !path.is_file() {
        if let Some(own) = mistral_tokenizer_file(dir) {
            let converted = match load_mistral_tokenizer(&own)? {
                mistral_text::MistralTokenizer::Tekken(t) => t.to_tokenizer(),
                mistral_text::MistralTokenizer::SentencePiece(t) => t.to_tokenizer(),
            };
            return converted.map_err(|e| LoadError::Tokenizer {
                path: own,
                message: e.message,
            });
        }
        return Err(LoadError::MissingFile {
            path,
            what: "tokenizer",
        });
    }
    mistral_text::Tokenizer::from_file(&path).map_err(|e| LoadError::Tokenizer {
        path,
        message: e.message,
    })
}

/// Checks that every id the tokenizer of model `dir` can produce (its
/// vocabulary and added tokens) has a row in a model of `vocab_size`
/// tokens; the error names the tokenizer's file. A model may have more rows
/// than the tokenizer has tokens (padded vocabularies), not fewer.
pub fn check_tokenizer_fits(
    tokenizer: &mistral_text::Tokenizer,
    vocab_size: i32,
    dir: impl AsRef<Path>,
) -> Result<()> {
    let dir = dir.as_ref();
    let needed = tokenizer
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&id| id as usize + 1);
    if needed <= vocab_size.max(0) as usize {
        return Ok(());
    }
    let path = match crate::gguf::find_gguf(dir)? {
        Some(file) => file,
        None if !dir.join(TOKENIZER_FILE).is_file() => {
            mistral_tokenizer_file(dir).unwrap_or_else(|| dir.join(TOKENIZER_FILE))
        }
        None => dir.join(TOKENIZER_FILE),
    };
    Err(LoadError::TokenizerVocab {
        path,
        tokenizer_vocab: needed,
        model_vocab: vocab_size,
    })
}

/// Reads the BOS/EOS ids of the model in `dir` (see the module docs for the
/// files and their precedence; for a GGUF model, its metadata: see
/// [`crate::gguf::special_tokens`]). `tokenizer` resolves token strings from
/// `tokenizer_config.json`; without one, that file is not read.
pub fn load_special_tokens(
    dir: impl AsRef<Path>,
    tokenizer: Option<&Tokenizer>,
) -> Result<SpecialTokens> {
    let dir = dir.as_ref();
    if let Some(file) = crate::gguf::find_gguf(dir)? {
        return crate::gguf::special_tokens(crate::gguf::GgufFile::open(file)?.metadata());
    }
    check_model_dir(dir)?;
    let mut bos = None;
    let mut eos = Vec::new();
    let config = read_optional_json(&dir.join(CONFIG_FILE))?;
    // Ids past the model's vocabulary would index outside its embedding.
    let vocab_size = config
        .as_ref()
        .and_then(|config| config.get("vocab_size").and_then(Value::as_u64));
    let generation = read_optional_json(&dir.join(GENERATION_CONFIG_FILE))?;

    for (name, json) in [(GENERATION_CONFIG_FILE, generation), (CONFIG_FILE, config)] {
        let path = dir.join(name);
        let Some(json) = json else {
            continue;
        };
        let bos_ids = ids_in_vocab(&path, &json, "bos_token_id", vocab_size)?;
        if bos.is_none() {
            bos = bos_ids.and_then(|v| v.first().copied());
        }
        if let Some(ids) = ids_in_vocab(&path, &json, "eos_token_id", vocab_size)? {
            push_unique(&mut eos, ids);
        }
    }

    let path = dir.join(TOKENIZER_CONFIG_FILE);
    let Some(tokenizer) = tokenizer else {
        return Ok(SpecialTokens { bos, eos });
    };
    if let Some(json) = read_optional_json(&path)? {
        if bos.is_none() {
            bos = token_field(&path, &json, "bos_token", tokenizer)?;
        }
        if let Some(id) = token_field(&path, &json, "eos_token", tokenizer)? {
            push_unique(&mut eos, vec![id]);
        }
    }
    // A folder as Mistral publishes it names them nowhere but in its
    // tokenizer file (tekken.json, tokenizer.model.vN): `<s>` and `</s>`.
    if eos.is_empty() && mistral_tokenizer_file(dir).is_some() {
        bos = bos.or_else(|| tokenizer.token_to_id("<s>"));
        eos.extend(tokenizer.token_to_id("</s>"));
    }
    Ok(SpecialTokens { bos, eos })
}

/// Appends the ids not yet in `into`.
fn push_unique(into: &mut Vec<u32>, ids: Vec<u32>) {
    for id in ids {
        if !into.contains(&id) {
            into.push(id);
        }
    }
}

/// Reads a JSON object file; `Ok(None)` when it does not exist.
fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoadError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let value: Value = serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    if !value.is_object() {
        return Err(LoadError::InvalidField {
            path: path.to_path_buf(),
            field: "(top level)".to_string(),
            reason: "expected a JSON object".to_string(),
        });
    }
    Ok(Some(value))
}

fn invalid(path: &Path, field: &str, reason: String) -> LoadError {
    LoadError::InvalidField {
        path: PathBuf::from(path),
        field: field.to_string(),
        reason,
    }
}

/// One token id from a JSON number.
fn id_from(path: &Path, field: &str, v: &Value) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                path,
                field,
                format!("expected a token id (0..2^32), found {v}"),
            )
        })
}

/// An id field that may be an integer, a list of integers, or null/absent.
fn ids_field(path: &Path, json: &Value, field: &str) -> Result<Option<Vec<u32>>> {
    match json.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| id_from(path, field, v))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(v) => Ok(Some(vec![id_from(path, field, v)?])),
    }
}

/// [`ids_field`], each id checked to be below `vocab_size` when known.
fn ids_in_vocab(
    path: &Path,
    json: &Value,
    field: &str,
    vocab_size: Option<u64>,
) -> Result<Option<Vec<u32>>> {
    let ids = ids_field(path, json, field)?;
    if let (Some(ids), Some(vocab)) = (&ids, vocab_size) {
        if let Some(bad) = ids.iter().find(|&&id| u64::from(id) >= vocab) {
            return Err(invalid(
                path,
                field,
                format!(
                    "token id {bad} is outside the model's vocabulary \
                     (vocab_size {vocab} in {CONFIG_FILE})"
                ),
            ));
        }
    }
    Ok(ids)
}

/// A token string field (`"<s>"` or `{"content": "<s>", ...}`), resolved to its id.
fn token_field(
    path: &Path,
    json: &Value,
    field: &str,
    tokenizer: &Tokenizer,
) -> Result<Option<u32>> {
    let content = match json.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => s.as_str(),
            _ => {
                return Err(invalid(
                    path,
                    field,
                    "object without a string `content`".to_string(),
                ))
            }
        },
        Some(v) => {
            return Err(invalid(
                path,
                field,
                format!("expected a token string or {{\"content\": ...}}, found {v}"),
            ))
        }
    };
    tokenizer
        .token_to_id(content)
        .map(Some)
        .ok_or_else(|| LoadError::UnknownToken {
            path: path.to_path_buf(),
            field: field.to_string(),
            token: content.to_string(),
        })
}
