//! From a checkpoint's `config.json` to the text model's config: what
//! [`MistralConfig::from_json_str`](crate::MistralConfig::from_json_str)
//! does to the JSON before reading its fields.
//!
//! - `mistral3` (Mistral Small 3.x, Magistral, Devstral, Ministral 3: a
//!   vision-language wrapper): the model is `text_config`; the wrapper's
//!   quantization block (module paths under `language_model.`) and token
//!   ids carry over, and the head is untied unless said otherwise (as
//!   mlx-lm's `mistral3.py`).
//! - `ministral3`: tied head and all-full `layer_types` where absent (as
//!   mlx-lm's `ministral3.py`).
//! - `mistral4`: `head_dim` is `qk_nope_head_dim + qk_rope_head_dim` where
//!   absent (as mlx-lm's `mistral4.py`).
//! - `quantization_config` with `quant_method: "fp8"` (FP8 checkpoints) is
//!   not an MLX quantization block: it moves aside (the loader dequantizes
//!   the FP8 tensors it finds); any other `quant_method` is refused by name.

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Wrapper model types whose `text_config` holds the language model.
pub const WRAPPER_MODEL_TYPES: [&str; 1] = ["mistral3"];

/// What the preprocessing found out of the JSON's fields.
#[derive(Debug, Default)]
pub(crate) struct Unwrapped {
    /// The wrapper model type, if the config was one.
    pub wrapper: Option<String>,
    /// The FP8 `quantization_config`, if any.
    pub fp8: Option<Value>,
}

/// Rewrites `json` (a parsed `config.json`) into the text model's config.
pub(crate) fn unwrap_config(json: &mut Value) -> Result<Unwrapped, ConfigError> {
    let Some(root) = json.as_object_mut() else {
        return Ok(Unwrapped::default());
    };
    let mut found = Unwrapped::default();
    let model_type = root
        .get("model_type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(wrapper) = model_type.filter(|t| WRAPPER_MODEL_TYPES.contains(&t.as_str())) {
        let text = unwrap_text_config(root, &wrapper)?;
        *root = text;
        found.wrapper = Some(wrapper);
    }
    found.fp8 = take_fp8(root)?;
    if root.get("model_type").and_then(Value::as_str) == Some("mistral4")
        && !root.contains_key("head_dim")
    {
        // mlx-lm: the query/key head is the unrotated and rotated parts.
        let width = |k: &str| root.get(k).and_then(Value::as_i64);
        if let (Some(nope), Some(rope)) = (width("qk_nope_head_dim"), width("qk_rope_head_dim")) {
            root.insert(
                "head_dim".to_owned(),
                Value::from(nope.saturating_add(rope)),
            );
        }
    }
    if root.get("model_type").and_then(Value::as_str) == Some("ministral3") {
        root.entry("tie_word_embeddings")
            .or_insert(Value::Bool(true));
        if !root.contains_key("layer_types") {
            if let Some(n) = root
                .get("num_hidden_layers")
                .and_then(Value::as_u64)
                .filter(|&n| n <= 100_000)
            {
                let full = Value::String("full_attention".to_owned());
                root.insert(
                    "layer_types".to_owned(),
                    Value::Array(vec![full; n as usize]),
                );
            }
        }
    }
    Ok(found)
}

/// The wrapper's `text_config`, completed from the wrapper's own fields.
fn unwrap_text_config(
    root: &mut Map<String, Value>,
    wrapper: &str,
) -> Result<Map<String, Value>, ConfigError> {
    let mut text = match root.remove("text_config") {
        Some(Value::Object(text)) => text,
        Some(other) => {
            return Err(ConfigError::invalid(
                "text_config",
                format!(
                    "must be an object (the language model of a {wrapper:?} config), got {other}"
                ),
            ))
        }
        None => {
            return Err(ConfigError::invalid(
                "text_config",
                format!("is missing: a {wrapper:?} config holds its language model there"),
            ))
        }
    };
    text.entry("tie_word_embeddings")
        .or_insert(Value::Bool(false));
    text.entry("model_type")
        .or_insert(Value::String("mistral".to_owned()));
    for key in ["bos_token_id", "eos_token_id"] {
        if let Some(v) = root.get(key) {
            text.entry(key).or_insert_with(|| v.clone());
        }
    }
    for key in ["quantization", "quantization_config"] {
        if let Some(block) = root.remove(key) {
            text.entry(key).or_insert_with(|| text_quantization(block));
        }
    }
    Ok(text)
}

/// A wrapper's quantization block with its per-module entries renamed to
/// the text model's paths (`language_model.model.x` -> `model.x`); entries
/// of the vision tower and projector, never loaded, are dropped.
fn text_quantization(block: Value) -> Value {
    let Value::Object(map) = block else {
        return block;
    };
    let renamed = map
        .into_iter()
        .filter(|(key, _)| !key.contains("vision_tower") && !key.contains("multi_modal_projector"))
        .map(|(key, value)| {
            let key = match key.strip_prefix("model.language_model.") {
                Some(rest) => format!("model.{rest}"),
                None => key
                    .strip_prefix("language_model.")
                    .map_or(key.clone(), str::to_owned),
            };
            (key, value)
        })
        .collect();
    Value::Object(renamed)
}

/// Removes an FP8 `quantization_config` and returns it; refuses other
/// `quant_method`s by name.
fn take_fp8(root: &mut Map<String, Value>) -> Result<Option<Value>, ConfigError> {
    let method = root
        .get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .cloned();
    match method {
        None => Ok(None),
        Some(Value::String(m)) if m == "fp8" => Ok(root.remove("quantization_config")),
        Some(other) => Err(ConfigError::unsupported(
            "quantization_config.quant_method",
            format!("{other} (supported: MLX affine quantization, \"fp8\")"),
        )),
    }
}
