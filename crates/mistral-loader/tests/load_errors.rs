//! `load_model` on broken copies of a generated test model: each problem is
//! one error naming the file and the tensor or field.

mod common;
mod reference;

use std::collections::BTreeMap;
use std::path::Path;

use common::{write_safetensors, RawTensor, TempDir};
use mistral_loader::{load_model, LoadError};
use safetensors::SafeTensors;

/// The tensors of the generated `gqa4_f32` model, as raw bytes.
fn gqa4_tensors() -> (String, BTreeMap<String, RawTensor>) {
    let dir = reference::models_dir().join("gqa4_f32");
    let config = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let file = SafeTensors::deserialize(&bytes).expect("parse");
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let raw = RawTensor {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                bytes: view.data().to_vec(),
            };
            (name, raw)
        })
        .collect();
    (config, tensors)
}

fn model_dir(config: &str, tensors: &BTreeMap<String, RawTensor>) -> TempDir {
    let dir = TempDir::new("load-errors");
    std::fs::write(dir.path().join("config.json"), config).expect("write config");
    write_safetensors(&dir.path().join("model.safetensors"), tensors);
    dir
}

fn load_error(dir: &Path) -> LoadError {
    match load_model(dir) {
        Ok(_) => panic!("{} loaded, but it is broken", dir.display()),
        Err(err) => err,
    }
}

#[test]
fn intact_copy_loads() {
    let (config, tensors) = gqa4_tensors();
    let dir = model_dir(&config, &tensors);
    load_model(dir.path()).expect("the unmodified copy loads");
}

#[test]
fn bad_config_value_names_file_and_field() {
    let (config, tensors) = gqa4_tensors();
    let mut json: serde_json::Value = serde_json::from_str(&config).expect("json");
    json["num_key_value_heads"] = 3.into();
    let dir = model_dir(&json.to_string(), &tensors);
    let message = load_error(dir.path()).to_string();
    assert!(message.contains("config.json"), "{message}");
    assert!(message.contains("num_key_value_heads"), "{message}");
}

#[test]
fn missing_tensor_is_named() {
    let (config, mut tensors) = gqa4_tensors();
    let name = "model.layers.1.mlp.up_proj.weight";
    tensors.remove(name).expect("tensor exists");
    let dir = model_dir(&config, &tensors);
    let message = load_error(dir.path()).to_string();
    assert!(message.contains(name), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn misshaped_tensor_names_tensor_and_file() {
    let (config, mut tensors) = gqa4_tensors();
    let name = "model.layers.0.self_attn.k_proj.weight";
    let tensor = tensors.get_mut(name).expect("tensor exists");
    // Same bytes, rows and columns swapped: a plausible conversion mistake.
    tensor.shape.reverse();
    let dir = model_dir(&config, &tensors);
    let err = load_error(dir.path());
    let message = err.to_string();
    assert!(message.contains(name), "{message}");
    assert!(message.contains("model.safetensors"), "{message}");
    assert!(matches!(err, LoadError::Model { .. }), "{err:?}");
}

#[test]
fn unexpected_tensor_is_named() {
    let (config, mut tensors) = gqa4_tensors();
    let extra = RawTensor {
        dtype: safetensors::Dtype::F32,
        shape: vec![4],
        bytes: vec![0; 16],
    };
    tensors.insert("model.layers.7.self_attn.q_proj.weight".to_owned(), extra);
    let dir = model_dir(&config, &tensors);
    let message = load_error(dir.path()).to_string();
    assert!(
        message.contains("model.layers.7.self_attn.q_proj.weight"),
        "{message}"
    );
    assert!(message.contains("model.safetensors"), "{message}");
}
