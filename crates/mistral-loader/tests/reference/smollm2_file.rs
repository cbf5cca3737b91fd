//! Where the real SmolLM2-135M-Instruct GGUF file is. Shared by the tests of
//! mistral-loader, mistral-cli and mistral-server (`#[path]`).

use std::path::{Path, PathBuf};

/// The real SmolLM2-135M-Instruct GGUF file (`MISTRAL_MLX_SMOLLM2`, set by
/// `cargo xtask test`, else where xtask puts it).
pub fn smollm2_path() -> PathBuf {
    let path = std::env::var_os("MISTRAL_MLX_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/xtask/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        path.is_file(),
        "no SmolLM2 GGUF file at {}: run `cargo xtask test`",
        path.display()
    );
    path
}
