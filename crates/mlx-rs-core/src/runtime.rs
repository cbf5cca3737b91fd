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
}
