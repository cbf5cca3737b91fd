//! [`BatchKVCache`]: rows of their own lengths, against one-row caches fed
//! the same keys and values.

use mlx_rs::{ops::indexing::TryIndexOp, random, Array};

use super::host;
use crate::cache::{BatchKVCache, KVCache, KeyValueCache, Positions, StoredKv};
use crate::mask::SdpaMask;

const H: i32 = 2;
const D: i32 = 3;

fn kv(b: i32, l: i32, seed: u64) -> Array {
    let key = random::key(seed).unwrap();
    random::normal::<f32>(&[b, H, l, D], 0.0, 1.0, &key).unwrap()
}

/// A batch of two rows, prefilled alone with `lens` positions each.
fn ragged(lens: [i32; 2], window: Option<i32>) -> (BatchKVCache, Vec<KVCache>) {
    let mut batch = BatchKVCache::with_window(window);
    let mut solo = Vec::new();
    for (i, &n) in lens.iter().enumerate() {
        let mut row = BatchKVCache::with_window(window);
        let mut reference = KVCache::new();
        let k = kv(1, n, 10 + i as u64);
        row.update_and_fetch(&k, &k).unwrap();
        reference.update_and_fetch(&k, &k).unwrap();
        batch.extend(&row).unwrap();
        solo.push(reference);
    }
    (batch, solo)
}

#[test]
fn attend_gives_each_row_its_own_keys_and_mask() {
    let (mut batch, mut solo) = ragged([5, 2], None);
    assert_eq!(batch.rows(), 2);
    match batch.positions().unwrap() {
        Positions::PerRow(at) => assert_eq!(host(&at), [5.0, 2.0]),
        Positions::Shared(_) => panic!("rows differ in length"),
    }
    let new = kv(2, 3, 7);
    let mut seen = Vec::new();
    let mut attend = |q: &Array, kv: &StoredKv, m: &SdpaMask| {
        let (k, _) = kv.dense()?;
        seen.push((q.dim(0), k.dim(2), matches!(m, SdpaMask::None)));
        Ok(k.sum_axes(&[2], true)?)
    };
    let out = batch
        .attend(&new, &new, &new, &SdpaMask::None, None, &mut attend)
        .unwrap();
    // One call per row, over its own positions, with a causal mask (the
    // chunk has 3 queries), whatever mask was passed.
    assert_eq!(seen, [(1, 8, false), (1, 5, false)]);
    for (i, reference) in solo.iter_mut().enumerate() {
        let fed = row(&new, i);
        let (k, _) = reference.update_and_fetch(&fed, &fed).unwrap();
        let got = host(&row(&out, i));
        assert_eq!(got, host(&k.sum_axes(&[2], true).unwrap()), "row {i}");
    }
}

#[test]
fn ragged_rows_cannot_be_fetched_as_one_array_but_equal_ones_can() {
    let (mut batch, _) = ragged([4, 2], None);
    let new = kv(2, 1, 3);
    assert!(batch.update_and_fetch(&new, &new).is_err());
    let (mut even, _) = ragged([3, 3], None);
    let (k, _) = even.update_and_fetch(&new, &new).unwrap();
    assert_eq!(k.shape(), &[2, H, 4, D]);
}

#[test]
fn windowed_rows_hold_only_their_window_and_rows_copy_compactly() {
    let w = 4;
    let (mut batch, _) = ragged([9, 2], Some(w));
    for step in 0..3 {
        let new = kv(2, 1, 20 + step);
        let mut attend =
            |_: &Array, kv: &StoredKv, _: &SdpaMask| Ok(kv.dense()?.0.sum_axes(&[2], true)?);
        batch
            .attend(&new, &new, &new, &SdpaMask::None, Some(w), &mut attend)
            .unwrap();
    }
    let per = (H * D * 2 * 4) as usize;
    // Row 0 (12 positions) holds its window; row 1 (5) too once past it.
    assert_eq!(batch.row(0).unwrap().nbytes(), w as usize * per);
    assert_eq!(batch.row(1).unwrap().nbytes(), w as usize * per);
    assert_eq!(batch.nbytes(), 2 * w as usize * per);
    batch.retain(&[1]).unwrap();
    assert_eq!((batch.rows(), batch.offset()), (1, 5));
    assert!(batch.row(1).is_err());
}

/// Row `i` of `[B, ...]` as `[1, ...]`.
fn row(a: &Array, i: usize) -> Array {
    let i = i as i32;
    a.try_index(i..i + 1).unwrap()
}
