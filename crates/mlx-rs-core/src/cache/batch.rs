//! [`BatchKVCache`]: one layer's keys and values for a batch of sequences
//! of different lengths, for continuous batching.
//!
//! Layout: one cache per row, each a [`RotatingKVCache`] made for the
//! layer's window (without one it stores every position, as
//! [`KVCache`](super::KVCache)).
//! A row holds only its own positions (no padding to the longest row), and
//! a sliding-window row only its last `W` ones, so a batch costs the sum of
//! its rows' lengths (each capped at `W`), not rows × longest.
//!
//! A forward over several rows goes through [`KeyValueCache::attend`]: row
//! by row, the row's own mask (from its cache, before its update), its
//! update, and the attention over what it holds; the outputs are joined on
//! the batch axis. Everything else (projections, RoPE at each row's own
//! [`Positions::PerRow`] offset, the MLP) stays one batched operation. A
//! single row is the plain path: one update, one attention call.
//!
//! Rows join with [`BatchKVCache::extend`] and leave with
//! [`BatchKVCache::retain`]; neither copies the other rows' buffers.
//! [`KeyValueCache::quantize`] quantizes each row on its own, once that row
//! holds enough positions; rows stored dense and quantized may share a batch.

use mlx_rs::{
    ops::{concatenate, indexing::TryIndexOp},
    Array,
};

use super::{check_update, AttendFn, KeyValueCache, KvQuantization, Positions, RotatingKVCache};
use crate::error::{Error, Result};
use crate::mask::SdpaMask;

/// A key/value cache for a batch of rows of their own lengths (see the
/// module notes).
#[derive(Debug, Clone, Default)]
pub struct BatchKVCache {
    /// The layer's sliding window, given to each new row's cache.
    window: Option<i32>,
    rows: Vec<RotatingKVCache>,
    /// Set by [`KeyValueCache::quantize`]: also applied to rows made later.
    quantization: Option<KvQuantization>,
}

impl BatchKVCache {
    /// An empty cache (rows come with the first update or with
    /// [`extend`](BatchKVCache::extend)).
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rows (0 while empty).
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Row `index` alone: a one-row cache of its own positions, in buffers
    /// of its own, evaluated (see [`RotatingKVCache::compacted`]).
    pub fn row(&self, index: usize) -> Result<BatchKVCache> {
        let row = self.rows.get(index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "row {index} is not in a batch of {}",
                self.rows.len()
            ))
        })?;
        Ok(BatchKVCache {
            window: self.window,
            rows: vec![row.compacted()?],
            quantization: self.quantization,
        })
    }

    /// The bytes of the key and value buffers the rows hold: their own
    /// positions (capped at the window), plus each unbounded row's
    /// preallocated tail (under [`KVCache::STEP`](super::KVCache::STEP)
    /// positions; none in a
    /// [`row`](BatchKVCache::row) copy).
    pub fn nbytes(&self) -> usize {
        self.rows
            .iter()
            .flat_map(KeyValueCache::state)
            .map(|a| a.nbytes())
            .sum()
    }

    /// Appends `other`'s rows after this cache's (their caches are shared,
    /// nothing is copied). Both must be made for the same window and hold
    /// keys and values of the same heads and head dimensions.
    pub fn extend(&mut self, other: &BatchKVCache) -> Result<()> {
        if other.rows.is_empty() {
            return Ok(());
        }
        if self.rows.is_empty() {
            *self = other.clone();
            return Ok(());
        }
        if self.window != other.window {
            return Err(Error::InvalidArgument(format!(
                "rows of window {:?} cannot join a batch of window {:?}",
                other.window, self.window
            )));
        }
        let dims = |c: &BatchKVCache| -> Vec<(i32, i32)> {
            c.rows
                .iter()
                .find_map(RotatingKVCache::stored_shapes)
                .iter()
                .flatten()
                .map(|shape| (shape[1], shape[3]))
                .collect()
        };
        let (mine, theirs) = (dims(self), dims(other));
        if !mine.is_empty() && !theirs.is_empty() && mine != theirs {
            return Err(Error::InvalidArgument(format!(
                "rows joining a batch differ in kv_heads or head_dim (heads, dim) from the \
                 batch's: {theirs:?} against {mine:?}"
            )));
        }
        self.rows.extend(other.rows.iter().cloned());
        Ok(())
    }

    /// Keeps the rows at `keep` (indices into the current rows, in the
    /// order given).
    pub fn retain(&mut self, keep: &[usize]) -> Result<()> {
        let rows = self.rows.len();
        if let Some(&bad) = keep.iter().find(|&&i| i >= rows) {
            return Err(Error::InvalidArgument(format!(
                "row {bad} is not in a batch of {rows}"
            )));
        }
        self.rows = keep.iter().map(|&i| self.rows[i].clone()).collect();
        Ok(())
    }

    /// Quantizes row `index` as [`KeyValueCache::quantize`] does a whole
    /// batch, leaving the other rows as they are.
    pub fn quantize_row(&mut self, index: usize, quantization: &KvQuantization) -> Result<()> {
        let rows = self.rows.len();
        let row = self.rows.get_mut(index).ok_or_else(|| {
            Error::InvalidArgument(format!("row {index} is not in a batch of {rows}"))
        })?;
        row.quantize(quantization)
    }

    /// Whether the rows' offsets differ.
    fn ragged(&self) -> bool {
        let mut offsets = self.rows.iter().map(KeyValueCache::offset);
        let first = offsets.next();
        offsets.any(|o| Some(o) != first)
    }

    /// Makes one empty row per batch entry of `keys` if there are none yet,
    /// and checks that `keys` has one entry per row.
    fn rows_for(&mut self, keys: &Array, values: &Array) -> Result<usize> {
        check_update(keys, values, None)?;
        let b = keys.dim(0).max(0) as usize;
        if self.rows.is_empty() {
            let mut row = RotatingKVCache::with_window(self.window);
            if let Some(q) = &self.quantization {
                row.quantize(q)?;
            }
            self.rows = vec![row; b];
        }
        if b != self.rows.len() {
            return Err(Error::CacheShape {
                what: format!("an update of {b} rows for a batch of {}", self.rows.len()),
                keys: keys.shape().to_vec(),
                values: values.shape().to_vec(),
            });
        }
        Ok(b)
    }
}

/// Row `i` of `a` (`[B, ...]`), as `[1, ...]`.
fn row_of(a: &Array, i: usize) -> Result<Array> {
    let i = i as i32;
    Ok(a.try_index(i..i + 1)?)
}

impl KeyValueCache for BatchKVCache {
    fn new() -> Self {
        Self::default()
    }

    fn with_window(window: Option<i32>) -> Self {
        BatchKVCache {
            window,
            rows: Vec::new(),
            quantization: None,
        }
    }

    /// The longest row's offset (every row's for one row).
    fn offset(&self) -> i32 {
        self.rows
            .iter()
            .map(KeyValueCache::offset)
            .max()
            .unwrap_or(0)
    }

    /// Updates every row; the rows' keys and values are joined on the batch
    /// axis, so their offsets must be equal (then their layouts are, and
    /// [`mask`](KeyValueCache::mask) is every row's). Rows of different
    /// lengths go through [`attend`](KeyValueCache::attend).
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let b = self.rows_for(keys, values)?;
        if b == 1 {
            return self.rows[0].update_and_fetch(keys, values);
        }
        if self.ragged() {
            return Err(Error::InvalidArgument(
                "rows of different lengths cannot be fetched as one array; use attend".into(),
            ));
        }
        let mut ks = Vec::with_capacity(b);
        let mut vs = Vec::with_capacity(b);
        for (i, row) in self.rows.iter_mut().enumerate() {
            let (k, v) = row.update_and_fetch(&row_of(keys, i)?, &row_of(values, i)?)?;
            ks.push(k);
            vs.push(v);
        }
        Ok((concatenate(&ks, 0)?, concatenate(&vs, 0)?))
    }

    fn positions(&self) -> Result<Positions> {
        if !self.ragged() {
            return Ok(Positions::Shared(self.offset()));
        }
        let at: Vec<i32> = self.rows.iter().map(KeyValueCache::offset).collect();
        Ok(Positions::PerRow(Array::from_slice(
            &at,
            &[at.len() as i32],
        )))
    }

    /// The rows' mask while their offsets are equal (one row's, which is
    /// every row's). Rows of different lengths get no mask here, cheaply:
    /// [`attend`](KeyValueCache::attend) makes each row's own.
    fn mask(&self, query_len: i32, window: Option<i32>) -> Result<SdpaMask> {
        match self.rows.first() {
            None => RotatingKVCache::with_window(self.window).mask(query_len, window),
            Some(_) if self.ragged() => Ok(SdpaMask::None),
            Some(row) => row.mask(query_len, window),
        }
    }

    /// With several rows: per row, its own mask, update and attention
    /// (see the module notes); `mask` is not used then.
    fn attend(
        &mut self,
        queries: &Array,
        keys: &Array,
        values: &Array,
        mask: &SdpaMask,
        window: Option<i32>,
        attend: &mut AttendFn<'_>,
    ) -> Result<Array> {
        let b = self.rows_for(keys, values)?;
        if b == 1 {
            let stored = self.rows[0].update_and_fetch_stored(keys, values)?;
            return attend(queries, &stored, mask);
        }
        let len = keys.dim(2);
        let mut outs = Vec::with_capacity(b);
        for (i, row) in self.rows.iter_mut().enumerate() {
            let own_mask = row.mask(len, window)?;
            let stored = row.update_and_fetch_stored(&row_of(keys, i)?, &row_of(values, i)?)?;
            outs.push(attend(&row_of(queries, i)?, &stored, &own_mask)?);
        }
        Ok(concatenate(&outs, 0)?)
    }

    /// Quantizes every row holding at least `quantization.start`
    /// positions, and each later one once it does (rows made by the next
    /// update included).
    fn quantize(&mut self, quantization: &KvQuantization) -> Result<()> {
        self.quantization = Some(*quantization);
        for row in &mut self.rows {
            row.quantize(quantization)?;
        }
        Ok(())
    }

    /// The most every row can trim.
    fn max_trim(&self) -> i32 {
        self.rows
            .iter()
            .map(KeyValueCache::max_trim)
            .min()
            .unwrap_or(0)
    }

    /// Trims every row by the same `min(n, max_trim())` positions.
    fn trim(&mut self, n: i32) -> Result<i32> {
        let n = n.clamp(0, self.max_trim());
        for row in &mut self.rows {
            row.trim(n)?;
        }
        Ok(n)
    }

    fn state(&self) -> Vec<Array> {
        self.rows.iter().flat_map(KeyValueCache::state).collect()
    }
}
