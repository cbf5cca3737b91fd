//! Causal attention masks, optionally limited to a sliding window, and a thin
//! wrapper over MLX's fused attention taking them.
//!
//! Semantics (Hugging Face transformers / Mistral, mlx-lm's
//! `create_causal_mask`): queries sit at absolute positions
//! `offset..offset + L` and keys at `0..offset + L`; query `i` may attend to
//! key `j` iff `j <= i` and, with a window `W`, `i - j < W`, i.e. a query sees
//! itself and the `W - 1` tokens before it.
//!
//! [`create_attention_mask`] returns the cheapest form
//! `mlx_rs::fast::scaled_dot_product_attention` accepts: no mask when every
//! key is visible to every query (a single query with the whole history in its
//! window), MLX's `"causal"` mode when the window does not cut anything off
//! (MLX aligns that mode bottom-right, so it also holds with an offset), and a
//! boolean array (`true` = may attend) otherwise.

use mlx_rs::{
    fast::{self, ScaledDotProductAttentionMask},
    ops::arange,
    Array,
};

use crate::error::{Error, Result};

/// A mask in the form MLX's fused attention takes.
#[derive(Debug, Clone, Default)]
pub enum SdpaMask {
    /// Every query may attend to every key.
    #[default]
    None,
    /// Causal masking, aligned so that the last query sees the last key.
    Causal,
    /// A boolean (`true` = may attend) or additive mask broadcastable to
    /// `[B, n_heads, L, S]`.
    Array(Array),
}

/// The kind of attention a layer performs: causal over the whole history or
/// over a sliding window of the last `W` positions (the query included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionMask {
    /// Causal attention over all previous positions.
    #[default]
    Causal,
    /// Causal attention over the query and the `W - 1` positions before it.
    SlidingWindow(i32),
}

impl AttentionMask {
    /// The window size, if any.
    pub fn window(self) -> Option<i32> {
        match self {
            AttentionMask::Causal => None,
            AttentionMask::SlidingWindow(w) => Some(w),
        }
    }

    /// Builds the mask for `query_len` queries following `offset` cached
    /// positions; see [`create_attention_mask`].
    pub fn create(self, query_len: i32, offset: i32) -> Result<SdpaMask> {
        create_attention_mask(query_len, offset, self.window())
    }
}

fn check_args(query_len: i32, offset: i32, window: Option<i32>) -> Result<()> {
    if query_len < 0 {
        return Err(Error::InvalidMask(format!(
            "query length must not be negative, got {query_len}"
        )));
    }
    if offset < 0 {
        return Err(Error::InvalidMask(format!(
            "offset must not be negative, got {offset}"
        )));
    }
    if let Some(w) = window {
        if w < 1 {
            return Err(Error::InvalidMask(format!(
                "sliding window must be at least 1, got {w}"
            )));
        }
    }
    Ok(())
}

/// The boolean mask `[query_len, offset + query_len]` for queries at absolute
/// positions `offset..offset + query_len` over keys `0..offset + query_len`:
/// entry `(i, j)` is `true` iff query `offset + i` may attend to key `j`.
pub fn create_causal_mask(query_len: i32, offset: i32, window: Option<i32>) -> Result<Array> {
    check_args(query_len, offset, window)?;
    let total = offset + query_len;
    let keys = arange::<i32, i32>(0, total, 1)?.reshape(&[1, total])?;
    let queries = arange::<i32, i32>(offset, total, 1)?.reshape(&[query_len, 1])?;
    let mask = queries.ge(&keys)?;
    match window {
        Some(w) => Ok(mask.logical_and(queries.lt(keys.add(Array::from_int(w))?)?)?),
        None => Ok(mask),
    }
}

/// The mask for `query_len` queries following `offset` cached positions, in
/// the cheapest form that is exact (see the module notes).
pub fn create_attention_mask(query_len: i32, offset: i32, window: Option<i32>) -> Result<SdpaMask> {
    check_args(query_len, offset, window)?;
    let total = offset + query_len;
    // The farthest query/key pair is (total - 1, 0): if it is inside the
    // window, the window removes nothing.
    let window_cuts = window.is_some_and(|w| total > w);
    if window_cuts {
        Ok(SdpaMask::Array(create_causal_mask(
            query_len, offset, window,
        )?))
    } else if query_len <= 1 {
        Ok(SdpaMask::None)
    } else {
        Ok(SdpaMask::Causal)
    }
}

/// Fused attention `softmax(scale * q kᵀ + mask) v` over `queries`
/// `[B, n_heads, L, D]`, `keys`/`values` `[B, n_kv_heads, S, D]` (grouped-query
/// attention is handled natively when `n_heads` is a multiple of `n_kv_heads`).
pub fn scaled_dot_product_attention(
    queries: &Array,
    keys: &Array,
    values: &Array,
    scale: f32,
    mask: &SdpaMask,
) -> Result<Array> {
    let mask = match mask {
        SdpaMask::None => None,
        SdpaMask::Causal => Some(ScaledDotProductAttentionMask::Causal),
        SdpaMask::Array(m) => Some(ScaledDotProductAttentionMask::Array(m)),
    };
    Ok(fast::scaled_dot_product_attention(
        queries, keys, values, scale, mask, None,
    )?)
}
