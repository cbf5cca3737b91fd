//! [`Attention`]: multi-head self-attention with grouped-query key/value
//! heads, RoPE and an optional KV cache (mlx-lm llama.py's `Attention`).
//!
//! Queries/keys/values are laid out `[B, heads, L, head_dim]`; RoPE (not
//! traditional, base `rope_theta`) is applied at the cache's offset before the
//! keys are stored; MLX's fused attention handles `n_kv_heads < n_heads`
//! natively, so keys and values are never repeated. A decode step's one row
//! through the stacked q/k/v projection (see `FusedLinear`) keeps queries
//! and keys side by side for one RoPE call: on a GPU each graph node costs
//! the host time at every step. The cache runs the attention
//! (`KeyValueCache::attend`): once, or row by row for a batch of rows of
//! different lengths. On the CPU with our kernels, a decode row goes to the
//! cache whole (`KeyValueCache::attend_decode_row`: RoPE, the cache write
//! and the attention as one primitive) where the cache can take it.

use mlx_rs::{ops::split_at_indices, Array};
use mlx_rs_core::cpu_decode_row::{decode_row, DecodeRow};
use mlx_rs_core::cpu_fused::{self, CpuFast};
use mlx_rs_core::{initialize_rope, KeyValueCache, Positions, Rope, SdpaMask, StoredKv};

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::fused::FusedLinear;
use crate::linear::Linear;
use crate::query_scale::query_scale;
use crate::rows::on_rows;
use crate::tensor_parallel::Split;
use crate::weights::Weights;

/// The self-attention block of a decoder layer.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `q_proj`, `k_proj` and `v_proj`.
    qkv: FusedLinear,
    o_proj: Linear,
    n_heads: i32,
    n_kv_heads: i32,
    head_dim: i32,
    scale: f32,
    rope: Rope,
    /// Llama 4's query scaling `(beta, n)` (Ministral 3), if any.
    query_scaling: Option<(f32, i32)>,
    /// Whether RoPE and attention on a CPU stream use our kernels.
    fast: CpuFast,
}

impl Attention {
    /// Bytes held by the four projections.
    pub fn weight_bytes(&self) -> u64 {
        self.qkv.weight_bytes() + self.o_proj.weight_bytes()
    }

    /// Takes `q_proj`, `k_proj`, `v_proj` and `o_proj` from the module
    /// `weights` points at (`model.layers.N.self_attn`).
    pub fn new(cfg: &MistralConfig, weights: &mut Weights) -> Result<Self, ModelError> {
        let dim = cfg.hidden_size;
        let (n_heads, n_kv_heads, head_dim) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads(),
            cfg.head_dim(),
        );
        let bias = cfg.attention_bias;
        let q_out = n_heads * head_dim;
        let kv_out = n_kv_heads * head_dim;
        // Split over ranks: each keeps whole heads (its share of both).
        let (n_heads, n_kv_heads) = match weights.tensor_parallel() {
            Some(tp) => (
                tp.divide(n_heads, "num_attention_heads")?,
                tp.divide(n_kv_heads, "num_key_value_heads")?,
            ),
            None => (n_heads, n_kv_heads),
        };
        let (rows, cols) = (Split::Outputs, Split::Inputs);
        let q_proj = Linear::sharded(cfg, weights, "q_proj", (dim, q_out), bias, rows)?;
        let k_proj = Linear::sharded(cfg, weights, "k_proj", (dim, kv_out), bias, rows)?;
        let v_proj = Linear::sharded(cfg, weights, "v_proj", (dim, kv_out), bias, rows)?;
        let o_proj = Linear::sharded(cfg, weights, "o_proj", (q_out, dim), bias, cols)?;
        // Precomputed RoPE frequencies some checkpoints carry; RoPE is
        // recomputed from `rope_theta`, so they are dropped (as mlx-lm does).
        let _ = weights.take("rotary_emb.inv_freq");
        let qkv = FusedLinear::new(vec![q_proj, k_proj, v_proj], weights.fuse_projections())?;
        let fast = weights.options().cpu_fast;
        Ok(Attention {
            qkv,
            o_proj,
            n_heads,
            n_kv_heads,
            head_dim,
            scale: (head_dim as f32).powf(-0.5),
            rope: initialize_rope(
                head_dim,
                cfg.rope_theta() as f32,
                cfg.rope_traditional,
                cfg.rope_scaling(),
            )?
            .with_cpu_fast(fast),
            query_scaling: cfg.query_scaling()?,
            fast,
        })
    }

    /// Queries, keys and values of the rows `x`, as `[B, heads, L,
    /// head_dim]`. One row through the stacked q/k/v projection keeps
    /// queries and keys joined (see [`QueriesKeys`]); its heads come from
    /// one reshape, as with `L = 1` `[1, heads, 1, head_dim]` is the layout
    /// of `[1, 1, heads, head_dim]` transposed.
    fn heads(
        &self,
        stacked: Option<Array>,
        x: &Array,
        (b, l): (i32, i32),
    ) -> Result<(QueriesKeys, Array), ModelError> {
        if let Some(all) = stacked {
            let joined = self.n_heads + self.n_kv_heads;
            let heads = all.reshape(&[1, joined + self.n_kv_heads, 1, self.head_dim])?;
            let [queries_keys, values] = two(split_at_indices(&heads, &[joined], 1)?)?;
            return Ok((QueriesKeys::Joined(queries_keys), values));
        }
        let split = |a: Array, heads: i32| -> Result<Array, ModelError> {
            Ok(a.reshape(&[b, l, heads, self.head_dim])?
                .transpose_axes(&[0, 2, 1, 3])?)
        };
        let [queries, keys, values]: [Array; 3] =
            self.qkv.forward(x)?.try_into().map_err(|_| {
                ModelError::Internal(
                    "the fused q/k/v projection gave other than 3 outputs".to_owned(),
                )
            })?;
        let queries = split(queries, self.n_heads)?;
        let keys = split(keys, self.n_kv_heads)?;
        Ok((
            QueriesKeys::Apart(queries, keys),
            split(values, self.n_kv_heads)?,
        ))
    }

    /// Queries and keys with RoPE at `positions`: one RoPE call for joined
    /// ones (RoPE rotates each head alike, by position and dimension only),
    /// then cut.
    fn rope_heads(
        &self,
        heads: QueriesKeys,
        positions: &Positions,
    ) -> Result<(Array, Array), ModelError> {
        match heads {
            QueriesKeys::Apart(queries, keys) => Ok((
                self.rope.forward_at(&queries, positions)?,
                self.rope.forward_at(&keys, positions)?,
            )),
            QueriesKeys::Joined(joined) => {
                let roped = self.rope.forward_at(&joined, positions)?;
                let [queries, keys] = two(split_at_indices(&roped, &[self.n_heads], 1)?)?;
                Ok((queries, keys))
            }
        }
    }

    /// Attends over `x` `[B, L, hidden_size]` whose first position is at the
    /// cache's offset (0 without a cache), storing the new keys and values in
    /// `cache`, and returns `[B, L, hidden_size]`. `mask` comes from the
    /// cache for the layer's sliding `window`, which a cache of rows of
    /// different lengths uses to make each row's own mask.
    pub fn forward<C: KeyValueCache>(
        &self,
        x: &Array,
        mask: &SdpaMask,
        window: Option<i32>,
        cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        on_rows(x, "attention input", |rows, shape| {
            self.forward_rows(rows, shape, mask, window, cache)
        })
    }

    /// [`forward`](Self::forward) on the rows of `x`: `[B * L, hidden_size]`
    /// for a batch of `(B, L)`, giving `[B * L, hidden_size]`. The model runs
    /// its layers on rows: a matrix product of a 3-D input adds a flatten
    /// and an unflatten to MLX's graph, two operations per projection and
    /// token that the host must build and dispatch.
    pub fn forward_rows<C: KeyValueCache>(
        &self,
        x: &Array,
        shape: (i32, i32),
        mask: &SdpaMask,
        window: Option<i32>,
        cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        self.o_proj
            .forward(&self.attend_rows(x, shape, mask, window, cache)?)
    }

    /// `residual + self.forward_rows(x, ...)` (a decoder layer's residual
    /// connection), the sum in the output projection's launch where our
    /// CUDA kernel takes it ([`Linear::forward_plus`]).
    pub fn forward_rows_plus<C: KeyValueCache>(
        &self,
        x: &Array,
        residual: &Array,
        shape: (i32, i32),
        mask: &SdpaMask,
        window: Option<i32>,
        cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        let heads = self.attend_rows(x, shape, mask, window, cache)?;
        self.o_proj.forward_plus(&heads, residual)
    }

    /// The attention's heads before the output projection, as rows
    /// `[B * L, heads * head_dim]`.
    fn attend_rows<C: KeyValueCache>(
        &self,
        x: &Array,
        (b, l): (i32, i32),
        mask: &SdpaMask,
        window: Option<i32>,
        mut cache: Option<&mut C>,
    ) -> Result<Array, ModelError> {
        if x.ndim() != 2 || i64::from(x.dim(0)) != i64::from(b) * i64::from(l) {
            return Err(ModelError::Input(format!(
                "attention rows must be [{b} x {l}, hidden], got shape {:?}",
                x.shape()
            )));
        }
        let stacked = self.qkv.forward_stacked(x)?;
        if let (Some(qkv), Some(cache)) = (&stacked, cache.as_mut()) {
            if matches!(mask, SdpaMask::None) && self.query_scaling.is_none() {
                let row = DecodeRow {
                    qkv,
                    n_heads: self.n_heads,
                    n_kv_heads: self.n_kv_heads,
                    rope: &self.rope,
                    scale: self.scale,
                    kind: self.fast,
                };
                let mut step = |k: &Array, v: &Array, offset: i32| decode_row(&row, k, v, offset);
                if let Some(heads) = cache.attend_decode_row(&mut step)? {
                    return Ok(heads);
                }
            }
        }
        let (queries_keys, values) = self.heads(stacked, x, (b, l))?;
        let positions = match &cache {
            Some(cache) => cache.positions()?,
            None => Positions::Shared(0),
        };
        let (queries, keys) = self.rope_heads(queries_keys, &positions)?;
        let queries = match self.query_scaling {
            Some(scaling) => {
                queries.multiply(query_scale(&positions, l, scaling, queries.dtype())?)?
            }
            None => queries,
        };
        let mut attend = |q: &Array, kv: &StoredKv, m: &SdpaMask| {
            cpu_fused::attention(q, kv, self.scale, m, self.fast)
        };
        let out = match cache {
            Some(cache) => cache.attend(&queries, &keys, &values, mask, window, &mut attend)?,
            None => {
                let kv = StoredKv::Dense { keys, values };
                attend(&queries, &kv, mask)?
            }
        };
        // [B, heads, L, head_dim] to rows [B * L, heads * head_dim]; with
        // L = 1 the transpose moves nothing, and a reshape alone does.
        Ok(if l == 1 {
            out.reshape(&[b, self.n_heads * self.head_dim])?
        } else {
            out.transpose_axes(&[0, 2, 1, 3])?
                .reshape(&[b * l, self.n_heads * self.head_dim])?
        })
    }
}

/// Queries and keys before RoPE, `[B, heads, L, head_dim]`.
enum QueriesKeys {
    /// Each its own array.
    Apart(Array, Array),
    /// Side by side on the heads axis (queries first): a decode step's one
    /// row through the stacked q/k/v projection, so that one RoPE call (a
    /// kernel and a graph node fewer per layer) serves both.
    Joined(Array),
}

/// The two parts of a split.
fn two(parts: Vec<Array>) -> Result<[Array; 2], ModelError> {
    parts.try_into().map_err(|_| {
        ModelError::Internal("a split of attention heads gave other than 2 parts".to_owned())
    })
}
