//! Key/value cache update: `update_and_fetch` of one decode step.
//!
//! Every layer writes one step into its cache per generated token, and
//! MLX writes it in place when the buffer has no other reference. Measured:
//! `KVCache` and `RotatingKVCache` with a window of 4096, storing keys and
//! values `[1, 8, 1, 128]` (Mistral 7B's key/value heads) in float32 after
//! 256, 2048 and 8192 cached positions (at 8192 the rotating cache has wrapped
//! and overwrites its oldest slot). Each iteration evaluates the keys and
//! values the update returns.
//!
//! Every case fills one cache before timing and, after each step, trims the
//! position it added (`KeyValueCache::trim`, an offset change; the rotating
//! cache allows trimming that one position even past its window), so each
//! iteration is the same step on the same buffers. Cloning the cache per
//! iteration instead would keep a second reference to the buffers and make
//! MLX copy them on every write, measuring the copy.

use criterion::{
    criterion_group, criterion_main, measurement::WallTime, BenchmarkGroup, BenchmarkId, Criterion,
};
use mistral_benches::random_normal;
use mlx_rs::{transforms::eval, Array, Dtype};
use mlx_rs_core::{KVCache, KeyValueCache, RotatingKVCache};

const N_KV_HEADS: i32 = 8;
const HEAD_DIM: i32 = 128;
const WINDOW: i32 = 4096;
const OFFSETS: [i32; 3] = [256, 2048, 8192];

/// Stores `keys` and `values` in `cache` and evaluates what it returns.
fn update<C: KeyValueCache>(cache: &mut C, keys: &Array, values: &Array) {
    let (k, v) = cache.update_and_fetch(keys, values).expect("update");
    eval([&k, &v]).expect("eval");
}

/// Benchmarks one step into `cache` after `offset` positions written as one
/// chunk.
fn bench_step<C: KeyValueCache>(
    group: &mut BenchmarkGroup<WallTime>,
    name: &str,
    mut cache: C,
    offset: i32,
) {
    let shape = |len| [1, N_KV_HEADS, len, HEAD_DIM];
    let prefill_k = random_normal(&shape(offset), Dtype::Float32, 1).expect("keys");
    let prefill_v = random_normal(&shape(offset), Dtype::Float32, 2).expect("values");
    update(&mut cache, &prefill_k, &prefill_v);
    // Freed now, not after the benchmark: the cache holds what it needs.
    drop((prefill_k, prefill_v));
    let step_k = random_normal(&shape(1), Dtype::Float32, 3).expect("keys");
    let step_v = random_normal(&shape(1), Dtype::Float32, 4).expect("values");

    group.bench_function(BenchmarkId::new(name, offset), |b| {
        b.iter(|| {
            update(&mut cache, &step_k, &step_v);
            assert_eq!(cache.trim(1).expect("trim"), 1);
        })
    });
}

fn cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_update_step_f32");
    for offset in OFFSETS {
        bench_step(&mut group, "kv_cache", KVCache::new(), offset);
        let rotating = RotatingKVCache::with_window(Some(WINDOW));
        bench_step(&mut group, "rotating_4096", rotating, offset);
    }
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
