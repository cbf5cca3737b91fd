//! Build script of our `mlx-sys`: compiles mlx-c against a packaged MLX and
//! generates its Rust bindings, on Linux (CPU or CUDA) and macOS (Metal).
//!
//! Steps, each in its own module:
//! 1. [`mlx_dist`]: find MLX: `MLX_DIR` if set, else MLX's official Python
//!    wheel (`mlx-cpu`, `mlx-cuda-13` or `mlx-metal`, version 0.32.2)
//!    installed with pip into a per-user cache folder (not any Python
//!    environment; `MLX_SYS_CACHE_DIR` overrides where).
//!    On Linux, [`blas`] points the CPU wheel's bundled reference BLAS at the
//!    system's OpenBLAS (opt out with `MLX_SYS_BLAS=bundled`).
//! 2. [`mlx_c`]: find the mlx-c sources: `MLX_C_DIR` if set, else the copy in
//!    the published `mlx-sys` 0.7.0 package, which Cargo itself downloads and
//!    unpacks into its registry. No third-party source lives in this repository.
//! 3. [`compile`]: compile mlx-c into a static library with the `cc` crate.
//! 4. [`bindings`]: run bindgen over mlx-c's public headers.
//!
//! Dependents get `DEP_MLX_LIBDIR` (where `libmlx` lives) and, for the CUDA
//! wheel, `DEP_MLX_ALLOW_SHLIB_UNDEFINED`; `link_mlx.rs` turns them into a
//! library search path for every binary, test and example of the workspace.

mod bindings;
mod blas;
mod blas_choice;
mod compile;
mod fail;
#[path = "../link_mlx.rs"]
mod link_mlx;
mod mlx_c;
mod mlx_dist;

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let mlx = mlx_dist::locate(&out_dir);
    let blas = blas::select(mlx.wheel_root.as_deref());
    println!("cargo:rustc-env=MLX_SYS_BLAS={blas}");
    let mlx_c = mlx_c::locate(&out_dir);
    compile::mlx_c(&mlx_c, &mlx, &out_dir);
    bindings::generate(&mlx_c, &out_dir);

    println!(
        "cargo:rustc-env=MLX_SYS_HEADER_VERSION={}",
        mlx.header_version()
    );
    let lib = mlx.lib_dir.display();
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-lib=dylib=mlx");
    if env::var("CARGO_CFG_TARGET_VENDOR").as_deref() == Ok("apple") {
        println!("cargo:rustc-link-lib=dylib=c++");
    } else {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }
    // Read by dependents' build scripts as DEP_MLX_*.
    println!("cargo:LIBDIR={lib}");
    if mlx.needs_shlib_undefined {
        println!("cargo:ALLOW_SHLIB_UNDEFINED=1");
    }
    let apple = env::var("CARGO_CFG_TARGET_VENDOR").as_deref() == Ok("apple");
    for arg in link_mlx::link_args(&lib.to_string(), mlx.needs_shlib_undefined, apple) {
        println!("cargo:rustc-link-arg={arg}");
    }
}
