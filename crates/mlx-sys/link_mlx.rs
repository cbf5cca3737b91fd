//! Shared build script of the workspace crates that link MLX (named with
//! `build = "../mlx-sys/link_mlx.rs"`; mlx-sys's own build script uses
//! [`link_args`] too).
//!
//! A library's `cargo:rustc-link-arg` reaches only its own package's
//! binaries, so each crate that has binaries, tests or examples passes on
//! what mlx-sys publishes (`DEP_MLX_*`, which Cargo gives to crates that
//! depend on mlx-sys directly):
//! - a search path for `libmlx`, in this order: `$ORIGIN/../lib/mlx/lib`
//!   (the layout of `cargo xtask dist`, where `lib/` mirrors the wheel's
//!   `mlx/` and `mlx_*.libs/` folders), then the folder MLX was installed
//!   into (a stable per-user cache, so `cargo install` and `cargo clean`
//!   leave working binaries). On Linux it is written as `DT_RPATH`
//!   (`--disable-new-dtags`), which, unlike `DT_RUNPATH`, also applies to
//!   the libraries `libmlx` loads (OpenBLAS's own dependencies in a bundle);
//! - for the CUDA build, leave the NVIDIA libraries `libmlx.so` needs to be
//!   resolved on the machine that runs it.

/// The linker arguments for a binary that links `libmlx` from `libdir`.
pub fn link_args(libdir: &str, allow_shlib_undefined: bool, apple: bool) -> Vec<String> {
    let mut args = Vec::new();
    if apple {
        args.push("-Wl,-rpath,@executable_path/../lib/mlx/lib".to_owned());
    } else {
        args.push("-Wl,--disable-new-dtags".to_owned());
        args.push("-Wl,-rpath,$ORIGIN/../lib/mlx/lib".to_owned());
    }
    args.push(format!("-Wl,-rpath,{libdir}"));
    if allow_shlib_undefined {
        args.push("-Wl,--allow-shlib-undefined".to_owned());
    }
    args
}

#[allow(dead_code)]
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_LIBDIR") {
        let apple = std::env::var("CARGO_CFG_TARGET_VENDOR").as_deref() == Ok("apple");
        let undefined = std::env::var_os("DEP_MLX_ALLOW_SHLIB_UNDEFINED").is_some();
        for arg in link_args(&dir, undefined, apple) {
            println!("cargo:rustc-link-arg={arg}");
        }
    }
}
