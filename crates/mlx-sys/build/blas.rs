//! Which BLAS the `mlx-cpu` wheel's `libmlx` uses on Linux.
//!
//! The wheel bundles netlib's reference BLAS and LAPACK
//! (`mlx_cpu.libs/libblas-<hash>.so.3.10.0`, found through `libmlx.so`'s
//! rpath `$ORIGIN/../../mlx_cpu.libs`). A float32 4096-wide matmul runs about
//! 34x faster with OpenBLAS, which exports the same `cblas_*` and LAPACK
//! symbols. So by default both bundled files are replaced by links to the
//! system's `libopenblas.so.0` (Debian/Ubuntu: `libopenblas0-pthread`), the
//! originals kept beside them as `*.netlib`.
//!
//! `MLX_SYS_BLAS=bundled` keeps (or restores) the wheel's own libraries;
//! `MLX_SYS_OPENBLAS=/path/to/libopenblas.so.0` names the library to use.
//! An `MLX_DIR` install is the user's and is never touched.

use crate::fail::fail;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// Where distributions put `libopenblas.so.0` (Debian's alternatives link,
/// its pthread build, Fedora, Arch).
const OPENBLAS_CANDIDATES: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
];

/// The BLAS the build ended up with, for `mlx_sys::BLAS`.
pub fn select(wheel_root: Option<&Path>) -> String {
    println!("cargo:rerun-if-env-changed=MLX_SYS_BLAS");
    println!("cargo:rerun-if-env-changed=MLX_SYS_OPENBLAS");
    let Some(libs) = wheel_root
        .map(|root| root.join("mlx_cpu.libs"))
        .filter(|dir| dir.is_dir())
    else {
        return "as installed (MLX_DIR or a non-CPU wheel)".to_owned();
    };
    let bundled = bundled_files(&libs);
    let choice = env::var("MLX_SYS_BLAS").unwrap_or_else(|_| "openblas".to_owned());
    match choice.as_str() {
        "bundled" => {
            for file in &bundled {
                restore(file);
            }
            "bundled reference BLAS (MLX_SYS_BLAS=bundled)".to_owned()
        }
        "openblas" => {
            let openblas = find_openblas();
            for file in &bundled {
                link_to(file, &openblas);
            }
            format!("OpenBLAS ({})", openblas.display())
        }
        other => fail(&format!(
            "MLX_SYS_BLAS={other} is not one of `openblas` (the default) or `bundled`"
        )),
    }
}

/// The wheel's `libblas-*` and `liblapack-*` files (by their original names).
fn bundled_files(libs: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(libs)
        .unwrap_or_else(|err| fail(&format!("cannot list {}: {err}", libs.display())));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let name = name.strip_suffix(".netlib").unwrap_or(&name).to_owned();
            (name.starts_with("libblas-") || name.starts_with("liblapack-"))
                .then(|| libs.join(name))
        })
        .collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        fail(&format!(
            "{} holds no libblas-*/liblapack-* files: not the mlx-cpu wheel layout this build knows",
            libs.display()
        ));
    }
    files
}

fn find_openblas() -> PathBuf {
    if let Some(path) = env::var_os("MLX_SYS_OPENBLAS") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            fail(&format!(
                "MLX_SYS_OPENBLAS={} is not a file",
                path.display()
            ));
        }
        return path;
    }
    match OPENBLAS_CANDIDATES.iter().map(Path::new).find(|p| p.is_file()) {
        Some(path) => path.to_path_buf(),
        None => fail(&format!(
            "OpenBLAS was not found (looked for {}).\n\
             MLX's CPU wheel ships netlib's reference BLAS, which makes float32 matrix \
             products about 34x slower, so this build uses the system's OpenBLAS instead. \
             Install it (Debian/Ubuntu: `apt-get install libopenblas0-pthread`; Fedora: \
             `dnf install openblas-threads`), or name it with MLX_SYS_OPENBLAS=/path/to/libopenblas.so.0, \
             or keep the wheel's own BLAS with MLX_SYS_BLAS=bundled.",
            OPENBLAS_CANDIDATES.join(", ")
        )),
    }
}

fn saved(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".netlib");
    PathBuf::from(name)
}

/// Moves the original aside (once) and puts a link to `target` in its place.
fn link_to(file: &Path, target: &Path) {
    if fs::read_link(file).is_ok_and(|current| current == target) {
        // Already in place: binaries may be running on it, leave it be.
        return;
    }
    let original = saved(file);
    let is_link = fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link && file.exists() && !original.exists() {
        fs::rename(file, &original)
            .unwrap_or_else(|err| fail(&format!("cannot move {} aside: {err}", file.display())));
    }
    let _ = fs::remove_file(file);
    std::os::unix::fs::symlink(target, file).unwrap_or_else(|err| {
        fail(&format!(
            "cannot link {} to {}: {err}",
            file.display(),
            target.display()
        ))
    });
}

/// Puts the wheel's own library back if it was replaced.
fn restore(file: &Path) {
    let original = saved(file);
    if original.exists() {
        let _ = fs::remove_file(file);
        fs::rename(&original, file)
            .unwrap_or_else(|err| fail(&format!("cannot restore {}: {err}", file.display())));
    }
}
