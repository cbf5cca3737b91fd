//! Models loaded with our CPU kernels for RMSNorm, RoPE and one-token
//! attention (`LoadOptions::cpu_fast`, `mistral-cli --cpu-fast ours`)
//! against mlx-lm and against the same load on MLX's fast ops.
//!
//! - Every test model in its checkpoint dtype (float32, bfloat16, float16,
//!   quantized): mlx-lm's logits and greedy ids at `mlx_lm_parity.rs`'s
//!   tolerances (greedy runs go through the decode attention). Half types
//!   keep MLX's ops (see `mlx_rs_core::cpu_fused`), so for them this checks
//!   the choice: their logits stay bit-identical to mlx-lm's.
//! - Float32 models: logits within [`VS_MLX_OPS`] of MLX's ops on the same
//!   load.
//! - The GGUF files against mlx-lm, as `every_gguf_file_matches_mlx_lm`.
//! - Under `--dtype auto` with our quantized kernel (the CLI's CPU
//!   default): SmolLM2 Q4_1's 64 greedy ids after each reference prompt
//!   equal with and without our fast ops, and a decode step's primitives
//!   (counted as `decode_graph.rs` counts them) fewer with ours.

mod reference;

use mistral_loader::{load_model_with, ComputeDtype, LoadOptions};
use mlx_rs_core::cpu_fused::CpuFast;
use mlx_rs_core::cpu_qmm::CpuQmm;
use mlx_rs_core::KVCache;
use reference::parity::{check_against, greedy_ids, logits_of};
use reference::{comparable_models, gguf_models, references, TestModel};

/// Largest relative logit difference (max |ours - MLX's| / max |MLX's|)
/// allowed between our fast ops and MLX's on the same float32 model: a few
/// float32 roundings per layer (sums in another order, libm's exp, sin and
/// cos against MLX's approximations) through a few layers; a wrong sign,
/// pair or head moves logits by 1e-2 and more.
const VS_MLX_OPS: f64 = 2e-5;

fn options(dtype: ComputeDtype, cpu_qmm: CpuQmm, cpu_fast: CpuFast) -> LoadOptions {
    LoadOptions {
        dtype,
        cpu_qmm,
        cpu_fast,
        ..LoadOptions::default()
    }
}

#[test]
fn every_test_model_matches_mlx_lm_with_our_fast_ops() {
    let models = comparable_models();
    assert!(models.len() >= 14, "expected the full set of test models");
    for spec in &models {
        let load = |fast| {
            load_model_with(
                &spec.dir,
                &options(ComputeDtype::Checkpoint, CpuQmm::Mlx, fast),
            )
            .expect("load")
        };
        let ours = load(CpuFast::Ours);
        // Half types may part from mlx-lm at a near-tie, as in
        // `mlx_lm_parity.rs`.
        check_against(&ours, spec, &references(spec), spec.dtype == "float32");
        if spec.dtype != "float32" {
            continue;
        }
        let mlx = load(CpuFast::Mlx);
        for reference in references(spec) {
            let a = logits_of(&ours, &reference.prompt_ids, &mut Vec::new());
            let b = logits_of(&mlx, &reference.prompt_ids, &mut Vec::new());
            let err = reference::relative_error(&a, &b);
            eprintln!(
                "{} / {}: ours vs MLX's ops {err:.2e}",
                spec.name, reference.prompt
            );
            assert!(
                err <= VS_MLX_OPS,
                "{} / {}: {err:e}",
                spec.name,
                reference.prompt
            );
        }
    }
}

#[test]
fn gguf_files_match_mlx_lm_with_our_fast_ops() {
    let models = gguf_models();
    assert!(models.len() >= 5, "expected the GGUF test files");
    for gguf in &models {
        let spec: TestModel = gguf.as_test_model();
        let dtype = LoadOptions::default().dtype;
        let model = load_model_with(&spec.dir, &options(dtype, CpuQmm::Mlx, CpuFast::Ours))
            .expect("load GGUF");
        check_against(&model, &spec, &references(&spec), true);
    }
}

#[test]
fn smollm2_greedy_ids_are_the_same_with_and_without_our_fast_ops() {
    let gguf = gguf_models()
        .into_iter()
        .find(|g| g.name == "smollm2")
        .expect("SmolLM2");
    let spec = gguf.as_test_model();
    let load = |fast| {
        load_model_with(&spec.dir, &options(ComputeDtype::Auto, CpuQmm::Ours, fast))
            .expect("load SmolLM2")
    };
    let (mut ours, mut mlx) = (load(CpuFast::Ours), load(CpuFast::Mlx));
    let refs = references(&spec);
    assert!(refs.len() >= 2, "expected several SmolLM2 prompts");
    for reference in &refs {
        let a = greedy_ids::<KVCache>(&mut ours, &reference.prompt_ids, 64);
        let b = greedy_ids::<KVCache>(&mut mlx, &reference.prompt_ids, 64);
        assert_eq!(a.len(), 64);
        assert_eq!(a, b, "SmolLM2 / {}: greedy ids differ", reference.prompt);
    }
}

#[test]
fn smollm2_decode_step_has_fewer_primitives_with_our_fast_ops() {
    let gguf = gguf_models()
        .into_iter()
        .find(|g| g.name == "smollm2")
        .expect("SmolLM2");
    let spec = gguf.as_test_model();
    let step = |fast| {
        let model = load_model_with(&spec.dir, &options(ComputeDtype::Auto, CpuQmm::Ours, fast))
            .expect("load SmolLM2");
        let mut cache: Vec<Option<KVCache>> = Vec::new();
        let prompt = mlx_rs::Array::from_slice(&[1, 330, 1136, 4685], &[1, 4]);
        let logits = model.forward(&prompt, &mut cache).expect("prompt");
        logits.eval().expect("eval");
        let token = mlx_rs::Array::from_slice(&[13], &[1, 1]);
        let ops = reference::graph::primitives(&model.forward(&token, &mut cache).expect("step"));
        eprintln!("{fast:?}: {ops:?}");
        (
            ops.values().sum::<usize>(),
            model.config().num_hidden_layers as f64,
        )
    };
    let ((ours, layers), (mlx, _)) = (step(CpuFast::Ours), step(CpuFast::Mlx));
    eprintln!(
        "SmolLM2 decode step: {ours} primitives with ours, {mlx} with MLX's \
         ({:.1} and {:.1} a layer)",
        ours as f64 / layers,
        mlx as f64 / layers
    );
    assert!(
        ours * 2 < mlx,
        "{ours} primitives with ours, {mlx} with MLX's"
    );
}
