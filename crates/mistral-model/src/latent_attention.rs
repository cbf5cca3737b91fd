//! [`LatentAttention`]: Mistral 4's multi-head latent attention (mlx-lm
//! `mistral4.py`'s `Mistral4Attention`, after DeepSeek-V2/V3).
//!
//! Keys and values are compressed into one latent per position
//! (`kv_a_proj_with_mqa`: `kv_lora_rank` features, normalized, plus a shared
//! `qk_rope_head_dim`-wide rotated key). The cache holds only that: the
//! latent as "keys" `[B, 1, S, kv_lora_rank]` and the rotated key as
//! "values" `[B, 1, S, qk_rope_head_dim]`. `kv_b_proj`, which expands the
//! latent into per-head keys and values, is absorbed at load into
//! `embed_q` (`[heads, kv_lora_rank, qk_nope_head_dim]`, applied to the
//! queries) and `unembed_out` (`[heads, v_head_dim, kv_lora_rank]`, applied
//! to the attention output), as mlx-lm's sanitize does. A one-token step
//! attends over the latent directly, with the rotated parts' scores as an
//! additive mask; a longer input expands keys and values per head. That
//! math runs as the closure of `KeyValueCache::attend`, so a batch of rows
//! of different lengths runs it row by row over each row's own latents.

use mlx_rs::{
    ops::{broadcast_to, concatenate, dequantize, quantize, split_at_indices},
    Array, Dtype,
};
use mlx_rs_core::{initialize_rope, KeyValueCache, Positions, Rope, SdpaMask, StoredKv};

use crate::config::MistralConfig;
use crate::config_mistral4::LatentConfig;
use crate::error::ModelError;
use crate::linear::Linear;
use crate::norm::RmsNorm;
use crate::quantization::QuantParams;
use crate::query_scale::query_scale;
use crate::switch_linear::SwitchLinear;
use crate::weights::Weights;

/// RMSNorm epsilon of the latent and query-compression norms (mlx-lm's).
const LATENT_NORM_EPS: f32 = 1e-6;

/// The self-attention block of a Mistral 4 layer.
#[derive(Debug, Clone)]
pub struct LatentAttention {
    /// `q_proj`, or `q_a_proj` + `q_a_layernorm` + `q_b_proj`.
    queries: QueryProjection,
    kv_a_proj_with_mqa: Linear,
    kv_a_layernorm: RmsNorm,
    embed_q: SwitchLinear,
    unembed_out: SwitchLinear,
    o_proj: Linear,
    heads: i32,
    nope: i32,
    rope_dims: i32,
    rank: i32,
    v_dim: i32,
    scale: f32,
    rope: Rope,
    query_scaling: Option<(f32, i32)>,
}

#[derive(Debug, Clone)]
enum QueryProjection {
    Direct(Linear),
    Compressed(Linear, RmsNorm, Linear),
}

impl LatentAttention {
    /// Takes the block's tensors from the module `weights` points at
    /// (`model.layers.N.self_attn`): the absorbed `embed_q`/`unembed_out`,
    /// or `kv_b_proj`, absorbed here.
    pub fn new(
        cfg: &MistralConfig,
        latent: &LatentConfig,
        weights: &mut Weights,
    ) -> Result<Self, ModelError> {
        if weights.tensor_parallel().is_some() {
            return Err(ModelError::TensorParallel(
                "latent attention (mistral4) cannot be split over ranks yet".to_owned(),
            ));
        }
        let (dim, heads) = (cfg.hidden_size, cfg.num_attention_heads);
        let (nope, rope_dims, rank, v_dim) = (
            latent.qk_nope_head_dim,
            latent.qk_rope_head_dim,
            latent.kv_lora_rank,
            latent.v_head_dim,
        );
        let q_width = heads * (nope + rope_dims);
        let bias = cfg.attention_bias;
        let queries = match latent.q_lora_rank {
            None => QueryProjection::Direct(Linear::new(
                cfg,
                &mut weights.pp("q_proj"),
                dim,
                q_width,
                false,
            )?),
            Some(q_rank) => QueryProjection::Compressed(
                Linear::new(cfg, &mut weights.pp("q_a_proj"), dim, q_rank, bias)?,
                RmsNorm::new(&mut weights.pp("q_a_layernorm"), q_rank, LATENT_NORM_EPS)?,
                Linear::new(cfg, &mut weights.pp("q_b_proj"), q_rank, q_width, false)?,
            ),
        };
        let kv_a_proj_with_mqa = Linear::new(
            cfg,
            &mut weights.pp("kv_a_proj_with_mqa"),
            dim,
            rank + rope_dims,
            bias,
        )?;
        let kv_a_layernorm =
            RmsNorm::new(&mut weights.pp("kv_a_layernorm"), rank, LATENT_NORM_EPS)?;
        let (embed_q, unembed_out) = match absorbed_kv_b(cfg, weights, (heads, nope, v_dim, rank))?
        {
            Some(pair) => pair,
            None => (
                SwitchLinear::stacked(cfg, &mut weights.pp("embed_q"), (heads, rank, nope), None)?,
                SwitchLinear::stacked(
                    cfg,
                    &mut weights.pp("unembed_out"),
                    (heads, v_dim, rank),
                    None,
                )?,
            ),
        };
        let o_proj = Linear::new(cfg, &mut weights.pp("o_proj"), heads * v_dim, dim, bias)?;
        let _ = weights.take("rotary_emb.inv_freq");
        Ok(LatentAttention {
            queries,
            kv_a_proj_with_mqa,
            kv_a_layernorm,
            embed_q: embed_q.for_matmul_each()?,
            unembed_out: unembed_out.for_matmul_each()?,
            o_proj,
            heads,
            nope,
            rope_dims,
            rank,
            v_dim,
            scale: latent.softmax_scale(cfg.rope_parameters.as_ref()),
            rope: initialize_rope(
                rope_dims,
                cfg.rope_theta() as f32,
                latent.rope_interleave.unwrap_or(true),
                cfg.rope_scaling(),
            )?,
            query_scaling: cfg.query_scaling()?,
        })
    }

    /// Bytes held by the block's weights.
    pub fn weight_bytes(&self) -> u64 {
        let queries = match &self.queries {
            QueryProjection::Direct(q) => q.weight_bytes(),
            QueryProjection::Compressed(a, norm, b) => {
                a.weight_bytes() + norm.weight_bytes() + b.weight_bytes()
            }
        };
        queries
            + self.kv_a_proj_with_mqa.weight_bytes()
            + self.kv_a_layernorm.weight_bytes()
            + self.embed_q.weight_bytes()
            + self.unembed_out.weight_bytes()
            + self.o_proj.weight_bytes()
    }

    /// Attends over the rows `x` `[B * L, hidden_size]` of a batch `(B, L)`
    /// whose first position is at the cache's offset, storing the new
    /// latents in `cache`; gives `[B * L, hidden_size]`. `mask` and
    /// `window` as [`Attention::forward`](crate::Attention::forward) takes
    /// them.
    pub fn forward_rows<C: KeyValueCache>(
        &self,
        x: &Array,
        (b, l): (i32, i32),
        mask: &SdpaMask,
        window: Option<i32>,
        cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        let q = match &self.queries {
            QueryProjection::Direct(q) => q.forward(x)?,
            QueryProjection::Compressed(a, norm, q_b) => {
                q_b.forward(&norm.forward(&a.forward(x)?)?)?
            }
        };
        let q = q
            .reshape(&[b, l, self.heads, self.nope + self.rope_dims])?
            .transpose_axes(&[0, 2, 1, 3])?;
        let [q_nope, q_rope] = two(split_at_indices(&q, &[self.nope], -1)?)?;
        let compressed = self.kv_a_proj_with_mqa.forward(x)?;
        let [k_latent, k_rope] = two(split_at_indices(&compressed, &[self.rank], -1)?)?;
        let k_rope = k_rope
            .reshape(&[b, l, 1, self.rope_dims])?
            .transpose_axes(&[0, 2, 1, 3])?;
        let kv_latent = self
            .kv_a_layernorm
            .forward(&k_latent)?
            .reshape(&[b, 1, l, self.rank])?;
        let positions = match &cache {
            Some(cache) => cache.positions()?,
            None => Positions::Shared(0),
        };
        // Copied to contiguous memory first: MLX 0.32.2's CUDA RoPE with
        // custom frequencies reads the last-axis part of a split wrongly
        // (xtask/python/gpu/mla_cuda_probe.py, docs/families.md).
        let q_rope = self.rope.forward_at(&q_rope.contiguous()?, &positions)?;
        let k_rope = self.rope.forward_at(&k_rope.contiguous()?, &positions)?;
        let (q_nope, q_rope) = match self.query_scaling {
            Some(scaling) => {
                let s = query_scale(&positions, l, scaling, q_nope.dtype())?;
                (q_nope.multiply(&s)?, q_rope.multiply(&s)?)
            }
            None => (q_nope, q_rope),
        };
        // Several rows: queries `[q_nope | q_rope]` on the last axis, so
        // that a cache attending row by row cuts both with the latents. One
        // row is never cut: `q_nope` alone goes through (no extra nodes).
        let joined = b > 1;
        let queries = if joined {
            concatenate(&[&q_nope, &q_rope], -1)?
        } else {
            q_nope.clone()
        };
        // Quantized storage: the latents and rotated keys are dequantized
        // for this attention (the memory stays saved, not the compute).
        let mut attend = |q: &Array, stored: &StoredKv, m: &SdpaMask| {
            let (latent, k_rope) = stored.dense()?;
            let (latent, k_rope) = (&latent, &k_rope);
            let [q_nope, q_rope] = if joined {
                two(split_at_indices(q, &[self.nope], -1)?)?
            } else {
                [q.clone(), q_rope.clone()]
            };
            let out = if l == 1 {
                self.attend_latent(&q_nope, &q_rope, latent, k_rope, m)
            } else {
                self.attend_expanded(q.dim(0), &q_nope, &q_rope, latent, k_rope, m)
            };
            Ok(out?)
        };
        let out = match cache {
            Some(cache) => cache.attend(&queries, &kv_latent, &k_rope, mask, window, &mut attend),
            None => {
                let stored = StoredKv::Dense {
                    keys: kv_latent,
                    values: k_rope,
                };
                attend(&queries, &stored, mask)
            }
        }
        .map_err(model_error)?;
        let out = out
            .transpose_axes(&[0, 2, 1, 3])?
            .reshape(&[b * l, self.heads * self.v_dim])?;
        self.o_proj.forward(&out)
    }

    /// One query position: attention over the latents themselves, the
    /// rotated parts' scores added as a mask.
    fn attend_latent(
        &self,
        q_nope: &Array,
        q_rope: &Array,
        kv_latent: &Array,
        k_rope: &Array,
        mask: &SdpaMask,
    ) -> Result<Array, ModelError> {
        let scale = Array::from_f32(self.scale).as_dtype(q_rope.dtype())?;
        let pe_scores = q_rope.multiply(&scale)?.matmul(k_rope.swap_axes(-1, -2)?)?;
        let pe_scores = match mask {
            SdpaMask::Array(m) if m.dtype() == Dtype::Bool => {
                let lowest = Array::from_f32(f32::MIN).as_dtype(pe_scores.dtype())?;
                mlx_rs::ops::select(m, &pe_scores, &lowest)?
            }
            SdpaMask::Array(m) => pe_scores.add(m)?,
            _ => pe_scores,
        };
        let out = mlx_rs_core::scaled_dot_product_attention(
            &self.embed_q.matmul_each(q_nope, true)?,
            kv_latent,
            kv_latent,
            self.scale,
            &SdpaMask::Array(pe_scores),
        )?;
        self.unembed_out.matmul_each(&out, true)
    }

    /// Several query positions: keys and values expanded per head.
    fn attend_expanded(
        &self,
        b: i32,
        q_nope: &Array,
        q_rope: &Array,
        kv_latent: &Array,
        k_rope: &Array,
        mask: &SdpaMask,
    ) -> Result<Array, ModelError> {
        let k_nope = self.embed_q.matmul_each(kv_latent, false)?;
        let values = self.unembed_out.matmul_each(kv_latent, true)?;
        let k_rope = broadcast_to(k_rope, &[b, self.heads, k_rope.dim(2), self.rope_dims])?;
        let queries = concatenate(&[q_nope, q_rope], -1)?;
        let keys = concatenate(&[&k_nope, &k_rope], -1)?;
        Ok(mlx_rs_core::scaled_dot_product_attention(
            &queries, &keys, &values, self.scale, mask,
        )?)
    }
}

/// `kv_b_proj` (`[heads * (nope + v), rank]`), if the checkpoint has it,
/// absorbed into `embed_q` (`[heads, rank, nope]`) and `unembed_out`
/// (`[heads, v, rank]`) as mlx-lm's sanitize does (a quantized one is
/// dequantized, split and quantized again with its parameters).
fn absorbed_kv_b(
    cfg: &MistralConfig,
    weights: &mut Weights,
    (heads, nope, v_dim, rank): (i32, i32, i32, i32),
) -> Result<Option<(SwitchLinear, SwitchLinear)>, ModelError> {
    let mut view = weights.pp("kv_b_proj");
    let rows = heads * (nope + v_dim);
    let params = cfg.quantization_for(view.module_path());
    let Some(w) = view.take("weight") else {
        return Ok(None);
    };
    let w = match params {
        None => {
            view.check_shape("weight", &w, &[rows, rank])?;
            w
        }
        Some(QuantParams { group_size, bits }) => {
            let scales = view.require("scales")?;
            let biases = view.require("biases")?;
            dequantize(&w, &scales, &biases, group_size, bits)?
        }
    };
    let w = w.reshape(&[heads, nope + v_dim, rank])?;
    let [wk, wv] = two(split_at_indices(&w, &[nope], 1)?)?;
    let wk = wk.swap_axes(-1, -2)?.contiguous()?;
    let wv = wv.contiguous()?;
    let pack = |m: Array| -> Result<SwitchLinear, ModelError> {
        match params.filter(|_| !view.dequantize()) {
            None => {
                let m = view.cast(m)?;
                m.eval()?;
                Ok(SwitchLinear::Dense(m))
            }
            Some(params) => {
                let (weight, scales, biases) = quantize(&m, params.group_size, params.bits)?;
                for a in [&weight, &scales, &biases] {
                    a.eval()?;
                }
                Ok(SwitchLinear::Quantized {
                    weight,
                    scales: view.cast(scales)?,
                    biases: view.cast(biases)?,
                    params,
                })
            }
        }
    };
    Ok(Some((pack(wk)?, pack(wv)?)))
}

/// `e` with a model error that went through a cache's attention closure
/// taken back out.
fn model_error(e: mlx_rs_core::Error) -> ModelError {
    match e {
        mlx_rs_core::Error::Model(inner) => match inner.downcast::<ModelError>() {
            Ok(own) => *own,
            Err(other) => ModelError::Core(mlx_rs_core::Error::Model(other)),
        },
        e => ModelError::Core(e),
    }
}

/// The two parts of a split.
fn two(parts: Vec<Array>) -> Result<[Array; 2], ModelError> {
    parts
        .try_into()
        .map_err(|_| ModelError::Internal("a split gave other than 2 parts".to_owned()))
}
