//! [`RotatingKVCache`] with its own masks against attention computed with
//! plain loops over the whole history (window applied per position): chunks
//! of every kind (inside the window, single tokens after the wrap, chunks
//! longer than the window, chunks crossing it), trims, bounded buffers; and
//! with a window longer than [`KVCache::STEP`], buffers that grow by steps
//! as mlx-lm's do before the window fills.

use mlx_rs::{random, Array};

use super::mask::reference_attention;
use super::{append_history, max_abs_diff};
use crate::cache::{KVCache, KeyValueCache, RotatingKVCache};
use crate::mask::scaled_dot_product_attention;

const W: i32 = 8;
const H: i32 = 4;
const KVH: i32 = 2;
const D: i32 = 8;

/// Feeds `steps` (chunk length > 0, or `-n` to trim `n`) and checks every
/// chunk's attention output.
fn run(steps: &[i32], seed: u64) {
    run_with_window(W, steps, seed);
}

/// [`run`] with window `w`; also checks the buffers' length after every
/// update against mlx-lm's growth rule.
fn run_with_window(w: i32, steps: &[i32], seed: u64) {
    let scale = (D as f32).powf(-0.5);
    let mut cache = RotatingKVCache::with_window(Some(w));
    let mut history: Option<(Array, Array)> = None;
    // Most positions ever held at once: the ring has kept the last W of them.
    let mut high_water = 0;
    let mut key = random::key(seed).unwrap();
    for (n, &len) in steps.iter().enumerate() {
        if len < 0 {
            let trimmed = cache.trim(-len).unwrap();
            assert_eq!(trimmed, cache_trim_expect(w, &history, high_water, -len));
            if let Some((k, v)) = history.take() {
                let end = k.dim(2) - trimmed;
                use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
                history = Some((
                    k.try_index((Ellipsis, ..end, ..)).unwrap(),
                    v.try_index((Ellipsis, ..end, ..)).unwrap(),
                ));
            }
            continue;
        }
        let keys = random::split(&key, 2).unwrap();
        key = keys.0.clone();
        let parts = random::split(&keys.1, 3).unwrap();
        let more = random::split(&parts.1, 2).unwrap();
        let q = random::normal::<f32>(&[1, H, len, D], None, None, &parts.0).unwrap();
        let k = random::normal::<f32>(&[1, KVH, len, D], None, None, &more.0).unwrap();
        let v = random::normal::<f32>(&[1, KVH, len, D], None, None, &more.1).unwrap();
        let offset = cache.offset();
        let held = cache.buffer_len();
        let mask = cache.mask(len, Some(w)).unwrap();
        let (ck, cv) = cache.update_and_fetch(&k, &v).unwrap();
        let out = scaled_dot_product_attention(&q, &ck, &cv, scale, &mask).unwrap();
        let (hk, hv) = append_history(history.take(), k, v);
        let expected = reference_attention(&q, &hk, &hv, offset, Some(w), scale);
        high_water = high_water.max(hk.dim(2));
        history = Some((hk, hv));
        let worst = max_abs_diff(&out, &expected, &format!("step {n}"));
        assert!(
            worst < 1e-5,
            "step {n} (len {len} at {offset}): off by {worst}"
        );
        assert_eq!(cache.offset(), offset + len);
        let end = offset + len;
        let want = if high_water >= w {
            w // filled once: the whole ring from then on
        } else if held == 0 && len > 1 {
            len // a first chunk, kept as it is
        } else if held >= end {
            held
        } else {
            (offset + KVCache::STEP.max(len)).min(w)
        };
        assert_eq!(
            cache.buffer_len(),
            want,
            "step {n} (len {len} at {offset}): buffer length"
        );
    }
}

/// What an exact trim of `n` may remove, from the positions alone: the
/// ring holds the last `W` of the `high_water` positions ever stored, and a
/// trim to length `o` is exact only if the next query's window (positions
/// `o - W + 1 .. o - 1`, clipped at 0) is among them.
fn cache_trim_expect(w: i32, history: &Option<(Array, Array)>, high_water: i32, n: i32) -> i32 {
    let held = history.as_ref().map_or(0, |(k, _)| k.dim(2));
    let oldest_kept = (high_water - w).max(0);
    let exact = |o: i32| (o - w + 1).max(0) >= oldest_kept;
    (0..=n.min(held))
        .rev()
        .find(|&t| exact(held - t))
        .unwrap_or(0)
}

#[test]
fn single_tokens_around_the_wrap() {
    run(
        &[3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        1,
    );
}

#[test]
fn chunks_longer_than_and_crossing_the_window() {
    run(&[20, 1, 1, 1, 5, 1, 12, 1, 1, 3, 1, 9, 2, 1], 2);
    run(&[5, 6, 1, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1], 3);
}

#[test]
fn trims_stay_exact() {
    run(&[5, -2, 4, 1, -3, 9, 1, -1, 1, 1, -2, 3, -1, 1, 2], 4);
}

#[test]
fn repeated_trims_after_the_wrap_stop_at_what_the_ring_still_holds() {
    // Two trims in a row after the wrap: the second must not go through,
    // or the next query misses the oldest key of its window.
    run(&[12, -1, -1, 1], 5);
    run(&[12, -1, -1, 1, 1, -1, -1, 1, 3, -2, -2, 1], 6);
    run(&[8, -3, -3, 2, 1, -1, -1, 1], 7);
    run(&[7, 1, 1, -1, -1, -1, 2, 1, -1, -1, 9, -1, -1, 1], 8);
}

#[test]
fn buffers_grow_by_steps_until_a_long_window_fills() {
    // W = 300 > STEP = 256: a first chunk kept as is, growth by a step
    // (capped at W) for single tokens and chunks, the fill, the wrap; and
    // a trim before the fill.
    run_with_window(300, &[10, 1, 1, 250, 1, 60, 1, 1, 1], 9);
    run_with_window(300, &[1, 1, 255, 1, 1, -2, 1, 50, 1], 10);
    run_with_window(300, &[299, 1, 1, 400, 1], 11);
}

#[test]
fn without_a_window_it_keeps_everything() {
    let mut cache = RotatingKVCache::with_window(None);
    let k = mlx_rs::ops::ones::<f32>(&[1, KVH, 40, D]).unwrap();
    let (ck, _) = cache.update_and_fetch(&k, &k).unwrap();
    assert_eq!(ck.dim(2), 40);
    assert_eq!(cache.offset(), 40);
    assert_eq!(cache.max_trim(), 40);
}
