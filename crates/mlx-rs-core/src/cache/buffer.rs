//! [`KvBuffer`]: one side (keys or values) of what a cache stores, dense or
//! quantized, with the few operations the caches need on the positions axis
//! (axis 2), applied alike to a dense array or to each array of a quantized
//! one.

use mlx_rs::{
    ops::{
        concatenate,
        indexing::{Ellipsis, TryIndexOp},
        zeros_dtype,
    },
    Array,
};

use super::quantized::{KvQuantization, QuantizedArray, StoredKv};
use super::slice_write::write_positions;
use crate::error::{Error, Result};

/// Stored keys or values, `[B, H, positions, _]`.
#[derive(Debug, Clone)]
pub(crate) enum KvBuffer {
    /// A plain array.
    Dense(Array),
    /// A quantized tensor and how it was quantized.
    Quantized(QuantizedArray, KvQuantization),
}

impl KvBuffer {
    /// `x` as stored: quantized with `quantization` if given.
    pub(crate) fn new(x: &Array, quantization: Option<&KvQuantization>) -> Result<Self> {
        Ok(match quantization {
            Some(q) => KvBuffer::Quantized(q.quantize(x)?, *q),
            None => KvBuffer::Dense(x.clone()),
        })
    }

    /// The same positions quantized (unchanged if already quantized).
    pub(crate) fn quantized(&self, q: &KvQuantization) -> Result<Self> {
        match self {
            KvBuffer::Dense(a) => Self::new(a, Some(q)),
            KvBuffer::Quantized(..) => Ok(self.clone()),
        }
    }

    /// Quantizes a cache's `keys` and `values` with `q` once `offset >=
    /// start` and records `q` in `state` (nothing when already quantized or
    /// not yet long enough): the switch mlx-lm's `to_quantized` makes.
    pub(crate) fn quantize_pair(
        keys: &mut Option<KvBuffer>,
        values: &mut Option<KvBuffer>,
        state: &mut Option<KvQuantization>,
        offset: i32,
        q: &KvQuantization,
    ) -> Result<()> {
        if state.is_some() || offset < q.start {
            return Ok(());
        }
        if let (Some(k), Some(v)) = (keys.as_ref(), values.as_ref()) {
            let (k, v) = (k.quantized(q)?, v.quantized(q)?);
            *keys = Some(k);
            *values = Some(v);
        }
        *state = Some(*q);
        Ok(())
    }

    /// Number of positions (the length of axis 2).
    pub(crate) fn len(&self) -> i32 {
        self.first().dim(2)
    }

    /// `[B, H, positions, head_dim]` of the unquantized tensor.
    pub(crate) fn shape(&self) -> Vec<i32> {
        let mut shape = self.first().shape().to_vec();
        if let (KvBuffer::Quantized(_, q), Some(last)) = (self, shape.last_mut()) {
            *last = q.unpacked_dim(*last);
        }
        shape
    }

    /// The arrays held (one, or the three of a quantized tensor).
    pub(crate) fn arrays(&self) -> Vec<Array> {
        match self {
            KvBuffer::Dense(a) => vec![a.clone()],
            KvBuffer::Quantized(t, _) => t.parts().into_iter().cloned().collect(),
        }
    }

    fn first(&self) -> &Array {
        match self {
            KvBuffer::Dense(a) => a,
            KvBuffer::Quantized(t, _) => &t.packed,
        }
    }

    /// `f` applied to each array held.
    pub(crate) fn map(&self, mut f: impl FnMut(&Array) -> Result<Array>) -> Result<Self> {
        Ok(match self {
            KvBuffer::Dense(a) => KvBuffer::Dense(f(a)?),
            KvBuffer::Quantized(t, q) => KvBuffer::Quantized(t.map(f)?, *q),
        })
    }

    /// `f` applied to each pair of arrays of `self` and `other`, which must
    /// be stored alike.
    fn zip(
        &self,
        other: &Self,
        mut f: impl FnMut(&Array, &Array) -> Result<Array>,
    ) -> Result<Self> {
        match (self, other) {
            (KvBuffer::Dense(a), KvBuffer::Dense(b)) => Ok(KvBuffer::Dense(f(a, b)?)),
            (KvBuffer::Quantized(a, q), KvBuffer::Quantized(b, p)) if q == p => {
                Ok(KvBuffer::Quantized(
                    QuantizedArray {
                        packed: f(&a.packed, &b.packed)?,
                        scales: f(&a.scales, &b.scales)?,
                        biases: f(&a.biases, &b.biases)?,
                    },
                    *q,
                ))
            }
            _ => Err(Error::InvalidArgument(
                "cache: dense and quantized (or differently quantized) keys cannot be mixed".into(),
            )),
        }
    }

    /// Positions `start..end` (`end` `None`: to the last).
    pub(crate) fn positions(&self, start: i32, end: Option<i32>) -> Result<Self> {
        self.map(|a| {
            let end = end.unwrap_or(a.dim(2));
            Ok(a.try_index((Ellipsis, start..end, ..))?)
        })
    }

    /// The first `n` positions.
    pub(crate) fn prefix(&self, n: i32) -> Result<Self> {
        self.positions(0, Some(n))
    }

    /// `self` then `other` on the positions axis.
    pub(crate) fn concat(&self, other: &Self) -> Result<Self> {
        self.zip(other, |a, b| Ok(concatenate(&[a, b], 2)?))
    }

    /// `self` with `update` written at positions `start..`.
    pub(crate) fn write(&self, update: &Self, start: i32) -> Result<Self> {
        self.zip(update, |buf, upd| write_positions(buf, upd, start))
    }

    /// `n` zero positions stored as `like` is (batch, heads, last axis and
    /// dtypes of its arrays).
    pub(crate) fn zeros_like(like: &Self, n: i32) -> Result<Self> {
        like.map(|a| Ok(zeros_dtype(&[a.dim(0), a.dim(1), n, a.dim(3)], a.dtype())?))
    }

    /// `buffer` extended by `n` zero positions, or `n` zero positions stored
    /// as `like` where there is no buffer.
    pub(crate) fn extended(buffer: Option<Self>, like: &Self, n: i32) -> Result<Self> {
        let zeros = Self::zeros_like(like, n)?;
        match buffer {
            Some(b) => b.concat(&zeros),
            None => Ok(zeros),
        }
    }

    /// The keys and values for an attention call.
    pub(crate) fn stored(keys: Self, values: Self) -> Result<StoredKv> {
        match (keys, values) {
            (KvBuffer::Dense(keys), KvBuffer::Dense(values)) => {
                Ok(StoredKv::Dense { keys, values })
            }
            (KvBuffer::Quantized(keys, quantization), KvBuffer::Quantized(values, _)) => {
                Ok(StoredKv::Quantized {
                    keys,
                    values,
                    quantization,
                })
            }
            _ => Err(Error::InvalidArgument(
                "cache: keys and values stored differently".into(),
            )),
        }
    }
}
