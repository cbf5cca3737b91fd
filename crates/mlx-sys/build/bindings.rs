//! Rust bindings for mlx-c's public headers (`mlx/c/*.h`), as the published
//! mlx-sys generates them, so that mlx-rs finds the same names.

use crate::fail::fail;
use std::path::Path;

pub fn generate(mlx_c: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    let mut headers = crate::mlx_c::files(mlx_c, "h");
    // Our shims' C entry points (`csrc/*.h`), beside mlx-c's.
    let shims = crate::compile::shim_dir();
    if let Ok(entries) = std::fs::read_dir(&shims) {
        let mut ours: Vec<_> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "h"))
            .collect();
        ours.sort();
        headers.extend(ours);
    }
    let builder = headers.iter().fold(
        bindgen::Builder::default()
            .rust_target("1.73.0".parse().expect("a valid Rust version"))
            .clang_arg(format!("-I{}", mlx_c.display()))
            // Declared by libc already; bindgen's sizes differ from Rust's.
            .blocklist_function("malloc")
            .blocklist_function("realloc"),
        |builder, header| builder.header(header.to_string_lossy()),
    );
    // bindgen panics when it cannot load libclang; turn that into a clear message.
    let generated =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate()));
    let bindings = match generated {
        Ok(Ok(bindings)) => bindings,
        Ok(Err(err)) => fail(&format!("bindgen failed on mlx-c's headers: {err}")),
        Err(_) => fail(
            "bindgen could not load libclang. Install it \
             (Debian/Ubuntu: `apt-get install libclang-dev`) or set LIBCLANG_PATH.",
        ),
    };
    let path = out_dir.join("bindings.rs");
    if let Err(err) = bindings.write_to_file(&path) {
        fail(&format!("cannot write {}: {err}", path.display()));
    }
}
