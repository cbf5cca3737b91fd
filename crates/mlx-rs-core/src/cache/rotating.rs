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
//! cache behaves as [`KVCache`]. After [`KeyValueCache::quantize`] the ring
//! holds quantized keys and values, in the same slots (mlx-lm has no
//! quantized rotating cache).

use mlx_rs::Array;

use super::buffer::KvBuffer;
use super::quantized::{KvQuantization, StoredKv};
use super::{check_update, KVCache, KeyValueCache};
use crate::error::{Error, Result};
use crate::mask::{create_attention_mask, SdpaMask};

/// A key/value cache holding only the last `window` positions.
#[derive(Debug, Clone, Default)]
pub struct RotatingKVCache {
    window: Option<i32>,
    unbounded: KVCache,
    keys: Option<KvBuffer>,
    values: Option<KvBuffer>,
    offset: i32,
    phase: i32,
    /// The oldest position the buffers still hold: `max(0, end - W)` over
    /// every update (a trim does not bring overwritten positions back).
    oldest: i32,
    /// With a window: set once the ring stores quantized keys and values.
    quantization: Option<KvQuantization>,
}

impl RotatingKVCache {
    /// The window this cache was made for (`None`: it keeps everything).
    pub fn window(&self) -> Option<i32> {
        self.window
    }

    /// How keys and values are quantized (`None`: stored as they come).
    pub fn quantization(&self) -> Option<KvQuantization> {
        match self.window {
            None => self.unbounded.quantization(),
            Some(_) => self.quantization,
        }
    }

    /// Number of positions the buffers hold (their length on the sequence
    /// axis): with a window, at most `W`, and `W` once the offset has
    /// reached it.
    pub fn buffer_len(&self) -> i32 {
        match self.window {
            None => self.unbounded.capacity(),
            Some(_) => self.keys.as_ref().map_or(0, KvBuffer::len),
        }
    }

    /// A copy in buffers of its own, evaluated, holding only what is still
    /// needed: the filled positions (no preallocated tail) until the ring
    /// has wrapped, the whole ring after. Multiplied by one: MLX's `copy`
    /// and `contiguous` may share the source's buffers, keeping them alive.
    pub fn compacted(&self) -> Result<Self> {
        let own = |b: &KvBuffer, len: i32| -> Result<KvBuffer> {
            b.prefix(len)?.map(|a| {
                let one = Array::from_f32(1.0).as_dtype(a.dtype())?;
                let a = a.multiply(&one)?;
                a.eval()?;
                Ok(a)
            })
        };
        let fresh = Self::with_window(self.window);
        if self.offset() == 0 {
            return Ok(fresh);
        }
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            // No window: the unbounded cache's filled prefix.
            let Some((k, v)) = self.unbounded.filled_buffers()? else {
                return Ok(fresh);
            };
            let len = k.len();
            let quantization = self.unbounded.quantization();
            return Ok(RotatingKVCache {
                unbounded: KVCache::from_buffers(own(&k, len)?, own(&v, len)?, quantization)?,
                ..fresh
            });
        };
        // Unwrapped (oldest 0, phase 0): positions sit in order from slot 0.
        let len = if self.oldest == 0 {
            self.offset.min(k.len())
        } else {
            k.len()
        };
        Ok(RotatingKVCache {
            keys: Some(own(k, len)?),
            values: Some(own(v, len)?),
            ..self.clone()
        })
    }

    /// The unquantized shapes of the stored keys and values buffers
    /// (`None` while nothing is stored).
    pub(crate) fn stored_shapes(&self) -> Option<[Vec<i32>; 2]> {
        let (k, v) = match self.window {
            None => self.unbounded.buffers()?,
            Some(_) => (self.keys.as_ref()?, self.values.as_ref()?),
        };
        Some([k.shape(), v.shape()])
    }

    /// The last `min(offset, W - 1)` stored positions in temporal order.
    fn recent(&self, w: i32) -> Result<Option<(KvBuffer, KvBuffer)>> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Ok(None);
        };
        let prev = self.offset;
        if prev == 0 {
            return Ok(None);
        }
        let pick = |a: &KvBuffer| -> Result<KvBuffer> {
            if prev < w {
                return a.prefix(prev);
            }
            // Positions prev-W+1 .. prev-1 sit in slots s+1..W, then 0..s,
            // where s is the slot of the oldest position, prev - W.
            let s = (prev - self.phase).rem_euclid(w);
            if s + 1 == w {
                a.prefix(s)
            } else if s == 0 {
                a.positions(1, None)
            } else {
                a.positions(s + 1, None)?.concat(&a.prefix(s)?)
            }
        };
        Ok(Some((pick(k)?, pick(v)?)))
    }

    /// Stores the last `W` positions of `all` (temporal order, its last
    /// position at `end - 1`) as they are: slot 0 holds position `end - W`.
    fn store_last(&mut self, all_k: &KvBuffer, all_v: &KvBuffer, end: i32, w: i32) -> Result<()> {
        let total = all_k.len();
        self.keys = Some(all_k.positions(total - w, None)?);
        self.values = Some(all_v.positions(total - w, None)?);
        self.phase = end.rem_euclid(w);
        Ok(())
    }

    /// The buffers, grown to hold at least `need` (at most `W`) positions:
    /// to [`KVCache::STEP`] positions past the offset, as mlx-lm's grow for
    /// a single token, or to the end of a longer chunk; never past `W`. A
    /// buffer shorter than `W` holds positions in order from slot 0
    /// (nothing has wrapped), so the new slots go at its end.
    fn grown(
        &mut self,
        keys: &KvBuffer,
        values: &KvBuffer,
        need: i32,
        w: i32,
    ) -> Result<(KvBuffer, KvBuffer)> {
        let kept = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) if k.len() >= need => return Ok((k, v)),
            (Some(k), Some(v)) => Some((k, v)),
            _ => None,
        };
        let held = kept.as_ref().map_or(0, |(k, _)| k.len());
        let len = (self.offset + KVCache::STEP.max(keys.len())).min(w);
        let (kept_k, kept_v) = kept.unzip();
        Ok((
            KvBuffer::extended(kept_k, keys, len - held)?,
            KvBuffer::extended(kept_v, values, len - held)?,
        ))
    }

    fn update_windowed(&mut self, keys: &Array, values: &Array, w: i32) -> Result<StoredKv> {
        let stored_k = self.keys.as_ref().map(KvBuffer::shape);
        let stored_v = self.values.as_ref().map(KvBuffer::shape);
        check_update(keys, values, stored_k.as_deref().zip(stored_v.as_deref()))?;
        let q = self.quantization.as_ref();
        let (keys, values) = (&KvBuffer::new(keys, q)?, &KvBuffer::new(values, q)?);
        let prev = self.offset;
        let len = keys.len();
        let end = prev + len;
        if self.keys.is_none() && len > 1 && end <= w {
            // A first chunk inside the window is kept as it is (as mlx-lm
            // keeps it): no buffer yet, the next update grows one.
            self.keys = Some(keys.clone());
            self.values = Some(values.clone());
            self.offset = end;
            return KvBuffer::stored(keys.clone(), values.clone());
        }
        if end <= w || len == 1 {
            let (k, v) = self.grown(keys, values, end.min(w), w)?;
            let start = (prev - self.phase).rem_euclid(w);
            let k = k.write(keys, start)?;
            let v = v.write(values, start)?;
            let out = if end <= w {
                KvBuffer::stored(k.prefix(end)?, v.prefix(end)?)?
            } else {
                KvBuffer::stored(k.clone(), v.clone())?
            };
            self.keys = Some(k);
            self.values = Some(v);
            self.offset = end;
            self.oldest = self.oldest.max(end - w);
            return Ok(out);
        }
        let (all_k, all_v) = match self.recent(w)? {
            Some((k, v)) => (k.concat(keys)?, v.concat(values)?),
            None => (keys.clone(), values.clone()),
        };
        self.store_last(&all_k, &all_v, end, w)?;
        self.offset = end;
        self.oldest = self.oldest.max(end - w);
        KvBuffer::stored(all_k, all_v)
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
        self.update_and_fetch_stored(keys, values)?.dense()
    }

    fn update_and_fetch_stored(&mut self, keys: &Array, values: &Array) -> Result<StoredKv> {
        match self.window {
            None => self.unbounded.update_and_fetch_stored(keys, values),
            Some(w) if w < 1 => Err(Error::InvalidMask(format!(
                "sliding window must be at least 1, got {w}"
            ))),
            Some(w) => self.update_windowed(keys, values, w),
        }
    }

    /// Quantizes what the ring holds, in place (slots unchanged), once
    /// `offset >= start`; without a window, as [`KVCache`] does.
    fn quantize(&mut self, quantization: &KvQuantization) -> Result<()> {
        if self.window.is_none() {
            return self.unbounded.quantize(quantization);
        }
        KvBuffer::quantize_pair(
            &mut self.keys,
            &mut self.values,
            &mut self.quantization,
            self.offset,
            quantization,
        )
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
            Some(_) => self
                .keys
                .iter()
                .chain(&self.values)
                .flat_map(KvBuffer::arrays)
                .collect(),
        }
    }
}
