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

use mlx_rs::{Array, Dtype};

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
