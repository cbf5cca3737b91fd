//! Where the project's generated files live.

use std::path::PathBuf;

/// The workspace root (this crate sits in `xtask/` under it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` or `<root>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Everything xtask generates: `<target>/xtask`.
pub fn xtask_dir() -> PathBuf {
    target_dir().join("xtask")
}
