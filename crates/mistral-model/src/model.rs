//! [`MistralModel`] (embedding, decoder layers, final norm: the `model.*`
//! tensors) and [`Mistral`] (that plus the LM head), after mlx-lm llama.py's
//! `LlamaModel` and `Model`. [`Mistral`] implements `mlx_rs_core`'s
//! [`LanguageModel`](mlx_rs_core::LanguageModel), so `Generate` can drive it.
//!
//! The model holds no KV state: [`Mistral::forward`] takes one cache slot per
//! layer and fills an empty list itself (each cache told its layer's window).
//! Masks come from the caches (which know their key layout), built once per
//! distinct (cache offset, mask kind) in a call and shared by the layers. A
//! batch of rows of different lengths gives a placeholder there: its cache
//! makes each row's own mask when the layer attends through it
//! (`KeyValueCache::attend`).

use mlx_rs::{Array, Dtype};
use mlx_rs_core::cpu_fused::CpuFast;
use mlx_rs_core::{AttentionMask, KeyValueCache, SdpaMask};

use crate::block::DecoderLayer;
use crate::checkpoint_names::WrapperNames;
use crate::config::MistralConfig;
use crate::embedding::Embedding;
use crate::error::ModelError;
use crate::linear::Linear;
use crate::norm::RmsNorm;
use crate::tensor_parallel::TensorParallel;
use crate::weights::{WeightOptions, WeightSource, Weights};

/// The decoder body: `embed_tokens`, `layers`, `norm`.
#[derive(Debug, Clone)]
pub struct MistralModel {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
}

impl MistralModel {
    /// Builds the body from the module `weights` points at (`model`).
    pub fn new(cfg: &MistralConfig, weights: &mut Weights) -> Result<Self, ModelError> {
        let embed_tokens = Embedding::new(
            cfg,
            &mut weights.pp("embed_tokens"),
            cfg.vocab_size,
            cfg.hidden_size,
        )?;
        let mut layer_weights = weights.pp("layers");
        let layers = (0..cfg.num_hidden_layers as usize)
            .map(|i| DecoderLayer::new(cfg, &mut layer_weights.pp(i), i))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = RmsNorm::new(
            &mut weights.pp("norm"),
            cfg.hidden_size,
            cfg.rms_norm_eps as f32,
        )?;
        Ok(MistralModel {
            embed_tokens,
            layers,
            norm,
        })
    }

    /// Bytes held by the body's weights, in their dtypes.
    pub fn weight_bytes(&self) -> u64 {
        self.embed_tokens.weight_bytes()
            + self.norm.weight_bytes()
            + self
                .layers
                .iter()
                .map(DecoderLayer::weight_bytes)
                .sum::<u64>()
    }

    /// The token embedding.
    pub fn embed_tokens(&self) -> &Embedding {
        &self.embed_tokens
    }

    /// The decoder layers.
    pub fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// Runs `tokens` `[B, L]` (integer ids) through the body, giving the
    /// normalized hidden states `[B, L, hidden_size]`. `cache` holds one slot
    /// per layer; an empty list is filled with new caches first, a `None`
    /// slot runs that layer without cache (positions from 0).
    ///
    /// Ids are not checked here, since that would force evaluating `tokens`
    /// every step; an id outside the table is clamped into it (see
    /// [`Embedding::forward`]), never read out of bounds.
    /// [`Mistral::forward`] checks them.
    pub fn forward<C: KeyValueCache>(
        &self,
        tokens: &Array,
        cache: &mut Vec<Option<C>>,
    ) -> Result<Array, ModelError> {
        let h = self.forward_rows(tokens, cache)?;
        Ok(h.reshape(&[tokens.dim(0), tokens.dim(1), -1])?)
    }

    /// [`forward`](Self::forward) giving the hidden states as rows,
    /// `[B * L, hidden_size]`: the layers run on rows, so that no matrix
    /// product adds a flatten and an unflatten to the graph (see
    /// [`Attention::forward_rows`](crate::Attention::forward_rows)).
    pub fn forward_rows<C: KeyValueCache>(
        &self,
        tokens: &Array,
        cache: &mut Vec<Option<C>>,
    ) -> Result<Array, ModelError> {
        if tokens.ndim() != 2 || !mlx_rs_core::is_integer(tokens.dtype()) {
            return Err(ModelError::Input(format!(
                "tokens must be an integer array [batch, length], got {:?} of shape {:?}",
                tokens.dtype(),
                tokens.shape()
            )));
        }
        let len = tokens.dim(1);
        if len == 0 || tokens.dim(0) == 0 {
            return Err(ModelError::Input(format!(
                "tokens must not be empty, got shape {:?}",
                tokens.shape()
            )));
        }
        if cache.is_empty() {
            cache.extend(
                self.layers
                    .iter()
                    .map(|layer| Some(C::with_window(layer.attention_mask().window()))),
            );
        }
        if cache.len() != self.layers.len() {
            return Err(ModelError::Input(format!(
                "{} cache slots for {} layers",
                cache.len(),
                self.layers.len()
            )));
        }
        let batch = tokens.dim(0);
        let mut h = self
            .embed_tokens
            .forward(&tokens.reshape(&[batch * len])?)?;
        let mut masks: Vec<((i32, AttentionMask), SdpaMask)> = Vec::new();
        for (layer, slot) in self.layers.iter().zip(cache.iter_mut()) {
            let key = (
                slot.as_ref().map_or(0, |c| c.offset()),
                layer.attention_mask(),
            );
            let mask = match masks.iter().find(|(k, _)| *k == key) {
                Some((_, m)) => m.clone(),
                None => {
                    // The cache knows where each stored key sits (a rotating
                    // cache does not keep them in positional order).
                    let m = match slot.as_ref() {
                        Some(c) => c.mask(len, key.1.window())?,
                        None => key.1.create(len, 0)?,
                    };
                    masks.push((key, m.clone()));
                    m
                }
            };
            h = layer.forward_rows(&h, (batch, len), &mask, slot.as_mut())?;
        }
        self.norm.forward(&h)
    }
}

/// With `transpose_f32`, a tied float32 head gets its own transposed copy
/// of the embedding table (more memory, a much faster head on the CPU; see
/// `WeightOptions::transpose_f32`).
fn tied_head_transposed(
    model: &MistralModel,
    options: WeightOptions,
) -> Result<Option<Linear>, ModelError> {
    let head = model
        .embed_tokens
        .weight()
        .transposed_f32(options.transpose_f32)?;
    head.map(|weight| Linear::from_parts(weight, None))
        .transpose()
}

/// A Mistral-family causal language model.
#[derive(Debug, Clone)]
pub struct Mistral {
    config: MistralConfig,
    model: MistralModel,
    lm_head: Option<Linear>,
    /// Whether the CPU runs our fused kernels (the load's option).
    cpu_fast: CpuFast,
}

impl Mistral {
    /// Validates `cfg` and builds the model, taking its tensors (Hugging Face
    /// names) from `weights`. Floating-point tensors (dense weights, norms,
    /// quantization scales and biases) are cast to `dtype` when given and
    /// keep their stored dtype otherwise; packed quantized weights are never
    /// cast. With tied embeddings a stray `lm_head.*` is taken and dropped;
    /// `rotary_emb.inv_freq` tensors are dropped as well (mlx-lm's sanitize).
    pub fn new(
        cfg: &MistralConfig,
        weights: &mut impl WeightSource,
        dtype: Option<Dtype>,
    ) -> Result<Self, ModelError> {
        let options = WeightOptions {
            dtype,
            ..WeightOptions::default()
        };
        Self::with_options(cfg, weights, options)
    }

    /// Like [`new`](Self::new), with every [`WeightOptions`] (e.g.
    /// quantized matrices dequantized at load).
    pub fn with_options(
        cfg: &MistralConfig,
        weights: &mut impl WeightSource,
        options: WeightOptions,
    ) -> Result<Self, ModelError> {
        Self::build(cfg, weights, options, None)
    }

    /// Like [`with_options`](Self::with_options), this process holding its
    /// share of the model split over `parallel`'s ranks (see
    /// [`TensorParallel`](crate::TensorParallel)); every rank runs the same calls with the
    /// same inputs and gets the whole model's logits.
    pub fn with_tensor_parallel(
        cfg: &MistralConfig,
        weights: &mut impl WeightSource,
        options: WeightOptions,
        parallel: TensorParallel,
    ) -> Result<Self, ModelError> {
        Self::build(cfg, weights, options, Some(parallel))
    }

    /// The model from `weights`, seen with the text model's names where
    /// the config is a wrapper's (see [`crate::checkpoint_names`]).
    fn build(
        cfg: &MistralConfig,
        weights: &mut dyn WeightSource,
        options: WeightOptions,
        parallel: Option<TensorParallel>,
    ) -> Result<Self, ModelError> {
        let mut renamed;
        let source: &mut dyn WeightSource = if cfg.wrapper.is_some() {
            renamed = WrapperNames { source: weights };
            &mut renamed
        } else {
            weights
        };
        let root = Weights::with_options(source, options);
        match parallel {
            Some(parallel) => Self::assemble(cfg, root.with_tensor_parallel(parallel)),
            None => Self::assemble(cfg, root),
        }
    }

    fn assemble(cfg: &MistralConfig, mut root: Weights) -> Result<Self, ModelError> {
        cfg.validate()?;
        let options = root.options();
        let model = MistralModel::new(cfg, &mut root.pp("model"))?;
        let mut head = root.pp("lm_head");
        let lm_head = if cfg.tie_word_embeddings {
            for name in ["weight", "scales", "biases"] {
                let _ = head.take(name);
            }
            tied_head_transposed(&model, options)?
        } else {
            Some(Linear::new(
                cfg,
                &mut head,
                cfg.hidden_size,
                cfg.vocab_size,
                false,
            )?)
        };
        Ok(Mistral {
            config: cfg.clone(),
            model,
            lm_head,
            cpu_fast: options.cpu_fast,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &MistralConfig {
        &self.config
    }

    /// Whether the model runs our fused CPU kernels (its load option).
    pub fn cpu_fast(&self) -> CpuFast {
        self.cpu_fast
    }

    /// Bytes held by the weights (every matrix, norm, scale and bias) as
    /// loaded, in their dtypes.
    pub fn weight_bytes(&self) -> u64 {
        let mut total = self.model.weight_bytes();
        if let Some(head) = &self.lm_head {
            total += head.weight_bytes();
        }
        total
    }

    /// Bytes of weights read to compute one token: all of them except the
    /// embedding table, of which one row is read, unless the table is also
    /// the (tied) output head. Divided by a memory bandwidth, the least time a
    /// decode step can take.
    pub fn weight_bytes_per_token(&self) -> u64 {
        let table = self.model.embed_tokens.weight_bytes();
        let row = table / (self.config.vocab_size.max(1) as u64);
        match &self.lm_head {
            Some(_) => self.weight_bytes() - table + row,
            None => self.weight_bytes(),
        }
    }

    /// The decoder body.
    pub fn model(&self) -> &MistralModel {
        &self.model
    }

    /// Number of decoder layers (= cache slots).
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// One new cache per layer, each told its layer's sliding window.
    pub fn new_cache<C: KeyValueCache>(&self) -> Vec<Option<C>> {
        self.model
            .layers
            .iter()
            .map(|layer| Some(C::with_window(layer.attention_mask().window())))
            .collect()
    }

    /// Logits `[B, L, vocab_size]` for `tokens` `[B, L]` (integer ids)
    /// following what `cache` holds; see [`MistralModel::forward`]. An id
    /// outside `0..vocab_size` is an error naming it (this evaluates
    /// `tokens`; the generator, which checks its prompt once, skips it).
    pub fn forward<C: KeyValueCache>(
        &self,
        tokens: &Array,
        cache: &mut Vec<Option<C>>,
    ) -> Result<Array, ModelError> {
        if mlx_rs_core::is_integer(tokens.dtype()) {
            mlx_rs_core::check_token_ids(tokens, self.config.vocab_size)
                .map_err(|e| ModelError::Input(e.to_string()))?;
        }
        self.forward_unchecked(tokens, cache)
    }

    /// [`forward`](Self::forward) without the host-side check of the ids
    /// (out-of-range ids are clamped, see [`Embedding::forward`]).
    pub fn forward_unchecked<C: KeyValueCache>(
        &self,
        tokens: &Array,
        cache: &mut Vec<Option<C>>,
    ) -> Result<Array, ModelError> {
        let h = self.model.forward_rows(tokens, cache)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.model.embed_tokens.as_linear(&h)?,
        };
        Ok(logits.reshape(&[tokens.dim(0), tokens.dim(1), -1])?)
    }
}
