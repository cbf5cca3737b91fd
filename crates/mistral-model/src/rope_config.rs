//! The RoPE settings of a config: `rope_scaling` (or transformers 5's
//! `rope_parameters`) read into [`RopeScaling`], with mlx-lm's defaults
//! (`rope_utils.initialize_rope`); errors name the field.

use mlx_rs_core::RopeScaling;
use serde_json::Value;

use crate::error::ConfigError;

/// RoPE types this crate implements.
pub const SUPPORTED_ROPE_TYPES: [&str; 6] = [
    "default",
    "linear",
    "dynamic",
    "llama3",
    "yarn",
    "deepseek_yarn",
];

/// The scaling block in use (field name and block): `rope_scaling` if set,
/// else `rope_parameters`.
pub(crate) fn scaling_block<'a>(
    rope_scaling: Option<&'a Value>,
    rope_parameters: Option<&'a Value>,
) -> Option<(&'static str, &'a Value)> {
    match (rope_scaling, rope_parameters) {
        (Some(s), _) if !s.is_null() => Some(("rope_scaling", s)),
        (_, Some(p)) if !p.is_null() => Some(("rope_parameters", p)),
        _ => None,
    }
}

/// The RoPE type a block names (`type` or `rope_type`, default `"default"`).
pub(crate) fn rope_type(block: &Value) -> &str {
    block
        .get("type")
        .or_else(|| block.get("rope_type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
}

/// A number of the block: `None` when absent, an error when not a number.
fn number(field: &str, block: &Value, key: &str) -> Result<Option<f64>, ConfigError> {
    match block.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            ConfigError::invalid(
                format!("{field}.{key}"),
                format!("must be a number, got {v}"),
            )
        }),
    }
}

/// A positive finite number of the block, or `default` when absent.
fn positive(
    field: &str,
    block: &Value,
    key: &str,
    default: Option<f64>,
) -> Result<f32, ConfigError> {
    let name = format!("{field}.{key}");
    let value = number(field, block, key)?
        .or(default)
        .ok_or_else(|| ConfigError::invalid(&name, "is required for this RoPE type"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(ConfigError::invalid(
            name,
            format!("must be a positive finite number, got {value}"),
        ));
    }
    Ok(value as f32)
}

/// The scaling of `block` (found under `field`); `max_position_embeddings`
/// is the config's, which dynamic scaling needs.
pub(crate) fn parse_scaling(
    field: &str,
    block: &Value,
    max_position_embeddings: Option<i32>,
) -> Result<RopeScaling, ConfigError> {
    if !block.is_object() {
        return Err(ConfigError::invalid(
            field,
            format!("must be an object, got {block}"),
        ));
    }
    let kind = rope_type(block);
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: positive(field, block, "factor", None)?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: positive(field, block, "factor", None)?,
            max_position_embeddings: max_position_embeddings.ok_or_else(|| {
                ConfigError::invalid(
                    "max_position_embeddings",
                    "is required by dynamic RoPE scaling",
                )
            })?,
        },
        "llama3" => {
            let low = positive(field, block, "low_freq_factor", Some(1.0))?;
            let high = positive(field, block, "high_freq_factor", Some(4.0))?;
            if low == high {
                return Err(ConfigError::invalid(
                    format!("{field}.high_freq_factor"),
                    format!("must differ from low_freq_factor ({low})"),
                ));
            }
            RopeScaling::Llama3 {
                factor: positive(field, block, "factor", None)?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: positive(
                    field,
                    block,
                    "original_max_position_embeddings",
                    Some(8192.0),
                )?,
            }
        }
        "yarn" | "deepseek_yarn" => {
            let non_negative = |key: &str, default: f64| -> Result<f32, ConfigError> {
                let value = number(field, block, key)?.unwrap_or(default);
                if !(value.is_finite() && value >= 0.0) {
                    return Err(ConfigError::invalid(
                        format!("{field}.{key}"),
                        format!("must be a finite number >= 0, got {value}"),
                    ));
                }
                Ok(value as f32)
            };
            RopeScaling::Yarn {
                factor: positive(field, block, "factor", None)?,
                original_max_position_embeddings: positive(
                    field,
                    block,
                    "original_max_position_embeddings",
                    Some(4096.0),
                )?,
                beta_fast: positive(field, block, "beta_fast", Some(32.0))?,
                beta_slow: positive(field, block, "beta_slow", Some(1.0))?,
                mscale: non_negative("mscale", 1.0)?,
                mscale_all_dim: non_negative("mscale_all_dim", 0.0)?,
            }
        }
        other => {
            return Err(ConfigError::unsupported(
                field,
                format!("RoPE type {other:?} (supported: {SUPPORTED_ROPE_TYPES:?})"),
            ))
        }
    })
}
