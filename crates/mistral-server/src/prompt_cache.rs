//! [`PromptCache`]: the caches of finished requests, kept for later
//! prompts that start with the same tokens (a chat's next turn, a shared
//! system prompt), bounded in bytes and evicted least recently used first,
//! as mlx-lm's server does.
//!
//! An entry is the one-row cache of every token a request fed (its prompt
//! and the tokens it returned) with those tokens. A new prompt takes the
//! entry sharing its longest prefix: a view of that entry's cache trimmed
//! to the prefix (the entry stays; the request's own cache grows into new
//! buffers), capped so that at least one prompt token is left to feed.
//! Inserting an entry drops those whose tokens it extends.

use mlx_rs_core::{BatchKVCache, KeyValueCache};

/// One kept cache.
struct Entry {
    tokens: Vec<u32>,
    cache: Vec<Option<BatchKVCache>>,
    bytes: u64,
    used_at: u64,
}

/// Caches of finished requests, at most `limit` bytes.
#[derive(Default)]
pub struct PromptCache {
    limit: u64,
    used: u64,
    clock: u64,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for PromptCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptCache")
            .field("limit", &self.limit)
            .field("used", &self.used)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Whether every layer of `cache` can be cut back to its first `n`
/// positions exactly (a sliding-window layer whose ring has wrapped cannot
/// give back what it overwrote).
fn trims_to(cache: &[Option<BatchKVCache>], n: usize) -> bool {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    cache
        .iter()
        .flatten()
        .all(|c| c.offset() - c.max_trim() <= n)
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PromptCache {
    /// An empty cache of at most `limit` bytes (0: nothing is kept).
    pub fn new(limit: u64) -> Self {
        PromptCache {
            limit,
            ..PromptCache::default()
        }
    }

    /// The byte limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.used
    }

    /// The cache for the longest kept prefix of `prompt` (at most all but
    /// its last token) and that prefix's length; `None` when no entry
    /// shares a token with it.
    pub fn take(
        &mut self,
        prompt: &[u32],
    ) -> mlx_rs_core::Result<Option<(usize, Vec<Option<BatchKVCache>>)>> {
        let cap = prompt.len().saturating_sub(1);
        let best = self
            .entries
            .iter_mut()
            .map(|e| (common_prefix(&e.tokens, prompt).min(cap), e))
            .filter(|(n, e)| *n > 0 && trims_to(&e.cache, *n))
            .max_by_key(|(n, e)| (*n, e.used_at));
        let Some((n, entry)) = best else {
            return Ok(None);
        };
        self.clock += 1;
        entry.used_at = self.clock;
        let mut cache = entry.cache.clone();
        for layer in cache.iter_mut().flatten() {
            let extra = layer.offset() - n as i32;
            if layer.trim(extra)? != extra {
                return Ok(None); // `trims_to` checked it can
            }
        }
        Ok(Some((n, cache)))
    }

    /// Evicts the least recently used entries until at most `bytes` are
    /// kept.
    pub fn evict_to(&mut self, bytes: u64) {
        while self.used > bytes {
            let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used_at)
            else {
                break;
            };
            self.used -= self.entries.swap_remove(oldest).bytes;
        }
    }

    /// Keeps `cache`, which holds `tokens`, evicting the least recently
    /// used entries to stay within the limit (an entry larger than the
    /// limit is not kept). Entries whose tokens `tokens` extends go.
    pub fn insert(&mut self, tokens: Vec<u32>, cache: Vec<Option<BatchKVCache>>) {
        let bytes: u64 = cache.iter().flatten().map(|c| c.nbytes() as u64).sum();
        if tokens.is_empty() || bytes > self.limit {
            return;
        }
        self.entries.retain(|e| {
            let redundant = e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens);
            if redundant {
                self.used -= e.bytes;
            }
            !redundant
        });
        self.evict_to(self.limit - bytes);
        self.clock += 1;
        self.used += bytes;
        self.entries.push(Entry {
            tokens,
            cache,
            bytes,
            used_at: self.clock,
        });
    }
}

#[cfg(test)]
mod tests {
    //! Which kept caches a prompt may start from, on caches fed by hand.

    use super::*;
    use mlx_rs::Array;
    use mlx_rs_core::KeyValueCache;

    /// A one-layer cache (sliding `window`) fed `len` positions one at a
    /// time.
    fn fed(window: Option<i32>, len: usize) -> Vec<Option<BatchKVCache>> {
        let mut cache = BatchKVCache::with_window(window);
        for i in 0..len {
            let kv = Array::from_slice(&[i as f32; 4], &[1, 1, 1, 4]);
            cache.update_and_fetch(&kv, &kv).expect("update");
        }
        vec![Some(cache)]
    }

    #[test]
    fn a_wrapped_window_is_not_cut_back_past_what_it_kept() {
        let tokens: Vec<u32> = (0..10).collect();
        let mut kept = PromptCache::new(1 << 20);
        // An older full-history entry and a newer sliding-window one share
        // the prompt's first 8 tokens.
        let mut other = tokens[..8].to_vec();
        other.extend([77, 76, 75]);
        kept.insert(other, fed(None, 11));
        kept.insert(tokens.clone(), fed(Some(4), 10));
        let mut prompt = tokens[..8].to_vec();
        prompt.extend([99, 98]);
        // The window's ring overwrote positions 8 needs: the full entry
        // serves.
        let (n, cache) = kept.take(&prompt).expect("take").expect("a prefix");
        assert_eq!(n, 8);
        let layer = cache[0].as_ref().expect("layer");
        assert_eq!(layer.offset(), 8);
        assert_eq!(layer.max_trim(), 8, "the full-history entry");
    }
}
