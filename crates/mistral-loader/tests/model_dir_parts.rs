//! The parts of a model directory, each read on its own, on a directory
//! written by the test: config, checkpoint, special tokens, tokenizer.

mod common;

use std::collections::BTreeMap;

use common::*;
use mistral_loader::{
    discover_checkpoint, load_special_tokens, load_tokenizer, read_config_str, CheckpointLayout,
    LoadError, SafetensorsWeights, WeightSource,
};

#[test]
fn opens_config_weights_and_special_tokens() {
    let dir = TempDir::new("modeldir");
    let mut t = BTreeMap::new();
    t.insert("model.norm.weight".to_string(), f32_tensor(&[4], 1));
    t.insert("lm_head.weight".to_string(), u32_tensor(&[2, 2], 2));
    write_safetensors(&dir.path().join("model.safetensors"), &t);

    // No config.json: an error naming it.
    let err = read_config_str(dir.path()).unwrap_err();
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
    assert_eq!(read_config_str(dir.path()).unwrap(), config);
    let checkpoint = discover_checkpoint(dir.path()).unwrap();
    assert_eq!(checkpoint.layout, CheckpointLayout::Single);
    let special = load_special_tokens(dir.path(), None).unwrap();
    assert_eq!(special.bos, Some(1));
    assert_eq!(special.eos, vec![2, 7]);

    let mut weights = SafetensorsWeights::from_checkpoint(&checkpoint).unwrap();
    let a = weights.take("model.norm.weight").unwrap();
    assert_eq!(array_bytes(&a), t["model.norm.weight"].bytes);
    let left = weights.finish().unwrap();
    assert_eq!(
        left,
        vec![(
            "lm_head.weight".to_string(),
            dir.path().join("model.safetensors")
        )]
    );

    // A tokenizer.json that exists but is broken is an error.
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let err = load_tokenizer(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::Tokenizer { .. }), "{err}");
}
