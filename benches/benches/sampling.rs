//! Token sampling: mlx-rs-core's `Sampler` over one row of 32768
//! log-probabilities (Mistral 7B's vocabulary).
//!
//! Sampling runs once per generated token, after the forward pass; greedy is
//! an argmax, the others sort or partition the whole vocabulary. Cases:
//! greedy (temperature 0), temperature 0.7 alone, and temperature 0.7 with
//! each filter: top-p 0.9, top-k 50, min-p 0.05. The log-probabilities are
//! seeded random logits normalized with `logsumexp`, evaluated before timing;
//! the samplers are seeded too. Each iteration evaluates the sampled id.

use criterion::{criterion_group, criterion_main, Criterion};
use mistral_benches::random_normal;
use mlx_rs::Dtype;
use mlx_rs_core::{Sampler, SamplingOptions};

const VOCAB: i32 = 32768;
const SEED: u64 = 42;

fn sampling(c: &mut Criterion) {
    let logits = random_normal(&[1, VOCAB], Dtype::Float32, SEED).expect("logits");
    let logprobs = logits
        .subtract(logits.logsumexp_axis(-1, true).expect("logsumexp"))
        .expect("log-probabilities");
    logprobs.eval().expect("eval");

    let greedy = SamplingOptions::default();
    let temp = SamplingOptions {
        temperature: 0.7,
        ..greedy
    };
    let cases = [
        ("greedy", greedy),
        ("temp_0.7", temp),
        ("temp_0.7_top_p_0.9", SamplingOptions { top_p: 0.9, ..temp }),
        ("temp_0.7_top_k_50", SamplingOptions { top_k: 50, ..temp }),
        (
            "temp_0.7_min_p_0.05",
            SamplingOptions {
                min_p: 0.05,
                ..temp
            },
        ),
    ];

    let mut group = c.benchmark_group("sampling_32768");
    for (name, options) in cases {
        let mut sampler = Sampler::new(options, Some(SEED)).expect("sampler");
        group.bench_function(name, |b| {
            b.iter(|| {
                let id = sampler.sample(&logprobs).expect("sample");
                id.eval().expect("eval");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
