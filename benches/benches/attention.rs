//! Fused attention of one decode step, through mlx-rs-core's
//! `scaled_dot_product_attention`.
//!
//! Decoding attends one query token over everything cached, so its cost grows
//! with the context and is bound by reading the keys and values. Shapes are
//! Mistral 7B's (32 query heads, 8 key/value heads, head dimension 128,
//! grouped-query attention handled by the kernel), with 256, 1024 and 4096
//! cached keys, in float32 and bfloat16; no mask (a single query sees the
//! whole cache). Inputs are seeded random values, evaluated before timing;
//! each iteration evaluates the attention output. The throughput is the bytes
//! of keys and values read.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mistral_benches::random_normal;
use mlx_rs::Dtype;
use mlx_rs_core::{scaled_dot_product_attention, SdpaMask};

const N_HEADS: i32 = 32;
const N_KV_HEADS: i32 = 8;
const HEAD_DIM: i32 = 128;
const CACHED: [i32; 3] = [256, 1024, 4096];

fn attention(c: &mut Criterion) {
    let scale = (HEAD_DIM as f32).powf(-0.5);
    let mut group = c.benchmark_group("attention_decode");
    for (dtype, name) in [(Dtype::Float32, "f32"), (Dtype::Bfloat16, "bf16")] {
        let queries = random_normal(&[1, N_HEADS, 1, HEAD_DIM], dtype, 1).expect("queries");
        for len in CACHED {
            let shape = [1, N_KV_HEADS, len, HEAD_DIM];
            let keys = random_normal(&shape, dtype, 2).expect("keys");
            let values = random_normal(&shape, dtype, 3).expect("values");
            let kv_bytes = 2 * keys.nbytes();
            group.throughput(Throughput::Bytes(kv_bytes as u64));
            group.bench_function(BenchmarkId::new(name, len), |b| {
                b.iter(|| {
                    let out = scaled_dot_product_attention(
                        &queries,
                        &keys,
                        &values,
                        scale,
                        &SdpaMask::None,
                    )
                    .expect("attention");
                    out.eval().expect("eval");
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, attention);
criterion_main!(benches);
