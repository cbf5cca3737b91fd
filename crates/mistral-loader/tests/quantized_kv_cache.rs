//! The quantized KV cache against mlx-lm's own (`generate_step(kv_bits=...,
//! kv_group_size=..., quantized_kv_start=...)`, greedy), all cases from one
//! live Python run:
//! - non-windowed test models (head dims 64 and 32) at 4 and 8 bits, from
//!   the first call on and from a start reached mid-decode, through
//!   [`Generate`] and, two sequences at once, through [`BatchGenerate`]
//!   (ids, and each id's log-probability within 1e-4: on the windowed
//!   model greedy ids alone do not tell a quantized cache from a dense
//!   one);
//! - a sliding-window model (Ministral 3, window 8, sliding and full
//!   layers) over our quantized ring buffer, which mlx-lm does not have:
//!   the reference gives mlx-lm's quantized cache to every layer and lets
//!   the mask apply the window (`quantized_kv_reference.py`).

mod python;
mod reference;

use std::path::PathBuf;

use mistral_loader::load_model;
use mistral_model::Mistral;
use mlx_rs::Array;
use mlx_rs_core::{
    BatchGenerate, Generate, GenerateOptions, KvQuantization, Prefill, RotatingKVCache,
};
use reference::{family_models, test_model};
use serde_json::json;

const N: usize = 12;

struct Case {
    dir: PathBuf,
    prompt: Vec<i32>,
    quantization: KvQuantization,
    /// Whether the reference must use plain caches (a windowed model).
    full_caches: bool,
}

/// A prompt of `len` ids spread over the vocabulary.
fn prompt(len: i32, seed: i32) -> Vec<i32> {
    (0..len)
        .map(|i| (i * 7919 + seed * 104_729) % 30_000 + 100)
        .collect()
}

fn cases() -> Vec<Case> {
    let ministral = family_models()
        .into_iter()
        .find(|m| m.model.name == "ministral3_f32")
        .expect("test model ministral3_f32")
        .model;
    assert_eq!(ministral.sliding_window, Some(8));
    let q = |bits, group_size, start| KvQuantization::new(bits, group_size, start).unwrap();
    let plain = |name: &str, len, seed, quantization| Case {
        dir: test_model(name).dir,
        prompt: prompt(len, seed),
        quantization,
        full_caches: false,
    };
    let windowed = |len, seed, quantization| Case {
        dir: ministral.dir.clone(),
        prompt: prompt(len, seed),
        quantization,
        full_caches: true,
    };
    vec![
        plain("headdim_f32", 12, 1, q(4, 64, 0)),
        plain("headdim_f32", 7, 2, q(8, 32, 0)),
        plain("headdim_f32", 9, 3, q(8, 64, 14)),
        plain("mha_tied_f32", 10, 4, q(4, 32, 0)),
        windowed(12, 5, q(4, 32, 0)),
        windowed(5, 6, q(8, 32, 0)),
    ]
}

/// mlx-lm's ids and their log-probabilities for every case, from one
/// Python process.
fn mlx_lm_ids(cases: &[Case]) -> Vec<(Vec<u32>, Vec<f32>)> {
    let request = json!({
        "cases": cases.iter().map(|c| json!({
            "model": c.dir,
            "prompt": c.prompt,
            "n": N,
            "bits": c.quantization.bits,
            "group_size": c.quantization.group_size,
            "start": c.quantization.start,
            "full_caches": c.full_caches,
        })).collect::<Vec<_>>(),
    });
    let answer = python::run_json("refs.quantized_kv_reference", &request);
    let logprobs = answer["logprobs"].as_array().expect("logprobs");
    answer["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .zip(logprobs)
        .map(|(ids, lps)| {
            let lps = lps.as_array().expect("a list");
            let lps = lps.iter().map(|v| v.as_f64().expect("a number") as f32);
            (python::ids_of(ids), lps.collect())
        })
        .collect()
}

fn options(case: &Case) -> GenerateOptions {
    GenerateOptions {
        kv_quantization: Some(case.quantization),
        ..GenerateOptions::default()
    }
}

fn ids_of(prompt: &[i32]) -> Array {
    Array::from_slice(prompt, &[prompt.len() as i32])
}

/// Our greedy ids with a [`RotatingKVCache`] per layer (windowed where the
/// model's layers are).
fn solo(model: &mut Mistral, case: &Case) -> Vec<u32> {
    let mut cache: Vec<Option<RotatingKVCache>> = Vec::new();
    Generate::with_options(model, &mut cache, &ids_of(&case.prompt), options(case))
        .take(N)
        .map(|t| t.expect("token").item_exact::<u32>())
        .collect()
}

/// Our greedy ids and their log-probabilities for `pair`, generated side
/// by side in one batch (the second joins after the first's third token).
fn batched(model: &mut Mistral, pair: [&Case; 2]) -> [(Vec<u32>, Vec<f32>); 2] {
    let mut batch = BatchGenerate::new();
    let mut got = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    for step in 0..3 * N {
        if step == 0 || step == 3 {
            let i = usize::from(step == 3);
            let case = pair[i];
            let prefill = Prefill::new(model, i as u64, &ids_of(&case.prompt), &options(case))
                .expect("prefill")
                .with_logprobs(0);
            batch.join(model, prefill).expect("join");
        }
        for t in batch.step(model).expect("step") {
            let (ids, logprobs) = &mut got[t.id as usize];
            ids.push(t.token);
            logprobs.push(t.logprobs.expect("asked for").logprob);
            if ids.len() == N {
                batch.remove(&[t.id]).expect("remove");
            }
        }
        if batch.is_empty() {
            break;
        }
    }
    got
}

#[test]
fn quantized_cache_gives_mlx_lm_greedy_ids() {
    let cases = cases();
    let expected = mlx_lm_ids(&cases);
    let mut loaded: Option<(PathBuf, Mistral)> = None;
    for (case, want) in cases.iter().zip(&expected) {
        if loaded.as_ref().is_none_or(|(dir, _)| dir != &case.dir) {
            let model = load_model(&case.dir).expect("load_model");
            loaded = Some((case.dir.clone(), model));
        }
        let (_, model) = loaded.as_mut().expect("a model");
        assert_eq!(
            solo(model, case),
            want.0,
            "{} at {:?}",
            case.dir.display(),
            case.quantization
        );
    }
    // Two sequences of the same model at once, in the batched cache.
    for pair in [[0, 1], [4, 5]] {
        let (a, b) = (&cases[pair[0]], &cases[pair[1]]);
        let mut model = load_model(&a.dir).expect("load_model");
        let got = batched(&mut model, [a, b]);
        for ((ids, logprobs), i) in got.iter().zip(pair) {
            let (want_ids, want_logprobs) = &expected[i];
            let what = format!("batched case {i} ({})", cases[i].dir.display());
            assert_eq!(ids, want_ids, "{what}");
            let worst = logprobs
                .iter()
                .zip(want_logprobs)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{what}: log-probabilities off by {worst}");
        }
    }
}
