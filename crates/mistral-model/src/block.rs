//! [`DecoderLayer`]: one pre-norm transformer block,
//! `h = x + attn(norm(x)); out = h + ffn(norm(h))`, whose feed-forward part
//! ([`FeedForward`]) is a dense SwiGLU (`mlp`) or a sparse mixture of
//! experts (`block_sparse_moe`, Mixtral), as the config says.

use mlx_rs::Array;
use mlx_rs_core::{AttentionMask, KeyValueCache, SdpaMask};

use crate::attention::Attention;
use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::latent_attention::LatentAttention;
use crate::mlp::Mlp;
use crate::moe::SparseMoe;
use crate::norm::RmsNorm;
use crate::rows::on_rows;
use crate::weights::Weights;

/// A decoder layer (`model.layers.N`).
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    ffn: FeedForward,
    mask: AttentionMask,
}

/// The attention part of a decoder layer (one per layer: the variants'
/// sizes do not matter).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum SelfAttention {
    /// Grouped-query attention (every family but Mistral 4).
    Grouped(Attention),
    /// Multi-head latent attention (Mistral 4).
    Latent(LatentAttention),
}

impl SelfAttention {
    /// The part `cfg` asks for, from the module `weights` points at
    /// (`model.layers.N.self_attn`).
    pub fn new(cfg: &MistralConfig, weights: &mut Weights) -> Result<Self, ModelError> {
        Ok(match &cfg.latent {
            Some(latent) => SelfAttention::Latent(LatentAttention::new(cfg, latent, weights)?),
            None => SelfAttention::Grouped(Attention::new(cfg, weights)?),
        })
    }

    /// Bytes held by its weights.
    pub fn weight_bytes(&self) -> u64 {
        match self {
            SelfAttention::Grouped(a) => a.weight_bytes(),
            SelfAttention::Latent(a) => a.weight_bytes(),
        }
    }

    /// Applies it to rows `[B * L, hidden_size]` of a batch `(B, L)`, for a
    /// layer of sliding `window` (see [`Attention::forward`]).
    pub fn forward_rows<C: KeyValueCache>(
        &self,
        x: &Array,
        shape: (i32, i32),
        mask: &SdpaMask,
        window: Option<i32>,
        cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        match self {
            SelfAttention::Grouped(a) => a.forward_rows(x, shape, mask, window, cache),
            SelfAttention::Latent(a) => a.forward_rows(x, shape, mask, window, cache),
        }
    }

    /// `residual + self.forward_rows(x, ...)`, the sum fused where the
    /// part can ([`Attention::forward_rows_plus`]).
    pub fn forward_rows_plus<C: KeyValueCache>(
        &self,
        x: &Array,
        residual: &Array,
        shape: (i32, i32),
        mask: &SdpaMask,
        window: Option<i32>,
        cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        match self {
            SelfAttention::Grouped(a) => {
                a.forward_rows_plus(x, residual, shape, mask, window, cache)
            }
            SelfAttention::Latent(a) => {
                Ok(residual.add(&a.forward_rows(x, shape, mask, window, cache)?)?)
            }
        }
    }
}

/// The feed-forward part of a decoder layer (one per layer: the variants'
/// sizes do not matter).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum FeedForward {
    /// A dense SwiGLU block (`mlp`).
    Dense(Mlp),
    /// A sparse mixture of experts (`block_sparse_moe`, Mistral 4's `mlp`).
    Experts(SparseMoe),
}

impl FeedForward {
    /// The part `cfg` asks for layer `index`, from the module `weights`
    /// points at (`model.layers.N`).
    pub fn new(
        cfg: &MistralConfig,
        weights: &mut Weights,
        index: usize,
    ) -> Result<Self, ModelError> {
        if let Some(latent) = cfg.latent.as_ref().filter(|l| l.has_experts(index)) {
            let moe = SparseMoe::latent(cfg, latent, &mut weights.pp("mlp"))?;
            return Ok(FeedForward::Experts(moe));
        }
        Ok(match cfg.experts() {
            Some(_) => {
                FeedForward::Experts(SparseMoe::new(cfg, &mut weights.pp("block_sparse_moe"))?)
            }
            None => FeedForward::Dense(Mlp::new(cfg, &mut weights.pp("mlp"))?),
        })
    }

    /// Bytes held by its weights.
    pub fn weight_bytes(&self) -> u64 {
        match self {
            FeedForward::Dense(mlp) => mlp.weight_bytes(),
            FeedForward::Experts(moe) => moe.weight_bytes(),
        }
    }

    /// Applies it to rows `[N, hidden_size]`.
    pub fn forward(&self, x: &Array) -> Result<Array, ModelError> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward(x),
            FeedForward::Experts(moe) => moe.forward(x),
        }
    }

    /// `residual + self.forward(x)`, the sum fused where the part can
    /// ([`Mlp::forward_plus`]).
    pub fn forward_plus(&self, x: &Array, residual: &Array) -> Result<Array, ModelError> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward_plus(x, residual),
            FeedForward::Experts(moe) => Ok(residual.add(&moe.forward(x)?)?),
        }
    }
}

impl DecoderLayer {
    /// Bytes held by the layer's weights.
    pub fn weight_bytes(&self) -> u64 {
        self.input_layernorm.weight_bytes()
            + self.self_attn.weight_bytes()
            + self.post_attention_layernorm.weight_bytes()
            + self.ffn.weight_bytes()
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
            self_attn: SelfAttention::new(cfg, &mut weights.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                &mut weights.pp("post_attention_layernorm"),
                cfg.hidden_size,
                eps,
            )?,
            ffn: FeedForward::new(cfg, weights, index)?,
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
        let h = self.self_attn.forward_rows_plus(
            &self.input_layernorm.forward(x)?,
            x,
            shape,
            mask,
            self.mask.window(),
            cache,
        )?;
        self.ffn
            .forward_plus(&self.post_attention_layernorm.forward(&h)?, &h)
    }
}
