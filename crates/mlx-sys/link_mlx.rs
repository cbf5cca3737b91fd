//! Shared build script of the workspace crates that link MLX (named with
//! `build = "../mlx-sys/link_mlx.rs"`).
//!
//! A library's `cargo:rustc-link-arg` reaches only its own package's
//! binaries, so each crate that has binaries, tests or examples passes on
//! what mlx-sys publishes (`DEP_MLX_*`, which Cargo gives to crates that
//! depend on mlx-sys directly): an rpath to `libmlx`, so nothing needs
//! `LD_LIBRARY_PATH`, and for the CUDA build, leave the NVIDIA libraries
//! `libmlx.so` needs to be resolved on the machine that runs it.

fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var_os("DEP_MLX_ALLOW_SHLIB_UNDEFINED").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
}
