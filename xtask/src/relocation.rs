//! Relocation checks, run by `cargo xtask test` (and alone by
//! `cargo xtask relocation-check`):
//!
//! 1. The `cargo xtask dist` archive, unpacked into a fresh folder, runs
//!    with an empty environment (`env -i`): `mistral-cli info` (a matmul
//!    checked against Rust's sums) loads `libmlx` and its BLAS from the
//!    bundle and nowhere else, and `generate` runs on a test model.
//! 2. `cargo install --path crates/mistral-cli` into a temporary root, with
//!    a temporary target folder that is then deleted: the installed binary
//!    does the same.
//!
//! Both builds use the same temporary target folder (the install reuses
//! what the bundle's build compiled), which is deleted before the installed
//! binary runs: one release build instead of two, on CI machines whose disk
//! is small.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{dist, paths};

/// Runs both checks.
pub fn check(models: &Path) -> Result<()> {
    let scratch = paths::xtask_dir().join("relocation");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    let target = scratch.join("build");
    check_bundle(&scratch, &target, models)?;
    check_install(&scratch, &target, models)?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn check_bundle(scratch: &Path, target: &Path, models: &Path) -> Result<()> {
    let bundle = dist::run(&dist::DistArgs {
        cuda: false,
        out: Some(scratch.join("dist")),
        no_archive: false,
        target_dir: Some(target.to_owned()),
    })?;
    let archive = bundle.archive.context("the bundle's archive")?;
    let fresh = scratch.join("fresh");
    std::fs::create_dir_all(&fresh)?;
    let file = std::fs::File::open(&archive)?;
    tar::Archive::new(zstd::Decoder::new(file)?)
        .unpack(&fresh)
        .with_context(|| format!("unpacking {}", archive.display()))?;
    let name = bundle.dir.file_name().context("bundle name")?;
    let root = fresh.join(name);
    // The build folder's copy must not be what runs.
    std::fs::remove_dir_all(&bundle.dir)?;
    for binary in ["mistral-cli", "generate_mistral", "benchmark_mistral"] {
        ensure!(
            root.join("bin").join(binary).is_file(),
            "the bundle has no bin/{binary}"
        );
    }
    let cli = root.join("bin/mistral-cli");
    let info = run_bare(&cli, &["info"], &fresh)?;
    for line in info.lines().filter(|l| l.starts_with("loaded: ")) {
        let path = Path::new(line.trim_start_matches("loaded: "));
        ensure!(
            path.starts_with(&root),
            "the bundle loaded {} from outside itself:\n{info}",
            path.display()
        );
    }
    ensure!(info.contains("libmlx.so"), "no libmlx in:\n{info}");
    generate_bare(&cli, models, &fresh)?;
    println!(
        "relocation: the bundle runs from {} with env -i",
        root.display()
    );
    Ok(())
}

fn check_install(scratch: &Path, target: &Path, models: &Path) -> Result<()> {
    let install_root = scratch.join("install");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(paths::workspace_root())
        .args([
            "install",
            "--locked",
            "--path",
            "crates/mistral-cli",
            "--root",
        ])
        .arg(&install_root)
        .arg("--target-dir")
        .arg(target)
        .status()
        .context("running cargo install")?;
    ensure!(status.success(), "cargo install failed ({status})");
    std::fs::remove_dir_all(target).with_context(|| format!("removing {}", target.display()))?;
    let cli = install_root.join("bin/mistral-cli");
    let fresh = scratch.join("fresh-install");
    std::fs::create_dir_all(&fresh)?;
    let info = run_bare(&cli, &["info"], &fresh)?;
    ensure!(info.contains("libmlx.so"), "no libmlx in:\n{info}");
    generate_bare(&cli, models, &fresh)?;
    println!(
        "relocation: the installed mistral-cli runs with its target folder deleted ({})",
        cli.display()
    );
    Ok(())
}

/// Runs `binary args` in `dir` with an empty environment; its stdout.
fn run_bare(binary: &Path, args: &[&str], dir: &Path) -> Result<String> {
    let output = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "`env -i {} {}` failed ({}):\n{stdout}{}",
            binary.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// A short greedy generation on the small GQA test model.
fn generate_bare(cli: &Path, models: &Path, dir: &Path) -> Result<()> {
    let model: PathBuf = models.join("gqa4_f32");
    let model = model.to_string_lossy();
    let out = run_bare(
        cli,
        &[
            "generate",
            "--model",
            &model,
            "--prompt",
            "Hello",
            "--no-chat",
            "--temp",
            "0",
            "--max-tokens",
            "4",
        ],
        dir,
    )?;
    ensure!(!out.trim().is_empty(), "generate printed nothing");
    Ok(())
}
