//! Criterion benchmarks of mistral-mlx live in `benches/`; run them with
//! `cargo xtask bench` (or `cargo bench -p mistral-benches`).
//!
//! They use the demo model (`cargo xtask demo-model`), or the model directory
//! named by `MISTRAL_MLX_BENCH_MODEL`.

use std::path::PathBuf;

/// The model directory the benchmarks run: `MISTRAL_MLX_BENCH_MODEL`, else
/// the demo model at `<workspace>/models/smollm2`.
pub fn bench_model_dir() -> PathBuf {
    std::env::var_os("MISTRAL_MLX_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_names_the_model() {
        // Only this test touches the variable in this process.
        std::env::set_var("MISTRAL_MLX_BENCH_MODEL", "/some/model");
        assert_eq!(bench_model_dir(), PathBuf::from("/some/model"));
        std::env::remove_var("MISTRAL_MLX_BENCH_MODEL");
        assert!(bench_model_dir().ends_with("models/smollm2"));
    }
}
