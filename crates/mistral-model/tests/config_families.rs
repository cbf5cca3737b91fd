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

fn mistral4() -> Value {
    json!({
        "model_type": "mistral4", "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 4, "num_attention_heads": 128,
        "num_key_value_heads": 128, "vocab_size": 131072, "max_position_embeddings": 294912,
        "rms_norm_eps": 1e-6, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
        "n_routed_experts": 128, "num_experts_per_tok": 4, "n_shared_experts": 1,
        "routed_scaling_factor": 1.0, "norm_topk_prob": true, "n_group": 1, "topk_group": 1,
        "first_k_dense_replace": 3,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 64.0,
            "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
            "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}
    })
}

#[test]
fn mistral4_reads_its_latent_attention_and_experts() {
    let cfg = parse(&mistral4()).unwrap();
    let latent = cfg.latent.as_ref().expect("latent fields");
    assert_eq!(latent.qk_head_dim(), 192);
    assert_eq!(cfg.head_dim(), 192);
    assert!(!latent.has_experts(2) && latent.has_experts(3));
    assert_eq!(cfg.rope_theta(), 1e4);
    assert_eq!(cfg.query_scaling().unwrap(), Some((0.1, 4096)));
    // mlx-lm's apply_yarn_mscale: (0.1 * 1 * ln 64 + 1)^2 / sqrt(192).
    let s = 0.1 * 64f64.ln() + 1.0;
    let want = (s * s / 192f64.sqrt()) as f32;
    assert!((latent.softmax_scale(cfg.rope_parameters.as_ref()) - want).abs() < 1e-7);
    let mut missing = mistral4();
    missing.as_object_mut().unwrap().remove("kv_lora_rank");
    assert_eq!(field_of(&missing), "kv_lora_rank");
    assert_eq!(field_of(&mistral3(missing)), "text_config.kv_lora_rank");
    let mut groups = mistral4();
    groups["n_group"] = json!(3);
    assert_eq!(field_of(&groups), "n_group");
}

#[test]
fn unknown_types_are_refused_by_name() {
    let mut other = mixtral();
    other["model_type"] = json!("qwen2");
    let err = parse(&other).unwrap_err().to_string();
    assert_eq!(err.matches("qwen2").count(), 1, "{err}");
    assert_eq!(field_of(&mistral3(other)), "text_config.model_type");
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
