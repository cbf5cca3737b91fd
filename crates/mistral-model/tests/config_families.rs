//! Configs of the newer Mistral families, shaped like the published ones:
//! Mixtral, Ministral 3, the `mistral3` wrapper (Mistral Small 3.x,
//! Magistral, Devstral, Ministral 3), FP8 blocks, every RoPE type, and the
//! refusals (Mistral 4, other quantization methods, unknown RoPE types).

use mistral_model::{ConfigError, LayerType, MistralConfig};
use mlx_rs_core::{AttentionMask, RopeScaling};
use serde_json::{json, Value};

fn parse(v: &Value) -> Result<MistralConfig, ConfigError> {
    MistralConfig::from_json_str_validated(&v.to_string())
}

fn field_of(v: &Value) -> String {
    match parse(v) {
        Err(ConfigError::Invalid { field, .. })
        | Err(ConfigError::Unsupported { field, .. })
        | Err(ConfigError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

fn mixtral() -> Value {
    json!({
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
        "sliding_window": null, "num_local_experts": 8, "num_experts_per_tok": 2,
        "router_aux_loss_coef": 0.02, "output_router_logits": false,
        "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
    })
}

fn ministral3_text() -> Value {
    json!({
        "model_type": "ministral3", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 4, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 131072, "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-5, "sliding_window": null,
        "rope_parameters": {
            "rope_type": "yarn", "rope_theta": 1000000.0, "factor": 16.0,
            "original_max_position_embeddings": 16384, "beta_fast": 32.0, "beta_slow": 1.0,
            "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1
        }
    })
}

fn mistral3(text: Value) -> Value {
    json!({
        "architectures": ["Mistral3ForConditionalGeneration"], "model_type": "mistral3",
        "image_token_index": 10, "projector_hidden_act": "gelu", "spatial_merge_size": 2,
        "vision_config": {"model_type": "pixtral", "hidden_size": 1024},
        "text_config": text
    })
}

#[test]
fn mixtral_reads_its_experts() {
    let cfg = parse(&mixtral()).unwrap();
    assert_eq!(cfg.experts(), Some((8, 2)));
    let mut top3 = mixtral();
    top3["num_experts_per_tok"] = json!(9);
    assert_eq!(field_of(&top3), "num_experts_per_tok");
    let mut none = mixtral();
    none.as_object_mut().unwrap().remove("num_local_experts");
    assert_eq!(field_of(&none), "num_local_experts");
    let mut zero = mixtral();
    zero["num_local_experts"] = json!(0);
    assert_eq!(field_of(&zero), "num_local_experts");
}

#[test]
fn ministral3_defaults_and_query_scaling() {
    let cfg = parse(&ministral3_text()).unwrap();
    // mlx-lm's defaults: tied head, every layer full attention.
    assert!(cfg.tie_word_embeddings);
    assert_eq!(cfg.layer_type(3), LayerType::FullAttention);
    assert_eq!(cfg.query_scaling().unwrap(), Some((0.1, 16384)));
    assert!(matches!(cfg.rope_scaling(), RopeScaling::Yarn { factor, .. } if factor == 16.0));
    assert_eq!(cfg.rope_theta(), 1e6);
    let mut no_beta = ministral3_text();
    no_beta["rope_parameters"]
        .as_object_mut()
        .unwrap()
        .remove("llama_4_scaling_beta");
    assert_eq!(field_of(&no_beta), "rope_parameters.llama_4_scaling_beta");
    let mut windowed = ministral3_text();
    windowed["sliding_window"] = json!(4096);
    windowed["layer_types"] = json!([
        "sliding_attention",
        "full_attention",
        "sliding_attention",
        "full_attention"
    ]);
    let cfg = parse(&windowed).unwrap();
    assert_eq!(cfg.attention_mask(0), AttentionMask::SlidingWindow(4096));
    assert_eq!(cfg.attention_mask(1), AttentionMask::Causal);
}

#[test]
fn mistral3_reads_its_text_config() {
    let cfg = parse(&mistral3(ministral3_text())).unwrap();
    assert_eq!(cfg.model_type, "ministral3");
    assert_eq!(cfg.wrapper.as_deref(), Some("mistral3"));
    // The wrapper unties the head unless the text config says otherwise.
    assert!(!cfg.tie_word_embeddings);
    let small = json!({
        "model_type": "mistral", "hidden_size": 5120, "intermediate_size": 32768,
        "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 131072, "rope_theta": 1e9, "sliding_window": null,
        "rms_norm_eps": 1e-5
    });
    let mut wrapped = mistral3(small);
    wrapped["quantization"] = json!({
        "group_size": 64, "bits": 4,
        "language_model.model.layers.0.mlp.down_proj": {"group_size": 64, "bits": 8},
        "vision_tower.transformer.layers.0.attention.q_proj": false
    });
    let cfg = parse(&wrapped).unwrap();
    assert_eq!(cfg.model_type, "mistral");
    assert_eq!(
        cfg.quantization_for("model.layers.0.mlp.down_proj")
            .map(|q| q.bits),
        Some(8)
    );
    assert_eq!(
        cfg.quantization_for("model.layers.1.mlp.down_proj")
            .map(|q| q.bits),
        Some(4)
    );
    // Errors inside the text config name it.
    let mut bad = mistral3(ministral3_text());
    bad["text_config"]["hidden_size"] = json!("wide");
    assert_eq!(field_of(&bad), "text_config.hidden_size");
    let mut missing = mistral3(ministral3_text());
    missing.as_object_mut().unwrap().remove("text_config");
    assert_eq!(field_of(&missing), "text_config");
}

#[test]
fn mistral4_and_unknown_types_are_refused_by_name() {
    let mut m4 = ministral3_text();
    m4["model_type"] = json!("mistral4");
    let err = parse(&m4).unwrap_err().to_string();
    assert!(err.contains("mistral4") && err.contains("latent"), "{err}");
    assert_eq!(field_of(&mistral3(m4)), "text_config.model_type");
    let mut other = mixtral();
    other["model_type"] = json!("qwen2");
    let err = parse(&other).unwrap_err().to_string();
    assert_eq!(err.matches("qwen2").count(), 1, "{err}");
}

#[test]
fn fp8_quantization_config_is_set_aside() {
    let mut fp8 = ministral3_text();
    fp8["quantization_config"] = json!({
        "quant_method": "fp8", "activation_scheme": "static", "weight_block_size": null,
        "modules_to_not_convert": ["lm_head"]
    });
    let cfg = parse(&fp8).unwrap();
    assert!(cfg.fp8.is_some());
    assert!(cfg.quantization().is_none());
    let mut gptq = ministral3_text();
    gptq["quantization_config"] = json!({"quant_method": "gptq", "bits": 4});
    assert_eq!(field_of(&gptq), "quantization_config.quant_method");
}

#[test]
fn every_rope_type_parses_with_mlx_lm_defaults() {
    let with = |scaling: Value| {
        let mut v = mixtral();
        v["rope_scaling"] = scaling;
        v
    };
    let cfg = parse(&with(json!({"rope_type": "dynamic", "factor": 2.0}))).unwrap();
    assert_eq!(
        cfg.rope_scaling(),
        RopeScaling::Dynamic {
            factor: 2.0,
            max_position_embeddings: 32768
        }
    );
    let cfg = parse(&with(json!({"rope_type": "llama3", "factor": 8.0}))).unwrap();
    assert_eq!(
        cfg.rope_scaling(),
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0
        }
    );
    let cfg = parse(&with(json!({"type": "deepseek_yarn", "factor": 40.0}))).unwrap();
    assert_eq!(
        cfg.rope_scaling(),
        RopeScaling::Yarn {
            factor: 40.0,
            original_max_position_embeddings: 4096.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 0.0
        }
    );
    assert_eq!(
        field_of(&with(json!({"rope_type": "yarn"}))),
        "rope_scaling.factor"
    );
    assert_eq!(
        field_of(&with(
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": "x"})
        )),
        "rope_scaling.low_freq_factor"
    );
    let err = parse(&with(json!({"rope_type": "longrope"})))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("longrope") && err.contains("rope_scaling"),
        "{err}"
    );
    let mut no_context = with(json!({"rope_type": "dynamic", "factor": 2.0}));
    no_context
        .as_object_mut()
        .unwrap()
        .remove("max_position_embeddings");
    assert_eq!(field_of(&no_context), "max_position_embeddings");
}
