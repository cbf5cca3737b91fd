//! `mistral-cli info`: which MLX this binary runs on, and a real computation on it.

use anyhow::{ensure, Context, Result};
use mlx_rs::Array;

/// Prints the MLX version and device, then multiplies two matrices on MLX
/// and checks the product against the same sums done in Rust.
pub fn run() -> Result<()> {
    let version = mlx_rs_core::runtime::mlx_version().unwrap_or_else(|| "unknown".to_owned());
    println!("mlx: {version}");
    println!("device: {}", mlx_rs_core::runtime::default_device());
    println!("blas: {}", mlx_sys::BLAS);
    // Where the libraries were loaded from (Linux): which install runs.
    for needle in ["libmlx", "blas", "lapack", "gfortran"] {
        for path in mlx_rs_core::runtime::loaded_libraries(needle) {
            println!("loaded: {}", path.display());
        }
    }

    let n = 64usize;
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 7) as f32) - 3.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 5) as f32) * 0.5).collect();
    let shape = [n as i32, n as i32];
    let product = Array::from_slice(&a, &shape)
        .matmul(Array::from_slice(&b, &shape))
        .context("matmul on MLX")?;
    product.eval().context("evaluating the product")?;
    let got = product.as_slice::<f32>();
    let mut worst = 0.0f64;
    for i in 0..n {
        for j in 0..n {
            let want: f64 = (0..n)
                .map(|k| f64::from(a[i * n + k]) * f64::from(b[k * n + j]))
                .sum();
            worst = worst.max((f64::from(got[i * n + j]) - want).abs());
        }
    }
    ensure!(worst < 1e-3, "MLX's matmul is off by {worst}");
    println!("check: {n}x{n} matmul matches Rust's sums (max error {worst:e})");
    Ok(())
}
