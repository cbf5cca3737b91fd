//! [`BatchKVCache`]: one layer's keys and values for a batch of sequences
//! of different lengths, as mlx-lm's `BatchKVCache` keeps them.
//!
//! Layout: rows are right-aligned in one [`KVCache`] `[B, H, S, D]`; row
//! `b`'s first `left_padding[b]` slots are padding. All rows write their
//! next token at the same slot `S`, so one decode step is one batched
//! forward. Per row:
//! - RoPE positions start at `S - left_padding[b]` ([`Positions::PerRow`]);
//! - the mask hides the padding slots from every query (and applies the
//!   causal order and sliding window in slot space, which equals position
//!   space within a row).
//!
//! Rows join with [`BatchKVCache::extend`] (the shorter side is padded on
//! the left) and leave with [`BatchKVCache::retain`] (padding every
//! remaining row shares is cut). The cache stores every position: a
//! sliding window is applied by the mask, as [`KVCache`] does.

use mlx_rs::{
    ops::{arange, concatenate, indexing::TryIndexOp, zeros_dtype},
    transforms::eval,
    Array,
};

use super::{KVCache, KeyValueCache, Positions};
use crate::error::{Error, Result};
use crate::mask::{create_attention_mask, create_causal_mask, SdpaMask};

/// A key/value cache for a batch of right-aligned rows (see the module
/// notes).
#[derive(Debug, Clone, Default)]
pub struct BatchKVCache {
    inner: KVCache,
    /// Padding slots at the start of each row; empty means one row or
    /// none, unpadded (a fresh cache).
    left_padding: Vec<i32>,
}

impl BatchKVCache {
    /// An empty cache (rows come with the first update or with
    /// [`extend`](BatchKVCache::extend)).
    pub fn new() -> Self {
        Self::default()
    }

    /// Padding slots at the start of each row (all 0 for a fresh cache).
    pub fn left_padding(&self) -> Vec<i32> {
        match self.rows() {
            0 => Vec::new(),
            n if self.left_padding.is_empty() => vec![0; n],
            _ => self.left_padding.clone(),
        }
    }

    /// Number of rows (0 while empty).
    pub fn rows(&self) -> usize {
        self.inner
            .state()
            .first()
            .map_or(0, |k| k.dim(0).max(0) as usize)
    }

    fn padded(&self) -> bool {
        self.left_padding.iter().any(|&p| p > 0)
    }

    /// The filled slots, each side padded on the left to `len` slots.
    fn filled_to(&self, len: i32) -> Result<Option<(Array, Array)>> {
        let Some((k, v)) = self.inner.filled()? else {
            return Ok(None);
        };
        let extra = len - k.dim(2);
        if extra == 0 {
            return Ok(Some((k, v)));
        }
        let pad = |a: &Array| -> Result<Array> {
            let shape = [a.dim(0), a.dim(1), extra, a.dim(3)];
            Ok(concatenate(
                &[zeros_dtype(&shape, a.dtype())?, a.clone()],
                2,
            )?)
        };
        Ok(Some((pad(&k)?, pad(&v)?)))
    }

    /// Row `index` alone: a one-row cache of its own positions (its padding
    /// cut), in buffers of its own, evaluated (multiplied by one: MLX's
    /// `copy` and `contiguous` may share the batch's buffers, which would
    /// keep them alive).
    pub fn row(&self, index: usize) -> Result<BatchKVCache> {
        let rows = self.rows();
        if index >= rows {
            return Err(Error::InvalidArgument(format!(
                "row {index} is not in a batch of {rows}"
            )));
        }
        let Some((k, v)) = self.inner.filled()? else {
            return Ok(BatchKVCache::new());
        };
        let pad = self.left_padding()[index];
        let at = index as i32;
        let own = |a: &Array| -> Result<Array> {
            let one = Array::from_f32(1.0).as_dtype(a.dtype())?;
            Ok(a.try_index((at..at + 1, .., pad.., ..))?.multiply(&one)?)
        };
        let (k, v) = (own(&k)?, own(&v)?);
        // Evaluated now: a lazy copy would keep the batch's graph alive.
        eval([&k, &v])?;
        Ok(BatchKVCache {
            inner: KVCache::from_filled(k, v)?,
            left_padding: Vec::new(),
        })
    }

    /// The bytes of the keys and values stored (the filled positions).
    pub fn nbytes(&self) -> usize {
        match self.inner.filled() {
            Ok(Some((k, v))) => k.nbytes() + v.nbytes(),
            _ => 0,
        }
    }

    /// Appends `other`'s rows after this cache's, padding the shorter side
    /// on the left so that both end at the same slot.
    pub fn extend(&mut self, other: &BatchKVCache) -> Result<()> {
        let (len, olen) = (self.offset(), other.offset());
        let s = len.max(olen);
        let (mine, theirs) = match (self.filled_to(s)?, other.filled_to(s)?) {
            (_, None) => return Ok(()),
            (None, Some(_)) => {
                *self = other.clone();
                return Ok(());
            }
            (Some(a), Some(b)) => (a, b),
        };
        let shape = |a: &Array| (a.dim(1), a.dim(3));
        if shape(&mine.0) != shape(&theirs.0) || shape(&mine.1) != shape(&theirs.1) {
            return Err(Error::CacheShape {
                what: format!(
                    "rows joining a batch differ in kv_heads or head_dim from the batch's \
                     (keys {:?}, values {:?})",
                    mine.0.shape(),
                    mine.1.shape()
                ),
                keys: theirs.0.shape().to_vec(),
                values: theirs.1.shape().to_vec(),
            });
        }
        let mut padding: Vec<i32> = self.left_padding().iter().map(|p| p + s - len).collect();
        padding.extend(other.left_padding().iter().map(|p| p + s - olen));
        self.inner = KVCache::from_filled(
            concatenate(&[mine.0, theirs.0], 0)?,
            concatenate(&[mine.1, theirs.1], 0)?,
        )?;
        self.left_padding = padding;
        Ok(())
    }

    /// Keeps the rows at `keep` (indices into the current rows, in the
    /// order given) and cuts the padding they all share.
    pub fn retain(&mut self, keep: &[usize]) -> Result<()> {
        let rows = self.rows();
        if let Some(&bad) = keep.iter().find(|&&i| i >= rows) {
            return Err(Error::InvalidArgument(format!(
                "row {bad} is not in a batch of {rows}"
            )));
        }
        let Some((k, v)) = self.inner.filled()? else {
            return Ok(());
        };
        if keep.is_empty() {
            *self = BatchKVCache::new();
            return Ok(());
        }
        let padding = self.left_padding();
        let padding: Vec<i32> = keep.iter().map(|&i| padding[i]).collect();
        let cut = padding.iter().copied().min().unwrap_or(0);
        let index = Array::from_slice(
            &keep.iter().map(|&i| i as i32).collect::<Vec<_>>(),
            &[keep.len() as i32],
        );
        let pick = |a: &Array| -> Result<Array> {
            Ok(a.take_axis(&index, 0)?.try_index((.., .., cut.., ..))?)
        };
        self.inner = KVCache::from_filled(pick(&k)?, pick(&v)?)?;
        self.left_padding = padding.iter().map(|p| p - cut).collect();
        Ok(())
    }
}

impl KeyValueCache for BatchKVCache {
    fn new() -> Self {
        Self::default()
    }

    /// The slot the next token of every row is written to.
    fn offset(&self) -> i32 {
        self.inner.offset()
    }

    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        self.inner.update_and_fetch(keys, values)
    }

    fn positions(&self) -> Result<Positions> {
        if !self.padded() {
            return Ok(Positions::Shared(self.offset()));
        }
        let at: Vec<i32> = self
            .left_padding
            .iter()
            .map(|p| self.offset() - p)
            .collect();
        Ok(Positions::PerRow(Array::from_slice(
            &at,
            &[at.len() as i32],
        )))
    }

    fn mask(&self, query_len: i32, window: Option<i32>) -> Result<SdpaMask> {
        let offset = self.offset();
        if !self.padded() {
            return create_attention_mask(query_len, offset, window);
        }
        let total = offset + query_len;
        let b = self.left_padding.len() as i32;
        let order =
            create_causal_mask(query_len, offset, window)?.reshape(&[1, 1, query_len, total])?;
        let slots = arange::<i32, i32>(0, total, 1)?.reshape(&[1, 1, 1, total])?;
        let padding = Array::from_slice(&self.left_padding, &[b, 1, 1, 1]);
        Ok(SdpaMask::Array(order.logical_and(slots.ge(&padding)?)?))
    }

    /// Unpadded rows trim together; padded rows cannot be trimmed one by
    /// one, so a padded batch does not trim.
    fn max_trim(&self) -> i32 {
        if self.padded() {
            0
        } else {
            self.inner.max_trim()
        }
    }

    fn trim(&mut self, n: i32) -> Result<i32> {
        if self.padded() {
            Ok(0)
        } else {
            self.inner.trim(n)
        }
    }

    fn state(&self) -> Vec<Array> {
        self.inner.state()
    }
}
