//! [`KVCache`]: preallocated key/value buffers written in place.
//!
//! Buffers grow in steps of [`KVCache::STEP`] positions; new entries are
//! written with slice updates and the filled prefix is returned. When a
//! buffer must grow while its filled length is not a multiple of the step,
//! the unused tail is dropped first, as in mlx-lm's `KVCache`. After
//! [`KeyValueCache::quantize`] the buffers hold quantized keys and values
//! and grow the same way, as mlx-lm's `QuantizedKVCache`.

use mlx_rs::Array;

use super::buffer::KvBuffer;
use super::quantized::{KvQuantization, StoredKv};
use super::{check_update, DecodeStepFn, KeyValueCache};
use crate::error::Result;

/// A key/value cache over preallocated buffers growing in steps of
/// [`KVCache::STEP`] positions.
#[derive(Debug, Clone, Default)]
pub struct KVCache {
    keys: Option<KvBuffer>,
    values: Option<KvBuffer>,
    offset: i32,
    /// Set once the cache stores quantized keys and values.
    quantization: Option<KvQuantization>,
}

impl KVCache {
    /// Number of positions the buffers grow by.
    pub const STEP: i32 = 256;

    /// Creates an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of positions the buffers can hold before growing again
    /// (0 while empty).
    pub fn capacity(&self) -> i32 {
        self.keys.as_ref().map_or(0, KvBuffer::len)
    }

    /// How keys and values are quantized (`None`: stored as they come).
    pub fn quantization(&self) -> Option<KvQuantization> {
        self.quantization
    }

    /// The stored keys and values, `[B, H, offset, D]` (`None` while
    /// empty), dequantized if stored quantized.
    pub fn filled(&self) -> Result<Option<(Array, Array)>> {
        match self.filled_buffers()? {
            Some((k, v)) => Ok(Some(KvBuffer::stored(k, v)?.dense()?)),
            None => Ok(None),
        }
    }

    /// The buffers (`None` while none is allocated).
    pub(crate) fn buffers(&self) -> Option<(&KvBuffer, &KvBuffer)> {
        self.keys.as_ref().zip(self.values.as_ref())
    }

    /// The stored buffers' filled prefixes (`None` while empty).
    pub(crate) fn filled_buffers(&self) -> Result<Option<(KvBuffer, KvBuffer)>> {
        match (&self.keys, &self.values) {
            (Some(k), Some(v)) if self.offset > 0 => {
                Ok(Some((k.prefix(self.offset)?, v.prefix(self.offset)?)))
            }
            _ => Ok(None),
        }
    }

    /// A cache holding `keys` and `values` (`[B, H, L, D]`, checked) as its
    /// first `L` positions; the next update grows the buffers.
    pub fn from_filled(keys: Array, values: Array) -> Result<Self> {
        check_update(&keys, &values, None)?;
        Self::from_buffers(KvBuffer::Dense(keys), KvBuffer::Dense(values), None)
    }

    /// A cache holding `keys` and `values` (stored as `quantization` says)
    /// as its first positions.
    pub(crate) fn from_buffers(
        keys: KvBuffer,
        values: KvBuffer,
        quantization: Option<KvQuantization>,
    ) -> Result<Self> {
        let offset = keys.len();
        Ok(KVCache {
            keys: Some(keys),
            values: Some(values),
            offset,
            quantization,
        })
    }

    /// Grows the buffers so that `extra` more positions fit after `offset`.
    fn grow(
        &mut self,
        keys: &KvBuffer,
        values: &KvBuffer,
        extra: i32,
    ) -> Result<(KvBuffer, KvBuffer)> {
        let len = (extra + Self::STEP - 1) / Self::STEP * Self::STEP;
        let prev = self.offset;
        let kept = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) if prev % Self::STEP != 0 => {
                Some((k.prefix(prev)?, v.prefix(prev)?))
            }
            (Some(k), Some(v)) => Some((k, v)),
            _ => None,
        };
        let (kept_k, kept_v) = kept.unzip();
        Ok((
            KvBuffer::extended(kept_k, keys, len)?,
            KvBuffer::extended(kept_v, values, len)?,
        ))
    }
}

impl KeyValueCache for KVCache {
    fn new() -> Self {
        Self::default()
    }

    fn offset(&self) -> i32 {
        self.offset
    }

    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        self.update_and_fetch_stored(keys, values)?.dense()
    }

    fn update_and_fetch_stored(&mut self, keys: &Array, values: &Array) -> Result<StoredKv> {
        let stored = self.keys.as_ref().map(KvBuffer::shape);
        let stored_v = self.values.as_ref().map(KvBuffer::shape);
        check_update(keys, values, stored.as_deref().zip(stored_v.as_deref()))?;
        let q = self.quantization.as_ref();
        let (keys, values) = (KvBuffer::new(keys, q)?, KvBuffer::new(values, q)?);
        let prev = self.offset;
        let len = keys.len();
        let (buf_k, buf_v) = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) if prev + len <= k.len() => (k, v),
            (k, v) => {
                self.keys = k;
                self.values = v;
                self.grow(&keys, &values, len)?
            }
        };
        let end = prev + len;
        let buf_k = buf_k.write(&keys, prev)?;
        let buf_v = buf_v.write(&values, prev)?;
        let out = KvBuffer::stored(buf_k.prefix(end)?, buf_v.prefix(end)?)?;
        self.keys = Some(buf_k);
        self.values = Some(buf_v);
        self.offset = end;
        Ok(out)
    }

    /// While the buffers are dense and have room for the row.
    fn attend_decode_row(&mut self, step: &mut DecodeStepFn<'_>) -> Result<Option<Array>> {
        let (Some(KvBuffer::Dense(keys)), Some(KvBuffer::Dense(values))) =
            (&self.keys, &self.values)
        else {
            return Ok(None);
        };
        if self.offset >= keys.dim(2) {
            return Ok(None);
        }
        let Some(step) = step(keys, values, self.offset)? else {
            return Ok(None);
        };
        self.keys = Some(KvBuffer::Dense(step.keys));
        self.values = Some(KvBuffer::Dense(step.values));
        self.offset += 1;
        Ok(Some(step.heads))
    }

    /// Quantizes the whole buffers once `offset >= start` (as mlx-lm's
    /// `KVCache.to_quantized`); later updates are stored quantized.
    fn quantize(&mut self, quantization: &KvQuantization) -> Result<()> {
        KvBuffer::quantize_pair(
            &mut self.keys,
            &mut self.values,
            &mut self.quantization,
            self.offset,
            quantization,
        )
    }

    fn trim(&mut self, n: i32) -> Result<i32> {
        // The buffers keep their contents; the next update overwrites them.
        let n = n.clamp(0, self.offset);
        self.offset -= n;
        Ok(n)
    }

    fn state(&self) -> Vec<Array> {
        self.keys
            .iter()
            .chain(&self.values)
            .flat_map(KvBuffer::arrays)
            .collect()
    }
}
