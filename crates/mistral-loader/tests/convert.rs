//! `convert_model` writes folders that mlx-lm loads and that generate what
//! we generate: mlx-lm 0.32.2 (run live) on each converted folder gives our
//! greedy ids. Kept-quantized GGUF input (Q4_1/Q8_0 SmolLM2) is written
//! without re-quantization: the converted folder's logits equal the GGUF
//! file's bit for bit. Also: K-quant GGUF (dequantized) re-quantized to 8
//! bits, and a float32 directory quantized to 4 bits. A GGUF Mixtral
//! (stacked 4-bit experts) converts to a folder whose logits equal the
//! file's bit for bit (mlx-lm 0.32.2 cannot run quantized switch layers on
//! MLX 0.32.2, so that folder is checked against the file, which
//! `mlx_lm_parity.rs` checks against mlx-lm).

mod reference;

use std::path::Path;

use mistral_loader::{convert_model, load_model, ConvertOptions};
use mistral_model::QuantParams;
use mlx_rs::Array;
use mlx_rs_core::{Generate, KVCache};
use reference::live::{mlx_lm_generate, LiveRun};
use reference::{gguf_models, prompt_ids, test_model};

fn greedy(path: &Path, prompt: &[i32], n: usize) -> Vec<i32> {
    let mut model = load_model(path).expect("load_model");
    let prompt = Array::from_slice(prompt, &[1, prompt.len() as i32]);
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    Generate::<KVCache>::new(&mut model, &mut cache, 0.0, &prompt)
        .take(n)
        .map(|t| t.expect("generate").item_exact::<u32>() as i32)
        .collect()
}

fn logits(path: &Path, prompt: &[i32]) -> Vec<f32> {
    let model = load_model(path).expect("load_model");
    let tokens = Array::from_slice(prompt, &[1, prompt.len() as i32]);
    let out = model
        .forward::<KVCache>(&tokens, &mut Vec::new())
        .expect("forward")
        .as_dtype(mlx_rs::Dtype::Float32)
        .expect("cast");
    out.eval().expect("eval");
    out.as_slice::<f32>().to_vec()
}

fn config_of(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config"))
        .expect("config JSON")
}

#[test]
fn converted_folders_load_in_mlx_lm_and_generate_our_ids() {
    let n = 24;
    let ggufs = gguf_models();
    let gguf = |name: &str| {
        ggufs
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no GGUF test file {name}"))
            .clone()
    };
    let smollm2 = gguf("smollm2");
    let kquants = gguf("kquants_q2k_q6k");
    let dense = test_model("gqa4_f32");
    let cases = [
        (
            smollm2.file.clone(),
            ConvertOptions::default(),
            prompt_ids(&smollm2.as_test_model(), "chat"),
        ),
        (
            kquants.file.clone(),
            ConvertOptions {
                quantize: Some(QuantParams {
                    group_size: 64,
                    bits: 8,
                }),
                ..Default::default()
            },
            prompt_ids(&kquants.as_test_model(), "medium"),
        ),
        (
            dense.dir.clone(),
            ConvertOptions {
                quantize: Some(QuantParams {
                    group_size: 64,
                    bits: 4,
                }),
                ..Default::default()
            },
            prompt_ids(&dense, "medium"),
        ),
    ];
    for (source, options, prompt) in cases {
        let out = tempfile::tempdir().expect("tempdir");
        let out = out.path().join("converted");
        let report = convert_model(&source, &out, &options).expect("convert");
        let what = source.display();
        let ours = greedy(&out, &prompt, n);
        let (theirs, _) = mlx_lm_generate(&out, &prompt, n, &LiveRun::default(), false);
        assert_eq!(ours, theirs, "{what}: mlx-lm on the converted folder");
        let config = config_of(&out);
        match options.quantize {
            None => {
                // Nothing re-quantized: the folder computes what the GGUF does.
                assert_eq!(report.newly_quantized, 0, "{what}");
                assert!(report.quantized > 0, "{what}");
                assert_eq!(
                    config["quantization"]["model.embed_tokens"]["bits"], 8,
                    "{what}"
                );
                assert_eq!(logits(&out, &prompt), logits(&source, &prompt), "{what}");
                assert_eq!(ours, greedy(&source, &prompt, n), "{what}");
            }
            Some(q) => {
                assert!(report.newly_quantized > 0, "{what}");
                assert_eq!(config["quantization"]["bits"], q.bits, "{what}");
                assert_eq!(config["quantization"]["group_size"], q.group_size, "{what}");
            }
        }
        eprintln!(
            "{what}: {} tensors, {} quantized ({} newly), {} dense; mlx-lm's {n} greedy ids equal ours",
            report.tensors, report.quantized, report.newly_quantized, report.dense
        );
    }
}

#[test]
fn a_gguf_mixtral_converts_to_a_folder_computing_the_same_logits() {
    let ggufs = gguf_models();
    let mixtral = ggufs
        .iter()
        .find(|g| g.name == "mixtral_q4")
        .expect("the GGUF Mixtral test file");
    let out = tempfile::tempdir().expect("tempdir");
    let out = out.path().join("converted");
    let report = convert_model(&mixtral.file, &out, &ConvertOptions::default()).expect("convert");
    assert_eq!(report.newly_quantized, 0);
    let config = config_of(&out);
    assert_eq!(config["model_type"], "mixtral");
    assert_eq!(config["num_local_experts"], 4);
    assert_eq!(config["num_experts_per_tok"], 2);
    let experts = "model.layers.0.block_sparse_moe.switch_mlp.gate_proj";
    assert_eq!(config["quantization"][experts]["bits"], 4);
    let prompt = prompt_ids(&mixtral.as_test_model(), "medium");
    assert_eq!(logits(&out, &prompt), logits(&mixtral.file, &prompt));
}

#[test]
fn convert_refuses_a_non_empty_output_folder() {
    let out = tempfile::tempdir().expect("tempdir");
    std::fs::write(out.path().join("keep.txt"), "x").unwrap();
    let err = convert_model(
        &test_model("gqa4_f32").dir,
        out.path(),
        &ConvertOptions::default(),
    )
    .expect_err("must refuse");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert!(out.path().join("keep.txt").is_file());
}
