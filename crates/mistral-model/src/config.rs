//! [`MistralConfig`]: the Hugging Face / mlx-community `config.json` of the
//! Mistral family.
//!
//! Covers Mistral-7B v0.1 (`sliding_window: 4096`), v0.2/v0.3
//! (`sliding_window: null`, `rope_theta: 1e6`), Nemo/Small (explicit
//! `head_dim`), Llama-style configs, Ministral 3 (`ministral3`: YaRN, Llama
//! 4 query scaling), Mixtral (`num_local_experts`), the `mistral3` wrapper
//! (its `text_config`, see [`crate::config_json`]), optional `layer_types`,
//! RoPE scalings ([`crate::rope_config`]), MLX quantization blocks and FP8
//! checkpoints. Parsing ([`MistralConfig::from_json_str`]) only reads;
//! [`MistralConfig::validate`] checks ranges and consistency and names the
//! offending field. Defaults follow transformers' `MistralConfig` and mlx-lm.

use mlx_rs_core::RopeScaling;

use crate::config_mistral4::LatentConfig;
use crate::rope_config::{parse_scaling, scaling_block};
use serde::Deserialize;
use serde_json::Value;

use mlx_rs_core::AttentionMask;

use crate::error::ConfigError;
use crate::quantization::{QuantParams, QuantizationConfig};

/// Model types this crate implements (the text model's; a `mistral3`
/// wrapper's `text_config` is read as its model, see [`WRAPPER_MODEL_TYPES`](crate::WRAPPER_MODEL_TYPES)).
pub const SUPPORTED_MODEL_TYPES: [&str; 6] = [
    "mistral",
    "llama",
    "ministral",
    "ministral3",
    "mixtral",
    "mistral4",
];

/// `eos_token_id`: a single id or a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EosTokenId {
    /// One end-of-sequence id.
    Single(i32),
    /// Several end-of-sequence ids.
    Many(Vec<i32>),
}

impl EosTokenId {
    /// All ids as a list.
    pub fn ids(&self) -> Vec<i32> {
        match self {
            EosTokenId::Single(id) => vec![*id],
            EosTokenId::Many(ids) => ids.clone(),
        }
    }
}

/// One entry of `layer_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// Causal attention over the whole history (`"full_attention"`).
    FullAttention,
    /// Causal attention over the last `sliding_window` positions
    /// (`"sliding_attention"`).
    SlidingAttention,
}

fn default_model_type() -> String {
    "mistral".to_owned()
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
/// RoPE base used when the config gives none (transformers' default).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// The model configuration (`config.json`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MistralConfig {
    /// `model_type`; one of [`SUPPORTED_MODEL_TYPES`] (default `"mistral"`).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: i32,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: i32,
    /// Number of decoder layers.
    pub num_hidden_layers: i32,
    /// Number of query heads.
    pub num_attention_heads: i32,
    /// Number of key/value heads (default: `num_attention_heads`).
    #[serde(default)]
    pub num_key_value_heads: Option<i32>,
    /// Per-head width (default: `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<i32>,
    /// Vocabulary size.
    pub vocab_size: i32,
    /// Longest supported context (informational).
    #[serde(default)]
    pub max_position_embeddings: Option<i32>,
    /// RMSNorm epsilon (default 1e-6).
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base; see [`rope_theta`](Self::rope_theta) for the value used.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Whether RoPE rotates adjacent pairs (mlx-lm's `rope_traditional`,
    /// default false: rotate halves, as Hugging Face checkpoints expect).
    #[serde(default)]
    pub rope_traditional: bool,
    /// `rope_scaling`: absent/null, or a block of one of
    /// [`SUPPORTED_ROPE_TYPES`](crate::rope_config::SUPPORTED_ROPE_TYPES).
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    /// transformers v5's `rope_parameters` (`{"rope_theta": .., "rope_type": ..}`),
    /// used where `rope_theta` / `rope_scaling` are absent; the same RoPE
    /// types as `rope_scaling` are supported.
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    /// Sliding-window size, `null` for full attention.
    #[serde(default)]
    pub sliding_window: Option<i32>,
    /// Per-layer attention kinds (`"full_attention"` / `"sliding_attention"`).
    /// When absent, every layer uses `sliding_window` if set.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Whether the LM head reuses the token embedding (default false).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether q/k/v/o projections have biases (default false).
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases (default false).
    #[serde(default)]
    pub mlp_bias: bool,
    /// Beginning-of-sequence token id.
    #[serde(default)]
    pub bos_token_id: Option<i32>,
    /// End-of-sequence token id(s).
    #[serde(default)]
    pub eos_token_id: Option<EosTokenId>,
    /// The mlx-community `"quantization"` block.
    #[serde(default)]
    pub quantization: Option<QuantizationConfig>,
    /// The same block under the name `"quantization_config"`.
    #[serde(default)]
    pub quantization_config: Option<QuantizationConfig>,
    /// Experts per mixture-of-experts layer (`mixtral`).
    #[serde(default)]
    pub num_local_experts: Option<i32>,
    /// Experts each token is routed to (`mixtral`, default 2).
    #[serde(default)]
    pub num_experts_per_tok: Option<i32>,
    /// The wrapper this text config came from (`"mistral3"`), if any; its
    /// checkpoint names the text model's tensors under a prefix.
    #[serde(skip)]
    pub wrapper: Option<String>,
    /// An FP8 checkpoint's `quantization_config` (`quant_method: "fp8"`),
    /// if any: its FP8 tensors are dequantized at load.
    #[serde(skip)]
    pub fp8: Option<Value>,
    /// A `mistral4` model's latent attention and expert fields.
    #[serde(skip)]
    pub latent: Option<LatentConfig>,
}

fn positive(field: &str, value: i32) -> Result<(), ConfigError> {
    if value <= 0 {
        return Err(ConfigError::invalid(
            field,
            format!("must be positive, got {value}"),
        ));
    }
    Ok(())
}

/// `value * other` (other given by `other_name`) must fit in an i32.
fn product_fits(field: &str, other_name: &str, value: i32, other: i32) -> Result<(), ConfigError> {
    if value.checked_mul(other).is_none() {
        return Err(ConfigError::invalid(
            field,
            format!(
                "{value} times {other_name} ({other}) overflows a 32-bit dimension; \
                 no layer can have that size"
            ),
        ));
    }
    Ok(())
}

fn positive_finite(field: &str, value: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value > 0.0) {
        return Err(ConfigError::invalid(
            field,
            format!("must be a positive finite number, got {value}"),
        ));
    }
    Ok(())
}

impl MistralConfig {
    /// Parses `config.json` text. Call [`validate`](Self::validate) before use
    /// ([`crate::Mistral::new`] does).
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let mut json: Value = serde_json::from_str(text)?;
        let unwrapped = crate::config_json::unwrap_config(&mut json)?;
        let in_text_config = unwrapped.wrapper.is_some();
        let prefixed = |field: String| {
            if in_text_config {
                format!("text_config.{field}")
            } else {
                field
            }
        };
        let latent = match json.get("model_type").and_then(Value::as_str) {
            Some("mistral4") => Some(LatentConfig::from_value(&json).map_err(|e| match e {
                ConfigError::Field { field, source } => ConfigError::Field {
                    field: prefixed(field),
                    source,
                },
                other => other,
            })?),
            _ => None,
        };
        let config: Self = serde_path_to_error::deserialize(json).map_err(|err| {
            let field = prefixed(err.path().to_string());
            let data_error = err.inner().classify() == serde_json::error::Category::Data;
            match field.as_str() {
                "" | "." | "?" => ConfigError::Json(err.into_inner()),
                _ if !data_error => ConfigError::Json(err.into_inner()),
                _ => ConfigError::Field {
                    field,
                    source: err.into_inner(),
                },
            }
        })?;
        Ok(MistralConfig {
            wrapper: unwrapped.wrapper,
            fp8: unwrapped.fp8,
            latent,
            ..config
        })
    }

    /// Parses and validates `config.json` text.
    pub fn from_json_str_validated(text: &str) -> Result<Self, ConfigError> {
        let cfg = Self::from_json_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of key/value heads.
    pub fn num_key_value_heads(&self) -> i32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> i32 {
        self.head_dim.unwrap_or_else(|| {
            self.hidden_size
                .checked_div(self.num_attention_heads)
                .unwrap_or(0)
        })
    }

    /// End-of-sequence ids (empty when not given).
    pub fn eos_token_ids(&self) -> Vec<i32> {
        self.eos_token_id
            .as_ref()
            .map(EosTokenId::ids)
            .unwrap_or_default()
    }

    /// The quantization block, under either name.
    pub fn quantization(&self) -> Option<&QuantizationConfig> {
        self.quantization
            .as_ref()
            .or(self.quantization_config.as_ref())
    }

    /// How the module at `path` (e.g. `model.layers.0.mlp.down_proj`) is
    /// stored: `None` means unquantized.
    pub fn quantization_for(&self, path: &str) -> Option<QuantParams> {
        self.quantization().and_then(|q| q.for_module(path))
    }

    /// The RoPE base: `rope_theta`, else `rope_parameters.rope_theta`, else
    /// [`DEFAULT_ROPE_THETA`].
    pub fn rope_theta(&self) -> f64 {
        if let (Some(_), Some(p)) = (&self.latent, &self.rope_parameters) {
            // mlx-lm's mistral4 takes the base from `rope_parameters` only.
            return p.get("rope_theta").and_then(Value::as_f64).unwrap_or(1e5);
        }
        self.rope_theta
            .or_else(|| {
                self.rope_parameters
                    .as_ref()
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(DEFAULT_ROPE_THETA)
    }

    /// The RoPE scaling to build the rotary embedding with (`None` for a
    /// block [`validate`](Self::validate) refuses).
    pub fn rope_scaling(&self) -> RopeScaling {
        self.parse_rope_scaling().unwrap_or(RopeScaling::None)
    }

    fn parse_rope_scaling(&self) -> Result<RopeScaling, ConfigError> {
        match scaling_block(self.rope_scaling.as_ref(), self.rope_parameters.as_ref()) {
            None => Ok(RopeScaling::None),
            Some((field, block)) => parse_scaling(field, block, self.max_position_embeddings),
        }
    }

    /// Llama 4's query scaling, which `ministral3` and `mistral4` use: queries at
    /// position `p` are multiplied by `1 + beta * ln(1 + floor(p / n))`;
    /// `(beta, n)` from `rope_parameters.llama_4_scaling_beta` and
    /// `rope_parameters.original_max_position_embeddings`. `None` for other
    /// model types.
    pub fn query_scaling(&self) -> Result<Option<(f32, i32)>, ConfigError> {
        if self.model_type != "ministral3" && self.model_type != "mistral4" {
            return Ok(None);
        }
        let params = self.rope_parameters.as_ref();
        let get = |key: &str| {
            params.and_then(|p| p.get(key)).ok_or_else(|| {
                ConfigError::invalid(
                    format!("rope_parameters.{key}"),
                    "is required by ministral3 (Llama 4 query scaling)",
                )
            })
        };
        let beta = get("llama_4_scaling_beta")?;
        let beta = beta.as_f64().filter(|b| b.is_finite()).ok_or_else(|| {
            ConfigError::invalid(
                "rope_parameters.llama_4_scaling_beta",
                format!("must be a finite number, got {beta}"),
            )
        })?;
        let n = get("original_max_position_embeddings")?;
        let n = n
            .as_f64()
            .filter(|n| *n >= 1.0 && *n <= f64::from(i32::MAX) && n.fract() == 0.0)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "rope_parameters.original_max_position_embeddings",
                    format!("must be a positive integer, got {n}"),
                )
            })?;
        Ok(Some((beta as f32, n as i32)))
    }

    /// `(experts, experts per token)` of a mixture-of-experts model
    /// (`num_local_experts` set), else `None`.
    pub fn experts(&self) -> Option<(i32, i32)> {
        self.num_local_experts
            .map(|n| (n, self.num_experts_per_tok.unwrap_or(2)))
    }

    /// The kind of attention of layer `layer`.
    pub fn layer_type(&self, layer: usize) -> LayerType {
        let named = self
            .layer_types
            .as_ref()
            .and_then(|types| types.get(layer))
            .map(String::as_str);
        match (named, self.sliding_window) {
            (Some("sliding_attention"), _) => LayerType::SlidingAttention,
            (Some(_), _) => LayerType::FullAttention,
            (None, Some(_)) => LayerType::SlidingAttention,
            (None, None) => LayerType::FullAttention,
        }
    }

    /// The attention mask kind of layer `layer`.
    pub fn attention_mask(&self, layer: usize) -> AttentionMask {
        match (self.layer_type(layer), self.sliding_window) {
            (LayerType::SlidingAttention, Some(w)) => AttentionMask::SlidingWindow(w),
            _ => AttentionMask::Causal,
        }
    }

    /// Checks ranges and consistency; the error names the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let type_field = match self.wrapper {
            Some(_) => "text_config.model_type",
            None => "model_type",
        };
        if !SUPPORTED_MODEL_TYPES.contains(&self.model_type.as_str()) {
            return Err(ConfigError::unsupported(
                type_field,
                format!(
                    "{:?} (supported: {SUPPORTED_MODEL_TYPES:?}, and \"mistral3\" around one)",
                    self.model_type
                ),
            ));
        }
        self.validate_experts()?;
        self.query_scaling()?;
        if let Some(latent) = &self.latent {
            latent.validate(self.num_attention_heads)?;
        }
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        positive("num_key_value_heads", self.num_key_value_heads())?;
        positive("vocab_size", self.vocab_size)?;
        if let Some(n) = self.max_position_embeddings {
            positive("max_position_embeddings", n)?;
        }
        match self.head_dim {
            Some(d) => positive("head_dim", d)?,
            None => {
                if self.hidden_size % self.num_attention_heads != 0 {
                    return Err(ConfigError::invalid(
                        "hidden_size",
                        format!(
                            "{} is not divisible by num_attention_heads {} (and head_dim is not given)",
                            self.hidden_size, self.num_attention_heads
                        ),
                    ));
                }
            }
        }
        if self.head_dim() % 2 != 0 {
            return Err(ConfigError::invalid(
                "head_dim",
                format!("{} must be even for RoPE", self.head_dim()),
            ));
        }
        // Layer shapes are products of these values in i32 (MLX's dimension
        // type): the projections' widths, and input widths times 32 for
        // quantized packing (`in * bits`, bits <= 8 < 32).
        product_fits(
            "head_dim",
            "num_attention_heads",
            self.num_attention_heads,
            self.head_dim(),
        )?;
        product_fits(
            "head_dim",
            "num_key_value_heads",
            self.num_key_value_heads(),
            self.head_dim(),
        )?;
        let q_width = self.num_attention_heads.saturating_mul(self.head_dim());
        for (field, width) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("head_dim", q_width),
        ] {
            product_fits(field, "32", width, 32)?;
        }
        if self.num_attention_heads % self.num_key_value_heads() != 0 {
            return Err(ConfigError::invalid(
                "num_key_value_heads",
                format!(
                    "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                    self.num_attention_heads,
                    self.num_key_value_heads()
                ),
            ));
        }
        positive_finite("rms_norm_eps", self.rms_norm_eps)?;
        positive_finite("rope_theta", self.rope_theta())?;
        self.validate_rope_scaling()?;
        if let Some(w) = self.sliding_window {
            positive("sliding_window", w)?;
        }
        self.validate_layer_types()?;
        if let Some(bos) = self.bos_token_id {
            if bos < 0 {
                return Err(ConfigError::invalid(
                    "bos_token_id",
                    format!("must not be negative, got {bos}"),
                ));
            }
        }
        if let Some(bad) = self.eos_token_ids().into_iter().find(|id| *id < 0) {
            return Err(ConfigError::invalid(
                "eos_token_id",
                format!("must not be negative, got {bad}"),
            ));
        }
        let vocab = i64::from(self.vocab_size);
        let outside = |id: i64| id >= vocab;
        if let Some(bos) = self.bos_token_id.filter(|&id| outside(id.into())) {
            return Err(ConfigError::invalid(
                "bos_token_id",
                format!("token id {bos} is outside the vocabulary (vocab_size {vocab})"),
            ));
        }
        if let Some(bad) = self
            .eos_token_ids()
            .into_iter()
            .find(|&id| outside(id.into()))
        {
            return Err(ConfigError::invalid(
                "eos_token_id",
                format!("token id {bad} is outside the vocabulary (vocab_size {vocab})"),
            ));
        }
        if let Some(q) = &self.quantization {
            q.validate("quantization")?;
        }
        if let Some(q) = &self.quantization_config {
            q.validate("quantization_config")?;
        }
        if let (Some(a), Some(b)) = (&self.quantization, &self.quantization_config) {
            if a != b {
                return Err(ConfigError::invalid(
                    "quantization_config",
                    "differs from `quantization`",
                ));
            }
        }
        Ok(())
    }

    fn validate_rope_scaling(&self) -> Result<(), ConfigError> {
        if let Some(theta) = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
        {
            if !theta.is_f64() && !theta.is_i64() && !theta.is_u64() {
                return Err(ConfigError::invalid(
                    "rope_parameters.rope_theta",
                    format!("must be a number, got {theta}"),
                ));
            }
        }
        self.parse_rope_scaling().map(|_| ())
    }

    fn validate_experts(&self) -> Result<(), ConfigError> {
        let is_moe = self.model_type == "mixtral";
        match (self.num_local_experts, is_moe) {
            (None, true) => {
                return Err(ConfigError::invalid(
                    "num_local_experts",
                    "is required for a mixture-of-experts model (mixtral)",
                ))
            }
            (Some(_), false) => {
                return Err(ConfigError::unsupported(
                    "num_local_experts",
                    format!("experts in a {:?} model", self.model_type),
                ))
            }
            _ => {}
        }
        if let Some((experts, per_token)) = self.experts() {
            positive("num_local_experts", experts)?;
            positive("num_experts_per_tok", per_token)?;
            if per_token > experts {
                return Err(ConfigError::invalid(
                    "num_experts_per_tok",
                    format!("{per_token} is more than num_local_experts {experts}"),
                ));
            }
            product_fits(
                "num_local_experts",
                "intermediate_size",
                experts,
                self.intermediate_size,
            )?;
        }
        Ok(())
    }

    fn validate_layer_types(&self) -> Result<(), ConfigError> {
        let Some(types) = &self.layer_types else {
            return Ok(());
        };
        if types.len() != self.num_hidden_layers as usize {
            return Err(ConfigError::invalid(
                "layer_types",
                format!(
                    "has {} entries, num_hidden_layers is {}",
                    types.len(),
                    self.num_hidden_layers
                ),
            ));
        }
        for (i, t) in types.iter().enumerate() {
            match t.as_str() {
                "full_attention" => {}
                "sliding_attention" if self.sliding_window.is_some() => {}
                "sliding_attention" => {
                    return Err(ConfigError::invalid(
                        format!("layer_types[{i}]"),
                        "\"sliding_attention\" needs `sliding_window` to be set",
                    ))
                }
                other => {
                    return Err(ConfigError::invalid(
                        format!("layer_types[{i}]"),
                        format!("{other:?} is not \"full_attention\" or \"sliding_attention\""),
                    ))
                }
            }
        }
        Ok(())
    }
}
