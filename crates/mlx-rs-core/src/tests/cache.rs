//! Caches against a host-side record of every position written.

use mlx_rs::{random, Array};

use super::host;
use crate::cache::{ConcatKeyValueCache, KVCache, KeyValueCache};
use crate::error::Error;

const B: i32 = 2;
const H: i32 = 3;
const DK: i32 = 4;
const DV: i32 = 5;

/// Host record: for each (b, h), the list of per-position head vectors.
struct Record {
    rows: Vec<Vec<Vec<f32>>>,
}

impl Record {
    fn new() -> Self {
        Record {
            rows: vec![Vec::new(); (B * H) as usize],
        }
    }

    fn push(&mut self, a: &Array) {
        let (l, d) = (a.dim(2) as usize, a.dim(3) as usize);
        let data = host(a);
        for bh in 0..(B * H) as usize {
            for t in 0..l {
                let start = (bh * l + t) * d;
                self.rows[bh].push(data[start..start + d].to_vec());
            }
        }
    }

    fn flat(&self) -> Vec<f32> {
        self.rows
            .iter()
            .flat_map(|r| r.iter().flatten().copied())
            .collect()
    }
}

fn run<C: KeyValueCache>(chunks: &[i32]) {
    let mut cache = C::new();
    let (mut rk, mut rv) = (Record::new(), Record::new());
    let mut key = random::key(7).unwrap();
    for (n, &len) in chunks.iter().enumerate() {
        let (k1, k2) = random::split(&key, 2).unwrap();
        key = k2.clone();
        let k = random::normal::<f32>(&[B, H, len, DK], None, None, &k1).unwrap();
        let v = random::normal::<f32>(&[B, H, len, DV], None, None, &k2).unwrap();
        rk.push(&k);
        rv.push(&v);
        let before = cache.offset();
        let (ak, av) = cache.update_and_fetch(&k, &v).unwrap();
        assert_eq!(cache.offset(), before + len, "chunk {n}");
        assert_eq!(ak.shape(), &[B, H, cache.offset(), DK]);
        assert_eq!(av.shape(), &[B, H, cache.offset(), DV]);
        assert_eq!(host(&ak), rk.flat(), "keys after chunk {n}");
        assert_eq!(host(&av), rv.flat(), "values after chunk {n}");
    }
}

const CHUNKS: &[i32] = &[5, 1, 1, 300, 1, 250, 256, 3];

#[test]
fn concat_cache_returns_everything_written() {
    run::<ConcatKeyValueCache>(CHUNKS);
}

#[test]
fn preallocated_cache_returns_everything_written() {
    run::<KVCache>(CHUNKS);
}

#[test]
fn preallocated_cache_grows_in_steps() {
    let mut cache = KVCache::new();
    assert_eq!(cache.capacity(), 0);
    assert!(cache.is_empty());
    let (mut total, mut cap) = (0, 0);
    for len in [1, 255, 1, 300, 200, 10] {
        let k = mlx_rs::ops::zeros::<f32>(&[1, 1, len, 2]).unwrap();
        cache.update_and_fetch(&k, &k).unwrap();
        // Expected capacity: unchanged if it fits, otherwise the filled part
        // plus whole steps covering the new entries.
        if total + len > cap {
            cap = total + (len + KVCache::STEP - 1) / KVCache::STEP * KVCache::STEP;
        }
        total += len;
        assert_eq!(cache.capacity(), cap, "after writing {total}");
    }
}

#[test]
fn caches_reject_mismatched_shapes() {
    let k = mlx_rs::ops::zeros::<f32>(&[1, 2, 3, 4]).unwrap();
    let v3 = mlx_rs::ops::zeros::<f32>(&[1, 2, 3]).unwrap();
    let v_len = mlx_rs::ops::zeros::<f32>(&[1, 2, 2, 4]).unwrap();
    let k_heads = mlx_rs::ops::zeros::<f32>(&[1, 3, 1, 4]).unwrap();
    for cache in [
        &mut KVCache::new() as &mut dyn KeyValueCache,
        &mut ConcatKeyValueCache::new(),
    ] {
        assert!(matches!(
            cache.update_and_fetch(&k, &v3),
            Err(Error::CacheShape { .. })
        ));
        assert!(matches!(
            cache.update_and_fetch(&k, &v_len),
            Err(Error::CacheShape { .. })
        ));
        cache.update_and_fetch(&k, &k).unwrap();
        assert!(matches!(
            cache.update_and_fetch(&k_heads, &k_heads),
            Err(Error::CacheShape { .. })
        ));
        assert_eq!(cache.offset(), 3);
    }
}

fn trim_then_continue<C: KeyValueCache>() {
    use mlx_rs::ops::{
        concatenate,
        indexing::{Ellipsis, TryIndexOp},
    };
    let mut cache = C::new();
    let keys = random::split(random::key(11).unwrap(), 2).unwrap();
    let a = random::normal::<f32>(&[1, H, 10, DK], None, None, &keys.0).unwrap();
    let b = random::normal::<f32>(&[1, H, 2, DK], None, None, &keys.1).unwrap();
    cache.update_and_fetch(&a, &a).unwrap();
    assert_eq!(cache.max_trim(), 10);
    assert_eq!(cache.trim(3).unwrap(), 3);
    assert_eq!(cache.offset(), 7);
    let (k, v) = cache.update_and_fetch(&b, &b).unwrap();
    let want = concatenate(&[a.try_index((Ellipsis, ..7, ..)).unwrap(), b], 2).unwrap();
    assert_eq!(host(&k), host(&want));
    assert_eq!(host(&v), host(&want));
    assert_eq!(cache.trim(100).unwrap(), 9);
    assert_eq!(cache.offset(), 0);
    assert_eq!(cache.trim(-1).unwrap(), 0);
}

#[test]
fn caches_trim_the_newest_positions() {
    trim_then_continue::<ConcatKeyValueCache>();
    trim_then_continue::<KVCache>();
}
