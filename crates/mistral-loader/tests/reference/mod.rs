//! The generated test models and mlx-lm's outputs on them.
//!
//! `cargo xtask test` (the README's test command) generates both with live
//! mlx-lm 0.32.2 (`xtask/python/models/make_models.py` and `refs/reference.py`) and
//! points `MISTRAL_MLX_TEST_MODELS` at them; without the variable the
//! default location under `target/xtask` is used. Missing files fail the
//! test with the command to run: a parity check is never skipped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

mod test_env;
pub use test_env::{models_dir, python_module, smollm2_path};

use safetensors::SafeTensors;

pub mod graph;
pub mod live;
pub mod parity;

/// One generated model, as `manifest.json` describes it.
#[derive(Debug, Clone)]
pub struct TestModel {
    pub dir: PathBuf,
    pub name: String,
    /// "float32", "bfloat16" or "float16": the dtype of its float tensors.
    pub dtype: String,
    pub quantized: Option<(i64, i64)>,
    pub sliding_window: Option<i64>,
}

pub fn test_models() -> Vec<TestModel> {
    let root = models_dir();
    let text = std::fs::read_to_string(root.join("manifest.json")).expect("read manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("parse manifest.json");
    manifest["models"]
        .as_array()
        .expect("manifest.models")
        .iter()
        .map(|entry| test_model_of(&root, entry))
        .collect()
}

/// The model a manifest entry describes, in the folder `root`.
fn test_model_of(root: &std::path::Path, entry: &serde_json::Value) -> TestModel {
    let name = entry["dir"].as_str().expect("model dir").to_owned();
    let quantized = entry["quantized"].as_object().map(|q| {
        (
            q["bits"].as_i64().expect("bits"),
            q["group_size"].as_i64().expect("group_size"),
        )
    });
    TestModel {
        dir: root.join(&name),
        dtype: entry["dtype"].as_str().expect("dtype").to_owned(),
        quantized,
        sliding_window: entry["sliding_window"].as_i64(),
        name,
    }
}

/// The model at `dir` as the parity tests load it: the library's defaults,
/// with our 4-bit CUDA kernel where `MISTRAL_MLX_QMV` asks for it (as
/// `mistral-cli --qmv` reads it; `xtask/gpu/run.sh parity` on a GPU).
pub fn load(dir: &std::path::Path) -> mistral_model::Mistral {
    let options = mistral_loader::LoadOptions {
        qmv: qmv(),
        ..Default::default()
    };
    mistral_loader::load_model_with(dir, &options)
        .unwrap_or_else(|e| panic!("{}: load: {e}", dir.display()))
}

/// Our 4-bit CUDA kernel's use as `MISTRAL_MLX_QMV` asks (none if unset).
pub fn qmv() -> mlx_rs_core::quantized_matvec::QmvKernel {
    std::env::var("MISTRAL_MLX_QMV")
        .map_or(Ok(Default::default()), |v| v.parse())
        .unwrap_or_else(|e| panic!("MISTRAL_MLX_QMV: {e}"))
}

/// The test model called `name`.
pub fn test_model(name: &str) -> TestModel {
    test_models()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no test model {name}"))
}

/// The ids of the reference prompt called `name` (as mlx-lm tokenized it).
pub fn prompt_ids(model: &TestModel, name: &str) -> Vec<i32> {
    references(model)
        .into_iter()
        .find(|r| r.prompt == name)
        .unwrap_or_else(|| panic!("no reference prompt {name} for {}", model.name))
        .prompt_ids
}

/// What mlx-lm computed for one prompt.
#[derive(Debug)]
pub struct Reference {
    pub prompt: String,
    pub prompt_ids: Vec<i32>,
    /// `[prompt_len, vocab]`, row-major, float32.
    pub logits: Vec<f32>,
    /// The same through mlx-lm's cache in two chunks split at
    /// `prompt_len * 2 / 3` (`None` for a 1-token prompt).
    pub chunked_logits: Option<Vec<f32>>,
    pub vocab: usize,
    /// 64 greedy ids after the prompt.
    pub greedy_ids: Vec<i32>,
    /// Top-1 minus top-2 log-probability at each greedy step.
    pub greedy_margin: Vec<f32>,
}

/// Whether `name` is among the models `MISTRAL_MLX_ONLY_MODELS` names (all
/// are, where it is unset): for tests that pick their models by name.
pub fn selected(name: &str) -> bool {
    std::env::var("MISTRAL_MLX_ONLY_MODELS").map_or(true, |only| only.split(',').any(|n| n == name))
}

/// [`test_models`] less those mlx-lm itself could not run here, each
/// named on stderr with mlx-lm's error. Only on a GPU: there
/// `reference.py --keep-going` records a model mlx-lm fails on (MLX
/// 0.32.2's CUDA backend fails some shapes) in `refs/<model>.failed` and
/// goes on; on the CPU a recorded failure is itself a test failure.
/// `MISTRAL_MLX_ONLY_MODELS` (comma-separated names, each named on stderr)
/// narrows the set for a short GPU run (`xtask/gpu/run.sh parity NAMES`).
pub fn comparable_models() -> Vec<TestModel> {
    let gpu = on_gpu();
    let only = std::env::var("MISTRAL_MLX_ONLY_MODELS").ok();
    let only: Option<Vec<&str>> = only.as_deref().map(|s| s.split(',').collect());
    let models = test_models();
    if let Some(only) = &only {
        for name in only {
            assert!(
                models.iter().any(|m| m.name == *name),
                "MISTRAL_MLX_ONLY_MODELS names {name}, which is not a test model"
            );
        }
        eprintln!(
            "ONLY these models (MISTRAL_MLX_ONLY_MODELS): {}",
            only.join(", ")
        );
    }
    models
        .into_iter()
        .filter(|model| {
            only.as_ref()
                .is_none_or(|o| o.contains(&model.name.as_str()))
        })
        .filter(|model| {
            let marker = models_dir()
                .join("refs")
                .join(format!("{}.failed", model.name));
            let Ok(why) = std::fs::read_to_string(&marker) else {
                return true;
            };
            assert!(gpu, "{}: mlx-lm failed on the CPU: {why}", marker.display());
            eprintln!(
                "NOT COMPARED: {}: mlx-lm 0.32.2 failed on this GPU: {}",
                model.name,
                why.trim()
            );
            false
        })
        .collect()
}

/// mlx-lm's outputs for every prompt of `model`.
pub fn references(model: &TestModel) -> Vec<Reference> {
    references_in(model, "")
}

/// mlx-lm's outputs for every prompt of `model` from `refs/<subdir>`
/// (`dense-f32`: computed with the model dequantized and cast to float32).
pub fn references_in(model: &TestModel, subdir: &str) -> Vec<Reference> {
    references_at(
        &models_dir()
            .join("refs")
            .join(subdir)
            .join(format!("{}.safetensors", model.name)),
    )
}

/// One of the newer-architecture test models (`arch/manifest.json`, written
/// by `xtask/python/models/make_arch_models.py`): the model, and its manifest
/// entry (`arch`, `wrapper`, `layout`, `fp8`, `vision_bytes`, ...).
#[derive(Debug, Clone)]
pub struct FamilyModel {
    pub model: TestModel,
    pub entry: serde_json::Value,
}

/// Every newer-architecture test model.
pub fn family_models() -> Vec<FamilyModel> {
    let root = models_dir().join("arch");
    let path = root.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "read {}: {err}: run `cargo xtask test-models`",
            path.display()
        )
    });
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("parse arch manifest");
    manifest["models"]
        .as_array()
        .expect("manifest.models")
        .iter()
        .map(|entry| FamilyModel {
            model: test_model_of(&root, entry),
            entry: entry.clone(),
        })
        .collect()
}

/// mlx-lm's outputs for every prompt of a newer-architecture test model.
pub fn family_references(model: &TestModel) -> Vec<Reference> {
    references_at(
        &models_dir()
            .join("arch")
            .join("refs")
            .join(format!("{}.safetensors", model.name)),
    )
}

/// The references stored in the file at `path` (see `reference.py`).
fn references_at(path: &std::path::Path) -> Vec<Reference> {
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    let file = SafeTensors::deserialize(&bytes).expect("parse reference safetensors");
    let mut prompts: Vec<String> = file
        .names()
        .iter()
        .filter_map(|name| name.strip_suffix(".logits").map(str::to_owned))
        .collect();
    prompts.sort();
    prompts
        .into_iter()
        .map(|prompt| {
            let tensor = |what: &str| {
                file.tensor(&format!("{prompt}.{what}"))
                    .expect("reference tensor")
            };
            let logits = tensor("logits");
            Reference {
                prompt_ids: le_values(tensor("prompt_ids").data(), i32::from_le_bytes),
                logits: le_values(logits.data(), f32::from_le_bytes),
                chunked_logits: file
                    .tensor(&format!("{prompt}.chunked_logits"))
                    .ok()
                    .map(|t| le_values(t.data(), f32::from_le_bytes)),
                vocab: logits.shape()[1],
                greedy_ids: le_values(tensor("greedy_ids").data(), i32::from_le_bytes),
                greedy_margin: le_values(tensor("greedy_margin").data(), f32::from_le_bytes),
                prompt,
            }
        })
        .collect()
}

fn le_values<T>(bytes: &[u8], from: fn([u8; 4]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(4)
        .map(|chunk| from([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect()
}

/// Whether MLX computes on a GPU in this process (MLX's CUDA build on an
/// NVIDIA card; `xtask/gpu/run.sh parity` runs these tests there).
pub use mlx_rs_core::runtime::on_gpu;

/// On a GPU, the GPU's own arithmetic noise for `reference`: how far
/// mlx-lm's logits computed on the GPU (`refs/`) are from mlx-lm's logits
/// computed on the CPU (`refs/cpu/`, which `xtask/gpu/run.sh` writes on the
/// same machine), as a relative error. `None` on the CPU.
///
/// Ours and mlx-lm each carry that noise on the GPU (different kernels for
/// different shapes, TF32-class float32 products), so there the parity
/// tests allow twice it on top of the CPU tolerance; it is measured per
/// model and prompt, not typed in.
pub fn gpu_noise(model: &TestModel, reference: &Reference) -> Option<f64> {
    if !on_gpu() {
        return None;
    }
    // Callers ask once per prompt: keep the last model's CPU references.
    static LAST: Mutex<Option<(PathBuf, Arc<Vec<Reference>>)>> = Mutex::new(None);
    let cpu_refs = {
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        match last.as_ref() {
            Some((dir, refs)) if *dir == model.dir => Arc::clone(refs),
            _ => {
                // Beside the model's own references: `refs/cpu/` of the
                // folder holding it (the test models', or `arch/`).
                let root = model.dir.parent().map_or_else(models_dir, PathBuf::from);
                let refs = Arc::new(references_at(
                    &root
                        .join("refs")
                        .join("cpu")
                        .join(format!("{}.safetensors", model.name)),
                ));
                *last = Some((model.dir.clone(), Arc::clone(&refs)));
                refs
            }
        }
    };
    let cpu = cpu_refs
        .iter()
        .find(|r| r.prompt == reference.prompt)
        .unwrap_or_else(|| panic!("{}: no CPU reference for {}", model.name, reference.prompt));
    assert_eq!(
        cpu.prompt_ids, reference.prompt_ids,
        "{}: CPU and GPU prompts",
        model.name
    );
    Some(relative_error(&reference.logits, &cpu.logits))
}

/// max |ours - theirs| / max |theirs|.
pub fn relative_error(ours: &[f32], theirs: &[f32]) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "logit counts differ");
    let diff = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    let scale = theirs
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max);
    diff / scale.max(f64::MIN_POSITIVE)
}

/// One GGUF test file: the synthetic ones of `gguf/manifest.json`
/// (`make_gguf_models.py`) and the real SmolLM2 one, named `smollm2`.
#[derive(Debug, Clone)]
pub struct GgufModel {
    /// The short name (`llama_q4_1`, `smollm2`).
    pub name: String,
    /// The GGUF file.
    pub file: PathBuf,
    /// Its manifest entry (`null` for SmolLM2).
    pub manifest: serde_json::Value,
}

impl GgufModel {
    /// As a test model: `dir` is the GGUF file, references are
    /// `refs/gguf_<name>.safetensors` (mlx-lm on `gguf_to_hf.py`'s
    /// independent float32 conversion), computed in float32.
    pub fn as_test_model(&self) -> TestModel {
        TestModel {
            dir: self.file.clone(),
            name: format!("gguf_{}", self.name),
            dtype: "float32".to_owned(),
            quantized: None,
            sliding_window: self.manifest["sliding_window"].as_i64(),
        }
    }

    /// `gguf_to_hf.py`'s conversion (gguf-py's dequantization, float32).
    pub fn hf_dir(&self) -> PathBuf {
        models_dir().join("gguf-hf").join(&self.name)
    }
}

/// Every GGUF test file, SmolLM2 last.
pub fn gguf_models() -> Vec<GgufModel> {
    let dir = models_dir().join("gguf");
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e} (run `cargo xtask test`)", path.display()));
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("parse gguf manifest");
    let mut models: Vec<GgufModel> = manifest["models"]
        .as_array()
        .expect("gguf manifest models")
        .iter()
        .map(|entry| GgufModel {
            name: entry["name"].as_str().expect("name").to_owned(),
            file: dir.join(entry["file"].as_str().expect("file")),
            manifest: entry.clone(),
        })
        .collect();
    models.push(GgufModel {
        name: "smollm2".to_owned(),
        file: smollm2_path(),
        manifest: serde_json::Value::Null,
    });
    models
}
