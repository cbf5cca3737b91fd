//! Prefill and single-step decode of the model's forward pass.
//!
//! Measures the model alone (no sampling, no detokenization): a prefill of
//! 128 tokens into an empty cache, and one decode step after a 128-token
//! prompt. Each iteration evaluates the logits, so MLX's lazy graph really
//! runs.
//!
//! The decode step runs on one cache for the whole benchmark and trims the
//! position it added after each step (`trim_cache`, an offset change). A
//! clone of the cache per iteration would keep a second reference to every
//! buffer, so MLX could not write the new keys and values in place and would
//! copy each layer's buffers instead: that measured the copy, not the step.
//! Measurement times follow one untimed call (`measurement_time_for`), as a
//! CPU prefill can take longer than criterion's default 5 s.

use criterion::{criterion_group, criterion_main, Criterion};
use mistral_benches::{load_bench_model, measurement_time_for, prompt_ids};
use mistral_model::Mistral;
use mlx_rs::Array;
use mlx_rs_core::{trim_cache, KVCache};

const PROMPT: i32 = 128;

/// Runs `tokens` through `model` after what `cache` holds and evaluates the
/// logits.
fn run(model: &Mistral, tokens: &Array, cache: &mut Vec<Option<KVCache>>) {
    let logits = model.forward(tokens, cache).expect("forward");
    logits.eval().expect("eval");
}

fn forward(c: &mut Criterion) {
    let model = load_bench_model().expect("benchmark model");
    let prompt = prompt_ids(PROMPT, model.config().vocab_size);
    let step = Array::from_slice(&[1i32], &[1, 1]);
    let mut group = c.benchmark_group("forward");

    let mut cache = Vec::new();
    group.measurement_time(measurement_time_for(|| run(&model, &prompt, &mut cache)));
    group.bench_function("prefill_128", |b| {
        b.iter(|| run(&model, &prompt, &mut Vec::new()))
    });

    let mut decode = || {
        run(&model, &step, &mut cache);
        assert_eq!(trim_cache(&mut cache, 1).expect("trim"), 1);
    };
    group.measurement_time(measurement_time_for(&mut decode));
    group.bench_function("decode_step_after_128", |b| b.iter(&mut decode));
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
