//! `cargo xtask`: the project's tasks, in Rust so they run wherever Cargo does.
//!
//! - `test`: everything the README's test command promises: the Python
//!   reference environment (mlx-lm, sentencepiece, ...), the generated test
//!   models, then `cargo test --workspace` against them.
//! - `python-env`, `test-models`: those steps alone.
//! - `demo-model`: the small model the README's main command generates with.

mod paths;
mod python;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "mistral-mlx project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Set up the Python references and test models, then run every test.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Create (or update) the private Python environment with the references.
    PythonEnv,
    /// Generate the small random-weight test models with the references.
    TestModels,
    /// Write the demo model: Mistral v0.3 architecture and real tokenizer,
    /// random weights (its output text is meaningless).
    DemoModel {
        /// Where to write it.
        #[arg(long, default_value = "models/mistral-demo")]
        out: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Test { cargo_args } => test(&cargo_args),
        Task::PythonEnv => python::ensure_env().map(drop),
        Task::TestModels => python::ensure_test_models().map(drop),
        Task::DemoModel { out } => python::make_demo_model(&out),
    }
}

fn test(cargo_args: &[String]) -> Result<()> {
    let python = python::ensure_env()?;
    let models = python::ensure_test_models()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(paths::workspace_root())
        .args(["test", "--workspace"])
        .args(cargo_args)
        .env(python::PYTHON_ENV_VAR, &python)
        .env(python::MODELS_ENV_VAR, &models)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}
