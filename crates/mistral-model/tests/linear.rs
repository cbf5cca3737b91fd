//! Linear and embedding layers against host-side computations: quantized
//! weights are unpacked and dequantized with plain loops.

mod common;

use std::collections::HashMap;

use common::{assert_close, host, host_u32, normal, tiny_config};
use mistral_model::{Embedding, Linear, ModelError, Weights};
use mlx_rs::{ops::quantize, Array, Dtype};
use serde_json::json;

/// Unpacks and dequantizes an MLX affine-quantized `[rows, cols]` matrix
/// (elements packed from the low bits up, `32 / bits` per word for the
/// power-of-two widths tested here).
fn host_dequantize(
    packed: &Array,
    scales: &Array,
    biases: &Array,
    rows: usize,
    cols: usize,
    group_size: usize,
    bits: usize,
) -> Vec<f32> {
    let (packed, scales, biases) = (host_u32(packed), host(scales), host(biases));
    let per_word = 32 / bits;
    let words_per_row = cols / per_word;
    let groups = cols / group_size;
    let mask = (1u32 << bits) - 1;
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let word = packed[r * words_per_row + c / per_word];
            let q = (word >> (bits * (c % per_word))) & mask;
            let g = r * groups + c / group_size;
            out[r * cols + c] = scales[g] * q as f32 + biases[g];
        }
    }
    out
}

/// `x [n, k] · wᵀ` with `w [m, k]`, plus an optional bias `[m]`.
fn host_matmul_t(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    k: usize,
    m: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            let mut acc = bias.map_or(0.0, |b| b[j]);
            for t in 0..k {
                acc += x[i * k + t] * w[j * k + t];
            }
            out[i * m + j] = acc;
        }
    }
    out
}

fn quantized_tensors(
    prefix: &str,
    w: &Array,
    group_size: i32,
    bits: i32,
) -> HashMap<String, Array> {
    let (packed, scales, biases) = quantize(w, group_size, bits).unwrap();
    HashMap::from([
        (format!("{prefix}.weight"), packed),
        (format!("{prefix}.scales"), scales),
        (format!("{prefix}.biases"), biases),
    ])
}

#[test]
fn dense_linear_with_bias() {
    let cfg = tiny_config(json!({}));
    let (n, k, m) = (5, 64, 24);
    let w = normal(&[m, k], 0.2, 1);
    let b = normal(&[m], 0.5, 2);
    let x = normal(&[n, k], 1.0, 3);
    let mut map = HashMap::from([
        ("lm_head.weight".to_owned(), w.clone()),
        ("lm_head.bias".to_owned(), b.clone()),
    ]);
    let mut root = Weights::new(&mut map, None);
    let lin = Linear::new(&cfg, &mut root.pp("lm_head"), k, m, true).unwrap();
    assert!(map.is_empty());
    let got = host(&lin.forward(&x).unwrap());
    let expected = host_matmul_t(
        &host(&x),
        &host(&w),
        Some(&host(&b)),
        n as usize,
        k as usize,
        m as usize,
    );
    assert_close(&got, &expected, 1e-5, 1e-5, "dense linear");
}

#[test]
fn quantized_linear_matches_host_dequantize() {
    let (n, k, m) = (3, 256, 16);
    let x = normal(&[1, n, k], 1.0, 11);
    for bits in [4, 8] {
        for group_size in [32, 64, 128] {
            let cfg =
                tiny_config(json!({"quantization": {"group_size": group_size, "bits": bits}}));
            let w = normal(&[m, k], 0.1, 12);
            let mut map = quantized_tensors("lm_head", &w, group_size, bits);
            let reference = host_dequantize(
                &map["lm_head.weight"],
                &map["lm_head.scales"],
                &map["lm_head.biases"],
                m as usize,
                k as usize,
                group_size as usize,
                bits as usize,
            );
            let mut root = Weights::new(&mut map, None);
            let lin = Linear::new(&cfg, &mut root.pp("lm_head"), k, m, false).unwrap();
            assert!(map.is_empty());
            let out = lin.forward(&x).unwrap();
            assert_eq!(out.shape(), &[1, n, m]);
            let expected = host_matmul_t(
                &host(&x),
                &reference,
                None,
                n as usize,
                k as usize,
                m as usize,
            );
            let what = format!("{bits}-bit, group {group_size}");
            assert_close(&host(&out), &expected, 1e-4, 1e-4, &what);
            // The dequantized matrix is close to the original one.
            assert_close(&reference, &host(&w), 0.1 * 2f32.powi(4 - bits), 0.0, &what);
        }
    }
}

#[test]
fn quantized_embedding_and_tied_head() {
    let (vocab, dim, group_size, bits) = (40, 64, 32, 4);
    let cfg = tiny_config(json!({"quantization": {"group_size": group_size, "bits": bits}}));
    let table = normal(&[vocab, dim], 1.0, 21);
    let mut map = quantized_tensors("model.embed_tokens", &table, group_size, bits);
    let reference = host_dequantize(
        &map["model.embed_tokens.weight"],
        &map["model.embed_tokens.scales"],
        &map["model.embed_tokens.biases"],
        vocab as usize,
        dim as usize,
        group_size as usize,
        bits as usize,
    );
    let mut root = Weights::new(&mut map, None);
    let emb = Embedding::new(&cfg, &mut root.pp("model").pp("embed_tokens"), vocab, dim).unwrap();
    let ids = [3i32, 0, 39, 17, 3];
    let rows = emb.forward(&Array::from_slice(&ids, &[1, 5])).unwrap();
    assert_eq!(rows.shape(), &[1, 5, dim]);
    let expected: Vec<f32> = ids
        .iter()
        .flat_map(|&i| reference[i as usize * dim as usize..][..dim as usize].to_vec())
        .collect();
    assert_close(&host(&rows), &expected, 1e-6, 1e-6, "embedding rows");

    let x = normal(&[2, dim], 1.0, 22);
    let logits = emb.as_linear(&x).unwrap();
    let expected = host_matmul_t(&host(&x), &reference, None, 2, dim as usize, vocab as usize);
    assert_close(&host(&logits), &expected, 1e-4, 1e-4, "tied head");
}

#[test]
fn dense_embedding_and_tied_head() {
    let cfg = tiny_config(json!({}));
    let (vocab, dim) = (30, 64);
    let table = normal(&[vocab, dim], 1.0, 31);
    let mut map = HashMap::from([("model.embed_tokens.weight".to_owned(), table.clone())]);
    let mut root = Weights::new(&mut map, Some(Dtype::Float32));
    let emb = Embedding::new(&cfg, &mut root.pp("model.embed_tokens"), vocab, dim).unwrap();
    let t = host(&table);
    let rows = emb.forward(&Array::from_slice(&[29i32, 1], &[2])).unwrap();
    let expected: Vec<f32> = [29usize, 1]
        .iter()
        .flat_map(|&i| t[i * dim as usize..][..dim as usize].to_vec())
        .collect();
    assert_eq!(host(&rows), expected);
    let x = normal(&[3, dim], 1.0, 32);
    let expected = host_matmul_t(&host(&x), &t, None, 3, dim as usize, vocab as usize);
    assert_close(
        &host(&emb.as_linear(&x).unwrap()),
        &expected,
        1e-4,
        1e-4,
        "dense tied head",
    );
}

fn linear_error(cfg_changes: serde_json::Value, map: &mut HashMap<String, Array>) -> ModelError {
    let cfg = tiny_config(cfg_changes);
    let mut root = Weights::new(map, None);
    Linear::new(
        &cfg,
        &mut root.pp("model.layers.0.self_attn.q_proj"),
        64,
        64,
        false,
    )
    .unwrap_err()
}

const Q: &str = "model.layers.0.self_attn.q_proj";

#[test]
fn errors_name_the_tensor() {
    // Wrong shape.
    let mut map = HashMap::from([(format!("{Q}.weight"), normal(&[64, 32], 1.0, 1))]);
    match linear_error(json!({}), &mut map) {
        ModelError::Shape {
            tensor,
            expected,
            found,
        } => {
            assert_eq!(tensor, format!("{Q}.weight"));
            assert_eq!(expected, vec![64, 64]);
            assert_eq!(found, vec![64, 32]);
        }
        e => panic!("unexpected {e:?}"),
    }
    // Missing.
    match linear_error(json!({}), &mut HashMap::new()) {
        ModelError::Missing { tensor } => assert_eq!(tensor, format!("{Q}.weight")),
        e => panic!("unexpected {e:?}"),
    }
    // Integer dense weight.
    let mut map = HashMap::from([(
        format!("{Q}.weight"),
        Array::from_slice(&[0i32; 4096], &[64, 64]),
    )]);
    match linear_error(json!({}), &mut map) {
        ModelError::Dtype { tensor, .. } => assert_eq!(tensor, format!("{Q}.weight")),
        e => panic!("unexpected {e:?}"),
    }
    // Quantized tensors while the config says dense.
    let w = normal(&[64, 64], 0.1, 2);
    let mut map = quantized_tensors(Q, &w, 64, 4);
    match linear_error(json!({}), &mut map) {
        ModelError::Quantization { tensor, .. } => assert_eq!(tensor, format!("{Q}.scales")),
        e => panic!("unexpected {e:?}"),
    }
    // Packed tensors without scales while the config says quantized.
    let mut map = quantized_tensors(Q, &w, 64, 4);
    map.remove(&format!("{Q}.scales"));
    match linear_error(
        json!({"quantization": {"group_size": 64, "bits": 4}}),
        &mut map,
    ) {
        ModelError::Quantization { tensor, .. } => assert_eq!(tensor, format!("{Q}.scales")),
        e => panic!("unexpected {e:?}"),
    }
    // A float matrix without scales while the config's default quantizes:
    // dense, as mlx-lm loads it (`mlx_lm.convert` leaves matrices whose
    // input size does not divide into groups as they were, with no entry).
    let mut map = HashMap::from([(format!("{Q}.weight"), w.clone())]);
    let cfg = tiny_config(json!({"quantization": {"group_size": 64, "bits": 4}}));
    let mut root = Weights::new(&mut map, None);
    let dense = Linear::new(&cfg, &mut root.pp(Q), 64, 64, false).unwrap();
    let x = normal(&[2, 64], 1.0, 3);
    assert_eq!(
        host(&dense.forward(&x).unwrap()),
        host(&x.matmul(w.t()).unwrap()),
        "a float matrix the default would quantize is used as it is"
    );
    // Per-module override: this module is dense although the default is 4-bit.
    let mut map = HashMap::from([(format!("{Q}.weight"), w.clone())]);
    let cfg = tiny_config(json!({"quantization": {"group_size": 64, "bits": 4, Q: false}}));
    let mut root = Weights::new(&mut map, None);
    Linear::new(&cfg, &mut root.pp(Q), 64, 64, false).unwrap();
    // Quantized with other bits than the config says: packed shape mismatch.
    let mut map = quantized_tensors(Q, &w, 64, 8);
    match linear_error(
        json!({"quantization": {"group_size": 64, "bits": 4}}),
        &mut map,
    ) {
        ModelError::Shape {
            tensor, expected, ..
        } => {
            assert_eq!(tensor, format!("{Q}.weight"));
            assert_eq!(expected, vec![64, 64 * 4 / 32]);
        }
        e => panic!("unexpected {e:?}"),
    }
    // Quantized with another group size: scales shape mismatch.
    let mut map = quantized_tensors(Q, &w, 32, 4);
    match linear_error(
        json!({"quantization": {"group_size": 64, "bits": 4}}),
        &mut map,
    ) {
        ModelError::Shape { tensor, .. } => assert_eq!(tensor, format!("{Q}.scales")),
        e => panic!("unexpected {e:?}"),
    }
}
