//! `cargo xtask`: the project's tasks, in Rust so they run wherever Cargo does.
//!
//! - `test`: everything the README's test command promises: the Python
//!   reference environment (mlx-lm, sentencepiece, ...), the generated test
//!   models, then `cargo test --workspace` against them.
//! - `python-env`, `test-models`: those steps alone.
//! - `download`: a model from the Hugging Face hub into its cache (or a
//!   folder), see `download/mod.rs`.

mod download;
mod hf_cache;
mod paths;
mod python;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
    /// Download a model (config, tokenizer, safetensors) from the Hugging
    /// Face hub into its cache (`HF_HUB_CACHE`, `HF_HOME`) and print its
    /// folder. Honours `HF_ENDPOINT` and `HF_TOKEN`.
    Download {
        /// The repository, e.g. `mistralai/Mistral-7B-Instruct-v0.3`.
        repo_id: String,
        /// Branch, tag or commit.
        #[arg(long, default_value = hf_cache::DEFAULT_REVISION)]
        revision: String,
        /// Write plain files into this folder instead of the hub cache.
        #[arg(long)]
        local_dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Test { cargo_args } => test(&cargo_args),
        Task::PythonEnv => python::ensure_env().map(drop),
        Task::TestModels => python::ensure_test_models().map(drop),
        Task::Download {
            repo_id,
            revision,
            local_dir,
        } => {
            let req = download::Request::from_env(&repo_id, Some(&revision), local_dir);
            match download::download(&req) {
                Ok(dir) => {
                    println!("{}", dir.display());
                    Ok(())
                }
                // One line, whole cause chain, no backtrace even when
                // RUST_BACKTRACE is set: these are user-facing errors.
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    std::process::exit(1)
                }
            }
        }
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
