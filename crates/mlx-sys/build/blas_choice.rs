//! Which BLAS the CPU build uses and where the system's OpenBLAS is: read
//! once here, for the build script (`blas`, `mlx_dist`) and for xtask, which
//! points mlx-lm's reference environment at the same library.
//!
//! Plain functions with no build-script output, so xtask can include this
//! file with `#[path]` without building MLX.

use std::env;
use std::path::{Path, PathBuf};

/// Where distributions put `libopenblas.so.0` (Debian's alternatives link,
/// its pthread build, Fedora, Arch).
pub const OPENBLAS_CANDIDATES: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
];

/// The BLAS behind the CPU wheel's `libmlx`, as `MLX_SYS_BLAS` chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blas {
    /// The system's OpenBLAS (the default).
    OpenBlas,
    /// The wheel's own netlib reference BLAS (`MLX_SYS_BLAS=bundled`).
    Bundled,
}

/// `MLX_SYS_BLAS`, or an error naming the accepted values.
pub fn choice() -> Result<Blas, String> {
    match env::var("MLX_SYS_BLAS").as_deref() {
        Err(_) | Ok("") | Ok("openblas") => Ok(Blas::OpenBlas),
        Ok("bundled") => Ok(Blas::Bundled),
        Ok(other) => Err(format!(
            "MLX_SYS_BLAS={other} is not one of `openblas` (the default) or `bundled`"
        )),
    }
}

/// `MLX_SYS_OPENBLAS` if set, else the first of [`OPENBLAS_CANDIDATES`]
/// that exists; the error says how to get one.
pub fn find_openblas() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os("MLX_SYS_OPENBLAS") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!("MLX_SYS_OPENBLAS={} is not a file", path.display()));
        }
        return Ok(path);
    }
    OPENBLAS_CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            format!(
                "OpenBLAS was not found (looked for {}).\n\
                 MLX's CPU wheel ships netlib's reference BLAS, which makes float32 matrix \
                 products about 34x slower, so this build uses the system's OpenBLAS instead. \
                 Install it (Debian/Ubuntu: `apt-get install libopenblas0-pthread`; Fedora: \
                 `dnf install openblas-threads`), or name it with MLX_SYS_OPENBLAS=/path/to/libopenblas.so.0, \
                 or keep the wheel's own BLAS with MLX_SYS_BLAS=bundled.",
                OPENBLAS_CANDIDATES.join(", ")
            )
        })
}
