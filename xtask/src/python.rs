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
use std::path::{Path, PathBuf};
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
/// Every other `.py` and `.txt` file of the Python folder does, but for the
/// unit tests (`tests/`). Paths relative to the Python folder.
const NOT_MODEL_INPUTS: [&str; 15] = [
    "models/bench_models.py",
    "gpu/rows_probe.py",
    "models/llama_gguf_models.py",
    "gpu/qmv_kernel_check.py",
    "gpu/qmv_tiling_sweep.py",
    "bench/speculative_bench.py",
    "bench/mlx_lm_bench.py",
    "models/gpu_bench_models.py",
    "checks/openai_client_check.py",
    "checks/structured_output_check.py",
    "checks/tool_calls_check.py",
    "checks/anthropic_check.py",
    "refs/tekken_ref.py",
    "refs/sentencepiece_ref.py",
    "refs/mistral_chat_ref.py",
];

/// The folder of the unit tests of the shared helpers (not a model input).
const UNIT_TESTS_DIR: &str = "tests";

/// The files whose change regenerates the benchmark models.
const BENCH_MODEL_INPUTS: [&str; 5] = [
    "models/bench_models.py",
    "models/make_models.py",
    "common/gguf_to_hf.py",
    "common/spconvert.py",
    "requirements.txt",
];

/// The files whose change regenerates the GGUF files of `compare --vs
/// llama.cpp`.
const LLAMA_GGUF_INPUTS: [&str; 6] = [
    "models/llama_gguf_models.py",
    "models/make_gguf_models.py",
    "models/make_models.py",
    "common/gguf_to_hf.py",
    "common/spconvert.py",
    "requirements.txt",
];

/// The Python folder: a package root with one folder per kind of script
/// (`models`, `refs`, `checks`, `bench`, `gpu`, the shared `common`), each
/// script run as a module (see [`module`]).
pub fn python_dir() -> PathBuf {
    workspace_root().join("xtask/python")
}

/// `python -m <name>` (e.g. `refs.reference`) with the Python folder first
/// on `PYTHONPATH`: how every script of the folder runs. The working
/// directory is left alone, so relative paths in the arguments keep their
/// meaning.
pub fn module(python: &Path, name: &str) -> Command {
    let mut paths = vec![python_dir()];
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&old));
    }
    let mut command = Command::new(python);
    // Joining fails only on a path holding the separator (`:`).
    if let Ok(joined) = std::env::join_paths(paths) {
        command.env("PYTHONPATH", joined);
    }
    command.args(["-m", name]);
    command
}

/// Runs the unit tests of the shared helpers (`tests/`, stdlib `unittest`,
/// seconds, no model files) with `python`; fails if one fails.
pub fn unit_tests(python: &Path) -> Result<()> {
    eprintln!("xtask: the Python helpers' unit tests");
    run(module(python, "unittest")
        .args(["discover", "--start-directory"])
        .arg(python_dir().join(UNIT_TESTS_DIR))
        .arg("--top-level-directory")
        .arg(python_dir()))
    .context("the Python helpers' unit tests failed")
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
    let stamp = out.join(".generator-hash");
    let hash = hash_files(&model_inputs()?)?;
    if fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        return Ok(out);
    }
    eprintln!("xtask: generating test models in {}", out.display());
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    run(module(&python, "models.make_models").arg(&out)).context("generating the test models")?;
    // Reference outputs from live mlx-lm on the same files (logits, greedy ids).
    run(module(&python, "refs.reference")
        .arg("--all")
        .arg(&out)
        .arg("--out-dir")
        .arg(out.join("refs"))
        .args(["--greedy", "64"]))
    .context("computing the mlx-lm reference outputs")?;
    // The same with every model dequantized and cast to float32 in mlx-lm:
    // what `--dtype auto` computes on the CPU.
    run(module(&python, "refs.reference")
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
    run(module(&python, "refs.gguf_refs")
        .arg("--models")
        .arg(&out)
        .arg("--smollm2")
        .arg(&smollm2)
        .args(["--greedy", "64"]))
    .context("computing the GGUF reference outputs")?;
    // The newer architectures (Ministral 3, Mixtral, Mistral3 wrappers, FP8,
    // RoPE scaling types), with mlx-lm's outputs on them, in `arch/`.
    run(module(&python, "models.make_arch_models")
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
    let hash = scripts_hash(&BENCH_MODEL_INPUTS)?;
    if fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        return Ok(out);
    }
    eprintln!(
        "xtask: generating the benchmark models in {}",
        out.display()
    );
    let smollm2 = crate::smollm2::for_tests()?;
    run(module(&python, "models.bench_models")
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
    let hash = scripts_hash(&LLAMA_GGUF_INPUTS)?;
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
        run(module(&python, "models.llama_gguf_models")
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

/// The files whose change regenerates the test models: every `.py` and
/// `.txt` file of the Python folder and its rooms, less [`NOT_MODEL_INPUTS`]
/// and the unit tests.
fn model_inputs() -> Result<Vec<PathBuf>> {
    let root = python_dir();
    let mut inputs = Vec::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in
            fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?
        {
            let path = entry?.path();
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            if path.is_dir() {
                if relative != Path::new(UNIT_TESTS_DIR) {
                    folders.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|ext| ext == "py" || ext == "txt")
                && !NOT_MODEL_INPUTS
                    .iter()
                    .any(|name| relative == Path::new(name))
            {
                inputs.push(path);
            }
        }
    }
    Ok(inputs)
}

/// [`hash_files`] of the files `names` (paths relative to the Python folder).
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
    fn the_named_scripts_exist() {
        for name in NOT_MODEL_INPUTS
            .iter()
            .chain(&BENCH_MODEL_INPUTS)
            .chain(&LLAMA_GGUF_INPUTS)
        {
            assert!(python_dir().join(name).is_file(), "no xtask/python/{name}");
        }
    }

    #[test]
    fn model_inputs_are_the_generators_not_the_harnesses_or_tests() {
        let root = python_dir();
        let inputs: Vec<PathBuf> = model_inputs()
            .unwrap()
            .iter()
            .map(|path| path.strip_prefix(&root).unwrap().to_path_buf())
            .collect();
        for name in [
            "models/make_models.py",
            "models/make_arch_models.py",
            "refs/reference.py",
            "refs/gguf_refs.py",
            "common/mlx_lm_ref.py",
            "common/spconvert.py",
            "requirements.txt",
        ] {
            assert!(inputs.contains(&PathBuf::from(name)), "{name} is an input");
        }
        for path in &inputs {
            assert!(!path.starts_with(UNIT_TESTS_DIR), "{}", path.display());
            assert!(
                !NOT_MODEL_INPUTS.iter().any(|name| path == Path::new(name)),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn modules_run_with_the_python_folder_first_on_the_path() {
        let command = module(Path::new("python3"), "refs.reference");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["-m", "refs.reference"]);
        let (_, value) = command
            .get_envs()
            .find(|(name, _)| *name == "PYTHONPATH")
            .expect("PYTHONPATH is set");
        let first = std::env::split_paths(value.expect("a value")).next();
        assert_eq!(first, Some(python_dir()));
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
