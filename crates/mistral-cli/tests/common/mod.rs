//! Shared by the CLI test files: running the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[allow(dead_code)]
pub mod reject;

/// The built `mistral-cli` with `args` (no library path: it finds MLX
/// through its rpath), not started yet.
pub fn cli_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mistral-cli"));
    command.args(args).env_remove("LD_LIBRARY_PATH");
    command
}

/// Runs the built `mistral-cli` with `args` to the end.
#[allow(dead_code)]
pub fn cli(args: &[&str]) -> Output {
    cli_command(args).output().expect("run mistral-cli")
}

/// The generated test models (`cargo xtask test` writes them;
/// `MISTRAL_MLX_TEST_MODELS` points elsewhere).
#[allow(dead_code)]
pub fn test_models_root() -> PathBuf {
    let root = std::env::var_os("MISTRAL_MLX_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/xtask/test-models")
        });
    assert!(
        root.join("manifest.json").is_file(),
        "no test models in {}: run `cargo xtask test`",
        root.display()
    );
    root
}
