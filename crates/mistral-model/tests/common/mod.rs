//! Helpers shared by the integration tests: host copies, a tiny config and
//! random weights drawn from fixed keys.
#![allow(dead_code)]

use std::collections::HashMap;

use mistral_model::MistralConfig;
use mlx_rs::{random, Array, Dtype};
use serde_json::{json, Value};

/// Host copy of an array as `f32`, row-major.
pub fn host(a: &Array) -> Vec<f32> {
    let a = a.as_dtype(Dtype::Float32).unwrap().contiguous().unwrap();
    a.try_as_slice::<f32>().unwrap().to_vec()
}

/// Host copy of a uint32 array, row-major.
pub fn host_u32(a: &Array) -> Vec<u32> {
    let a = a.contiguous().unwrap();
    a.try_as_slice::<u32>().unwrap().to_vec()
}

/// The config of a tiny model, with `changes` merged in.
pub fn tiny_config(changes: Value) -> MistralConfig {
    let mut v = json!({
        "model_type": "mistral",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 96,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "sliding_window": null,
        "tie_word_embeddings": false
    });
    for (k, val) in changes.as_object().unwrap() {
        v[k] = val.clone();
    }
    let cfg = MistralConfig::from_json_str(&v.to_string()).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// Deterministic normal samples `[shape]` with standard deviation `std`.
pub fn normal(shape: &[i32], std: f32, seed: u64) -> Array {
    let key = random::key(seed).unwrap();
    random::normal::<f32>(shape, 0.0, std, &key).unwrap()
}

/// Dense random weights for every tensor of `cfg` (Hugging Face names).
pub fn random_weights(cfg: &MistralConfig) -> HashMap<String, Array> {
    let mut seed = 1000;
    let mut next = |shape: &[i32], std: f32| {
        seed += 1;
        normal(shape, std, seed)
    };
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (h, kv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads(),
        cfg.head_dim(),
    );
    let mut w = HashMap::new();
    w.insert("model.embed_tokens.weight".to_owned(), next(&[v, d], 1.0));
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let ones = |s: Array| s.add(Array::from_f32(1.0)).unwrap();
        w.insert(format!("{p}.input_layernorm.weight"), ones(next(&[d], 0.1)));
        w.insert(
            format!("{p}.post_attention_layernorm.weight"),
            ones(next(&[d], 0.1)),
        );
        let s = (d as f32).powf(-0.5);
        w.insert(
            format!("{p}.self_attn.q_proj.weight"),
            next(&[h * hd, d], s),
        );
        w.insert(
            format!("{p}.self_attn.k_proj.weight"),
            next(&[kv * hd, d], s),
        );
        w.insert(
            format!("{p}.self_attn.v_proj.weight"),
            next(&[kv * hd, d], s),
        );
        w.insert(
            format!("{p}.self_attn.o_proj.weight"),
            next(&[d, h * hd], (h as f32 * hd as f32).powf(-0.5)),
        );
        w.insert(format!("{p}.mlp.gate_proj.weight"), next(&[f, d], s));
        w.insert(format!("{p}.mlp.up_proj.weight"), next(&[f, d], s));
        w.insert(
            format!("{p}.mlp.down_proj.weight"),
            next(&[d, f], (f as f32).powf(-0.5)),
        );
    }
    w.insert(
        "model.norm.weight".to_owned(),
        next(&[d], 0.1).add(Array::from_f32(1.0)).unwrap(),
    );
    if !cfg.tie_word_embeddings {
        w.insert(
            "lm_head.weight".to_owned(),
            next(&[v, d], (d as f32).powf(-0.5)),
        );
    }
    w
}

/// Asserts `|a - b| <= atol + rtol * |b|` elementwise.
pub fn assert_close(a: &[f32], b: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// The model configurations the whole-model tests run on: GQA, sliding
/// windows (all layers, or mixed layer types), explicit head_dim with a
/// tied head and another RoPE base, linear RoPE scaling.
pub fn configs() -> Vec<(&'static str, MistralConfig)> {
    vec![
        ("gqa", tiny_config(json!({}))),
        ("window 3", tiny_config(json!({"sliding_window": 3}))),
        (
            "layer types",
            tiny_config(json!({"sliding_window": 2,
                "layer_types": ["full_attention", "sliding_attention"]})),
        ),
        (
            "explicit head_dim, tied, theta 1e6",
            tiny_config(json!({"head_dim": 32, "tie_word_embeddings": true,
                "rope_theta": 1e6, "num_key_value_heads": 1})),
        ),
        (
            "linear rope scaling",
            tiny_config(json!({"rope_scaling": {"type": "linear", "factor": 2.0}})),
        ),
    ]
}
