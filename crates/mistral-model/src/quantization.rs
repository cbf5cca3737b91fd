//! The `"quantization"` block of mlx-community configs (also accepted under
//! `"quantization_config"`, which mlx-lm writes with the same content).
//!
//! Shape: global `group_size`, `bits` and optionally `mode` (only `"affine"`,
//! MLX's default, is supported), plus per-module entries keyed by module path
//! (`"model.layers.0.mlp.down_proj"`) holding either their own
//! `{"group_size", "bits"}` or `false` for a module left unquantized.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Bit widths MLX's affine quantization supports.
pub const SUPPORTED_BITS: [i32; 6] = [2, 3, 4, 5, 6, 8];
/// Group sizes MLX's affine quantization supports.
pub const SUPPORTED_GROUP_SIZES: [i32; 3] = [32, 64, 128];

/// Parameters of one quantized module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantParams {
    /// Number of consecutive input elements sharing one scale and bias.
    pub group_size: i32,
    /// Bits per element.
    pub bits: i32,
}

impl QuantParams {
    /// Checks the values against what MLX supports; `field` names the config
    /// entry in errors.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if !SUPPORTED_BITS.contains(&self.bits) {
            return Err(ConfigError::invalid(
                format!("{field}.bits"),
                format!("{} is not one of {SUPPORTED_BITS:?}", self.bits),
            ));
        }
        if !SUPPORTED_GROUP_SIZES.contains(&self.group_size) {
            return Err(ConfigError::invalid(
                format!("{field}.group_size"),
                format!(
                    "{} is not one of {SUPPORTED_GROUP_SIZES:?}",
                    self.group_size
                ),
            ));
        }
        Ok(())
    }
}

/// A per-module entry of the quantization block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerQuantization {
    /// The module is quantized with these parameters.
    Quantized(QuantParams),
    /// The module is stored unquantized (`false` in the config).
    NotQuantized,
}

/// The parsed quantization block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct QuantizationConfig {
    /// Default parameters for modules without their own entry.
    pub default: QuantParams,
    /// The `mode` field, if given (only `"affine"` is supported).
    pub mode: Option<String>,
    /// Per-module entries, keyed by module path.
    pub layers: BTreeMap<String, LayerQuantization>,
}

impl QuantizationConfig {
    /// How the module at `path` (e.g. `model.layers.0.self_attn.q_proj`) is
    /// stored: `None` means unquantized.
    pub fn for_module(&self, path: &str) -> Option<QuantParams> {
        match self.layers.get(path) {
            Some(LayerQuantization::Quantized(p)) => Some(*p),
            Some(LayerQuantization::NotQuantized) => None,
            None => Some(self.default),
        }
    }

    /// Checks every bit width, group size and the mode; `field` is the name
    /// of the block (`quantization` or `quantization_config`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        self.default.validate(field)?;
        if let Some(mode) = &self.mode {
            if mode != "affine" {
                return Err(ConfigError::unsupported(
                    format!("{field}.mode"),
                    format!("quantization mode {mode:?} (only \"affine\" is)"),
                ));
            }
        }
        for (path, entry) in &self.layers {
            if let LayerQuantization::Quantized(p) = entry {
                p.validate(&format!("{field}.{path}"))?;
            }
        }
        Ok(())
    }
}

fn int_field(map: &Map<String, Value>, key: &str, default: i32, path: &str) -> Result<i32, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| format!("`{path}.{key}` must be an integer, got {v}")),
    }
}

impl TryFrom<Map<String, Value>> for QuantizationConfig {
    type Error = String;

    fn try_from(map: Map<String, Value>) -> Result<Self, String> {
        let default = QuantParams {
            group_size: int_field(&map, "group_size", 64, "quantization")?,
            bits: int_field(&map, "bits", 4, "quantization")?,
        };
        let mode = match map.get("mode") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(format!("`quantization.mode` must be a string, got {v}")),
        };
        let mut layers = BTreeMap::new();
        for (key, value) in &map {
            if matches!(key.as_str(), "group_size" | "bits" | "mode") {
                continue;
            }
            let entry = match value {
                Value::Bool(false) => LayerQuantization::NotQuantized,
                Value::Bool(true) => LayerQuantization::Quantized(default),
                Value::Object(m) => {
                    let path = format!("quantization.{key}");
                    if let Some(Value::String(mode)) = m.get("mode") {
                        if mode != "affine" {
                            return Err(format!(
                                "`{path}.mode`: quantization mode {mode:?} is not supported"
                            ));
                        }
                    }
                    LayerQuantization::Quantized(QuantParams {
                        group_size: int_field(m, "group_size", default.group_size, &path)?,
                        bits: int_field(m, "bits", default.bits, &path)?,
                    })
                }
                other => {
                    return Err(format!(
                        "`quantization.{key}`: expected a module entry (an object or false), \
                         got {other} (only MLX affine quantization is supported)"
                    ))
                }
            };
            layers.insert(key.clone(), entry);
        }
        Ok(QuantizationConfig {
            default,
            mode,
            layers,
        })
    }
}
