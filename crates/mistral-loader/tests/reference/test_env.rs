//! Where `cargo xtask test` puts what the tests read: the real SmolLM2 GGUF
//! file, the generated test models and the reference Python interpreter.
//! Each can be named by its environment variable instead. Shared by the
//! tests of mistral-loader, mistral-cli and mistral-server (`#[path]`),
//! with the one way they run a reference script ([`python_module`]).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `variable`, else `target/xtask/<default>` in this workspace.
fn from_env(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/xtask")
                .join(default)
        })
}

/// The real SmolLM2-135M-Instruct GGUF file (`MISTRAL_MLX_SMOLLM2`).
pub fn smollm2_path() -> PathBuf {
    let path = from_env(
        "MISTRAL_MLX_SMOLLM2",
        "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    );
    assert!(
        path.is_file(),
        "no SmolLM2 GGUF file at {}: run `cargo xtask test`",
        path.display()
    );
    path
}

/// The generated test models (`MISTRAL_MLX_TEST_MODELS`).
pub fn models_dir() -> PathBuf {
    let dir = from_env("MISTRAL_MLX_TEST_MODELS", "test-models");
    assert!(
        dir.join("manifest.json").is_file(),
        "no test models in {}: run `cargo xtask test` (or `cargo xtask test-models`)",
        dir.display()
    );
    dir
}

/// The reference Python interpreter (`MISTRAL_MLX_PYTHON`): the venv that
/// `cargo xtask test` makes, with mlx-lm, transformers, sentencepiece,
/// mistral-common and openai.
pub fn python() -> PathBuf {
    let python = from_env("MISTRAL_MLX_PYTHON", "venv/bin/python");
    assert!(
        python.is_file(),
        "no reference Python at {}: run `cargo xtask test` or set MISTRAL_MLX_PYTHON",
        python.display()
    );
    python
}

/// The Python scripts' folder, `xtask/python` (a package root: `refs/`,
/// `checks/`, ...), or `MISTRAL_MLX_SCRIPTS` where the test binary runs away
/// from its source tree (the GPU machine, see `xtask/gpu/run.sh`).
pub fn scripts_dir() -> PathBuf {
    std::env::var_os("MISTRAL_MLX_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/python"))
}

/// The reference interpreter running the script `module` of the scripts'
/// folder (e.g. `refs.reference`): `python -m module` with that folder
/// first on `PYTHONPATH`; the working directory is the test's own, so
/// relative paths in the arguments keep their meaning.
pub fn python_module(module: &str) -> Command {
    let mut paths = vec![scripts_dir()];
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&old));
    }
    let mut command = Command::new(python());
    command
        .env(
            "PYTHONPATH",
            std::env::join_paths(paths).expect("PYTHONPATH from the scripts' folder"),
        )
        .args(["-m", module]);
    command
}
