//! [`KVCache`]: preallocated key/value buffers written in place.
//!
//! Buffers grow in steps of [`KVCache::STEP`] positions; new entries are
//! written with slice updates and the filled prefix is returned. When a
//! buffer must grow while its filled length is not a multiple of the step,
//! the unused tail is dropped first, as in mlx-lm's `KVCache`.

use mlx_rs::{
    ops::indexing::{Ellipsis, TryIndexOp},
    Array,
};

use super::{check_update, extend_with_zeros, slice_write::write_positions, KeyValueCache};
use crate::error::Result;

/// A key/value cache over preallocated buffers growing in steps of
/// [`KVCache::STEP`] positions.
#[derive(Debug, Clone, Default)]
pub struct KVCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
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
        self.keys.as_ref().map_or(0, |k| k.dim(2))
    }

    /// The stored keys and values, `[B, H, offset, D]` (`None` while
    /// empty).
    pub fn filled(&self) -> Result<Option<(Array, Array)>> {
        match (&self.keys, &self.values) {
            (Some(k), Some(v)) if self.offset > 0 => Ok(Some((
                k.try_index((Ellipsis, ..self.offset, ..))?,
                v.try_index((Ellipsis, ..self.offset, ..))?,
            ))),
            _ => Ok(None),
        }
    }

    /// A cache holding `keys` and `values` (`[B, H, L, D]`, checked) as its
    /// first `L` positions; the next update grows the buffers.
    pub fn from_filled(keys: Array, values: Array) -> Result<Self> {
        check_update(&keys, &values, None)?;
        let offset = keys.dim(2);
        Ok(KVCache {
            keys: Some(keys),
            values: Some(values),
            offset,
        })
    }

    /// Grows the buffers so that `extra` more positions fit after `offset`.
    fn grow(&mut self, keys: &Array, values: &Array, extra: i32) -> Result<(Array, Array)> {
        let len = (extra + Self::STEP - 1) / Self::STEP * Self::STEP;
        let prev = self.offset;
        let kept = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) if prev % Self::STEP != 0 => Some((
                k.try_index((Ellipsis, ..prev, ..))?,
                v.try_index((Ellipsis, ..prev, ..))?,
            )),
            (Some(k), Some(v)) => Some((k, v)),
            _ => None,
        };
        extend_with_zeros(kept, keys, values, len)
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
        check_update(keys, values, self.keys.as_ref().zip(self.values.as_ref()))?;
        let prev = self.offset;
        let len = keys.dim(2);
        let (buf_k, buf_v) = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) if prev + len <= k.dim(2) => (k, v),
            (k, v) => {
                self.keys = k;
                self.values = v;
                self.grow(keys, values, len)?
            }
        };
        let end = prev + len;
        let buf_k = write_positions(&buf_k, keys, prev)?;
        let buf_v = write_positions(&buf_v, values, prev)?;
        let out = (
            buf_k.try_index((Ellipsis, ..end, ..))?,
            buf_v.try_index((Ellipsis, ..end, ..))?,
        );
        self.keys = Some(buf_k);
        self.values = Some(buf_v);
        self.offset = end;
        Ok(out)
    }

    fn trim(&mut self, n: i32) -> Result<i32> {
        // The buffers keep their contents; the next update overwrites them.
        let n = n.clamp(0, self.offset);
        self.offset -= n;
        Ok(n)
    }

    fn state(&self) -> Vec<Array> {
        self.keys.iter().chain(&self.values).cloned().collect()
    }
}
