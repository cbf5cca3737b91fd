//! [`DecoderLayer`]: one pre-norm transformer block,
//! `h = x + attn(norm(x)); out = h + mlp(norm(h))`.

use mlx_rs::Array;
use mlx_rs_core::{AttentionMask, KeyValueCache, SdpaMask};

use crate::attention::Attention;
use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::mlp::Mlp;
use crate::norm::RmsNorm;
use crate::rows::on_rows;
use crate::weights::Weights;

/// A decoder layer (`model.layers.N`).
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
    mask: AttentionMask,
}

impl DecoderLayer {
    /// Bytes held by the layer's weights.
    pub fn weight_bytes(&self) -> u64 {
        self.input_layernorm.weight_bytes()
            + self.self_attn.weight_bytes()
            + self.post_attention_layernorm.weight_bytes()
            + self.mlp.weight_bytes()
    }

    /// Builds layer `index` from the module `weights` points at
    /// (`model.layers.{index}`).
    pub fn new(
        cfg: &MistralConfig,
        weights: &mut Weights,
        index: usize,
    ) -> Result<Self, ModelError> {
        let eps = cfg.rms_norm_eps as f32;
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(
                &mut weights.pp("input_layernorm"),
                cfg.hidden_size,
                eps,
            )?,
            self_attn: Attention::new(cfg, &mut weights.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                &mut weights.pp("post_attention_layernorm"),
                cfg.hidden_size,
                eps,
            )?,
            mlp: Mlp::new(cfg, &mut weights.pp("mlp"))?,
            mask: cfg.attention_mask(index),
        })
    }

    /// The kind of attention mask this layer uses.
    pub fn attention_mask(&self) -> AttentionMask {
        self.mask
    }

    /// Applies the layer to `x` `[B, L, hidden_size]` with the mask built for
    /// [`attention_mask`](Self::attention_mask) at the cache's offset.
    pub fn forward<C: KeyValueCache>(
        &self,
        x: &Array,
        mask: &SdpaMask,
        cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        on_rows(x, "layer input", |rows, shape| {
            self.forward_rows(rows, shape, mask, cache)
        })
    }

    /// [`forward`](Self::forward) on the rows of `x`, `[B * L, hidden_size]`
    /// for a batch of `(B, L)` (see [`Attention::forward_rows`]).
    pub fn forward_rows<C: KeyValueCache>(
        &self,
        x: &Array,
        shape: (i32, i32),
        mask: &SdpaMask,
        cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        let r =
            self.self_attn
                .forward_rows(&self.input_layernorm.forward(x)?, shape, mask, cache)?;
        let h = x.add(&r)?;
        let r = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        Ok(h.add(&r)?)
    }
}
