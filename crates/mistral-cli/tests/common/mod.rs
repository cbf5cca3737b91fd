//! Shared by the CLI test files: running the built binary.

use std::process::{Command, Output};

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
