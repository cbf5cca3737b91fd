//! The newer Mistral families against mlx-lm 0.32.2, on small random-weight
//! checkpoints `xtask/python/models/make_arch_models.py` writes (`arch/` beside the
//! other test models): Ministral 3 (YaRN RoPE with mscale, Llama 4 query
//! scaling changing inside the prompt, sliding and full layers with a
//! window shorter than the prompt), Mixtral (Mistral's per-expert layout,
//! mlx-community's stacked one, 4- and 8-bit), Mistral 4 (latent
//! attention with and without `q_lora_rank`, grouped routing, shared
//! experts, the Hugging Face layout in float32, mlx-lm's absorbed and
//! stacked one in bfloat16 and 4-bit), the `mistral3` wrapper
//! around `ministral3` and `mistral` in both weight layouts with vision
//! weights present, `mistral3` around `mistral4` in FP8 (`kv_b_proj`
//! included, fused experts with per-expert scales), FP8 per tensor and per
//! 128x128 block, and Llama models
//! with each RoPE scaling (linear, dynamic, llama3, yarn).
//!
//! Each is loaded with `load_model` and checked as `mlx_lm_parity.rs`
//! checks the others: one-pass and chunked logits within the dtype's
//! tolerance (bf16 bit-identical on the CPU), 64 greedy ids through the
//! cache, and 64 through `Generate`. References: mlx-lm on the directory
//! itself, except where mlx-lm 0.32.2 cannot run it (see the script): a
//! quantized Mixtral or Mistral 4 is referenced by mlx-lm's float model on
//! the dequantized weights, an FP8 model by mlx-lm's float model on the
//! weights mlx-lm's own FP8 dequantization (`mistral4.py`'s sanitize) gives.

mod reference;

use mistral_loader::{load_model, load_model_with, ComputeDtype, LoadOptions};
use mlx_rs_core::{KVCache, RotatingKVCache};
use reference::parity::{check_against, compare_greedy};
use reference::{family_models, family_references, on_gpu, FamilyModel};

/// Held by every test here: the memory test measures MLX's process-wide
/// peak, which another test's arrays would raise.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn models() -> Vec<FamilyModel> {
    let models = family_models();
    assert!(
        models.len() >= 14,
        "expected every newer-architecture test model"
    );
    // All of them, also where MISTRAL_MLX_ONLY_MODELS narrows the other
    // test models (a GPU run: `run.sh parity NAMES families`), less those
    // mlx-lm itself failed on, on a GPU only (`refs/<name>.failed`, as for
    // the other test models).
    models
        .into_iter()
        .filter(|m| {
            let marker = m
                .model
                .dir
                .with_file_name("refs")
                .join(format!("{}.failed", m.model.name));
            let Ok(why) = std::fs::read_to_string(&marker) else {
                return true;
            };
            assert!(
                on_gpu(),
                "{}: mlx-lm failed on the CPU: {why}",
                marker.display()
            );
            eprintln!(
                "NOT COMPARED: {}: mlx-lm failed on this GPU: {}",
                m.model.name,
                why.trim()
            );
            false
        })
        .collect()
}

#[test]
fn every_family_model_matches_mlx_lm() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for family in &models() {
        let spec = &family.model;
        let model = reference::load(&spec.dir);
        let full = spec.dtype == "float32" && !on_gpu();
        check_against(&model, spec, &family_references(spec), full);
    }
}

#[test]
fn every_family_model_generates_mlx_lm_greedy_ids() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for family in &models() {
        let spec = &family.model;
        for reference in &family_references(spec) {
            let steps = compare_greedy::<KVCache>(spec, reference, "KVCache");
            eprintln!(
                "{:<26} {:<7} Generate: {steps}/{} greedy ids equal",
                spec.name,
                reference.prompt,
                reference.greedy_ids.len()
            );
            if spec.sliding_window.is_some() {
                // Rotating caches on the sliding layers only, as mlx-lm's
                // `make_cache` gives them.
                compare_greedy::<RotatingKVCache>(spec, reference, "RotatingKVCache");
            }
        }
    }
}

/// The quantized Mixtral and Mistral 4 models under `--dtype auto` on the
/// CPU (dequantized to float32 at load) against the same reference:
/// mlx-lm's float model on the dequantized weights.
#[test]
fn quantized_families_dequantized_at_load_match_mlx_lm() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if on_gpu() {
        return; // auto keeps the checkpoint on a GPU: the test above covers it
    }
    let options = LoadOptions {
        dtype: ComputeDtype::Auto,
        ..LoadOptions::default()
    };
    let quantized: Vec<_> = models()
        .into_iter()
        .filter(|m| m.model.quantized.is_some())
        .collect();
    assert!(
        quantized.len() >= 3,
        "expected 4- and 8-bit Mixtral and 4-bit Mistral 4 models"
    );
    for family in &quantized {
        let spec = &family.model;
        let model = load_model_with(&spec.dir, &options).expect("load_model_with auto");
        assert_eq!(
            model.weight_bytes(),
            mistral_loader::dense_f32_bytes(model.config()),
            "{}: weights under auto",
            spec.name
        );
        check_against(&model, spec, &family_references(spec), true);
    }
}

/// A `mistral3` checkpoint's vision tower and projector are skipped by name
/// before any copy: loading takes MLX memory for the text weights only.
#[test]
fn vision_weights_never_reach_memory() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Not FP8 ones: their text weights take twice their file's bytes once
    // dequantized.
    let wrapped: Vec<_> = models()
        .into_iter()
        .filter(|m| m.entry["wrapper"] == "mistral3" && m.entry["fp8"].is_null())
        .collect();
    assert!(wrapped.len() >= 2, "expected both mistral3 layouts");
    for family in &wrapped {
        let spec = &family.model;
        let vision = family.entry["vision_bytes"].as_u64().expect("vision_bytes");
        let text = family.entry["text_bytes"].as_u64().expect("text_bytes");
        assert!(
            vision > 1 << 20,
            "{}: too few vision bytes to tell",
            spec.name
        );
        mlx_rs_core::runtime::synchronize().expect("synchronize");
        let before = mlx_rs::memory::active_memory().expect("active memory") as u64;
        mlx_rs::memory::reset_peak_memory().expect("reset peak memory");
        let model = load_model(&spec.dir).expect("load_model");
        let peak =
            (mlx_rs::memory::peak_memory().expect("peak memory") as u64).saturating_sub(before);
        let held = model.weight_bytes();
        eprintln!(
            "{}: text {text} B, vision {vision} B, held {held} B, load peak {peak} B",
            spec.name
        );
        assert_eq!(
            held, text,
            "{}: the model holds the text weights",
            spec.name
        );
        assert!(
            peak < text + vision / 2,
            "{}: loading peaked at {peak} B, the text weights are {text} B and the vision \
             weights {vision} B",
            spec.name
        );
    }
}

/// `convert` on the new families: a float Mixtral quantized to 4 bits
/// (group 64) computes what mlx-lm's `mlx_lm.convert` of the same model
/// does (its reference), and the `mistral3` and FP8 checkpoints become
/// plain MLX folders (text weights only, resp. dequantized to bfloat16)
/// that still match their own references.
#[test]
fn convert_keeps_each_family_as_mlx_lm_computes_it() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let models = models();
    let find = |name: &str| {
        models
            .iter()
            .find(|m| m.model.name == name)
            .unwrap_or_else(|| panic!("no family model {name}"))
            .model
            .clone()
    };
    let cases = [
        ("mixtral_f32", "mixtral_q4_g64", Some((64, 4))),
        ("mistral3_ministral3_bf16", "mistral3_ministral3_bf16", None),
        ("ministral3_fp8_tensor", "ministral3_fp8_tensor", None),
        ("mistral_fp8_block", "mistral_fp8_block", None),
        ("mistral3_mistral4_fp8", "mistral3_mistral4_fp8", None),
    ];
    for (source, reference, quantize) in cases {
        let (source, reference) = (find(source), find(reference));
        let out = std::env::temp_dir().join(format!(
            "mistral-mlx-families-convert-{}-{}",
            source.name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&out);
        let options = mistral_loader::ConvertOptions {
            quantize: quantize
                .map(|(group_size, bits)| mistral_model::QuantParams { group_size, bits }),
            ..Default::default()
        };
        let report = mistral_loader::convert_model(&source.dir, &out, &options)
            .unwrap_or_else(|e| panic!("{}: convert: {e}", source.name));
        let written: Vec<String> = mistral_loader::SafetensorsWeights::open(&out)
            .expect("open the converted folder")
            .names();
        assert!(
            !written.iter().any(|n| n.contains("vision_tower")
                || n.contains("multi_modal_projector")
                || n.ends_with("_scale_inv")
                || n.ends_with("activation_scale")),
            "{}: the converted folder has vision or FP8 scale tensors",
            source.name
        );
        if quantize.is_some() {
            assert_eq!(report.dense, 0, "{}: every matrix quantized", source.name);
        }
        let model = load_model(&out).unwrap_or_else(|e| panic!("{}: load: {e}", out.display()));
        // The reference's own spec: on a GPU its CPU references (the GPU's
        // noise) are found beside it.
        check_against(&model, &reference, &family_references(&reference), false);
        std::fs::remove_dir_all(&out).expect("remove the converted folder");
    }
}

/// `convert` of a checkpoint in Mistral's own layout writes its Hugging
/// Face twin's tensors: the same names, dtypes, shapes and bytes (`wq`/`wk`
/// rows back in rotate-half order), and a config that loads to the same
/// model.
#[test]
fn convert_of_mistral_layout_gives_the_hugging_face_twin() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let native: Vec<_> = models()
        .into_iter()
        .filter(|m| m.entry["layout"] == "native")
        .collect();
    assert!(native.len() >= 3, "expected the Mistral-layout models");
    for family in &native {
        let spec = &family.model;
        let twin = spec
            .dir
            .parent()
            .expect("arch/")
            .join(family.entry["source"].as_str().expect("source"));
        let out = std::env::temp_dir().join(format!(
            "mistral-mlx-native-convert-{}-{}",
            spec.name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&out);
        mistral_loader::convert_model(&spec.dir, &out, &Default::default())
            .unwrap_or_else(|e| panic!("{}: convert: {e}", spec.name));
        let read = |dir: &std::path::Path| {
            let weights = mistral_loader::SafetensorsWeights::open(dir).expect("open");
            let mut names = weights.names();
            names.sort();
            names
                .into_iter()
                .map(|n| {
                    let meta = weights.meta(&n).expect("meta");
                    (n, format!("{:?} {:?}", meta.dtype, meta.shape))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            read(&out),
            read(&twin),
            "{}: tensor names, dtypes and shapes",
            spec.name
        );
        let mut ours = mistral_loader::SafetensorsWeights::open(&out).expect("open converted");
        let mut theirs = mistral_loader::SafetensorsWeights::open(&twin).expect("open twin");
        for name in ours.names() {
            let a = ours.try_take(&name).expect("take").expect("present");
            let b = theirs.try_take(&name).expect("take").expect("present");
            assert!(
                a.eq_values(&b).expect("compare"),
                "{}: {name} differs from the twin's",
                spec.name
            );
        }
        // The same config, but for head_dim written out (params.json has it).
        let mut config = mistral_loader::load_model_config(&out).expect("converted config");
        let mut twin_config = mistral_loader::load_model_config(&twin).expect("twin config");
        assert_eq!(config.head_dim(), twin_config.head_dim(), "{}", spec.name);
        (config.head_dim, twin_config.head_dim) = (None, None);
        assert_eq!(
            format!("{config:?}"),
            format!("{twin_config:?}"),
            "{}: config",
            spec.name
        );
        std::fs::remove_dir_all(&out).expect("remove the converted folder");
    }
}
