//! Reading `config.json`.
//!
//! Design notes: this crate does not know `MistralConfig` (it lives in
//! `mistral-model`, written in parallel). It returns the file's text,
//! already checked to be a JSON object, so the caller's
//! `MistralConfig::from_json_str` only deals with field-level problems, and
//! every I/O or syntax error here names the `config.json` path.

use std::path::Path;

use crate::error::{LoadError, Result};
use crate::safetensors_files::require_config;

/// Reads `dir/config.json` and checks that it is a JSON object; returns its
/// text (for `MistralConfig::from_json_str`).
pub fn read_config_str(dir: impl AsRef<Path>) -> Result<String> {
    let path = require_config(dir.as_ref())?;
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: path.clone(),
            source,
        })?;
    if !value.is_object() {
        return Err(LoadError::InvalidField {
            path,
            field: "(top level)".to_string(),
            reason: "config.json must be a JSON object".to_string(),
        });
    }
    Ok(text)
}

/// Reads `dir/config.json` as a JSON object value.
pub fn load_config(dir: impl AsRef<Path>) -> Result<serde_json::Value> {
    let dir = dir.as_ref();
    let text = read_config_str(dir)?;
    serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: dir.join(crate::safetensors_files::CONFIG_FILE),
        source,
    })
}
