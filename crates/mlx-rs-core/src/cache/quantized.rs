//! Quantized key/value storage, after mlx-lm's `QuantizedKVCache`: keys and
//! values kept as `mx.quantize` triples (packed `uint32` words, scales,
//! biases, each `[B, H, positions, _]`) and attention computed on them with
//! quantized matrix products (mlx-lm's `quantized_scaled_dot_product_attention`).
//!
//! - [`KvQuantization`]: bits, group size, and from which offset a cache
//!   switches to quantized storage;
//! - [`QuantizedArray`]: one quantized tensor (keys or values);
//! - [`StoredKv`]: what a cache hands to the attention, dense or quantized;
//! - [`attention`]: the attention over a [`StoredKv`], MLX's fused kernel for
//!   dense keys, quantized matrix products for quantized ones.

use mlx_rs::{
    ops::{dequantize, expand_dims, quantize, quantized_matmul, select, softmax_axis},
    Array, Dtype,
};

use crate::error::{Error, Result};
use crate::mask::{scaled_dot_product_attention, SdpaMask};

/// How a cache stores keys and values quantized, and from when on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuantization {
    /// Bits per stored element (2, 3, 4, 5, 6 or 8).
    pub bits: i32,
    /// Elements of a head dimension sharing one scale and bias (32, 64 or
    /// 128); must divide the head dimension.
    pub group_size: i32,
    /// A cache switches to quantized storage once it holds at least this
    /// many positions (mlx-lm's `quantized_kv_start`), checked after each
    /// forward call.
    pub start: i32,
}

impl KvQuantization {
    /// Bit widths MLX's affine quantization supports.
    pub const BITS: [i32; 6] = [2, 3, 4, 5, 6, 8];
    /// Group sizes MLX's affine quantization supports.
    pub const GROUP_SIZES: [i32; 3] = [32, 64, 128];

    /// Checked settings: supported `bits` and `group_size`, `start >= 0`.
    pub fn new(bits: i32, group_size: i32, start: i32) -> Result<Self> {
        if !Self::BITS.contains(&bits) {
            return Err(Error::InvalidArgument(format!(
                "kv bits must be one of {:?}, got {bits}",
                Self::BITS
            )));
        }
        if !Self::GROUP_SIZES.contains(&group_size) {
            return Err(Error::InvalidArgument(format!(
                "kv group size must be one of {:?}, got {group_size}",
                Self::GROUP_SIZES
            )));
        }
        if start < 0 {
            return Err(Error::InvalidArgument(format!(
                "quantized kv start must be at least 0, got {start}"
            )));
        }
        Ok(KvQuantization {
            bits,
            group_size,
            start,
        })
    }

    /// Quantizes `x` (`[B, H, L, D]`, `D` a multiple of the group size).
    pub fn quantize(&self, x: &Array) -> Result<QuantizedArray> {
        let d = x.shape().last().copied().unwrap_or(0);
        if d % self.group_size != 0 {
            return Err(Error::InvalidArgument(format!(
                "a head dimension of {d} cannot be quantized in groups of {}",
                self.group_size
            )));
        }
        let (packed, scales, biases) = quantize(x, self.group_size, self.bits)?;
        Ok(QuantizedArray {
            packed,
            scales,
            biases,
        })
    }

    /// The head dimension a packed last axis of `packed_dim` words holds.
    pub(crate) fn unpacked_dim(&self, packed_dim: i32) -> i32 {
        packed_dim * 32 / self.bits
    }
}

/// One quantized tensor: MLX's affine quantization of `[B, H, L, D]`.
#[derive(Debug, Clone)]
pub struct QuantizedArray {
    /// `[B, H, L, D * bits / 32]` uint32 words.
    pub packed: Array,
    /// `[B, H, L, D / group_size]`, the source dtype.
    pub scales: Array,
    /// `[B, H, L, D / group_size]`, the source dtype.
    pub biases: Array,
}

impl QuantizedArray {
    /// The three arrays, packed words first.
    pub fn parts(&self) -> [&Array; 3] {
        [&self.packed, &self.scales, &self.biases]
    }

    /// The same tensor with `f` applied to each of its three arrays.
    pub fn map(&self, mut f: impl FnMut(&Array) -> Result<Array>) -> Result<Self> {
        Ok(QuantizedArray {
            packed: f(&self.packed)?,
            scales: f(&self.scales)?,
            biases: f(&self.biases)?,
        })
    }

    /// The tensor dequantized.
    pub fn dequantize(&self, q: &KvQuantization) -> Result<Array> {
        Ok(dequantize(
            &self.packed,
            &self.scales,
            &self.biases,
            q.group_size,
            q.bits,
        )?)
    }
}

/// The keys and values a cache returns for one attention call.
#[derive(Debug, Clone)]
pub enum StoredKv {
    /// Plain arrays, `[B, n_kv_heads, S, head_dim]`.
    Dense {
        /// Keys.
        keys: Array,
        /// Values.
        values: Array,
    },
    /// Quantized keys and values.
    Quantized {
        /// Keys.
        keys: QuantizedArray,
        /// Values.
        values: QuantizedArray,
        /// How they were quantized.
        quantization: KvQuantization,
    },
}

impl StoredKv {
    /// Keys and values as plain arrays (dequantized if need be), for an
    /// attention that cannot work on quantized ones.
    pub fn dense(&self) -> Result<(Array, Array)> {
        match self {
            StoredKv::Dense { keys, values } => Ok((keys.clone(), values.clone())),
            StoredKv::Quantized {
                keys,
                values,
                quantization,
            } => Ok((
                keys.dequantize(quantization)?,
                values.dequantize(quantization)?,
            )),
        }
    }
}

/// Attention of `queries` (`[B, n_heads, L, head_dim]`) over `stored`:
/// MLX's fused kernel on dense keys, mlx-lm's quantized attention on
/// quantized ones (same operations, so the same results).
pub fn attention(queries: &Array, stored: &StoredKv, scale: f32, mask: &SdpaMask) -> Result<Array> {
    match stored {
        StoredKv::Dense { keys, values } => {
            scaled_dot_product_attention(queries, keys, values, scale, mask)
        }
        StoredKv::Quantized {
            keys,
            values,
            quantization,
        } => quantized_attention(queries, keys, values, scale, mask, quantization),
    }
}

/// mlx-lm's quantized attention: scaled queries against the keys by a
/// quantized product, the mask, a precise softmax, and the weights against
/// the values by another; query heads grouped over the kv heads for GQA.
fn quantized_attention(
    queries: &Array,
    keys: &QuantizedArray,
    values: &QuantizedArray,
    scale: f32,
    mask: &SdpaMask,
    q: &KvQuantization,
) -> Result<Array> {
    let shape = queries.shape();
    let [b, n_heads, l, d] = [shape[0], shape[1], shape[2], shape[3]];
    let n_kv = keys.packed.dim(1);
    if n_kv < 1 || n_heads % n_kv != 0 {
        return Err(Error::InvalidArgument(format!(
            "{n_heads} query heads cannot share {n_kv} kv heads"
        )));
    }
    let repeats = n_heads / n_kv;
    let scale = Array::from_f32(scale).as_dtype(queries.dtype())?;
    let mut queries = queries.multiply(&scale)?;
    let (keys, values) = if repeats > 1 {
        queries = queries.reshape(&[b, n_kv, repeats, l, d])?;
        let grouped = |a: &Array| Ok(expand_dims(a, -3)?);
        (keys.map(grouped)?, values.map(grouped)?)
    } else {
        (keys.clone(), values.clone())
    };
    let mut scores = quantized_matmul(
        &queries,
        &keys.packed,
        &keys.scales,
        &keys.biases,
        true,
        q.group_size,
        q.bits,
    )?;
    let mask = match mask {
        SdpaMask::None => None,
        SdpaMask::Causal => {
            // The last query sees the last key.
            let (ql, kl) = (scores.dim(-2), scores.dim(-1));
            let rows: Vec<i32> = (kl - ql..kl).collect();
            let cols: Vec<i32> = (0..kl).collect();
            let rows = Array::from_slice(&rows, &[ql, 1]);
            let cols = Array::from_slice(&cols, &[1, kl]);
            Some(rows.ge(&cols)?)
        }
        SdpaMask::Array(m) if repeats > 1 && m.ndim() > 3 => Some(expand_dims(m, -3)?),
        SdpaMask::Array(m) => Some(m.clone()),
    };
    if let Some(mask) = mask {
        scores = if mask.dtype() == Dtype::Bool {
            let lowest = Array::from_f32(lowest(scores.dtype())).as_dtype(scores.dtype())?;
            select(&mask, &scores, &lowest)?
        } else {
            scores.add(&mask)?
        };
    }
    let weights = softmax_axis(&scores, -1, true)?;
    let out = quantized_matmul(
        &weights,
        &values.packed,
        &values.scales,
        &values.biases,
        false,
        q.group_size,
        q.bits,
    )?;
    if repeats > 1 {
        let dv = out.dim(-1);
        return Ok(out.reshape(&[b, n_heads, l, dv])?);
    }
    Ok(out)
}

/// The lowest finite value of a floating `dtype` (mlx's `finfo(dtype).min`),
/// as an f32 that converts to it exactly.
fn lowest(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::Float16 => -65504.0,
        Dtype::Bfloat16 => -3.389_531_4e38,
        _ => f32::MIN,
    }
}
