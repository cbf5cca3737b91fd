//! Quantized storage: [`attention`] over what a quantized cache returns,
//! against the plain-loop attention over the dequantized history (MLX
//! quantizes each position on its own, so quantizing chunk by chunk is
//! quantizing the whole), with and without a sliding window, through chunks
//! and single tokens around the wrap; and the checks on the settings.

use mlx_rs::{random, Array};

use super::mask::reference_attention;
use super::{append_history, max_abs_diff};
use crate::cache::{
    attention, BatchKVCache, KeyValueCache, KvQuantization, RotatingKVCache, StoredKv,
};

const H: i32 = 4;
const KVH: i32 = 2;
const D: i32 = 32;

fn normal(shape: &[i32], key: &Array) -> Array {
    random::normal::<f32>(shape, None, None, key).unwrap()
}

/// Feeds `steps` (chunk lengths) to a cache of `window`, dense for the
/// first chunk and quantized after it (as the generator does with start 0),
/// checking every chunk's attention output.
fn run(window: Option<i32>, steps: &[i32], bits: i32, seed: u64) {
    let scale = (D as f32).powf(-0.5);
    let q8 = KvQuantization::new(bits, 32, 0).unwrap();
    let dq = |a: &Array| q8.quantize(a).unwrap().dequantize(&q8).unwrap();
    let mut cache = RotatingKVCache::with_window(window);
    let mut history: Option<(Array, Array)> = None;
    let mut key = random::key(seed).unwrap();
    for (n, &len) in steps.iter().enumerate() {
        let (next, k1) = random::split(&key, 2).unwrap();
        key = next;
        let parts = random::split(&k1, 2).unwrap();
        let more = random::split(&parts.1, 2).unwrap();
        let q = normal(&[1, H, len, D], &parts.0);
        let (k, v) = (
            normal(&[1, KVH, len, D], &more.0),
            normal(&[1, KVH, len, D], &more.1),
        );
        let offset = cache.offset();
        let mask = cache.mask(len, window).unwrap();
        let stored = cache.update_and_fetch_stored(&k, &v).unwrap();
        assert_eq!(
            matches!(stored, StoredKv::Quantized { .. }),
            n > 0,
            "step {n}"
        );
        let out = attention(&q, &stored, scale, &mask).unwrap();
        let (k, v) = if n > 0 { (dq(&k), dq(&v)) } else { (k, v) };
        let (hk, hv) = append_history(history.take(), k, v);
        let expected = reference_attention(&q, &hk, &hv, offset, window, scale);
        let worst = max_abs_diff(&out, &expected, &format!("step {n}"));
        assert!(
            worst < 1e-4,
            "step {n} (len {len} at {offset}): off by {worst}"
        );
        // From here on the cache holds its keys quantized; so does the
        // reference history.
        if n == 0 {
            cache.quantize(&q8).unwrap();
            assert_eq!(cache.quantization(), Some(q8));
            history = Some((dq(&hk), dq(&hv)));
        } else {
            history = Some((hk, hv));
        }
    }
}

#[test]
fn unbounded_cache_attends_over_quantized_keys() {
    run(None, &[6, 1, 1, 3, 1], 8, 1);
    run(None, &[1, 1, 2, 1], 4, 2);
}

#[test]
fn windowed_cache_attends_over_quantized_keys_around_the_wrap() {
    let w = Some(8);
    run(w, &[5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1, 12, 1], 8, 3);
    run(w, &[12, 1, 1, 3, 1, 1], 4, 4);
}

#[test]
fn quantized_storage_is_smaller() {
    let key = random::key(5).unwrap();
    let k = normal(&[1, KVH, 40, D], &key);
    let bytes = |bits: Option<i32>| {
        let mut cache = BatchKVCache::with_window(None);
        if let Some(bits) = bits {
            cache
                .quantize(&KvQuantization::new(bits, 32, 0).unwrap())
                .unwrap();
        }
        cache.update_and_fetch(&k, &k).unwrap();
        cache.row(0).unwrap().nbytes()
    };
    let dense = 2 * 40 * KVH as usize * D as usize * 4;
    assert_eq!(bytes(None), dense);
    // Per position and head: D * bits / 8 bytes, plus an f32 scale and bias
    // per group of 32.
    let per = |bits: usize| 2 * 40 * KVH as usize * (D as usize * bits / 8 + 8);
    assert_eq!(bytes(Some(8)), per(8));
    assert_eq!(bytes(Some(4)), per(4));
}

#[test]
fn a_batch_quantizes_only_the_rows_asked() {
    let key = random::key(6).unwrap();
    let k = normal(&[2, KVH, 3, D], &key);
    let mut batch = BatchKVCache::with_window(None);
    batch.update_and_fetch(&k, &k).unwrap();
    batch
        .quantize_row(1, &KvQuantization::new(4, 32, 3).unwrap())
        .unwrap();
    assert!(batch
        .quantize_row(2, &KvQuantization::new(4, 32, 0).unwrap())
        .is_err());
    let one = normal(&[2, KVH, 1, D], &key);
    let mut kinds = Vec::new();
    let mut attend = |_: &Array, kv: &StoredKv, _: &crate::SdpaMask| {
        kinds.push(matches!(kv, StoredKv::Quantized { .. }));
        Ok(kv.dense()?.0)
    };
    batch
        .attend(&one, &one, &one, &crate::SdpaMask::None, None, &mut attend)
        .unwrap();
    assert_eq!(kinds, [false, true]);
}

#[test]
fn bad_settings_are_refused() {
    assert!(KvQuantization::new(7, 64, 0).is_err());
    assert!(KvQuantization::new(4, 16, 0).is_err());
    assert!(KvQuantization::new(4, 64, -1).is_err());
    let q = KvQuantization::new(4, 64, 0).unwrap();
    let err = q
        .quantize(&Array::zeros::<f32>(&[1, 1, 2, 32]).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("head dimension of 32"), "{err}");
}
