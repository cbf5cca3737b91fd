//! `cargo xtask dist`: a folder (and a `.tar.zst` of it) that runs on a
//! machine with no Rust and no Python.
//!
//! Layout (`lib/` mirrors the wheel's `site-packages`, so `libmlx`'s own
//! search path `$ORIGIN/../../mlx_*.libs` keeps working unchanged):
//!
//! ```text
//! mistral-mlx-<version>-<arch>-linux-<cpu|cuda13>/
//!   bin/       mistral-cli, generate_mistral, benchmark_mistral
//!   libexec/   (CUDA only) the real binaries; bin/ holds launchers
//!   lib/mlx/lib/libmlx.so
//!   lib/mlx/include/          (CUDA only: MLX compiles kernels at run time)
//!   lib/mlx_<cpu|cuda_13>.libs/   the wheel's BLAS, LAPACK, gfortran
//!   README.txt
//! ```
//!
//! The binaries find `libmlx` through `$ORIGIN/../lib/mlx/lib` (written by
//! `crates/mlx-sys/link_mlx.rs` into every binary as `DT_RPATH`). Where the
//! build points the CPU wheel's BLAS at the system's OpenBLAS, the bundle
//! carries that OpenBLAS and the libraries it needs beyond glibc and the
//! C++ runtime (gfortran, quadmath), found by walking `DT_NEEDED`.
//!
//! NVIDIA's libraries (cuBLAS, cuDNN, NCCL, NVRTC, cuFFT, the driver) are
//! not bundled: `bin/` holds small launchers that find them as the wheel
//! does (a Python `site-packages/nvidia/` folder: pip's `nvidia-*`
//! packages) or on the system's library path, and name any that is missing.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths;

/// The binaries in a bundle: (package, kind, name).
const BINARIES: [(&str, Kind, &str); 3] = [
    ("mistral-cli", Kind::Bin, "mistral-cli"),
    ("mistral-mlx", Kind::Example, "generate_mistral"),
    ("mistral-mlx", Kind::Example, "benchmark_mistral"),
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bin,
    Example,
}

/// Libraries every Linux system has (glibc, the GCC runtime, the C++
/// standard library): never bundled, as manylinux wheels do.
const SYSTEM_LIBS: [&str; 10] = [
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libutil.so.1",
];

/// Folders searched for a library a bundled library needs.
const LIB_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

/// `cargo xtask dist` arguments.
#[derive(clap::Args)]
pub struct DistArgs {
    /// Build for NVIDIA GPUs (MLX's CUDA 13 wheel).
    #[arg(long)]
    pub cuda: bool,
    /// Where to put the bundle folder and its archive.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Skip the `.tar.zst` archive.
    #[arg(long)]
    pub no_archive: bool,
    /// Cargo's target folder for the build (default: the workspace's, or
    /// its `cuda/` for `--cuda`).
    #[arg(skip)]
    pub target_dir: Option<PathBuf>,
}

/// What was made.
pub struct Bundle {
    /// The bundle folder.
    pub dir: PathBuf,
    /// Its archive, unless skipped.
    pub archive: Option<PathBuf>,
}

/// Builds the release binaries and assembles the bundle.
pub fn run(args: &DistArgs) -> Result<Bundle> {
    let features = if args.cuda {
        "mistral-cli/cuda,mistral-mlx/cuda"
    } else {
        ""
    };
    let target = args
        .target_dir
        .clone()
        .unwrap_or_else(|| cargo_target(args.cuda));
    build(features, &target)?;
    let release = target.join("release");
    let variant = if args.cuda { "cuda13" } else { "cpu" };
    let name = format!(
        "mistral-mlx-{}-{}-linux-{variant}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| paths::target_dir().join("dist"));
    let dir = out.join(&name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let binaries: Vec<PathBuf> = BINARIES
        .iter()
        .map(|(_, kind, name)| match kind {
            Kind::Bin => release.join(name),
            Kind::Example => release.join("examples").join(name),
        })
        .collect();
    let wheel = wheel_root(&binaries[0])?;
    let lib = dir.join("lib");
    copy_wheel(&wheel, &lib, args.cuda)?;
    let unbundled = bundle_dependencies(&lib)?;
    let bin_dir = dir.join(if args.cuda { "libexec" } else { "bin" });
    fs::create_dir_all(&bin_dir)?;
    for binary in &binaries {
        let target = bin_dir.join(binary.file_name().context("binary name")?);
        fs::copy(binary, &target)
            .with_context(|| format!("copying {} (built?)", binary.display()))?;
        strip(&target, &["--strip-all"]);
        keep_only_bundle_path(&target)?;
    }
    if args.cuda {
        let requirements = wheel_requirements(&wheel)?;
        for (_, _, name) in BINARIES {
            write_launcher(&dir.join("bin"), name, &unbundled, &requirements)?;
        }
    } else if !unbundled.is_empty() {
        bail!(
            "the CPU bundle would need libraries it cannot carry: {}",
            unbundled.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    fs::write(dir.join("README.txt"), readme(&name, args.cuda, &unbundled))?;
    let archive = if args.no_archive {
        None
    } else {
        Some(archive(&dir)?)
    };
    println!("{}", dir.display());
    if let Some(archive) = &archive {
        println!("{}", archive.display());
    }
    Ok(Bundle { dir, archive })
}

/// The CUDA build has its own target folder (`<target>/cuda`), so that
/// switching between it and the CPU build never rebuilds either.
pub fn cargo_target(cuda: bool) -> PathBuf {
    if cuda {
        paths::target_dir().join("cuda")
    } else {
        paths::target_dir()
    }
}

fn build(features: &str, target: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.current_dir(paths::workspace_root()).args([
        "build",
        "--release",
        "-p",
        "mistral-cli",
        "-p",
        "mistral-mlx",
        "--bins",
        "--example",
        "generate_mistral",
        "--example",
        "benchmark_mistral",
    ]);
    command.arg("--target-dir").arg(target);
    if !features.is_empty() {
        command.args(["--features", features]);
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    Ok(())
}

/// The folder the build's `libmlx` comes from, read from the binary's own
/// search path: the entry holding `libmlx.so`, two levels up (the wheel's
/// `site-packages` layout: `<root>/mlx/lib/libmlx.so`).
fn wheel_root(binary: &Path) -> Result<PathBuf> {
    let bytes = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let elf = goblin::elf::Elf::parse(&bytes)
        .with_context(|| format!("{} is not an ELF file", binary.display()))?;
    let dirs = elf.rpaths.iter().chain(elf.runpaths.iter());
    for entry in dirs.flat_map(|r| r.split(':')) {
        let dir = Path::new(entry);
        if entry.starts_with('$') || !dir.join("libmlx.so").is_file() {
            continue;
        }
        let root = dir.join("../..");
        if !root.join("mlx/include/mlx/mlx.h").is_file() {
            bail!(
                "{} is not a wheel layout (no ../../mlx/include): bundles are made from MLX's \
                 wheel, not from an MLX_DIR install",
                dir.display()
            );
        }
        return root
            .canonicalize()
            .with_context(|| format!("resolving {}", root.display()));
    }
    bail!("{} has no search path holding libmlx.so", binary.display())
}

/// Copies `mlx/lib`, (for CUDA) `mlx/include`, and the wheel's `*.libs`
/// folder into `lib/`, following symbolic links (the OpenBLAS links become
/// one copy of OpenBLAS and relative links to it).
fn copy_wheel(wheel: &Path, lib: &Path, cuda: bool) -> Result<()> {
    let mlx_lib = lib.join("mlx/lib");
    fs::create_dir_all(&mlx_lib)?;
    let libmlx = mlx_lib.join("libmlx.so");
    fs::copy(wheel.join("mlx/lib/libmlx.so"), &libmlx).context("copying libmlx.so")?;
    strip(&libmlx, &["--strip-unneeded"]);
    if cuda {
        copy_tree(&wheel.join("mlx/include"), &lib.join("mlx/include"))?;
    }
    for entry in fs::read_dir(wheel)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("mlx_") && name.ends_with(".libs")) {
            continue;
        }
        let dest = lib.join(name);
        fs::create_dir_all(&dest)?;
        for file in fs::read_dir(&path)? {
            let file = file?.path();
            let file_name = file.file_name().context("file name")?.to_owned();
            if file_name.to_string_lossy().ends_with(".netlib") {
                continue; // the originals the build set aside
            }
            match fs::read_link(&file) {
                Ok(target) => {
                    // A link to the system's OpenBLAS: carry that library
                    // once, under its own name, and link to it.
                    let soname = target.file_name().context("link target name")?.to_owned();
                    let copy = dest.join(&soname);
                    if !copy.exists() {
                        fs::copy(&file, &copy)
                            .with_context(|| format!("copying {}", target.display()))?;
                    }
                    std::os::unix::fs::symlink(&soname, dest.join(&file_name))?;
                }
                Err(_) => {
                    fs::copy(&file, dest.join(&file_name))?;
                }
            }
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The `DT_NEEDED` names of an ELF file.
fn needed(path: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = goblin::elf::Elf::parse(&bytes)
        .with_context(|| format!("{} is not an ELF file", path.display()))?;
    Ok(elf.libraries.iter().map(|s| (*s).to_owned()).collect())
}

/// Copies into the wheel's `*.libs` folder every library the bundled
/// libraries need that is neither bundled nor a system library, when this
/// machine has it (OpenBLAS's gfortran and quadmath). Returns the needed
/// libraries this machine lacks (for CUDA: NVIDIA's, found at run time).
fn bundle_dependencies(lib: &Path) -> Result<BTreeSet<String>> {
    let libs_dir = fs::read_dir(lib)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "libs"))
        .context("the wheel has no *.libs folder")?;
    let mut queue = vec![lib.join("mlx/lib/libmlx.so")];
    for entry in fs::read_dir(&libs_dir)? {
        queue.push(entry?.path());
    }
    let mut seen = BTreeSet::new();
    let mut missing = BTreeSet::new();
    while let Some(file) = queue.pop() {
        if !seen.insert(file.clone()) || fs::symlink_metadata(&file)?.file_type().is_symlink() {
            continue;
        }
        for name in needed(&file)? {
            let bundled = libs_dir.join(&name);
            if SYSTEM_LIBS.contains(&name.as_str()) || bundled.exists() {
                continue;
            }
            match LIB_DIRS
                .iter()
                .map(|d| Path::new(d).join(&name))
                .find(|p| p.is_file())
            {
                Some(found) => {
                    fs::copy(&found, &bundled)
                        .with_context(|| format!("copying {}", found.display()))?;
                    queue.push(bundled);
                }
                None => {
                    missing.insert(name);
                }
            }
        }
    }
    Ok(missing)
}

/// The wheel's `Requires-Dist` lines (for CUDA: the pip packages of the
/// NVIDIA libraries), for the launcher's message.
fn wheel_requirements(wheel: &Path) -> Result<Vec<String>> {
    for entry in fs::read_dir(wheel)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "dist-info") {
            let text = fs::read_to_string(path.join("METADATA"))?;
            return Ok(text
                .lines()
                .filter_map(|l| l.strip_prefix("Requires-Dist: "))
                .map(|r| r.split(';').next().unwrap_or(r).trim().to_owned())
                .collect());
        }
    }
    bail!("no *.dist-info in {}", wheel.display())
}

/// `bin/<name>`: finds NVIDIA's libraries, names any that is missing, then
/// runs `libexec/<name>`.
fn write_launcher(
    bin: &Path,
    name: &str,
    needed: &BTreeSet<String>,
    requirements: &[String],
) -> Result<()> {
    fs::create_dir_all(bin)?;
    let needed = needed.iter().cloned().collect::<Vec<_>>().join(" ");
    let packages = requirements.join(" ");
    let script = format!(
        r#"#!/bin/sh
# Launcher of the mistral-mlx CUDA bundle. MLX's CUDA build needs NVIDIA's
# libraries, which the bundle does not carry; they are found as MLX's own
# wheel finds them, in a Python site-packages `nvidia/` folder (pip's nvidia-*
# packages: MISTRAL_MLX_NVIDIA_DIR names one; else python3's, else common
# places), or on the system's library path. Any that is missing is named.
root=$(dirname "$(dirname "$(readlink -f "$0")")")
needed="{needed}"
nvidia=""
for dir in "${{MISTRAL_MLX_NVIDIA_DIR:-}}" "$root/lib/nvidia" \
    $(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null) \
    /usr/local/lib/python3*/dist-packages/nvidia /usr/lib/python3*/dist-packages/nvidia \
    "${{HOME:-/nonexistent}}"/.local/lib/python3*/site-packages/nvidia; do
  if [ -n "$dir" ] && [ -d "$dir" ]; then nvidia=$dir; break; fi
done
path=""
if [ -n "$nvidia" ]; then
  for d in "$nvidia"/*/lib; do [ -d "$d" ] && path="$path${{path:+:}}$d"; done
fi
path="$path${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
cache=$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null)
missing=""
for lib in $needed; do
  found=""
  old_ifs=$IFS; IFS=:
  for d in $path; do [ -e "$d/$lib" ] && found=1; done
  IFS=$old_ifs
  if [ -z "$found" ] && ! printf '%s\n' "$cache" | grep -q "^[[:space:]]*$lib "; then
    missing="$missing $lib"
  fi
done
if [ -n "$missing" ]; then
  echo "error: NVIDIA libraries that MLX's CUDA build needs were not found:$missing" >&2
  echo "  (libcuda.so.1 comes with the NVIDIA driver; the others from pip: {packages})" >&2
  echo "  Install them, or set MISTRAL_MLX_NVIDIA_DIR to a site-packages/nvidia folder holding them." >&2
  exit 127
fi
# MLX compiles some CUDA kernels at run time (NVRTC) with CUDA's headers;
# pip's nvidia/cu13/include lacks some of them (crt/mma.h, needed by the
# 4-bit group-128 prefill kernel). Name a full CUDA toolkit when there is one
# and neither CUDA_HOME nor CUDA_PATH is set.
if [ -z "${{CUDA_HOME:-}}${{CUDA_PATH:-}}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-13*; do
    if [ -f "$d/include/crt/mma.h" ]; then export CUDA_HOME="$d"; break; fi
  done
fi
LD_LIBRARY_PATH=$path exec "$root/libexec/{name}" "$@"
"#
    );
    let path = bin.join(name);
    fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn readme(name: &str, cuda: bool, unbundled: &BTreeSet<String>) -> String {
    let mut text = format!(
        "{name}\n\nmistral-mlx: Mistral and Llama inference on MLX 0.32.2 ({}).\n\
         Run bin/mistral-cli --help. It needs a Linux with glibc 2.35 or later and the GCC\n\
         C++ runtime (libstdc++), as MLX's wheel does; no Rust, no Python. lib/ holds\n\
         libmlx and what it needs from MLX's wheel, found through $ORIGIN/../lib/mlx/lib.\n",
        if cuda { "CUDA 13" } else { "CPU" }
    );
    if cuda {
        text.push_str(&format!(
            "\nNot bundled: NVIDIA's libraries ({}). bin/ launchers find them in a Python\n\
             site-packages/nvidia folder (pip's nvidia-* packages, as MLX's wheel does;\n\
             MISTRAL_MLX_NVIDIA_DIR names one) or on the system's library path, and name\n\
             any that is missing. lib/mlx/include must stay beside lib/mlx/lib: MLX compiles\n\
             its CUDA kernels at run time with those headers.\n",
            unbundled.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    text
}

/// Cuts the binary's library search path after its first entry
/// (`$ORIGIN/../lib/mlx/lib`), so that a bundled binary never falls back to
/// the build machine's MLX. The path is a NUL-terminated string in
/// `.dynstr`; a NUL written over the first `:` shortens it in place.
fn keep_only_bundle_path(file: &Path) -> Result<()> {
    let mut bytes = fs::read(file)?;
    let rpath = {
        let elf = goblin::elf::Elf::parse(&bytes)
            .with_context(|| format!("{} is not an ELF file", file.display()))?;
        match elf.rpaths.first().or(elf.runpaths.first()) {
            Some(path) => (*path).to_owned(),
            None => bail!("{} has no library search path", file.display()),
        }
    };
    let Some(colon) = rpath.find(':') else {
        return Ok(());
    };
    ensure!(
        rpath.starts_with("$ORIGIN/../lib/mlx/lib:"),
        "{}: unexpected search path {rpath}",
        file.display()
    );
    let mut needle = rpath.into_bytes();
    needle.push(0);
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_slice())
        .map(|(i, _)| i)
        .collect();
    ensure!(
        hits.len() == 1,
        "{}: the search path string occurs {} times",
        file.display(),
        hits.len()
    );
    bytes[hits[0] + colon] = 0;
    fs::write(file, bytes)?;
    Ok(())
}

/// Strips `file` with the system's `strip` where there is one (a smaller
/// bundle; a missing `strip` only costs size).
fn strip(file: &Path, args: &[&str]) {
    let _ = Command::new("strip").args(args).arg(file).status();
}

/// `<dir>.tar.zst`, with the folder as the archive's top level.
fn archive(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().context("bundle name")?;
    let path = dir.with_file_name(format!("{}.tar.zst", name.to_string_lossy()));
    tar_zst(
        &path,
        &[(PathBuf::from(name), dir.to_path_buf())],
        10,
        false,
    )?;
    Ok(path)
}

/// Writes folders as one `.tar.zst` at `path`: each `(name, folder)` under
/// `name` in the archive, symbolic links kept as links. `long`: a 128 MiB
/// window with long-distance matching (unpack with `zstd -d --long=27`).
pub fn tar_zst(path: &Path, folders: &[(PathBuf, PathBuf)], level: i32, long: bool) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = zstd::Encoder::new(file, level)?;
    if long {
        encoder.window_log(27)?;
        encoder.long_distance_matching(true)?;
    }
    encoder.multithread(
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    )?;
    {
        let mut tar = tar::Builder::new(&mut encoder);
        tar.follow_symlinks(false);
        for (name, folder) in folders {
            tar.append_dir_all(name, folder)?;
        }
        tar.finish()?;
    }
    encoder.finish()?;
    Ok(())
}
