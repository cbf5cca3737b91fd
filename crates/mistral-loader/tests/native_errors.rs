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
        ("yarn", json!({"factor": 4.0}), "llama_4_scaling"),
        ("llama_4_scaling", json!({"beta": 0.1}), "yarn"),
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
fn bad_yarn_fields_are_named() {
    let yarn = || {
        let mut p = params();
        p["yarn"] = json!({"factor": 16.0, "original_max_position_embeddings": 16384,
                           "beta": 32.0, "alpha": 1.0, "apply_scale": false});
        p["llama_4_scaling"] = json!({"beta": 0.1, "original_max_position_embeddings": 16384});
        p
    };
    let cases: [(&str, &str, Value, &str); 6] = [
        ("yarn", "beta", Value::Null, "yarn.beta"),
        ("yarn", "factor", json!("16"), "yarn.factor"),
        ("yarn", "apply_scale", json!(true), "yarn.apply_scale"),
        (
            "yarn",
            "original_max_position_embeddings",
            json!(-1),
            "yarn.original_max",
        ),
        (
            "llama_4_scaling",
            "beta",
            Value::Null,
            "llama_4_scaling.beta",
        ),
        (
            "llama_4_scaling",
            "original_max_position_embeddings",
            json!(8192),
            "llama_4_scaling.original",
        ),
    ];
    for (outer, key, value, named) in cases {
        let mut p = yarn();
        if value.is_null() {
            p[outer].as_object_mut().unwrap().remove(key);
        } else {
            p[outer][key] = value;
        }
        let e = error(&p);
        assert!(e.contains(named), "{outer}.{key}: {e}");
    }
    let mut p = yarn();
    p["sliding_window"] = json!(4096);
    assert!(error(&p).contains("sliding_window"));
    let mut p = yarn();
    p["moe"] = json!({"num_experts": 4, "num_experts_per_tok": 2});
    assert!(error(&p).contains("yarn"));
    // The valid one gets as far as its (empty) weights file.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("params.json"), yarn().to_string()).expect("write");
    std::fs::write(dir.path().join("consolidated.safetensors"), b"").expect("write");
    let config = load_model_config(dir.path()).expect("yarn params.json");
    assert_eq!(config.model_type, "ministral3");
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
