//! Unit tests. Each result is compared with an independent computation
//! written here (plain loops over host data).

mod batch_cache;
mod cache;
mod mask;
mod quantized;
mod rope;
mod rotating;
mod sample;
mod speculative;

use mlx_rs::{ops::concatenate, Array, Dtype};

/// Host copy of an array as `f32`, row-major.
fn host(a: &Array) -> Vec<f32> {
    let a = a.as_dtype(Dtype::Float32).unwrap().contiguous().unwrap();
    a.try_as_slice::<f32>().unwrap().to_vec()
}

/// Host copy of a boolean array, row-major.
fn host_bool(a: &Array) -> Vec<bool> {
    let a = a.contiguous().unwrap();
    a.try_as_slice::<bool>().unwrap().to_vec()
}

/// `history` (keys, values) with `k` and `v` appended on the sequence axis.
fn append_history(history: Option<(Array, Array)>, k: Array, v: Array) -> (Array, Array) {
    match history {
        Some((hk, hv)) => (
            concatenate(&[hk, k], 2).unwrap(),
            concatenate(&[hv, v], 2).unwrap(),
        ),
        None => (k, v),
    }
}

/// The largest difference between `got`'s host values and `expected`
/// (asserting they have as many elements).
fn max_abs_diff(got: &Array, expected: &[f32], what: &str) -> f32 {
    let got = host(got);
    assert_eq!(got.len(), expected.len(), "{what}: element count");
    got.iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}
