//! Prefill and single-step decode of the model's forward pass.
//!
//! Measures the model alone (no sampling, no detokenization): a prefill of
//! 128 tokens into an empty cache, and one decode step after a 128-token
//! prompt. Each iteration evaluates the logits, so MLX's lazy graph really
//! runs.

use criterion::{criterion_group, criterion_main, Criterion};
use mistral_benches::bench_model_dir;
use mlx_rs::Array;
use mlx_rs_core::KVCache;

const PROMPT: i32 = 128;

fn prompt_ids(vocab: i32) -> Array {
    let ids: Vec<i32> = (0..PROMPT).map(|i| (i * 7919 + 13) % vocab).collect();
    Array::from_slice(&ids, &[1, PROMPT])
}

fn forward(c: &mut Criterion) {
    let dir = bench_model_dir();
    let model = match mistral_loader::load_model(&dir) {
        Ok(model) => model,
        Err(err) => panic!(
            "cannot load the benchmark model {}: {err}\n\
             run `cargo xtask demo-model` or set MISTRAL_MLX_BENCH_MODEL",
            dir.display()
        ),
    };
    let prompt = prompt_ids(model.config().vocab_size);

    c.bench_function("prefill_128", |b| {
        b.iter(|| {
            let mut cache: Vec<Option<KVCache>> = Vec::new();
            let logits = model.forward(&prompt, &mut cache).expect("prefill");
            logits.eval().expect("eval");
        })
    });

    let mut cache: Vec<Option<KVCache>> = Vec::new();
    model
        .forward(&prompt, &mut cache)
        .and_then(|logits| logits.eval().map_err(Into::into))
        .expect("prefill");
    let step = Array::from_slice(&[1i32], &[1, 1]);
    c.bench_function("decode_step_after_128", |b| {
        b.iter_batched(
            || cache.clone(),
            |mut cache| {
                let logits = model.forward(&step, &mut cache).expect("decode");
                logits.eval().expect("eval");
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, forward);
criterion_main!(benches);
