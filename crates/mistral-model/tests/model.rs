//! The whole model: against a plain-loop host implementation of mlx-lm's
//! llama.py math, incremental decoding with caches against one-shot
//! forwards, quantized against dequantized weights, and error reporting.

mod common;

use std::collections::HashMap;

use common::{assert_close, configs, host, random_weights, tiny_config};
use mistral_model::{Mistral, MistralConfig, ModelError};
use mlx_rs::{ops::quantize, Array, Dtype};
use mlx_rs_core::{ConcatKeyValueCache, KVCache, KeyValueCache, RopeScaling};
use serde_json::json;

/// Host reference of the model's math, over host copies of the weights.
struct Reference<'a> {
    cfg: &'a MistralConfig,
    w: HashMap<String, Vec<f32>>,
}

impl<'a> Reference<'a> {
    fn new(cfg: &'a MistralConfig, weights: &HashMap<String, Array>) -> Self {
        let w = weights.iter().map(|(k, v)| (k.clone(), host(v))).collect();
        Reference { cfg, w }
    }

    fn get(&self, name: &str) -> &[f32] {
        &self.w[name]
    }

    fn rms_norm(&self, x: &[f32], weight: &str) -> Vec<f32> {
        let d = self.cfg.hidden_size as usize;
        let w = self.get(weight);
        let mut out = vec![0f32; x.len()];
        for (row, o) in x.chunks(d).zip(out.chunks_mut(d)) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let inv = 1.0 / (ms + self.cfg.rms_norm_eps as f32).sqrt();
            for i in 0..d {
                o[i] = row[i] * inv * w[i];
            }
        }
        out
    }

    /// `x [n, k] · Wᵀ`, `W [m, k]`.
    fn linear(&self, x: &[f32], weight: &str, k: usize) -> Vec<f32> {
        let w = self.get(weight);
        let m = w.len() / k;
        let n = x.len() / k;
        let mut out = vec![0f32; n * m];
        for i in 0..n {
            for j in 0..m {
                out[i * m + j] = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
            }
        }
        out
    }

    /// Rotates halves of each head vector (non-traditional RoPE).
    fn rope(&self, v: &mut [f32], pos: usize) {
        let hd = v.len();
        let half = hd / 2;
        let theta = self.cfg.rope_theta();
        let scale = match self.cfg.rope_scaling() {
            RopeScaling::Linear { factor } => 1.0 / factor as f64,
            _ => 1.0,
        };
        let p = pos as f64 * scale;
        for i in 0..half {
            let freq = theta.powf(-(2.0 * i as f64) / hd as f64);
            let (s, c) = ((p * freq).sin() as f32, (p * freq).cos() as f32);
            let (a, b) = (v[i], v[i + half]);
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
        }
    }

    /// Logits `[B, L, vocab]` for `tokens` (`B` rows of `L` ids).
    fn forward(&self, tokens: &[Vec<i32>]) -> Vec<f32> {
        let cfg = self.cfg;
        let (d, f, vocab) = (
            cfg.hidden_size as usize,
            cfg.intermediate_size as usize,
            cfg.vocab_size as usize,
        );
        let (nh, nkv, hd) = (
            cfg.num_attention_heads as usize,
            cfg.num_key_value_heads() as usize,
            cfg.head_dim() as usize,
        );
        let mut logits = Vec::new();
        for row in tokens {
            let l = row.len();
            let emb = self.get("model.embed_tokens.weight");
            let mut h: Vec<f32> = row
                .iter()
                .flat_map(|&t| emb[t as usize * d..][..d].to_vec())
                .collect();
            for layer in 0..cfg.num_hidden_layers as usize {
                let p = format!("model.layers.{layer}");
                let window = cfg.attention_mask(layer).window();
                let x = self.rms_norm(&h, &format!("{p}.input_layernorm.weight"));
                let mut q = self.linear(&x, &format!("{p}.self_attn.q_proj.weight"), d);
                let mut k = self.linear(&x, &format!("{p}.self_attn.k_proj.weight"), d);
                let v = self.linear(&x, &format!("{p}.self_attn.v_proj.weight"), d);
                for t in 0..l {
                    for head in 0..nh {
                        self.rope(&mut q[(t * nh + head) * hd..][..hd], t);
                    }
                    for head in 0..nkv {
                        self.rope(&mut k[(t * nkv + head) * hd..][..hd], t);
                    }
                }
                let scale = (hd as f32).powf(-0.5);
                let mut attn = vec![0f32; l * nh * hd];
                for head in 0..nh {
                    let kvh = head / (nh / nkv);
                    for i in 0..l {
                        let qv = &q[(i * nh + head) * hd..][..hd];
                        let visible: Vec<usize> = (0..=i)
                            .filter(|&j| window.is_none_or(|w| i - j < w as usize))
                            .collect();
                        let scores: Vec<f32> = visible
                            .iter()
                            .map(|&j| {
                                let kv = &k[(j * nkv + kvh) * hd..][..hd];
                                qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale
                            })
                            .collect();
                        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let denom: f32 = scores.iter().map(|s| (s - max).exp()).sum();
                        for (&j, s) in visible.iter().zip(&scores) {
                            let pr = (s - max).exp() / denom;
                            for x in 0..hd {
                                attn[(i * nh + head) * hd + x] += pr * v[(j * nkv + kvh) * hd + x];
                            }
                        }
                    }
                }
                let o = self.linear(&attn, &format!("{p}.self_attn.o_proj.weight"), nh * hd);
                for (a, b) in h.iter_mut().zip(&o) {
                    *a += b;
                }
                let x = self.rms_norm(&h, &format!("{p}.post_attention_layernorm.weight"));
                let g = self.linear(&x, &format!("{p}.mlp.gate_proj.weight"), d);
                let u = self.linear(&x, &format!("{p}.mlp.up_proj.weight"), d);
                let act: Vec<f32> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let m = self.linear(&act, &format!("{p}.mlp.down_proj.weight"), f);
                for (a, b) in h.iter_mut().zip(&m) {
                    *a += b;
                }
            }
            let x = self.rms_norm(&h, "model.norm.weight");
            let head = if cfg.tie_word_embeddings {
                "model.embed_tokens.weight"
            } else {
                "lm_head.weight"
            };
            let out = self.linear(&x, head, d);
            assert_eq!(out.len(), l * vocab);
            logits.extend(out);
        }
        logits
    }
}

fn token_rows() -> Vec<Vec<i32>> {
    vec![vec![5, 17, 3, 90, 42, 42, 7], vec![1, 0, 95, 60, 2, 33, 11]]
}

fn tokens_array(rows: &[Vec<i32>]) -> Array {
    let flat: Vec<i32> = rows.iter().flatten().copied().collect();
    Array::from_slice(&flat, &[rows.len() as i32, rows[0].len() as i32])
}

#[test]
fn one_shot_matches_host_reference() {
    for (name, cfg) in configs() {
        let mut weights = random_weights(&cfg);
        let reference = Reference::new(&cfg, &weights);
        let model = Mistral::new(&cfg, &mut weights, None).unwrap();
        assert!(weights.is_empty(), "{name}: unused {:?}", weights.keys());
        let rows = token_rows();
        let mut cache: Vec<Option<KVCache>> = Vec::new();
        let logits = model.forward(&tokens_array(&rows), &mut cache).unwrap();
        assert_eq!(logits.shape(), &[2, 7, cfg.vocab_size]);
        assert_eq!(cache.len(), cfg.num_hidden_layers as usize);
        assert!(cache
            .iter()
            .all(|c| c.as_ref().map(|c| c.offset()) == Some(7)));
        let expected = reference.forward(&rows);
        assert_close(&host(&logits), &expected, 1e-4, 1e-4, name);
    }
}

/// The layers' 3-D `forward` (kept for callers; the model runs
/// `forward_rows`) gives the same values as the model's rows: each layer
/// applied by hand to the embedding, then the body's 3-D `forward`.
#[test]
fn three_d_forwards_equal_the_rows_path() {
    for (name, cfg) in configs() {
        let mut weights = random_weights(&cfg);
        let model = Mistral::new(&cfg, &mut weights, None).unwrap();
        let body = model.model();
        let tokens = tokens_array(&token_rows());
        let (b, l) = (tokens.dim(0), tokens.dim(1));
        let mut x = body.embed_tokens().forward(&tokens).unwrap();
        let mut rows = x.reshape(&[b * l, -1]).unwrap();
        for layer in body.layers() {
            let mask = layer.attention_mask().create(l, 0).unwrap();
            x = layer.forward::<KVCache>(&x, &mask, None).unwrap();
            rows = layer
                .forward_rows::<KVCache>(&rows, (b, l), &mask, None)
                .unwrap();
            assert_eq!(x.shape(), &[b, l, cfg.hidden_size], "{name}");
            assert_eq!(host(&x), host(&rows), "{name}: a layer's 3-D forward");
        }
        let mut slots: Vec<Option<KVCache>> = vec![None; body.layers().len()];
        let hidden = body.forward(&tokens, &mut slots).unwrap();
        let hidden_rows = body.forward_rows(&tokens, &mut slots).unwrap();
        assert_eq!(hidden.shape(), &[b, l, cfg.hidden_size], "{name}");
        assert_eq!(
            host(&hidden),
            host(&hidden_rows),
            "{name}: the body's 3-D forward"
        );
    }
}

fn incremental<C: KeyValueCache>(model: &Mistral, rows: &[Vec<i32>], chunks: &[usize]) -> Vec<f32> {
    let mut cache: Vec<Option<C>> = model.new_cache();
    let mut per_chunk = Vec::new();
    let mut start = 0;
    for &len in chunks {
        let part: Vec<Vec<i32>> = rows
            .iter()
            .map(|r| r[start..start + len].to_vec())
            .collect();
        let logits = model.forward(&tokens_array(&part), &mut cache).unwrap();
        per_chunk.push(host(&logits));
        start += len;
    }
    // Reassemble [B, L, V] from the chunks' [B, len, V].
    let b = rows.len();
    let v = model.config().vocab_size as usize;
    let mut out = Vec::new();
    for bi in 0..b {
        for (chunk, &len) in per_chunk.iter().zip(chunks) {
            out.extend_from_slice(&chunk[bi * len * v..][..len * v]);
        }
    }
    out
}

#[test]
fn incremental_decoding_matches_one_shot() {
    for (name, cfg) in configs() {
        let mut weights = random_weights(&cfg);
        let model = Mistral::new(&cfg, &mut weights, None).unwrap();
        let rows = token_rows();
        let mut cache: Vec<Option<ConcatKeyValueCache>> = Vec::new();
        let one_shot = host(&model.forward(&tokens_array(&rows), &mut cache).unwrap());
        for chunks in [&[1usize; 7][..], &[3, 1, 1, 2], &[4, 3]] {
            let what = format!("{name}, chunks {chunks:?}");
            let a = incremental::<KVCache>(&model, &rows, chunks);
            assert_close(&a, &one_shot, 1e-4, 1e-4, &format!("{what}, KVCache"));
            let b = incremental::<ConcatKeyValueCache>(&model, &rows, chunks);
            assert_close(&b, &one_shot, 1e-4, 1e-4, &format!("{what}, concat"));
        }
    }
}

/// Replaces every projection weight (and the embedding / head) by its MLX
/// quantization, returning the dense weights with the dequantized values.
fn quantize_weights(
    weights: &HashMap<String, Array>,
    group_size: i32,
    bits: i32,
) -> (HashMap<String, Array>, HashMap<String, Array>) {
    let mut quantized = HashMap::new();
    let mut dequantized = HashMap::new();
    for (name, w) in weights {
        let module = name.strip_suffix(".weight").unwrap_or(name);
        if w.ndim() == 2 {
            let (p, s, b) = quantize(w, group_size, bits).unwrap();
            let deq = mlx_rs::ops::dequantize(&p, &s, &b, group_size, bits).unwrap();
            dequantized.insert(name.clone(), deq);
            quantized.insert(format!("{module}.weight"), p);
            quantized.insert(format!("{module}.scales"), s);
            quantized.insert(format!("{module}.biases"), b);
        } else {
            dequantized.insert(name.clone(), w.clone());
            quantized.insert(name.clone(), w.clone());
        }
    }
    (quantized, dequantized)
}

#[test]
fn quantized_model_matches_dequantized_dense_model() {
    for (bits, group_size) in [(4, 64), (8, 32)] {
        for tied in [false, true] {
            let q = json!({"group_size": group_size, "bits": bits});
            let qcfg = tiny_config(json!({"quantization": q, "quantization_config": q,
                "tie_word_embeddings": tied}));
            let dcfg = tiny_config(json!({"tie_word_embeddings": tied}));
            let (mut qw, mut dw) = quantize_weights(&random_weights(&dcfg), group_size, bits);
            let reference = Reference::new(&dcfg, &dw);
            let qmodel = Mistral::new(&qcfg, &mut qw, None).unwrap();
            assert!(qw.is_empty());
            let dmodel = Mistral::new(&dcfg, &mut dw, None).unwrap();
            let rows = token_rows();
            let mut c1: Vec<Option<KVCache>> = Vec::new();
            let mut c2: Vec<Option<KVCache>> = Vec::new();
            let ql = host(&qmodel.forward(&tokens_array(&rows), &mut c1).unwrap());
            let dl = host(&dmodel.forward(&tokens_array(&rows), &mut c2).unwrap());
            let what = format!("{bits}-bit, group {group_size}, tied {tied}");
            assert_close(&ql, &dl, 1e-4, 1e-4, &what);
            assert_close(&ql, &reference.forward(&rows), 1e-4, 1e-4, &what);
        }
    }
}

#[test]
fn compute_dtype_casts_float_weights() {
    let cfg = tiny_config(json!({}));
    let mut weights = random_weights(&cfg);
    let model = Mistral::new(&cfg, &mut weights, Some(Dtype::Bfloat16)).unwrap();
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let logits = model
        .forward(&tokens_array(&token_rows()), &mut cache)
        .unwrap();
    assert_eq!(logits.dtype(), Dtype::Bfloat16);
}

#[test]
fn construction_errors_name_the_tensor() {
    let cfg = tiny_config(json!({}));
    let mut weights = random_weights(&cfg);
    let name = "model.layers.1.self_attn.k_proj.weight";
    weights.insert(name.to_owned(), common::normal(&[16, 64], 1.0, 5));
    match Mistral::new(&cfg, &mut weights, None) {
        Err(ModelError::Shape {
            tensor,
            expected,
            found,
        }) => {
            assert_eq!(tensor, name);
            assert_eq!(expected, vec![32, 64]);
            assert_eq!(found, vec![16, 64]);
        }
        other => panic!("unexpected {:?}", other.err()),
    }
    let mut weights = random_weights(&cfg);
    weights.remove("lm_head.weight");
    match Mistral::new(&cfg, &mut weights, None) {
        Err(ModelError::Missing { tensor }) => assert_eq!(tensor, "lm_head.weight"),
        other => panic!("unexpected {:?}", other.err()),
    }
    let mut bad = cfg.clone();
    bad.num_key_value_heads = Some(3);
    assert!(matches!(
        Mistral::new(&bad, &mut random_weights(&cfg), None),
        Err(ModelError::Config(_))
    ));
}

#[test]
fn forward_rejects_bad_input() {
    let cfg = tiny_config(json!({}));
    let model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let floats = Array::from_slice(&[1.0f32, 2.0], &[1, 2]);
    assert!(matches!(
        model.forward(&floats, &mut cache),
        Err(ModelError::Input(_))
    ));
    let flat = Array::from_slice(&[1i32, 2], &[2]);
    assert!(matches!(
        model.forward(&flat, &mut cache),
        Err(ModelError::Input(_))
    ));
    let mut short: Vec<Option<KVCache>> = vec![Some(KVCache::new())];
    let ok = Array::from_slice(&[1i32, 2], &[1, 2]);
    assert!(matches!(
        model.forward(&ok, &mut short),
        Err(ModelError::Input(_))
    ));
}

#[test]
fn ids_outside_the_vocabulary_are_errors_naming_them() {
    let cfg = tiny_config(json!({}));
    let model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
    for bad in [cfg.vocab_size, -1, i32::MAX] {
        let tokens = Array::from_slice(&[3, bad, 5], &[1, 3]);
        let mut cache: Vec<Option<KVCache>> = Vec::new();
        match model.forward(&tokens, &mut cache) {
            Err(ModelError::Input(message)) => assert!(
                message.contains(&format!("token id {bad} at position 1")),
                "{message}"
            ),
            other => panic!("id {bad}: expected an input error, got {other:?}"),
        }
    }
}

#[test]
fn unchecked_forward_clamps_bad_ids_into_the_table() {
    // The generator's path skips the host check; MLX's gather does not
    // bounds-check, so the embedding clamps: an id past the end reads the
    // last row (same logits as that id), never memory outside the table.
    let cfg = tiny_config(json!({}));
    let model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
    let last = cfg.vocab_size - 1;
    let run = |id: i32| {
        let mut cache: Vec<Option<KVCache>> = Vec::new();
        let tokens = Array::from_slice(&[id], &[1, 1]);
        host(&model.forward_unchecked(&tokens, &mut cache).unwrap())
    };
    assert_eq!(run(cfg.vocab_size + 1000), run(last));
    assert_eq!(run(-5), run(0));
}

#[test]
fn the_generator_rejects_bad_prompt_ids_and_top_k_before_any_forward() {
    use mlx_rs_core::Generate;
    let cfg = tiny_config(json!({}));
    let mut model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let prompt = Array::from_slice(&[1u32, 2, cfg.vocab_size as u32], &[3]);
    let err = Generate::<KVCache>::new(&mut model, &mut cache, 0.0, &prompt)
        .next()
        .expect("an item")
        .expect_err("an out-of-vocabulary prompt id");
    assert!(
        err.to_string()
            .contains(&format!("token id {} at position 2", cfg.vocab_size)),
        "{err}"
    );
    assert!(cache.is_empty(), "nothing was prefilled");

    let prompt = Array::from_slice(&[1u32, 2], &[2]);
    let err = Generate::<KVCache>::new(&mut model, &mut cache, 0.7, &prompt)
        .top_k(cfg.vocab_size)
        .next()
        .expect("an item")
        .expect_err("top_k = vocab");
    assert!(err.to_string().contains("top_k"), "{err}");
    assert!(cache.is_empty(), "nothing was prefilled");
}

#[test]
fn configs_whose_shapes_overflow_i32_are_rejected() {
    for (field, overrides) in [
        (
            "head_dim",
            json!({"num_attention_heads": 65536, "num_key_value_heads": 1, "head_dim": 65536}),
        ),
        ("intermediate_size", json!({"intermediate_size": 1 << 27})),
        (
            "hidden_size",
            json!({"hidden_size": 1 << 27, "head_dim": 16}),
        ),
    ] {
        let mut json = json!({"model_type": "mistral", "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 96, "rms_norm_eps": 1e-5});
        for (k, v) in overrides.as_object().unwrap() {
            json[k] = v.clone();
        }
        let cfg = MistralConfig::from_json_str(&json.to_string()).unwrap();
        match cfg.validate() {
            Err(e) => assert!(e.to_string().contains(field), "{overrides}: {e}"),
            Ok(()) => panic!("{overrides}: accepted"),
        }
    }
}
