//! [`TrimAhead`]: how much of a cache a trim could give back right after
//! an update, so speculative decoding drafts no more than it can undo.

use super::{ConcatKeyValueCache, KVCache, KeyValueCache, RotatingKVCache};

/// A cache that can say ahead of an update how much of it could be
/// trimmed after it.
pub trait TrimAhead: KeyValueCache {
    /// How many of the newest positions [`KeyValueCache::trim`] could remove
    /// right after an update of `len` positions.
    fn trimmable_after(&self, len: i32) -> i32;
}

impl TrimAhead for KVCache {
    fn trimmable_after(&self, len: i32) -> i32 {
        self.offset() + len
    }
}

impl TrimAhead for ConcatKeyValueCache {
    fn trimmable_after(&self, len: i32) -> i32 {
        self.offset() + len
    }
}

impl TrimAhead for RotatingKVCache {
    /// Past the window, an update leaves only its newest position
    /// trimmable (the ring has overwritten what a deeper trim would need).
    fn trimmable_after(&self, len: i32) -> i32 {
        let end = self.offset() + len;
        match self.window() {
            Some(w) if end > w => 1,
            _ => end,
        }
    }
}
