//! One decoder layer: the first layer of the benchmark model, alone.
//!
//! What a forward pass costs per layer, without the embedding, the final norm
//! and the LM head: `decode_step_after_128` applies the layer to one token
//! `[1, 1, hidden]` with a cache already holding 128 positions,
//! `prefill_128` to 128 tokens `[1, 128, hidden]` with an empty cache. The
//! inputs are the model's embeddings of fixed ids (so they have its dtype);
//! masks come from the cache, as `MistralModel::forward` builds them. Each
//! iteration evaluates the layer's output.
//!
//! The decode step runs on one cache for the whole benchmark and trims the
//! position it added after each step (`KeyValueCache::trim`, an offset
//! change), so MLX writes the new keys and values in place as in real
//! decoding; cloning the cache per iteration would keep a second reference to
//! its buffers and turn that write into a copy. The prefill starts from a new,
//! empty cache each iteration, as a real prefill does (allocating its buffers
//! is part of it). Measurement times follow one untimed call
//! (`measurement_time_for`), as on a slow CPU one call can take seconds.

use criterion::{criterion_group, criterion_main, Criterion};
use mistral_benches::{load_bench_model, measurement_time_for, prompt_ids};
use mistral_model::DecoderLayer;
use mlx_rs::{ops::indexing::TryIndexOp, Array};
use mlx_rs_core::{KVCache, KeyValueCache};

const PROMPT: i32 = 128;

/// Applies `layer` to `x` `[1, L, hidden]` after what `cache` holds and
/// evaluates the output.
fn step(layer: &DecoderLayer, x: &Array, cache: &mut KVCache) {
    let window = layer.attention_mask().window();
    let mask = cache.mask(x.dim(1), window).expect("mask");
    let out = layer.forward(x, &mask, Some(cache)).expect("layer");
    out.eval().expect("eval");
}

fn layer(c: &mut Criterion) {
    let model = load_bench_model().expect("benchmark model");
    let layer = model.model().layers().first().expect("a decoder layer");
    let ids = prompt_ids(PROMPT + 1, model.config().vocab_size);
    let embedded = model.model().embed_tokens().forward(&ids).expect("embed");
    let prompt = embedded.try_index((.., ..PROMPT, ..)).expect("prompt");
    let token = embedded.try_index((.., PROMPT.., ..)).expect("token");
    mlx_rs::transforms::eval([&prompt, &token]).expect("eval inputs");

    let mut group = c.benchmark_group("layer");
    let mut cache = KVCache::new();
    group.measurement_time(measurement_time_for(|| step(layer, &prompt, &mut cache)));
    group.bench_function("prefill_128", |b| {
        b.iter(|| step(layer, &prompt, &mut KVCache::new()))
    });

    let mut decode = || {
        step(layer, &token, &mut cache);
        assert_eq!(cache.trim(1).expect("trim"), 1);
    };
    group.measurement_time(measurement_time_for(&mut decode));
    group.bench_function("decode_step_after_128", |b| b.iter(&mut decode));
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
