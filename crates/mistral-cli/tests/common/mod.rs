//! Shared by the CLI test files: running the built binary.

use std::process::{Command, Output};

/// Runs the built `mistral-cli` with `args` (no library path: it finds MLX
/// through its rpath).
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mistral-cli"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run mistral-cli")
}
