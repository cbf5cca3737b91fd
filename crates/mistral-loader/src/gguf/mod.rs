//! GGUF files (llama.cpp's single-file format), loaded directly.
//!
//! Design notes:
//! - A model path is a GGUF model when it is a `.gguf` file, or a directory
//!   without `config.json` that holds exactly one `.gguf` file
//!   ([`find_gguf`]). `load_model`, `load_tokenizer`, `load_special_tokens`
//!   and `load_chat_template` all accept such paths, so callers need not
//!   care which format a model comes in.
//! - [`GgufFile`] parses the file (bounds-checked, memory-mapped);
//!   [`gguf_config`] turns its metadata into a `MistralConfig`;
//!   [`GgufWeights`] hands its tensors to the model under Hugging Face
//!   names (Q4_0, Q4_1, Q8_0 and Q4_K kept quantized exactly as MLX affine
//!   group-32 matrices, other types dequantized or refused by name);
//!   [`gguf_tokenizer`] rebuilds the tokenizer from the metadata; the chat
//!   template is `tokenizer.chat_template`.
//! - Sharded GGUF (`-00001-of-00002.gguf`) is not supported; a directory
//!   with several GGUF files is an error asking to name one.

mod config;
mod dequant;
mod ggml_type;
mod metadata;
mod names;
mod reader;
mod tokenizer;
mod weights;

use std::path::{Path, PathBuf};

pub use config::gguf_config;
pub use ggml_type::GgmlType;
pub use metadata::{MetaValue, Metadata};
pub(crate) use names::gguf_name;
pub use reader::{GgufFile, TensorInfo};
pub(crate) use tokenizer::adds_bos;
pub use tokenizer::{gguf_tokenizer, tokenizer_json};
pub use weights::GgufWeights;

use crate::error::{LoadError, Result};
use crate::safetensors_files::CONFIG_FILE;
use crate::special_tokens::SpecialTokens;

/// The file extension of GGUF files.
pub const GGUF_EXTENSION: &str = "gguf";

/// Metadata key of the chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

fn is_gguf_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(GGUF_EXTENSION))
}

/// The GGUF file `path` names: `path` itself if it is a `.gguf` file, the
/// one `.gguf` file of a directory without `config.json`; `None` for
/// anything else (a Hugging Face directory, or a path that does not exist).
pub fn find_gguf(path: &Path) -> Result<Option<PathBuf>> {
    if path.is_file() {
        return Ok(is_gguf_name(path).then(|| path.to_path_buf()));
    }
    if !path.is_dir() || path.join(CONFIG_FILE).exists() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_gguf_name(p))
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(LoadError::InvalidField {
            path: path.to_path_buf(),
            field: "(directory)".to_owned(),
            reason: format!(
                "holds {n} GGUF files ({}); pass the one to load as --model / the path",
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// The BOS/EOS ids of a GGUF file: `tokenizer.ggml.bos_token_id`, and as
/// end of generation `eos_token_id`, `eot_token_id` and `eom_token_id`
/// (llama.cpp stops on each).
pub fn special_tokens(meta: &Metadata) -> Result<SpecialTokens> {
    let mut eos = Vec::new();
    for key in ["eos", "eot", "eom"] {
        if let Some(id) = meta.int::<u32>(&format!("tokenizer.ggml.{key}_token_id"))? {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
    }
    Ok(SpecialTokens {
        bos: meta.int::<u32>("tokenizer.ggml.bos_token_id")?,
        eos,
    })
}

/// The text of token `id_key`'s token, for chat templates.
pub fn token_text(meta: &Metadata, id_key: &str) -> Result<Option<String>> {
    let Some(id) = meta.int::<usize>(id_key)? else {
        return Ok(None);
    };
    let tokens = meta.array("tokenizer.ggml.tokens")?.unwrap_or(&[]);
    match tokens.get(id) {
        Some(MetaValue::String(s)) => Ok(Some(s.clone())),
        _ => Err(meta.invalid(id_key, format!("{id} is not a token id"))),
    }
}
