//! Stacked projections (`WeightOptions::fuse_projections`: q/k/v and
//! gate/up as one matrix each, as a GPU load does) give the logits of the
//! unstacked model bit for bit, here on the CPU: the prompt's (its layers
//! run on the stack's views), then greedy decode steps one row at a time
//! (one product over each stack) and a batch of two rows. The unstacked
//! model is the one the parity tests check against mlx-lm, so this carries
//! their check over to the stacked one. `xtask/gpu/run.sh parity` runs this
//! test on a GPU too, where the parity tests also check the stacked model
//! (a GPU load's default) against mlx-lm directly.

mod reference;

use mistral_loader::{load_model_config, SafetensorsWeights};
use mistral_model::{Mistral, WeightOptions};
use mlx_rs::{
    ops::indexing::{argmax_axis, IndexOp},
    Array,
};
use mlx_rs_core::{KVCache, LanguageModel};
use reference::comparable_models;

fn load(dir: &std::path::Path, fuse: bool) -> Mistral {
    let config = load_model_config(dir).expect("config");
    let mut weights = SafetensorsWeights::open(dir).expect("weights");
    let options = WeightOptions {
        row_split: 1,
        fuse_projections: fuse,
        qmv: reference::qmv(),
        ..WeightOptions::default()
    };
    Mistral::with_options(&config, &mut weights, options).expect("model")
}

fn values(a: &Array) -> Vec<f32> {
    a.as_dtype(mlx_rs::Dtype::Float32)
        .expect("cast")
        .as_slice::<f32>()
        .to_vec()
}

/// Logits of the prompt, then of 8 greedy steps, for a batch of `prompts`.
fn run(model: &mut Mistral, prompts: &[[i32; 6]]) -> Vec<Vec<f32>> {
    let rows = prompts.len() as i32;
    let flat: Vec<i32> = prompts.iter().flatten().copied().collect();
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let mut logits =
        LanguageModel::<KVCache>::forward(model, &Array::from_slice(&flat, &[rows, 6]), &mut cache)
            .expect("prompt");
    let mut out = vec![values(&logits)];
    for _ in 0..8 {
        let last = logits.index((.., -1, ..));
        let next = argmax_axis(&last, -1, None)
            .expect("argmax")
            .reshape(&[rows, 1])
            .expect("reshape");
        logits = LanguageModel::<KVCache>::forward(model, &next, &mut cache).expect("step");
        out.push(values(&logits));
    }
    out
}

#[test]
fn stacked_projections_give_the_unstacked_logits_bit_for_bit() {
    // On a GPU, less those MLX itself fails on there (see comparable_models).
    let models = comparable_models();
    assert!(!models.is_empty(), "no test models");
    for spec in models {
        let mut plain = load(&spec.dir, false);
        let mut stacked = load(&spec.dir, true);
        assert_eq!(
            plain.weight_bytes(),
            stacked.weight_bytes(),
            "{}: stacking changed the bytes held",
            spec.name
        );
        for prompts in [
            vec![[1, 330, 1136, 4685, 302, 272]],
            vec![
                [1, 330, 1136, 4685, 302, 272],
                [1, 415, 5565, 302, 4843, 349],
            ],
        ] {
            let (a, b) = (run(&mut plain, &prompts), run(&mut stacked, &prompts));
            for (step, (a, b)) in a.iter().zip(&b).enumerate() {
                let differ = a
                    .iter()
                    .zip(b)
                    .filter(|(x, y)| x.to_bits() != y.to_bits())
                    .count();
                assert_eq!(
                    differ,
                    0,
                    "{}: batch {}, step {step}: {differ} of {} logits differ",
                    spec.name,
                    prompts.len(),
                    a.len()
                );
            }
        }
        eprintln!("{}: equal", spec.name);
    }
}
