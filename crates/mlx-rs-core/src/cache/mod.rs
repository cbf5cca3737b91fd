//! Key/value caches for incremental decoding.
//!
//! Design: a model holds no state; the caller owns one cache per layer and
//! passes them to every forward call (as in mlx-lm). A cache receives the new
//! keys and values of one layer, laid out `[B, n_kv_heads, L, head_dim]`,
//! and returns everything seen so far along the sequence axis (axis 2).
//! [`KeyValueCache::with_window`] lets a model create the per-layer caches
//! itself, telling each the sliding window of its layer (if any).
//!
//! The attention mask is the cache's business ([`KeyValueCache::mask`]): a
//! cache that stores keys out of positional order (the rotating one) knows
//! which stored key sits at which position; the others use the positional
//! mask of [`create_attention_mask`].
//!
//! Four implementations:
//! - [`ConcatKeyValueCache`]: the simplest one, concatenates on every call;
//! - [`KVCache`]: preallocates buffers in steps of [`KVCache::STEP`]
//!   positions and writes new entries in place with slice updates, like
//!   mlx-lm's `KVCache`;
//! - [`RotatingKVCache`]: for sliding-window layers, keeps only the last
//!   `W` positions in a ring buffer, so memory stays bounded by the window;
//! - [`BatchKVCache`]: a batch of sequences of different lengths, one cache
//!   per row, for continuous batching (per-row positions, masks, attention).
//!
//! [`KeyValueCache::attend`] stores the new keys and values and runs the
//! caller's attention over them: one call for most caches, one per row for
//! a [`BatchKVCache`] whose rows hold different numbers of positions.
//!
//! Quantized storage (mlx-lm's `QuantizedKVCache`): [`KeyValueCache::quantize`]
//! switches a [`KVCache`], a [`RotatingKVCache`] (windowed too) or every row
//! of a [`BatchKVCache`] to keys and values stored quantized; the attention
//! then receives a [`StoredKv::Quantized`] and [`attention`] runs it through
//! quantized matrix products.

mod batch;
mod buffer;
mod concat;
mod list;
mod preallocated;
mod quantized;
mod rotating;
mod slice_write;
mod trim_ahead;

pub use batch::BatchKVCache;
pub use concat::ConcatKeyValueCache;
pub use list::{cache_offset, trim_cache};
pub use preallocated::KVCache;
pub use quantized::{attention, KvQuantization, QuantizedArray, StoredKv};
pub use rotating::RotatingKVCache;
pub use trim_ahead::TrimAhead;

use mlx_rs::Array;

use crate::error::{Error, Result};
use crate::mask::{create_attention_mask, SdpaMask};

/// Where the new tokens' positions start: what RoPE rotates them by.
#[derive(Debug, Clone)]
pub enum Positions {
    /// The same position for every row.
    Shared(i32),
    /// One start per row, `[B]` int32 (a batch of different lengths).
    PerRow(Array),
}

/// The attention a layer runs over a cache: `(queries, stored keys and
/// values, mask)` to its output, `[B, heads, L, dim]` for `B` rows of
/// queries ([`attention`] handles both kinds of [`StoredKv`]).
pub type AttendFn<'a> = dyn FnMut(&Array, &StoredKv, &SdpaMask) -> Result<Array> + 'a;

/// What a fused decode step gives ([`DecodeStepFn`]): the attention's
/// heads and the cache's buffers with the row's position written.
#[derive(Debug, Clone)]
pub struct DecodeStep {
    /// The attention's output for the row, `[1, heads * dim]`.
    pub heads: Array,
    /// The keys' buffer after the step.
    pub keys: Array,
    /// The values' buffer after the step.
    pub values: Array,
}

/// A layer's fused decode step over a cache's dense buffers: `(keys,
/// values, offset)`, `[1, kv_heads, capacity, dim]` with positions
/// `0..offset` filled, to a [`DecodeStep`] that also writes position
/// `offset`; `None` where it does not apply (e.g.
/// `mlx_rs_core::cpu_decode_row::decode_row`).
pub type DecodeStepFn<'a> = dyn FnMut(&Array, &Array, i32) -> Result<Option<DecodeStep>> + 'a;

/// A per-layer store of attention keys and values.
pub trait KeyValueCache {
    /// Creates an empty cache (one is made per layer).
    fn new() -> Self
    where
        Self: Sized;

    /// Number of positions already stored: the absolute position of the next
    /// token written.
    fn offset(&self) -> i32;

    /// Appends `keys` and `values` (each `[B, n_kv_heads, L, head_dim]`) and
    /// returns all keys and values stored so far, `[B, n_kv_heads, offset, head_dim]`
    /// where `offset` is the new [`offset`](KeyValueCache::offset)
    /// (dequantized if the cache stores them quantized).
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)>;

    /// As [`update_and_fetch`](KeyValueCache::update_and_fetch), returning
    /// the keys and values as stored (quantized after
    /// [`quantize`](KeyValueCache::quantize)). The default wraps
    /// `update_and_fetch` in [`StoredKv::Dense`].
    fn update_and_fetch_stored(&mut self, keys: &Array, values: &Array) -> Result<StoredKv> {
        let (keys, values) = self.update_and_fetch(keys, values)?;
        Ok(StoredKv::Dense { keys, values })
    }

    /// Switches to quantized storage as `quantization` says, if the cache
    /// holds at least `quantization.start` positions (each row on its own
    /// for a batch) and is not quantized yet; otherwise does nothing. What
    /// is stored is quantized at once, later updates as they come. The
    /// default: an error (the cache has no quantized storage).
    fn quantize(&mut self, quantization: &KvQuantization) -> Result<()> {
        let _ = quantization;
        Err(Error::InvalidArgument(
            "this key/value cache cannot store keys and values quantized".into(),
        ))
    }

    /// The position of the next token written, per row if rows differ (the
    /// default: [`offset`](KeyValueCache::offset) for every row).
    fn positions(&self) -> Result<Positions> {
        Ok(Positions::Shared(self.offset()))
    }

    /// Whether nothing has been stored yet.
    fn is_empty(&self) -> bool {
        self.offset() == 0
    }

    /// Creates an empty cache for a layer attending over a sliding window of
    /// `window` positions (`None`: the whole history). Caches that store every
    /// position ignore the window (the mask applies it); the default calls
    /// [`new`](KeyValueCache::new).
    fn with_window(window: Option<i32>) -> Self
    where
        Self: Sized,
    {
        let _ = window;
        Self::new()
    }

    /// The mask for `query_len` new queries attending over the keys the next
    /// [`update_and_fetch`](KeyValueCache::update_and_fetch) of `query_len`
    /// positions will return, for a layer with the given sliding `window`.
    /// Must be called before that update. The default is the positional mask
    /// of [`create_attention_mask`] at [`offset`](KeyValueCache::offset), right
    /// for caches that return every position in order.
    fn mask(&self, query_len: i32, window: Option<i32>) -> Result<SdpaMask> {
        create_attention_mask(query_len, self.offset(), window)
    }

    /// Stores `keys` and `values` and gives `attend(queries, stored, mask)`
    /// over all keys and values as stored, `mask` having come from
    /// [`mask`](KeyValueCache::mask) for this update and the layer's
    /// `window`. The default is one
    /// [`update_and_fetch_stored`](KeyValueCache::update_and_fetch_stored)
    /// and one call;
    /// a cache whose rows differ in length overrides it to attend row by
    /// row with each row's own mask.
    fn attend(
        &mut self,
        queries: &Array,
        keys: &Array,
        values: &Array,
        mask: &SdpaMask,
        window: Option<i32>,
        attend: &mut AttendFn<'_>,
    ) -> Result<Array> {
        let _ = window;
        let stored = self.update_and_fetch_stored(keys, values)?;
        attend(queries, &stored, mask)
    }

    /// Runs `step`, a fused decode step that stores one row's keys and
    /// values and attends over all that is stored, on the cache's dense
    /// buffers where the cache can give them (with room for the row), and
    /// keeps the buffers it returns; `Ok(None)` where the cache cannot or
    /// `step` declines, nothing stored (then use
    /// [`attend`](KeyValueCache::attend)). For a row whose mask is none
    /// (every stored position visible). The default: `None`.
    fn attend_decode_row(&mut self, step: &mut DecodeStepFn<'_>) -> Result<Option<Array>> {
        let _ = step;
        Ok(None)
    }

    /// How many of the newest positions [`trim`](KeyValueCache::trim) can
    /// remove while keeping the cache exact for what follows.
    fn max_trim(&self) -> i32 {
        self.offset()
    }

    /// Removes the newest `min(n, max_trim())` positions (none for `n <= 0`)
    /// and returns how many were removed; the next update continues at the
    /// reduced [`offset`](KeyValueCache::offset).
    fn trim(&mut self, n: i32) -> Result<i32>;

    /// The arrays the cache stores (handles, cheap to clone), for evaluating
    /// them, e.g. after a prefill chunk whose logits are not needed.
    fn state(&self) -> Vec<Array>;
}

/// Checks that `keys` and `values` are `[B, H, L, D]` with equal `B`, `H`
/// and `L`, and, when the shapes of what the cache stores are given (as
/// unquantized), that `B`, `H` and the head dimensions agree with them.
pub(crate) fn check_update(
    keys: &Array,
    values: &Array,
    stored: Option<(&[i32], &[i32])>,
) -> Result<()> {
    let fail = |what: &str| Error::CacheShape {
        what: what.to_owned(),
        keys: keys.shape().to_vec(),
        values: values.shape().to_vec(),
    };
    if keys.ndim() != 4 || values.ndim() != 4 {
        return Err(fail(
            "keys and values must be 4-D [batch, kv_heads, length, head_dim]",
        ));
    }
    let (k, v) = (keys.shape(), values.shape());
    if k[..3] != v[..3] {
        return Err(fail("keys and values differ in batch, kv_heads or length"));
    }
    if let Some((sk, sv)) = stored {
        if sk.len() != 4 || sv.len() != 4 || sk[..2] != k[..2] || sk[3] != k[3] || sv[3] != v[3] {
            return Err(fail(
                "batch, kv_heads or head_dim differ from those already cached",
            ));
        }
    }
    Ok(())
}
