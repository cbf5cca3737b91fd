//! The Python side of the tests: a private venv holding the independent
//! references (mlx-lm, sentencepiece, ...), and the test models it generates.
//!
//! Both are rebuilt only when their inputs change (a stamp file records a
//! hash of the requirements or of the generator scripts).

use crate::paths::{workspace_root, xtask_dir};
use anyhow::{bail, Context, Result};
use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;

/// Tests read the reference interpreter from this variable.
pub const PYTHON_ENV_VAR: &str = "MISTRAL_MLX_PYTHON";
/// Tests read the test-model directory from this variable (the GGUF files
/// are in its `gguf/`, the real SmolLM2 file's path in `SMOLLM2_ENV_VAR`).
pub const MODELS_ENV_VAR: &str = "MISTRAL_MLX_TEST_MODELS";
/// Tests read the path of the real SmolLM2 GGUF file from this variable.
pub const SMOLLM2_ENV_VAR: &str = "MISTRAL_MLX_SMOLLM2";

/// Scripts that write no test model or reference (the harnesses and the
/// server's client check): editing them does not regenerate the test models.
const NOT_MODEL_INPUTS: [&str; 14] = [
    "bench_models.py",
    "llama_gguf_models.py",
    "qmv_kernel_check.py",
    "qmv_tiling_sweep.py",
    "speculative_bench.py",
    "mlx_lm_bench.py",
    "gpu_bench_models.py",
    "openai_client_check.py",
    "structured_output_check.py",
    "tool_calls_check.py",
    "anthropic_check.py",
    "tekken_ref.py",
    "sentencepiece_ref.py",
    "mistral_chat_ref.py",
];

/// The folder of the Python scripts.
pub fn python_dir() -> PathBuf {
    workspace_root().join("xtask/python")
}

/// Creates the reference venv if needed and returns its interpreter.
/// It is rebuilt when `requirements.txt` changes.
pub fn ensure_env() -> Result<PathBuf> {
    let dir = xtask_dir().join("venv");
    let python = dir.join("bin/python");
    let requirements = python_dir().join("requirements.txt");
    let stamp = dir.join(".requirements-hash");
    let hash = hash_files(std::slice::from_ref(&requirements))?;
    if python.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        use_openblas(&dir)?;
        return Ok(python);
    }
    eprintln!("xtask: creating a Python environment in {}", dir.display());
    let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&system_python)
        .args(["-m", "venv", "--clear"])
        .arg(&dir))
    .with_context(|| {
        format!(
            "`{system_python} -m venv` failed: install python3 and venv \
             (Debian/Ubuntu: `apt-get install python3-venv`)"
        )
    })?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))
    .context("installing Python packages with pip")?;
    use_openblas(&dir)?;
    fs::write(&stamp, hash)?;
    Ok(python)
}

/// Points the venv's `mlx-cpu` BLAS and LAPACK at the system's OpenBLAS,
/// as `mlx-sys` does for our build (see `crates/mlx-sys/build/blas.rs`), so
/// that mlx-lm and our engine run their float32 products on the same
/// library. With netlib's reference BLAS on one side and OpenBLAS on the
/// other, float32 logits differ in the last bits, and seeded sampling from
/// a nearly flat distribution can then pick a neighbouring id.
fn use_openblas(venv: &std::path::Path) -> Result<()> {
    let openblas = crate::blas_choice::find_openblas().map_err(anyhow::Error::msg)?;
    let Some(libs) = glob_one(&venv.join("lib"), "mlx_cpu.libs")? else {
        return Ok(()); // not the CPU wheel (macOS): nothing to align
    };
    for entry in fs::read_dir(&libs)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        if !(name.starts_with("libblas-") || name.starts_with("liblapack-")) {
            continue;
        }
        if fs::read_link(&path).is_ok_and(|target| target == openblas) {
            continue;
        }
        fs::remove_file(&path)?;
        std::os::unix::fs::symlink(&openblas, &path)
            .with_context(|| format!("linking {} to {}", path.display(), openblas.display()))?;
    }
    Ok(())
}

/// `<lib>/python3.*/site-packages/<name>` if it exists.
fn glob_one(lib: &std::path::Path, name: &str) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(lib)? {
        let candidate = entry?.path().join("site-packages").join(name);
        if candidate.is_dir() {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// Generates the test models and mlx-lm's outputs on them (in `refs/`) if
/// needed, and returns their directory.
pub fn ensure_test_models() -> Result<PathBuf> {
    let python = ensure_env()?;
    let out = xtask_dir().join("test-models");
    let script = python_dir().join("make_models.py");
    let stamp = out.join(".generator-hash");
    let inputs: Vec<PathBuf> = fs::read_dir(python_dir())?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "py" || ext == "txt")
        })
        .filter(|path| !NOT_MODEL_INPUTS.iter().any(|name| path.ends_with(name)))
        .collect();
    let hash = hash_files(&inputs)?;
    if fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        return Ok(out);
    }
    eprintln!("xtask: generating test models in {}", out.display());
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    run(Command::new(&python).arg(&script).arg(&out)).context("generating the test models")?;
    // Reference outputs from live mlx-lm on the same files (logits, greedy ids).
    run(Command::new(&python)
        .arg(python_dir().join("reference.py"))
        .arg("--all")
        .arg(&out)
        .arg("--out-dir")
        .arg(out.join("refs"))
        .args(["--greedy", "64"]))
    .context("computing the mlx-lm reference outputs")?;
    // The same with every model dequantized and cast to float32 in mlx-lm:
    // what `--dtype auto` computes on the CPU.
    run(Command::new(&python)
        .arg(python_dir().join("reference.py"))
        .arg("--all")
        .arg(&out)
        .arg("--out-dir")
        .arg(out.join("refs").join("dense-f32"))
        .arg("--dense-f32")
        .args(["--greedy", "64"]))
    .context("computing the mlx-lm dense float32 reference outputs")?;
    // GGUF files (synthetic, and the real SmolLM2 one) and mlx-lm's outputs
    // on independent conversions of them.
    let smollm2 = crate::smollm2::for_tests()?;
    run(Command::new(&python)
        .arg(python_dir().join("gguf_refs.py"))
        .arg("--models")
        .arg(&out)
        .arg("--smollm2")
        .arg(&smollm2)
        .args(["--greedy", "64"]))
    .context("computing the GGUF reference outputs")?;
    // The newer architectures (Ministral 3, Mixtral, Mistral3 wrappers, FP8,
    // RoPE scaling types), with mlx-lm's outputs on them, in `arch/`.
    run(Command::new(&python)
        .arg(python_dir().join("make_arch_models.py"))
        .arg(out.join("arch"))
        .arg("--force"))
    .context("generating the newer-architecture test models")?;
    fs::write(&stamp, hash)?;
    Ok(out)
}

/// Generates the models `cargo xtask compare` runs (`bench_models.py`) if
/// needed, and returns their directory.
pub fn ensure_bench_models() -> Result<PathBuf> {
    let python = ensure_env()?;
    let out = xtask_dir().join("bench-models");
    let stamp = out.join(".generator-hash");
    let hash = scripts_hash(&[
        "bench_models.py",
        "make_models.py",
        "gguf_to_hf.py",
        "spconvert.py",
        "requirements.txt",
    ])?;
    if fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        return Ok(out);
    }
    eprintln!(
        "xtask: generating the benchmark models in {}",
        out.display()
    );
    let smollm2 = crate::smollm2::for_tests()?;
    run(Command::new(&python)
        .arg(python_dir().join("bench_models.py"))
        .arg(&out)
        .arg("--smollm2")
        .arg(&smollm2))
    .context("generating the benchmark models")?;
    fs::write(&stamp, hash)?;
    Ok(out)
}

/// The random-weight GGUF files of `compare --vs llama.cpp`
/// (`llama_gguf_models.py`) in `<target>/xtask/llama-gguf`: the ones of
/// `names` that are missing are written, and all are removed first when the
/// generator changed since the stamp was written (files there without a
/// stamp, from running the script by hand, are kept).
pub fn ensure_llama_gguf(names: &[&str]) -> Result<PathBuf> {
    let out = xtask_dir().join("llama-gguf");
    if names.is_empty() {
        return Ok(out);
    }
    let python = ensure_env()?;
    let stamp = out.join(".generator-hash");
    let hash = scripts_hash(&[
        "llama_gguf_models.py",
        "make_gguf_models.py",
        "make_models.py",
        "gguf_to_hf.py",
        "spconvert.py",
        "requirements.txt",
    ])?;
    if fs::read_to_string(&stamp).is_ok_and(|old| old != hash) {
        eprintln!(
            "xtask: the GGUF generator changed; removing {}",
            out.display()
        );
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !out.join(format!("{name}.gguf")).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "xtask: writing {} into {} (minutes each at these widths)",
            missing.join(", "),
            out.display()
        );
        let smollm2 = crate::smollm2::for_tests()?;
        run(Command::new(&python)
            .arg(python_dir().join("llama_gguf_models.py"))
            .arg(&out)
            .arg("--smollm2")
            .arg(&smollm2)
            .arg("--only")
            .arg(missing.join(",")))
        .context("writing the GGUF files for the llama.cpp comparison")?;
    }
    fs::write(&stamp, hash)?;
    Ok(out)
}

/// [`hash_files`] of the files `names` of the Python folder.
fn scripts_hash(names: &[&str]) -> Result<String> {
    let files: Vec<PathBuf> = names.iter().map(|name| python_dir().join(name)).collect();
    hash_files(&files)
}

fn hash_files(files: &[PathBuf]) -> Result<String> {
    let mut files = files.to_vec();
    files.sort();
    let mut hasher = DefaultHasher::new();
    for file in &files {
        let bytes = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        file.file_name().hash(&mut hasher);
        bytes.hash(&mut hasher);
    }
    Ok(format!("{:016x}", hasher.finish()))
}

/// Runs `command` to its end; an error names it and says how it ended.
pub fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_changes_with_content() {
        let dir = std::env::temp_dir().join(format!("xtask-hash-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.txt");
        fs::write(&file, "one").unwrap();
        let first = hash_files(std::slice::from_ref(&file)).unwrap();
        assert_eq!(first, hash_files(std::slice::from_ref(&file)).unwrap());
        fs::write(&file, "two").unwrap();
        assert_ne!(first, hash_files(std::slice::from_ref(&file)).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
