//! The built `mistral-cli` binary runs MLX (found through its rpath, no
//! library path needed) and rejects bad arguments with one line.

use std::process::Command;

fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mistral-cli"));
    command
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("DYLD_LIBRARY_PATH");
    command
}

#[test]
fn info_runs_mlx_and_reports_its_version() {
    let output = cli().arg("info").output().expect("run mistral-cli");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let version = stdout.lines().find_map(|line| line.strip_prefix("mlx: "));
    assert_eq!(version, Some(mlx_sys::MLX_HEADER_VERSION));
    assert!(stdout.contains("check: 64x64 matmul matches"), "{stdout}");
}

#[test]
fn unknown_subcommand_is_an_error() {
    let output = cli().arg("frobnicate").output().expect("run mistral-cli");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error:"), "{stderr}");
}
