//! `FusedLinear`: which layers stack, and that a stack gives each layer's
//! own outputs bit for bit, for one row (one product over the stack) and
//! for several (the layers on views of it).

mod common;

use common::{host, normal};
use mistral_model::{FusedLinear, Linear, LinearWeight, QuantParams, QuantizedWeight};
use mlx_rs::{ops::quantize, Array, Dtype};

const K: i32 = 64;

fn dense(rows: i32, seed: u64, bias: bool) -> Linear {
    let w = normal(&[rows, K], 0.1, seed)
        .as_dtype(Dtype::Bfloat16)
        .unwrap();
    let b = bias.then(|| {
        normal(&[rows], 0.1, seed + 100)
            .as_dtype(Dtype::Bfloat16)
            .unwrap()
    });
    Linear::from_parts(LinearWeight::Dense(w), b).unwrap()
}

fn quantized(rows: i32, seed: u64) -> Linear {
    let w = normal(&[rows, K], 0.1, seed)
        .as_dtype(Dtype::Bfloat16)
        .unwrap();
    let (weight, scales, biases) = quantize(&w, 32, 4).unwrap();
    let params = QuantParams {
        group_size: 32,
        bits: 4,
    };
    let q = QuantizedWeight {
        weight,
        scales,
        biases,
        params,
        kernel: Default::default(),
        cpu: Default::default(),
    };
    Linear::from_parts(LinearWeight::Quantized(q), None).unwrap()
}

/// Each layer of `parts` on `x`, and the stack's outputs, as host values.
fn outputs(parts: Vec<Linear>, x: &Array) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, bool) {
    let alone: Vec<Vec<f32>> = parts.iter().map(|p| host(&p.forward(x).unwrap())).collect();
    let fused = FusedLinear::new(parts, true).unwrap();
    let stacked = fused.forward(x).unwrap().iter().map(host).collect();
    (alone, stacked, fused.is_stacked())
}

#[test]
fn stacks_give_each_layers_outputs_bit_for_bit() {
    for rows in [1, 3] {
        let x = normal(&[rows, K], 1.0, 7)
            .as_dtype(Dtype::Bfloat16)
            .unwrap();
        for (what, parts) in [
            (
                "dense",
                vec![
                    dense(96, 1, false),
                    dense(32, 2, false),
                    dense(32, 3, false),
                ],
            ),
            (
                "dense with bias",
                vec![dense(64, 4, true), dense(64, 5, true)],
            ),
            (
                "4-bit",
                vec![quantized(96, 6), quantized(32, 7), quantized(32, 8)],
            ),
        ] {
            let (alone, stacked, is_stacked) = outputs(parts, &x);
            assert!(is_stacked, "{what}: not stacked");
            assert_eq!(alone.len(), stacked.len(), "{what}");
            for (i, (a, s)) in alone.iter().zip(&stacked).enumerate() {
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(s), "{what}, {rows} rows: part {i} differs");
            }
        }
    }
}

#[test]
fn unlike_layers_stay_apart() {
    let fuse = |parts: Vec<Linear>| FusedLinear::new(parts, true).unwrap().is_stacked();
    assert!(
        !fuse(vec![dense(32, 1, true), dense(32, 2, false)]),
        "bias on one only"
    );
    assert!(
        !fuse(vec![dense(32, 1, false), quantized(32, 2)]),
        "dense and quantized"
    );
    let f32_layer =
        Linear::from_parts(LinearWeight::Dense(normal(&[32, K], 0.1, 3)), None).unwrap();
    assert!(!fuse(vec![dense(32, 1, false), f32_layer]), "two dtypes");
    assert!(
        !FusedLinear::new(vec![dense(32, 1, false), dense(32, 2, false)], false)
            .unwrap()
            .is_stacked(),
        "not asked"
    );
    // Quantized stacks end at 16384 rows (MLX's CUDA matrix-vector limit).
    assert!(
        fuse(vec![quantized(8192, 4), quantized(8192, 5)]),
        "16384 rows"
    );
    assert!(
        !fuse(vec![quantized(8192, 4), quantized(8224, 5)]),
        "16416 rows"
    );
    // Dense stacks have no such limit.
    assert!(
        fuse(vec![dense(8192, 6, false), dense(8224, 7, false)]),
        "dense 16416 rows"
    );
}
