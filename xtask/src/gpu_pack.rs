//! `cargo xtask gpu-pack`: everything a run on the lent GPU machine needs,
//! in parts small enough to carry, and the exact `device` calls.
//!
//! The GPU machine has CUDA 13's libraries, PyTorch and Python 3.12, but no
//! package registry, no Rust and no `zstd`; each call carries at most 64 MiB
//! of the working tree, and the machine keeps its disk only while it stays
//! warm (about 30 s after a call). So:
//! - one `tar` of: the CUDA bundle (`cargo xtask dist --cuda`: binaries,
//!   stripped `libmlx.so`, MLX's headers, the wheel's libraries), our parity
//!   test binaries built for CUDA, the `mlx` (cp312) and `mlx-lm` wheels, and
//!   the two Mistral SentencePiece models the test models' tokenizers are
//!   built from (mistral-common is not installed there); with `--smollm2`,
//!   SmolLM2's GGUF file;
//! - compressed with zstd (long window; the CUDA fat binary barely
//!   compresses), split into parts of `--part-mib`, each in its own folder
//!   `target/gpu-pack/<n>/` (a `carry` path); the first also holds a `zstd`
//!   binary and the parts' checksums;
//! - `xtask/gpu/run.sh` (in the tree, so always carried) stashes the parts,
//!   then unpacks and runs `parity`, `bench`, `spec` or `tp` (2 GPUs).

use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{dist, paths, python};

/// The wheels the GPU machine's Python needs (it runs Python 3.12).
const WHEELS: [&str; 2] = ["mlx==0.32.2", "mlx-lm==0.32.2"];

/// The parity tests run there (test targets of mistral-loader).
const TESTS: [&str; 6] = [
    "mlx_lm_parity",
    "families",
    "generate_parity",
    "sliding_window_generation",
    "decode_graph",
    "stacked_projections",
];

/// The SentencePiece models make_models.py builds tokenizers from.
const SP_MODELS: [&str; 2] = [
    "tokenizer.model.v1",
    "mistral_instruct_tokenizer_240323.model.v3",
];

/// `cargo xtask gpu-pack` arguments.
#[derive(clap::Args)]
pub struct GpuPackArgs {
    /// Largest part, in MiB (a call carries at most 64 MiB in all).
    #[arg(long, default_value_t = 56)]
    part_mib: u64,
    /// Also pack SmolLM2's GGUF file (98 MB: two more parts), for
    /// `run.sh spec`'s prompt-lookup runs on a real model.
    #[arg(long)]
    smollm2: bool,
}

pub fn run(args: &GpuPackArgs) -> Result<()> {
    let out = paths::target_dir().join("gpu-pack");
    let stage = paths::target_dir().join("gpu-pack-stage");
    for dir in [&out, &stage] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    fs::create_dir_all(&stage)?;

    let bundle = dist::run(&dist::DistArgs {
        cuda: true,
        out: Some(stage.clone()),
        no_archive: true,
        target_dir: None,
    })?;
    fs::rename(&bundle.dir, stage.join("bundle"))?;
    test_binaries(&stage.join("tests"))?;
    wheels(&stage.join("wheels"))?;
    sp_models(&stage.join("sp"))?;
    if args.smollm2 {
        let gguf = crate::smollm2::for_tests()?;
        let dest = stage.join("smollm2");
        fs::create_dir_all(&dest)?;
        fs::copy(
            &gguf,
            dest.join(gguf.file_name().context("SmolLM2 file name")?),
        )?;
    }

    let archive = paths::target_dir().join("gpu-pack.tar.zst");
    compress(&stage, &archive)?;
    let parts = split(&archive, &out, args.part_mib << 20)?;
    fs::remove_file(&archive)?;
    fs::remove_dir_all(&stage)?;
    let first = out.join("1");
    fs::copy(zstd_binary()?, first.join("zstd"))?;
    checksums(&parts, &first.join("parts.sha256"))?;
    print_calls(parts.len());
    Ok(())
}

/// Builds the parity tests for CUDA (release) and copies them, stripped.
fn test_binaries(dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(paths::workspace_root())
        .args(["test", "--release", "--no-run", "-p", "mistral-loader"])
        .args([
            "--features",
            "cuda",
            "--message-format",
            "json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(dist::cargo_target(true));
    for test in TESTS {
        command.args(["--test", test]);
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    ensure!(
        output.status.success(),
        "building the CUDA test binaries failed"
    );
    let mut found = 0;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        if TESTS.contains(&name) {
            let target = dest.join(name);
            fs::copy(exe, &target)?;
            let _ = Command::new("strip").arg(&target).status();
            found += 1;
        }
    }
    ensure!(
        found == TESTS.len(),
        "found {found} of {} test binaries",
        TESTS.len()
    );
    Ok(())
}

/// Downloads the cp312 `mlx` and the `mlx-lm` wheels.
fn wheels(dest: &Path) -> Result<()> {
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .args([
            "--python-version",
            "3.12",
            "--platform",
            "manylinux_2_35_x86_64",
        ])
        .arg("-d")
        .arg(dest)
        .args(WHEELS)
        .status()
        .context("running pip download")?;
    ensure!(status.success(), "pip download {WHEELS:?} failed");
    Ok(())
}

/// Copies the SentencePiece models from mistral-common in the reference venv.
fn sp_models(dest: &Path) -> Result<()> {
    let venv_python = python::ensure_env()?;
    let output = Command::new(&venv_python)
        .args([
            "-c",
            "import mistral_common, os; print(os.path.dirname(mistral_common.__file__))",
        ])
        .output()
        .context("asking the venv for mistral-common")?;
    ensure!(
        output.status.success(),
        "mistral-common is not in the reference venv"
    );
    let data = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("data");
    fs::create_dir_all(dest)?;
    for name in SP_MODELS {
        fs::copy(data.join(name), dest.join(name))
            .with_context(|| format!("copying {name} from {}", data.display()))?;
    }
    Ok(())
}

/// `tar` of `stage`'s contents, zstd level 12 with a 128 MiB window
/// (`zstd -d --long=27` unpacks it). Higher levels gain little: most of the
/// bytes are CUDA machine code.
fn compress(stage: &Path, archive: &Path) -> Result<()> {
    let mut folders = Vec::new();
    for entry in fs::read_dir(stage)? {
        let entry = entry?;
        folders.push((PathBuf::from(entry.file_name()), entry.path()));
    }
    dist::tar_zst(archive, &folders, 12, true)
}

/// Splits `archive` into `out/<n>/part-<n>` of at most `size` bytes.
fn split(archive: &Path, out: &Path, size: u64) -> Result<Vec<PathBuf>> {
    let mut input = fs::File::open(archive)?;
    let mut parts = Vec::new();
    let mut buffer = vec![0u8; size as usize];
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            let n = input.read(&mut buffer[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let n = parts.len() + 1;
        let dir = out.join(n.to_string());
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("part-{n:02}"));
        fs::File::create(&path)?.write_all(&buffer[..filled])?;
        parts.push(path);
        if filled < buffer.len() {
            break;
        }
    }
    Ok(parts)
}

fn zstd_binary() -> Result<PathBuf> {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let path = Path::new(dir).join("zstd");
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("no zstd binary here to carry (Debian/Ubuntu: apt-get install zstd)")
}

/// `sha256sum -c` input for the parts.
fn checksums(parts: &[PathBuf], path: &Path) -> Result<()> {
    use sha2::Digest;
    let mut text = String::new();
    for part in parts {
        let digest = sha2::Sha256::digest(fs::read(part)?);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let name = part.file_name().context("part name")?.to_string_lossy();
        text.push_str(&format!("{hex}  {name}\n"));
    }
    fs::write(path, text)?;
    Ok(())
}

fn print_calls(parts: usize) {
    println!("GPU pack: {parts} parts in target/gpu-pack/. Check `status` first, then run");
    println!("these device calls back to back (the machine keeps its disk ~30 s):");
    for n in 1..parts {
        println!("  run  carry=[\"target/gpu-pack/{n}\"]  command=\"bash xtask/gpu/run.sh stash\"");
    }
    println!(
        "  run  carry=[\"target/gpu-pack/{parts}\"]  command=\"bash xtask/gpu/run.sh parity\"  timeout_s=600"
    );
    println!(
        "  run  command=\"bash xtask/gpu/run.sh parity\"  timeout_s=600   (again if the first ran out of time:"
    );
    println!("       mlx-lm's references take most of a call; the second runs the tests)");
    println!("  run  command=\"timeout 590 bash xtask/gpu/run.sh bench 2 5\"  timeout_s=600   (writes the models;");
    println!("       2 rounds of one process per model and engine, each warmed up with the measured lengths,");
    println!("       then the median of 5 runs: about 420 s on one H200)");
    println!("  run  command=\"bash xtask/gpu/run.sh bench 1 5\"  timeout_s=300   (more rounds, as the budget allows;");
    println!("       MISTRAL_MLX_BENCH_MODELS=m150_bf16,m7b_q4 narrows the models)");
    println!("The newer families alone (a short budget; about 280 s on one H100):");
    println!(
        "  run  carry=[\"target/gpu-pack/{parts}\"]  command=\"bash xtask/gpu/run.sh parity gqa4_bf16 families\"  timeout_s=520"
    );
    println!(
        "  run  command=\"MISTRAL_MLX_BENCH_MODELS=mx8_bf16 timeout 560 bash xtask/gpu/run.sh bench 2 3\"  timeout_s=590"
    );
    println!(
        "       (Mixtral 8x7B's shapes with 4 layers, ours against mlx-lm: about 80 s on one H100)"
    );
    println!("Speculative decoding (a pack made with --smollm2; the 7B-shape pair is written there, ~4 min):");
    println!(
        "  run  carry=[\"target/gpu-pack/{parts}\"]  command=\"timeout 590 bash xtask/gpu/run.sh spec 3\"  timeout_s=600"
    );
    println!("Our decode kernel (the CLI's `--qmv ours`; the parity tests use it with MISTRAL_MLX_QMV=ours): the stash call(s), then");
    println!(
        "  run  carry=[\"target/gpu-pack/{parts}\"]  command=\"bash xtask/gpu/run.sh qmv 2\"  timeout_s=560"
    );
    println!("  and the parity tests with it, on the quantized models whose scales it takes (bf16, f16; not float32;");
    println!("  mlx-lm's references take most of the first call, the second runs the test):");
    println!(
        "  run  command=\"MISTRAL_MLX_SKIP_FAMILIES=1 MISTRAL_MLX_QMV=ours bash xtask/gpu/run.sh parity gqa4_q4_g64_bf16,gqa4_q8_g64_f16 mlx_lm_parity\"  timeout_s=420"
    );
    println!("Tensor parallelism on 2 GPUs (kind nvidia-h100-x2 or nvidia-h200-x2): the stash call(s), then");
    println!(
        "  run  carry=[\"target/gpu-pack/{parts}\"]  command=\"bash xtask/gpu/run.sh tp check\"  timeout_s=400"
    );
    println!("  run  command=\"bash xtask/gpu/run.sh tp bench 2\"  timeout_s=400   (ours and mlx-lm, 1 and 2 GPUs)");
    println!(
        "Results come back from $OUT: card.txt, info.txt, setup.log, test-*.log, bench.jsonl, qmv-*, tp-*."
    );
}
