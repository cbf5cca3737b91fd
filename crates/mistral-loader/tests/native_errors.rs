//! Bad `params.json` files of Mistral's own layout: each load is an error
//! naming `params.json` and the field, never a panic.

use mistral_loader::{load_model, load_model_config};
use serde_json::{json, Value};

/// A valid params.json of a tiny model.
fn params() -> Value {
    json!({"dim": 64, "n_layers": 1, "head_dim": 16, "hidden_dim": 128, "n_heads": 4,
           "n_kv_heads": 2, "norm_eps": 1e-5, "vocab_size": 100, "rope_theta": 10000.0})
}

/// The error of a folder holding `params` and an (empty) consolidated file.
fn error(params: &Value) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("params.json"), params.to_string()).expect("write");
    std::fs::write(dir.path().join("consolidated.safetensors"), b"").expect("write");
    let config = load_model_config(dir.path())
        .expect_err("a bad params.json")
        .to_string();
    let model = load_model(dir.path())
        .expect_err("a bad params.json")
        .to_string();
    assert_eq!(config, model);
    assert!(config.contains("params.json"), "{config}");
    config
}

#[test]
fn bad_params_name_the_field() {
    let cases: [(&str, Value, &str); 7] = [
        ("dim", Value::Null, "dim"),
        ("n_heads", json!("eight"), "n_heads"),
        ("yarn", json!({"factor": 4.0}), "yarn"),
        ("llama_4_scaling", json!({"beta": 0.1}), "llama_4_scaling"),
        ("moe", json!({"num_experts": 4}), "moe.num_experts_per_tok"),
        ("sliding_window", json!([4096, 4096]), "sliding_window"),
        ("n_kv_heads", json!(3), "num_key_value_heads"),
    ];
    for (field, value, named) in cases {
        let mut p = params();
        if value.is_null() {
            p.as_object_mut().unwrap().remove(field);
        } else {
            p[field] = value;
        }
        let e = error(&p);
        assert!(e.contains(named), "{field}: {e}");
    }
}

#[test]
fn a_folder_with_both_layouts_reads_the_hugging_face_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("params.json"), params().to_string()).expect("write");
    std::fs::write(dir.path().join("consolidated.safetensors"), b"").expect("write");
    std::fs::write(
        dir.path().join("config.json"),
        "{\"model_type\": \"gemma\"}",
    )
    .expect("write");
    let e = load_model_config(dir.path())
        .expect_err("config.json is read")
        .to_string();
    assert!(
        e.contains("config.json") && !e.contains("params.json"),
        "{e}"
    );
    // Asked for, Mistral's layout is read: here its (empty) weights file fails.
    let options = mistral_loader::LoadOptions {
        layout: mistral_loader::WeightsLayout::Mistral,
        ..Default::default()
    };
    let e = mistral_loader::load_model_with(dir.path(), &options)
        .expect_err("an empty consolidated.safetensors")
        .to_string();
    assert!(e.contains("consolidated.safetensors"), "{e}");
}
