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

use crate::blas_choice::{self, Blas};
use crate::fail::fail;
use std::fs;
use std::path::{Path, PathBuf};

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
    match blas_choice::choice().unwrap_or_else(|err| fail(&err)) {
        Blas::Bundled => {
            for file in &bundled {
                restore(file);
            }
            "bundled reference BLAS (MLX_SYS_BLAS=bundled)".to_owned()
        }
        Blas::OpenBlas => {
            let openblas = blas_choice::find_openblas().unwrap_or_else(|err| fail(&err));
            for file in &bundled {
                link_to(file, &openblas);
            }
            format!("OpenBLAS ({})", openblas.display())
        }
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
