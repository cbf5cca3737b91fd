//! Helpers over a model's list of per-layer cache slots
//! (`Vec<Option<C>>`, one slot per layer, as models take them).
//!
//! A prompt cache is reused across chat turns by keeping the list: its
//! [`cache_offset`] says how many tokens it holds, so the next turn feeds
//! only the tokens after them; [`trim_cache`] drops the newest positions
//! (e.g. to re-run the last token or to branch).

use super::KeyValueCache;
use crate::error::Result;

/// Number of tokens the caches hold: the largest offset over the filled
/// slots (all layers hold the same number after any forward call); 0 for an
/// empty list.
pub fn cache_offset<C: KeyValueCache>(cache: &[Option<C>]) -> i32 {
    cache
        .iter()
        .flatten()
        .map(KeyValueCache::offset)
        .max()
        .unwrap_or(0)
}

/// Removes the newest `n` positions from every layer's cache if every layer
/// can ([`KeyValueCache::max_trim`]); otherwise removes nothing. Returns how
/// many positions were removed (0 or `n`).
pub fn trim_cache<C: KeyValueCache>(cache: &mut [Option<C>], n: i32) -> Result<i32> {
    if n <= 0 || cache.iter().flatten().any(|c| c.max_trim() < n) {
        return Ok(0);
    }
    for c in cache.iter_mut().flatten() {
        c.trim(n)?;
    }
    Ok(n)
}
