//! Mistral 4's fields (`model_type: "mistral4"`, Mistral Large 3):
//! multi-head latent attention and DeepSeek-V3-style experts, read into
//! [`LatentConfig`] beside the common fields, with mlx-lm's
//! `mistral4.py` defaults; errors name the field.

use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigError;

/// The fields of a `mistral4` config beyond the common ones.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LatentConfig {
    /// Rank of the query compression (`q_a_proj`/`q_b_proj`); `None`: a
    /// plain `q_proj`.
    #[serde(default)]
    pub q_lora_rank: Option<i32>,
    /// Rank of the compressed keys and values (the latent the cache holds).
    pub kv_lora_rank: i32,
    /// Per-head width of the rotated part of queries and keys.
    pub qk_rope_head_dim: i32,
    /// Per-head width of the unrotated part of queries and keys.
    pub qk_nope_head_dim: i32,
    /// Per-head width of the values.
    pub v_head_dim: i32,
    /// Whether RoPE rotates adjacent pairs (default true).
    #[serde(default)]
    pub rope_interleave: Option<bool>,
    /// Width of each routed expert's hidden layer.
    pub moe_intermediate_size: i32,
    /// Number of routed experts (`None`: every layer dense).
    #[serde(default)]
    pub n_routed_experts: Option<i32>,
    /// Number of shared experts (their widths added into one SwiGLU).
    #[serde(default)]
    pub n_shared_experts: Option<i32>,
    /// Experts each token is routed to.
    pub num_experts_per_tok: i32,
    /// What the chosen experts' weights are multiplied by.
    pub routed_scaling_factor: f64,
    /// Whether the chosen experts' weights are normalized to sum to 1.
    pub norm_topk_prob: bool,
    /// Groups the experts are split into for routing.
    pub n_group: i32,
    /// Groups a token's experts may come from.
    pub topk_group: i32,
    /// Layers before this one are dense.
    pub first_k_dense_replace: i32,
}

impl LatentConfig {
    /// The fields of the config `json`, for a `mistral4` model.
    pub(crate) fn from_value(json: &Value) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(json).map_err(|err| {
            let mut field = err.path().to_string();
            let source = err.into_inner();
            if matches!(field.as_str(), "" | "." | "?") {
                // A missing field is reported at the root: name it.
                let text = source.to_string();
                if let Some(name) = text
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.split('`').next())
                {
                    field = name.to_owned();
                }
            }
            ConfigError::Field { field, source }
        })
    }

    /// Per-head width of queries and keys.
    pub fn qk_head_dim(&self) -> i32 {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// The attention's softmax scale: `qk_head_dim^-0.5` times YaRN's
    /// `mscale_all_dim` factor squared (mlx-lm's `apply_yarn_mscale`), from
    /// the config's `rope_parameters`.
    pub fn softmax_scale(&self, rope_parameters: Option<&Value>) -> f32 {
        let scale = f64::from(self.qk_head_dim()).powf(-0.5);
        let Some(p) = rope_parameters.filter(|p| p.is_object()) else {
            return scale as f32;
        };
        let kind = crate::rope_config::rope_type(p);
        let all_dim = p
            .get("mscale_all_dim")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let factor = p.get("factor").and_then(Value::as_f64).unwrap_or(1.0);
        if kind == "default" || all_dim == 0.0 || factor <= 1.0 {
            return scale as f32;
        }
        let s = 0.1 * all_dim * factor.ln() + 1.0;
        (scale * s * s) as f32
    }

    /// Whether layer `index` has experts.
    pub fn has_experts(&self, index: usize) -> bool {
        self.n_routed_experts.is_some() && index as i64 >= i64::from(self.first_k_dense_replace)
    }

    /// Checks ranges; errors name the field.
    pub(crate) fn validate(&self, heads: i32) -> Result<(), ConfigError> {
        let positive = |field: &str, v: i32| {
            if v <= 0 {
                Err(ConfigError::invalid(
                    field,
                    format!("must be positive, got {v}"),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(r) = self.q_lora_rank {
            positive("q_lora_rank", r)?;
        }
        positive("kv_lora_rank", self.kv_lora_rank)?;
        positive("qk_rope_head_dim", self.qk_rope_head_dim)?;
        positive("qk_nope_head_dim", self.qk_nope_head_dim)?;
        positive("v_head_dim", self.v_head_dim)?;
        positive("moe_intermediate_size", self.moe_intermediate_size)?;
        positive("num_experts_per_tok", self.num_experts_per_tok)?;
        positive("n_group", self.n_group)?;
        positive("topk_group", self.topk_group)?;
        if self.qk_rope_head_dim % 2 != 0 {
            return Err(ConfigError::invalid(
                "qk_rope_head_dim",
                format!("{} must be even for RoPE", self.qk_rope_head_dim),
            ));
        }
        if self.first_k_dense_replace < 0 {
            return Err(ConfigError::invalid(
                "first_k_dense_replace",
                "must not be negative",
            ));
        }
        for (field, width) in [
            ("qk_nope_head_dim", self.qk_head_dim()),
            ("v_head_dim", self.qk_nope_head_dim.max(self.v_head_dim)),
        ] {
            if heads
                .checked_mul(width)
                .and_then(|w| w.checked_mul(32))
                .is_none()
            {
                return Err(ConfigError::invalid(
                    field,
                    "times num_attention_heads overflows a 32-bit dimension",
                ));
            }
        }
        if let Some(shared) = self.n_shared_experts {
            positive("n_shared_experts", shared)?;
        }
        if let Some(experts) = self.n_routed_experts {
            positive("n_routed_experts", experts)?;
            if experts % self.n_group != 0 {
                return Err(ConfigError::invalid(
                    "n_group",
                    format!(
                        "{} does not divide n_routed_experts {experts}",
                        self.n_group
                    ),
                ));
            }
            if self.topk_group > self.n_group {
                return Err(ConfigError::invalid(
                    "topk_group",
                    format!("{} is more than n_group {}", self.topk_group, self.n_group),
                ));
            }
            if self.n_group > 1 && experts / self.n_group < 2 {
                return Err(ConfigError::invalid(
                    "n_group",
                    "grouped routing needs at least 2 experts per group",
                ));
            }
            let reachable = experts / self.n_group * self.topk_group;
            if self.num_experts_per_tok > reachable {
                return Err(ConfigError::invalid(
                    "num_experts_per_tok",
                    format!(
                        "{} is more than the {reachable} experts of topk_group groups",
                        self.num_experts_per_tok
                    ),
                ));
            }
        }
        if !(self.routed_scaling_factor.is_finite()) {
            return Err(ConfigError::invalid(
                "routed_scaling_factor",
                "must be a finite number",
            ));
        }
        Ok(())
    }
}
