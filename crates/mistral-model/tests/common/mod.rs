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
        if let Some(latent) = &cfg.latent {
            latent_weights(&mut w, &mut next, cfg, latent, i);
            continue;
        }
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
        match cfg.experts() {
            // Mistral's per-expert layout: w1 gate, w2 down, w3 up.
            Some((experts, _)) => {
                let moe = format!("{p}.block_sparse_moe");
                w.insert(format!("{moe}.gate.weight"), next(&[experts, d], 1.0));
                for e in 0..experts {
                    let x = format!("{moe}.experts.{e}");
                    w.insert(format!("{x}.w1.weight"), next(&[f, d], s));
                    w.insert(format!("{x}.w3.weight"), next(&[f, d], s));
                    w.insert(
                        format!("{x}.w2.weight"),
                        next(&[d, f], (f as f32).powf(-0.5)),
                    );
                }
            }
            None => {
                w.insert(format!("{p}.mlp.gate_proj.weight"), next(&[f, d], s));
                w.insert(format!("{p}.mlp.up_proj.weight"), next(&[f, d], s));
                w.insert(
                    format!("{p}.mlp.down_proj.weight"),
                    next(&[d, f], (f as f32).powf(-0.5)),
                );
            }
        }
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

/// A Mistral 4 layer's tensors in the Hugging Face layout (`kv_b_proj`,
/// per-expert modules, shared experts; layer 0 dense).
fn latent_weights(
    w: &mut HashMap<String, Array>,
    next: &mut impl FnMut(&[i32], f32) -> Array,
    cfg: &MistralConfig,
    latent: &mistral_model::LatentConfig,
    i: i32,
) {
    let p = format!("model.layers.{i}");
    let (d, h) = (cfg.hidden_size, cfg.num_attention_heads);
    let ones = |s: Array| s.add(Array::from_f32(1.0)).unwrap();
    let s = (d as f32).powf(-0.5);
    let (rank, rope, nope, v) = (
        latent.kv_lora_rank,
        latent.qk_rope_head_dim,
        latent.qk_nope_head_dim,
        latent.v_head_dim,
    );
    w.insert(format!("{p}.input_layernorm.weight"), ones(next(&[d], 0.1)));
    w.insert(
        format!("{p}.post_attention_layernorm.weight"),
        ones(next(&[d], 0.1)),
    );
    let a = format!("{p}.self_attn");
    match latent.q_lora_rank {
        Some(q) => {
            w.insert(format!("{a}.q_a_proj.weight"), next(&[q, d], s));
            w.insert(format!("{a}.q_a_layernorm.weight"), ones(next(&[q], 0.1)));
            let qs = (q as f32).powf(-0.5);
            w.insert(
                format!("{a}.q_b_proj.weight"),
                next(&[h * (nope + rope), q], qs),
            );
        }
        None => {
            w.insert(
                format!("{a}.q_proj.weight"),
                next(&[h * (nope + rope), d], s),
            );
        }
    }
    w.insert(
        format!("{a}.kv_a_proj_with_mqa.weight"),
        next(&[rank + rope, d], s),
    );
    w.insert(
        format!("{a}.kv_a_layernorm.weight"),
        ones(next(&[rank], 0.1)),
    );
    let rs = (rank as f32).powf(-0.5);
    w.insert(
        format!("{a}.kv_b_proj.weight"),
        next(&[h * (nope + v), rank], rs),
    );
    w.insert(
        format!("{a}.o_proj.weight"),
        next(&[d, h * v], (h as f32 * v as f32).powf(-0.5)),
    );
    let mut swiglu = |prefix: String, f: i32| {
        w.insert(format!("{prefix}.gate_proj.weight"), next(&[f, d], s));
        w.insert(format!("{prefix}.up_proj.weight"), next(&[f, d], s));
        w.insert(
            format!("{prefix}.down_proj.weight"),
            next(&[d, f], (f as f32).powf(-0.5)),
        );
    };
    match latent
        .n_routed_experts
        .filter(|_| latent.has_experts(i as usize))
    {
        None => swiglu(format!("{p}.mlp"), cfg.intermediate_size),
        Some(experts) => {
            let f = latent.moe_intermediate_size;
            for e in 0..experts {
                swiglu(format!("{p}.mlp.experts.{e}"), f);
            }
            if let Some(shared) = latent.n_shared_experts {
                swiglu(format!("{p}.mlp.shared_experts"), f * shared);
            }
            w.insert(format!("{p}.mlp.gate.weight"), next(&[experts, d], 1.0));
        }
    }
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

/// Tiny models of the newer families: Mixtral (4 experts, top 2), Mistral 4
/// (latent attention, grouped routing, a shared expert, layer 0 dense) and
/// Ministral 3 (YaRN, Llama 4 query scaling from position 4, a window of 3
/// on one layer of two).
pub fn family_configs() -> Vec<(&'static str, MistralConfig)> {
    vec![
        (
            "mixtral",
            tiny_config(json!({"model_type": "mixtral", "num_local_experts": 4,
                "num_experts_per_tok": 2})),
        ),
        (
            "mistral4",
            tiny_config(json!({"model_type": "mistral4", "rope_theta": null,
                "num_key_value_heads": 4, "q_lora_rank": 24, "kv_lora_rank": 32,
                "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16,
                "moe_intermediate_size": 32, "n_routed_experts": 4, "num_experts_per_tok": 2,
                "n_shared_experts": 1, "routed_scaling_factor": 2.0, "norm_topk_prob": true,
                "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1,
                "max_position_embeddings": 4096,
                "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0,
                    "original_max_position_embeddings": 4, "mscale_all_dim": 1.0,
                    "llama_4_scaling_beta": 0.1}})),
        ),
        (
            "ministral3",
            tiny_config(json!({"model_type": "ministral3", "rope_theta": null,
                "sliding_window": 3, "layer_types": ["sliding_attention", "full_attention"],
                "max_position_embeddings": 4096,
                "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                    "original_max_position_embeddings": 4, "mscale": 2.0, "mscale_all_dim": 1.0,
                    "llama_4_scaling_beta": 0.1}})),
        ),
    ]
}

/// [`configs`] and [`family_configs`].
pub fn all_configs() -> Vec<(&'static str, MistralConfig)> {
    configs().into_iter().chain(family_configs()).collect()
}
