//! Config parsing and validation on texts shaped like real checkpoints.

use mistral_model::{ConfigError, EosTokenId, LayerType, MistralConfig, QuantParams};
use mlx_rs_core::{AttentionMask, RopeScaling};
use serde_json::{json, Value};

const MISTRAL_7B_V01: &str = r#"{
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
}"#;

const MISTRAL_7B_V03_MLX_4BIT: &str = r#"{
  "architectures": ["MistralForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "quantization": {"group_size": 64, "bits": 4},
  "quantization_config": {"group_size": 64, "bits": 4},
  "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.0.dev0",
  "use_cache": true,
  "vocab_size": 32768
}"#;

const MISTRAL_NEMO: &str = r#"{
  "architectures": ["MistralForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 5120,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 1024000,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 40,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 131072
}"#;

fn parse(text: &str) -> MistralConfig {
    let cfg = MistralConfig::from_json_str(text).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// `base` with `changes` merged in (a `null` change removes the key).
fn patched(base: &str, changes: Value) -> String {
    let mut v: Value = serde_json::from_str(base).unwrap();
    for (k, val) in changes.as_object().unwrap() {
        if val.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = val.clone();
        }
    }
    v.to_string()
}

fn invalid_field(text: &str) -> String {
    match MistralConfig::from_json_str(text).unwrap().validate() {
        Err(ConfigError::Invalid { field, .. }) | Err(ConfigError::Unsupported { field, .. }) => {
            field
        }
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn mistral_7b_v01() {
    let cfg = parse(MISTRAL_7B_V01);
    assert_eq!(cfg.vocab_size, 32000);
    assert_eq!(cfg.head_dim(), 4096 / 32);
    assert_eq!(cfg.num_key_value_heads(), 8);
    assert_eq!(cfg.sliding_window, Some(4096));
    assert_eq!(cfg.rms_norm_eps, 1e-5);
    assert_eq!(cfg.bos_token_id, Some(1));
    assert_eq!(cfg.eos_token_ids(), vec![2]);
    assert!(!cfg.tie_word_embeddings);
    assert!(cfg.quantization().is_none());
    assert_eq!(
        cfg.quantization_for("model.layers.0.self_attn.q_proj"),
        None
    );
    // Without layer_types the window applies to every layer.
    for layer in 0..32 {
        assert_eq!(cfg.layer_type(layer), LayerType::SlidingAttention);
        assert_eq!(
            cfg.attention_mask(layer),
            AttentionMask::SlidingWindow(4096)
        );
    }
    assert_eq!(cfg.rope_scaling(), RopeScaling::None);
}

#[test]
fn mistral_7b_v03_quantized() {
    let cfg = parse(MISTRAL_7B_V03_MLX_4BIT);
    assert_eq!(cfg.vocab_size, 32768);
    assert_eq!(cfg.rope_theta(), 1e6);
    assert_eq!(cfg.sliding_window, None);
    assert_eq!(cfg.attention_mask(0), AttentionMask::Causal);
    let q = QuantParams {
        group_size: 64,
        bits: 4,
    };
    assert_eq!(cfg.quantization_for("model.layers.3.mlp.up_proj"), Some(q));
    assert_eq!(cfg.quantization_for("lm_head"), Some(q));
    assert_eq!(cfg.quantization_for("model.embed_tokens"), Some(q));
}

#[test]
fn quantization_config_alone_is_accepted() {
    let text = patched(MISTRAL_7B_V03_MLX_4BIT, json!({"quantization": null}));
    let cfg = parse(&text);
    assert_eq!(
        cfg.quantization_for("lm_head"),
        Some(QuantParams {
            group_size: 64,
            bits: 4
        })
    );
}

#[test]
fn per_layer_quantization_entries() {
    let q = json!({
        "group_size": 64,
        "bits": 4,
        "mode": "affine",
        "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8},
        "model.layers.1.mlp.down_proj": {"bits": 6},
        "lm_head": false
    });
    let text = patched(
        MISTRAL_7B_V03_MLX_4BIT,
        json!({"quantization": q.clone(), "quantization_config": q}),
    );
    let cfg = parse(&text);
    assert_eq!(
        cfg.quantization_for("model.layers.0.mlp.down_proj"),
        Some(QuantParams {
            group_size: 32,
            bits: 8
        })
    );
    assert_eq!(
        cfg.quantization_for("model.layers.1.mlp.down_proj"),
        Some(QuantParams {
            group_size: 64,
            bits: 6
        })
    );
    assert_eq!(
        cfg.quantization_for("model.layers.0.mlp.up_proj"),
        Some(QuantParams {
            group_size: 64,
            bits: 4
        })
    );
    assert_eq!(cfg.quantization_for("lm_head"), None);
}

#[test]
fn nemo_explicit_head_dim() {
    let cfg = parse(MISTRAL_NEMO);
    assert_eq!(cfg.head_dim(), 128);
    assert_ne!(cfg.head_dim(), cfg.hidden_size / cfg.num_attention_heads);
    assert_eq!(cfg.vocab_size, 131072);
    assert_eq!(cfg.max_position_embeddings, Some(1024000));
}

#[test]
fn defaults_and_eos_list() {
    let text = patched(
        MISTRAL_NEMO,
        json!({
            "num_key_value_heads": null,
            "rms_norm_eps": null,
            "rope_theta": null,
            "model_type": null,
            "tie_word_embeddings": true,
            "eos_token_id": [2, 32000],
            "sliding_window": null,
        }),
    );
    let cfg = parse(&text);
    assert_eq!(cfg.num_key_value_heads(), 32);
    assert_eq!(cfg.rms_norm_eps, 1e-6);
    assert_eq!(cfg.rope_theta(), 10000.0);
    assert_eq!(cfg.model_type, "mistral");
    assert!(cfg.tie_word_embeddings);
    assert_eq!(cfg.eos_token_id, Some(EosTokenId::Many(vec![2, 32000])));
    assert_eq!(cfg.eos_token_ids(), vec![2, 32000]);
    assert!(!cfg.attention_bias && !cfg.mlp_bias);
}

#[test]
fn layer_types_select_windows() {
    let text = patched(
        MISTRAL_7B_V01,
        json!({
            "num_hidden_layers": 4,
            "sliding_window": 128,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        }),
    );
    let cfg = parse(&text);
    assert_eq!(cfg.attention_mask(0), AttentionMask::SlidingWindow(128));
    assert_eq!(cfg.attention_mask(1), AttentionMask::Causal);
    assert_eq!(cfg.attention_mask(2), AttentionMask::SlidingWindow(128));
    assert_eq!(cfg.attention_mask(3), AttentionMask::Causal);
}

#[test]
fn linear_rope_scaling() {
    let text = patched(
        MISTRAL_7B_V01,
        json!({"rope_scaling": {"type": "linear", "factor": 4.0}}),
    );
    assert_eq!(
        parse(&text).rope_scaling(),
        RopeScaling::Linear { factor: 4.0 }
    );
    let text = patched(
        MISTRAL_7B_V01,
        json!({"rope_scaling": {"rope_type": "longrope", "factor": 4.0}}),
    );
    assert_eq!(invalid_field(&text), "rope_scaling");
}

#[test]
fn transformers_v5_rope_parameters() {
    let text = patched(
        MISTRAL_NEMO,
        json!({"rope_theta": null,
               "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}}),
    );
    let cfg = parse(&text);
    assert_eq!(cfg.rope_theta(), 1e6);
    assert_eq!(cfg.rope_scaling(), RopeScaling::None);
    let text = patched(
        MISTRAL_NEMO,
        json!({"rope_theta": null,
               "rope_parameters": {"rope_theta": 1e6, "rope_type": "linear", "factor": 8.0}}),
    );
    assert_eq!(
        parse(&text).rope_scaling(),
        RopeScaling::Linear { factor: 8.0 }
    );
    let text = patched(
        MISTRAL_NEMO,
        json!({"rope_parameters": {"rope_theta": 1e6, "rope_type": "su", "factor": 8.0}}),
    );
    assert_eq!(invalid_field(&text), "rope_parameters");
    let text = patched(
        MISTRAL_NEMO,
        json!({"rope_theta": null, "rope_parameters": {"rope_theta": "big"}}),
    );
    assert_eq!(invalid_field(&text), "rope_parameters.rope_theta");
}

#[test]
fn invalid_values_name_their_field() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"hidden_size": 4000, "num_attention_heads": 3}),
            "hidden_size",
        ),
        (json!({"num_key_value_heads": 5}), "num_key_value_heads"),
        (json!({"num_key_value_heads": 0}), "num_key_value_heads"),
        (json!({"hidden_size": 0}), "hidden_size"),
        (json!({"intermediate_size": -1}), "intermediate_size"),
        (json!({"num_hidden_layers": 0}), "num_hidden_layers"),
        (json!({"vocab_size": 0}), "vocab_size"),
        (json!({"head_dim": 0}), "head_dim"),
        (json!({"head_dim": 127}), "head_dim"),
        (json!({"sliding_window": 0}), "sliding_window"),
        (json!({"rope_theta": 0.0}), "rope_theta"),
        (json!({"rope_theta": -1.0}), "rope_theta"),
        (json!({"rms_norm_eps": 0.0}), "rms_norm_eps"),
        (json!({"model_type": "gpt2"}), "model_type"),
        (json!({"layer_types": ["full_attention"]}), "layer_types"),
        (json!({"eos_token_id": [2, -1]}), "eos_token_id"),
        (
            json!({"quantization": {"group_size": 64, "bits": 7}}),
            "quantization.bits",
        ),
        (
            json!({"quantization": {"group_size": 48, "bits": 4}}),
            "quantization.group_size",
        ),
        (
            json!({"quantization_config": {"group_size": 64, "bits": 1}}),
            "quantization_config.bits",
        ),
        (
            json!({"quantization": {"group_size": 64, "bits": 4, "mode": "mxfp4"}}),
            "quantization.mode",
        ),
        (
            json!({"quantization": {"group_size": 64, "bits": 4,
                   "model.layers.0.mlp.down_proj": {"group_size": 16, "bits": 8}}}),
            "quantization.model.layers.0.mlp.down_proj.group_size",
        ),
        (
            json!({"quantization": {"group_size": 64, "bits": 4},
                   "quantization_config": {"group_size": 32, "bits": 4}}),
            "quantization_config",
        ),
    ];
    for (change, field) in cases {
        let text = patched(MISTRAL_7B_V01, change.clone());
        assert_eq!(invalid_field(&text), field, "change {change}");
    }
    let text = patched(
        MISTRAL_7B_V01,
        json!({"num_hidden_layers": 2, "sliding_window": null,
               "layer_types": ["full_attention", "sliding_attention"]}),
    );
    assert_eq!(invalid_field(&text), "layer_types[1]");
    let text = patched(
        MISTRAL_7B_V01,
        json!({"num_hidden_layers": 2, "layer_types": ["full_attention", "local"]}),
    );
    assert_eq!(invalid_field(&text), "layer_types[1]");
}

#[test]
fn malformed_json_is_a_json_error() {
    assert!(matches!(
        MistralConfig::from_json_str("{"),
        Err(ConfigError::Json(_))
    ));
    // A field with the wrong type or range is named (serde alone does not).
    for (field, patch) in [
        ("hidden_size", json!({"hidden_size": 1.5})),
        (
            "intermediate_size",
            json!({"intermediate_size": 1_000_000_000_000u64}),
        ),
        ("num_attention_heads", json!({"num_attention_heads": "32"})),
    ] {
        let text = patched(MISTRAL_7B_V01, patch);
        match MistralConfig::from_json_str(&text) {
            Err(ConfigError::Field { field: named, .. }) => assert_eq!(named, field),
            other => panic!("{field}: expected a field error, got {other:?}"),
        }
    }
    // A missing field: serde's message names it.
    let missing = patched(MISTRAL_7B_V01, json!({"hidden_size": null}));
    let err = MistralConfig::from_json_str(&missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("hidden_size"), "{err}");
    assert!(matches!(
        MistralConfig::from_json_str(&format!("{MISTRAL_7B_V01} trailing")),
        Err(ConfigError::Json(_))
    ));
    // A non-MLX quantization block is rejected when parsing, naming the key.
    let gptq = patched(
        MISTRAL_7B_V01,
        json!({"quantization_config": {"quant_method": "gptq", "bits": 4}}),
    );
    let err = MistralConfig::from_json_str(&gptq).unwrap_err().to_string();
    assert!(err.contains("quant_method"), "{err}");
}
