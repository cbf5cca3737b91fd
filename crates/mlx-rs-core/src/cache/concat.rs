//! [`ConcatKeyValueCache`]: a cache that concatenates along the sequence axis.
//!
//! Every update allocates a new array holding all positions, so its cost grows
//! with the sequence; it is the reference the preallocated cache is tested
//! against and is fine for short generations.

use mlx_rs::{
    ops::{
        concatenate,
        indexing::{Ellipsis, TryIndexOp},
    },
    Array,
};

use super::{check_update, KeyValueCache};
use crate::error::Result;

/// Stores keys and values by concatenating new entries on the sequence axis.
#[derive(Debug, Clone, Default)]
pub struct ConcatKeyValueCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
}

impl ConcatKeyValueCache {
    /// Creates an empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KeyValueCache for ConcatKeyValueCache {
    fn new() -> Self {
        Self::default()
    }

    fn offset(&self) -> i32 {
        self.offset
    }

    fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let stored = self.keys.as_ref().zip(self.values.as_ref());
        check_update(keys, values, stored.map(|(k, v)| (k.shape(), v.shape())))?;
        let (all_keys, all_values) = match stored {
            Some((k, v)) => (concatenate(&[k, keys], 2)?, concatenate(&[v, values], 2)?),
            None => (keys.clone(), values.clone()),
        };
        self.offset += keys.dim(2);
        self.keys = Some(all_keys.clone());
        self.values = Some(all_values.clone());
        Ok((all_keys, all_values))
    }

    fn trim(&mut self, n: i32) -> Result<i32> {
        let n = n.clamp(0, self.offset);
        if n > 0 {
            let end = self.offset - n;
            self.keys = self
                .keys
                .take()
                .map(|k| k.try_index((Ellipsis, ..end, ..)))
                .transpose()?;
            self.values = self
                .values
                .take()
                .map(|v| v.try_index((Ellipsis, ..end, ..)))
                .transpose()?;
            self.offset = end;
        }
        Ok(n)
    }

    fn state(&self) -> Vec<Array> {
        self.keys.iter().chain(&self.values).cloned().collect()
    }
}
