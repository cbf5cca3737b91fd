//! [`RotatingKVCache`]: a ring buffer of the last `W` positions for layers
//! with a sliding window of `W`, so memory stays bounded by the window
//! however long generation runs (after mlx-lm's `RotatingKVCache`).
//!
//! Invariant: absolute position `p` lives in slot `(p - phase) mod W`; the
//! valid slots are the last `min(offset, W)` positions. Until the window
//! has filled, the buffers are shorter than `W` and grow as mlx-lm's do (a
//! first chunk inside the window is kept as it is, then the buffers grow
//! by [`KVCache::STEP`] positions at a time, never past `W`), so a short
//! context on a model with a large window holds little memory; from the
//! time `offset` reaches `W` they hold exactly `W` slots. `phase` is 0
//! until a multi-token chunk crosses the window, which stores the last `W`
//! positions in temporal order (so `phase = end mod W`). This is the slot
//! layout mlx-lm's `RotatingKVCache` ends up with, so attention sums the
//! keys in the same order as mlx-lm's. An update of `L` positions at
//! `offset`:
//! - `offset + L <= W`: written in place (after growing the buffers if
//!   needed), the filled prefix returned (in positional order, the window
//!   cuts nothing);
//! - `L == 1` past the window: written in place over the oldest slot; the
//!   whole ring is returned, and it is exactly the query's window, so no mask
//!   is needed although the order is not positional;
//! - otherwise (a multi-token chunk past or across the window): the last
//!   `W - 1` stored positions are put back in temporal order and the new ones
//!   appended, so every query of the chunk sees its full window; that longer
//!   array is returned and only its last `W` positions are kept.
//!
//! [`KeyValueCache::mask`] gives the mask matching each case; it depends only
//! on `(offset, L, W)`. Without a window (`with_window(None)`, `new()`) the
//! cache behaves as [`KVCache`].

use mlx_rs::{
    ops::{
        concatenate,
        indexing::{Ellipsis, TryIndexOp},
    },
    Array,
};

use super::{
    check_update, extend_with_zeros, slice_write::write_positions, KVCache, KeyValueCache,
};
use crate::error::{Error, Result};
use crate::mask::{create_attention_mask, SdpaMask};

/// A key/value cache holding only the last `window` positions.
#[derive(Debug, Clone, Default)]
pub struct RotatingKVCache {
    window: Option<i32>,
    unbounded: KVCache,
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
    phase: i32,
    /// The oldest position the buffers still hold: `max(0, end - W)` over
    /// every update (a trim does not bring overwritten positions back).
    oldest: i32,
}

impl RotatingKVCache {
    /// The window this cache was made for (`None`: it keeps everything).
    pub fn window(&self) -> Option<i32> {
        self.window
    }

    /// Number of positions the buffers hold (their length on the sequence
    /// axis): with a window, at most `W`, and `W` once the offset has
    /// reached it.
    pub fn buffer_len(&self) -> i32 {
        match self.window {
            None => self.unbounded.capacity(),
            Some(_) => self.keys.as_ref().map_or(0, |k| k.dim(2)),
        }
    }

    /// A copy in buffers of its own, evaluated, holding only what is still
    /// needed: the filled positions (no preallocated tail) until the ring
    /// has wrapped, the whole ring after. Multiplied by one: MLX's `copy`
    /// and `contiguous` may share the source's buffers, keeping them alive.
    pub fn compacted(&self) -> Result<Self> {
        let own = |a: &Array, len: i32| -> Result<Array> {
            let one = Array::from_f32(1.0).as_dtype(a.dtype())?;
            let a = a.try_index((Ellipsis, ..len, ..))?.multiply(&one)?;
            a.eval()?;
            Ok(a)
        };
        let fresh = Self::with_window(self.window);
        if self.offset() == 0 {
            return Ok(fresh);
        }
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            // No window: the unbounded cache's filled prefix.
            let Some((k, v)) = self.unbounded.filled()? else {
                return Ok(fresh);
            };
            let len = k.dim(2);
            return Ok(RotatingKVCache {
                unbounded: KVCache::from_filled(own(&k, len)?, own(&v, len)?)?,
                ..fresh
            });
        };
        // Unwrapped (oldest 0, phase 0): positions sit in order from slot 0.
        let len = if self.oldest == 0 {
            self.offset.min(k.dim(2))
        } else {
            k.dim(2)
        };
        Ok(RotatingKVCache {
            keys: Some(own(k, len)?),
            values: Some(own(v, len)?),
            ..self.clone()
        })
    }

    /// The last `min(offset, W - 1)` stored positions in temporal order.
    fn recent(&self, w: i32) -> Result<Option<(Array, Array)>> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Ok(None);
        };
        let prev = self.offset;
        if prev == 0 {
            return Ok(None);
        }
        let pick = |a: &Array| -> Result<Array> {
            if prev < w {
                return Ok(a.try_index((Ellipsis, ..prev, ..))?);
            }
            // Positions prev-W+1 .. prev-1 sit in slots s+1..W, then 0..s,
            // where s is the slot of the oldest position, prev - W.
            let s = (prev - self.phase).rem_euclid(w);
            Ok(if s + 1 == w {
                a.try_index((Ellipsis, ..s, ..))?
            } else if s == 0 {
                a.try_index((Ellipsis, 1.., ..))?
            } else {
                concatenate(
                    &[
                        a.try_index((Ellipsis, (s + 1).., ..))?,
                        a.try_index((Ellipsis, ..s, ..))?,
                    ],
                    2,
                )?
            })
        };
        Ok(Some((pick(k)?, pick(v)?)))
    }

    /// Stores the last `W` positions of `all` (temporal order, its last
    /// position at `end - 1`) as they are: slot 0 holds position `end - W`.
    fn store_last(&mut self, all_k: &Array, all_v: &Array, end: i32, w: i32) -> Result<()> {
        let total = all_k.dim(2);
        self.keys = Some(all_k.try_index((Ellipsis, (total - w).., ..))?);
        self.values = Some(all_v.try_index((Ellipsis, (total - w).., ..))?);
        self.phase = end.rem_euclid(w);
        Ok(())
    }

    /// The buffers, grown to hold at least `need` (at most `W`) positions:
    /// to [`KVCache::STEP`] positions past the offset, as mlx-lm's grow for
    /// a single token, or to the end of a longer chunk; never past `W`. A
    /// buffer shorter than `W` holds positions in order from slot 0
    /// (nothing has wrapped), so the new slots go at its end.
    fn grown(&mut self, keys: &Array, values: &Array, need: i32, w: i32) -> Result<(Array, Array)> {
        let kept = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) if k.dim(2) >= need => return Ok((k, v)),
            (Some(k), Some(v)) => Some((k, v)),
            _ => None,
        };
        let held = kept.as_ref().map_or(0, |(k, _)| k.dim(2));
        let len = (self.offset + KVCache::STEP.max(keys.dim(2))).min(w);
        extend_with_zeros(kept, keys, values, len - held)
    }

    fn update_windowed(&mut self, keys: &Array, values: &Array, w: i32) -> Result<(Array, Array)> {
        check_update(keys, values, self.keys.as_ref().zip(self.values.as_ref()))?;
        let prev = self.offset;
        let len = keys.dim(2);
        let end = prev + len;
        if self.keys.is_none() && len > 1 && end <= w {
            // A first chunk inside the window is kept as it is (as mlx-lm
            // keeps it): no buffer yet, the next update grows one.
            self.keys = Some(keys.clone());
            self.values = Some(values.clone());
            self.offset = end;
            return Ok((keys.clone(), values.clone()));
        }
        if end <= w || len == 1 {
            let (k, v) = self.grown(keys, values, end.min(w), w)?;
            let start = (prev - self.phase).rem_euclid(w);
            let k = write_positions(&k, keys, start)?;
            let v = write_positions(&v, values, start)?;
            let out = if end <= w {
                (
                    k.try_index((Ellipsis, ..end, ..))?,
                    v.try_index((Ellipsis, ..end, ..))?,
                )
            } else {
                (k.clone(), v.clone())
            };
            self.keys = Some(k);
            self.values = Some(v);
            self.offset = end;
            self.oldest = self.oldest.max(end - w);
            return Ok(out);
        }
        let (all_k, all_v) = match self.recent(w)? {
            Some((k, v)) => (
                concatenate(&[k, keys.clone()], 2)?,
                concatenate(&[v, values.clone()], 2)?,
            ),
            None => (keys.clone(), values.clone()),
        };
        self.store_last(&all_k, &all_v, end, w)?;
        self.offset = end;
        self.oldest = self.oldest.max(end - w);
        Ok((all_k, all_v))
    }
}

impl KeyValueCache for RotatingKVCache {
    fn new() -> Self {
        Self::default()
    }

    fn with_window(window: Option<i32>) -> Self {
        RotatingKVCache {
            window,
            ..Self::default()
        }
    }

    fn offset(&self) -> i32 {
        match self.window {
            None => self.unbounded.offset(),
            Some(_) => self.offset,
        }
    }

    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        match self.window {
            None => self.unbounded.update_and_fetch(keys, values),
            Some(w) if w < 1 => Err(Error::InvalidMask(format!(
                "sliding window must be at least 1, got {w}"
            ))),
            Some(w) => self.update_windowed(keys, values, w),
        }
    }

    fn mask(&self, query_len: i32, window: Option<i32>) -> Result<SdpaMask> {
        let Some(w) = self.window else {
            return self.unbounded.mask(query_len, window);
        };
        let prev = self.offset;
        if prev + query_len <= w {
            create_attention_mask(query_len, prev, Some(w))
        } else if query_len == 1 {
            Ok(SdpaMask::None)
        } else {
            // Keys: the last min(prev, W - 1) positions, then the chunk; the
            // mask is shift-invariant, so the kept count acts as the offset.
            create_attention_mask(query_len, prev.min(w - 1), Some(w))
        }
    }

    fn max_trim(&self) -> i32 {
        match self.window {
            None => self.unbounded.max_trim(),
            // Trimming to offset `o` is exact only while the next query's
            // window, positions `o - W + 1 .. o - 1`, is still held. Before
            // the ring overwrote anything every position is; after, `o` must
            // stay at or above `oldest + W - 1`, and earlier trims count.
            Some(_) if self.oldest == 0 => self.offset,
            Some(w) => (self.offset - (self.oldest + w - 1)).max(0),
        }
    }

    fn trim(&mut self, n: i32) -> Result<i32> {
        if self.window.is_none() {
            return self.unbounded.trim(n);
        }
        let n = n.clamp(0, self.max_trim());
        self.offset -= n;
        Ok(n)
    }

    fn state(&self) -> Vec<Array> {
        match self.window {
            None => self.unbounded.state(),
            Some(_) => self.keys.iter().chain(&self.values).cloned().collect(),
        }
    }
}
