//! Compiles mlx-c's C++ sources into `libmlxc.a` with the `cc` crate.
//!
//! The file list is mlx-c's `mlx/c/*.cpp` less `object.cpp`, which mlx-c's
//! own CMake build leaves out too, plus our own C++ shims in `csrc/` (see
//! [`shims`]), which use MLX's C++ API where mlx-c has no call.

use crate::fail::fail;
use crate::mlx_dist::MlxDist;
use std::fs;
use std::path::{Path, PathBuf};

pub fn mlx_c(mlx_c: &Path, mlx: &MlxDist, out_dir: &Path) {
    let mut sources = crate::mlx_c::files(mlx_c, "cpp");
    sources.retain(|path| !path.ends_with("object.cpp"));
    sources.extend(shims());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .include(mlx_c)
        .include(shim_dir())
        .include(&mlx.include_dir)
        .files(&sources)
        .warnings(false)
        .extra_warnings(false)
        // Thin wrappers over libmlx: optimise them even in debug builds, and
        // skip debug info, which costs minutes on MLX's template-heavy headers.
        .opt_level(2)
        .debug(false);
    for define in &mlx.defines {
        build.define(define, None);
    }
    check_compiler(&build, out_dir);
    if !has_std_format(&build, out_dir, None) {
        let shim = write_format_shim(out_dir);
        if !has_std_format(&build, out_dir, Some(&shim)) {
            fail(
                "mlx-c uses C++20 std::format, which this C++ standard library lacks \
                 (libstdc++ < 13), and the {fmt} library to stand in for it was not found. \
                 Install it (Debian/Ubuntu: `apt-get install libfmt-dev`) or use g++ >= 13.",
            );
        }
        build.flag("-include").flag(shim.to_string_lossy().as_ref());
    }
    build.compile("mlxc");
}

/// Our C++ shims' folder (`csrc/`): their C headers are bound too (see
/// `bindings.rs`).
pub fn shim_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("csrc")
}

/// Our C++ shims: `csrc/*.cpp` (today the CPU quantized product as an MLX
/// primitive, `cpu_qmm.cpp` and its `qmm_*` parts; `csrc/*.h` are their C
/// entry points for bindgen, `*.hpp` internal). Instruction-set-specific code in them
/// uses per-function target attributes, so no global `-m` flag is needed.
pub fn shims() -> Vec<PathBuf> {
    println!("cargo:rerun-if-changed=csrc");
    let dir = shim_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| fail(&format!("cannot list {}: {err}", dir.display())))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "cpp"))
        .collect();
    files.sort();
    files
}

fn check_compiler(build: &cc::Build, out_dir: &Path) {
    let probe = out_dir.join("probe-compiler.cpp");
    let _ = fs::write(&probe, "int main() { return 0; }\n");
    if !compiles(build, out_dir, &probe, None) {
        fail(
            "no working C++20 compiler was found. Install one \
             (Debian/Ubuntu: `apt-get install g++`), or name it with CXX.",
        );
    }
}

fn has_std_format(build: &cc::Build, out_dir: &Path, shim: Option<&Path>) -> bool {
    let probe = out_dir.join("probe-format.cpp");
    let _ = fs::write(
        &probe,
        "#include <string>\nint main() { return (int) std::format(\"{}\", 1).size(); }\n",
    );
    compiles(build, out_dir, &probe, shim)
}

fn compiles(build: &cc::Build, out_dir: &Path, source: &Path, include: Option<&Path>) -> bool {
    let Ok(compiler) = build.try_get_compiler() else {
        return false;
    };
    let mut command = compiler.to_command();
    if let Some(header) = include {
        command.arg("-include").arg(header);
    }
    command
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(out_dir.join("probe.o"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command.status().is_ok_and(|status| status.success())
}

/// A force-included header that supplies `std::format` from header-only {fmt}.
fn write_format_shim(out_dir: &Path) -> PathBuf {
    let shim = out_dir.join("mlx_sys_std_format.h");
    let text = "#pragma once\n\
                // Written by mlx-sys's build script: libstdc++ < 13 has no <format>.\n\
                #define FMT_HEADER_ONLY\n\
                #include <fmt/format.h>\n\
                namespace std { using ::fmt::format; }\n";
    if let Err(err) = fs::write(&shim, text) {
        fail(&format!("cannot write {}: {err}", shim.display()));
    }
    shim
}
