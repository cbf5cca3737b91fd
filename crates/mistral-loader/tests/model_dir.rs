//! `ModelDir::open` on a directory written by the test.

mod common;

use std::collections::BTreeMap;

use common::*;
use mistral_loader::{CheckpointLayout, LoadError, ModelDir, WeightSource};

#[test]
fn opens_config_weights_and_special_tokens() {
    let dir = TempDir::new("modeldir");
    let mut t = BTreeMap::new();
    t.insert("model.norm.weight".to_string(), f32_tensor(&[4], 1));
    t.insert("lm_head.weight".to_string(), u32_tensor(&[2, 2], 2));
    write_safetensors(&dir.path().join("model.safetensors"), &t);

    // No config.json: an error naming it, before touching the weights.
    let err = ModelDir::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingFile { path, .. } if path == &dir.path().join("config.json")),
        "{err}"
    );

    let config = r#"{"model_type": "mistral", "bos_token_id": 1, "eos_token_id": [2, 7]}"#;
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    // tokenizer_config.json is only read with a tokenizer.
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"eos_token": "<x>"}"#,
    )
    .unwrap();
    let mut md = ModelDir::open(dir.path()).unwrap();
    assert_eq!(md.config_json, config);
    assert_eq!(md.layout, CheckpointLayout::Single);
    assert!(md.tokenizer.is_none());
    assert_eq!(md.special_tokens.bos, Some(1));
    assert_eq!(md.special_tokens.eos, vec![2, 7]);

    let a = md.weights.take("model.norm.weight").unwrap();
    assert_eq!(array_bytes(&a), t["model.norm.weight"].bytes);
    let left = md.weights.finish().unwrap();
    assert_eq!(
        left,
        vec![(
            "lm_head.weight".to_string(),
            dir.path().join("model.safetensors")
        )]
    );

    // A tokenizer.json that exists but is broken is an error.
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let err = ModelDir::open(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::Tokenizer { .. }), "{err}");
}
