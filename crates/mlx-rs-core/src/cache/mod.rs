//! Key/value caches for incremental decoding.
//!
//! Design: a model holds no state; the caller owns one cache per layer and
//! passes them to every forward call (as in mlx-lm). A cache receives the new
//! keys and values of one layer, laid out `[B, n_kv_heads, L, head_dim]`,
//! and returns everything seen so far along the sequence axis (axis 2).
//! [`KeyValueCache::new`] lets a model create the per-layer caches itself.
//!
//! Two implementations:
//! - [`ConcatKeyValueCache`]: the simplest one, concatenates on every call;
//! - [`KVCache`]: preallocates buffers in steps of [`KVCache::STEP`]
//!   positions and writes new entries in place with slice updates, like
//!   mlx-lm's `KVCache`.

mod concat;
mod preallocated;

pub use concat::ConcatKeyValueCache;
pub use preallocated::KVCache;

use mlx_rs::Array;

use crate::error::{Error, Result};

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
    /// where `offset` is the new [`offset`](KeyValueCache::offset).
    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)>;

    /// Whether nothing has been stored yet.
    fn is_empty(&self) -> bool {
        self.offset() == 0
    }
}

/// Checks that `keys` and `values` are `[B, H, L, D]` with equal `B`, `H`
/// and `L`, and, when `stored` is given, that `B`, `H` and the head
/// dimensions agree with what the cache already holds.
pub(crate) fn check_update(
    keys: &Array,
    values: &Array,
    stored: Option<(&Array, &Array)>,
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
        let (sk, sv) = (sk.shape(), sv.shape());
        if sk[..2] != k[..2] || sk[3] != k[3] || sv[3] != v[3] {
            return Err(fail(
                "batch, kv_heads or head_dim differ from those already cached",
            ));
        }
    }
    Ok(())
}
