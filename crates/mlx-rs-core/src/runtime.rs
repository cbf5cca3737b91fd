//! Facts about the MLX library this process runs on.

use std::ffi::CStr;

/// The version of the MLX library linked into this process (e.g. `0.32.2`),
/// or `None` if MLX cannot report it.
pub fn mlx_version() -> Option<String> {
    // SAFETY: mlx-c fills a string it owns; we copy it out before freeing it.
    unsafe {
        let mut text = mlx_sys::mlx_string_new();
        if mlx_sys::mlx_version(&mut text) != 0 {
            mlx_sys::mlx_string_free(text);
            return None;
        }
        let data = mlx_sys::mlx_string_data(text);
        let version =
            (!data.is_null()).then(|| CStr::from_ptr(data).to_string_lossy().into_owned());
        mlx_sys::mlx_string_free(text);
        version
    }
}

/// The device MLX computes on by default, as `cpu` or `gpu`.
pub fn default_device() -> String {
    match mlx_rs::Device::try_default().and_then(|device| device.get_type()) {
        Ok(mlx_rs::DeviceType::Gpu) => "gpu".to_owned(),
        Ok(mlx_rs::DeviceType::Cpu) => "cpu".to_owned(),
        Err(err) => format!("unknown ({err})"),
    }
}

/// Whether MLX computes on a GPU by default in this process (MLX's CUDA
/// build on an NVIDIA card, or Metal): where fused and compiled kernels
/// round differently from op-by-op ones, and where `--ranks` uses NCCL.
pub fn on_gpu() -> bool {
    matches!(
        mlx_rs::Device::try_default().and_then(|device| device.get_type()),
        Ok(mlx_rs::DeviceType::Gpu)
    )
}

/// Waits until MLX's default stream has finished all the work handed to
/// it (`mlx::core::synchronize`).
pub fn synchronize() -> crate::error::Result<()> {
    ensure_mlx_error_handler();
    // SAFETY: takes no arguments; failure is reported by the status.
    if unsafe { mlx_sys::mlx_synchronize_default() } != 0 {
        return Err(crate::error::Error::Mlx(mlx_rs::error::Exception::custom(
            "synchronizing the default stream failed",
        )));
    }
    Ok(())
}

/// Makes sure `mlx-rs`'s MLX error handler is installed before calling
/// mlx-c directly: mlx-c's default handler ends the process (`exit(-1)`).
/// `mlx-rs` installs its own, which records the message, on its first
/// checked op; this runs one. Call it before any direct mlx-c call.
pub fn ensure_mlx_error_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = mlx_rs::Array::from_int(0).as_dtype(mlx_rs::Dtype::Int32);
    });
}

/// The files of the shared libraries this process has loaded whose file
/// name contains `needle` (e.g. `libmlx`, `blas`), from `/proc/self/maps`
/// (Linux); empty where that is not available.
pub fn loaded_libraries(needle: &str) -> Vec<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut found: Vec<std::path::PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(std::path::PathBuf::from)
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().contains(needle))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_mlx_it_was_built_against() {
        let version = mlx_version().expect("MLX reports a version");
        // A libmlx other than the one mlx-c was compiled against would be a
        // broken install (wrong rpath or library path).
        let header_version = mlx_sys::MLX_HEADER_VERSION;
        assert!(
            version.starts_with(header_version),
            "{version} vs {header_version}"
        );
    }

    #[test]
    fn finds_the_loaded_libmlx() {
        let libs = loaded_libraries("libmlx");
        if cfg!(target_os = "linux") {
            assert_eq!(libs.len(), 1, "{libs:?}");
            assert!(libs[0].is_file(), "{libs:?}");
        }
    }
}
