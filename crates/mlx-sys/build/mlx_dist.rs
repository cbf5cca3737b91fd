//! Where MLX (headers and `libmlx`) comes from.

use crate::blas_choice::{self, Blas};
use crate::fail::fail;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The MLX release mlx-c 0.7.0 is written against. 0.32.4 changed
/// `gather_qmm` and mlx-c no longer compiles against it.
const MLX_VERSION: &str = "0.32.2";

/// An MLX install: `include/mlx/mlx.h` and `lib/libmlx.{so,dylib}`.
pub struct MlxDist {
    pub include_dir: PathBuf,
    pub lib_dir: PathBuf,
    /// The CUDA wheel's `libmlx.so` needs NVIDIA libraries that are only
    /// present on the machine that runs it, not on the one that links it.
    pub needs_shlib_undefined: bool,
    /// Extra preprocessor definitions MLX's own CMake config would add.
    pub defines: Vec<&'static str>,
    /// The folder the wheel was installed into (None for `MLX_DIR`).
    pub wheel_root: Option<PathBuf>,
}

impl MlxDist {
    /// `major.minor.patch` from `include/mlx/version.h`.
    pub fn header_version(&self) -> String {
        let path = self.include_dir.join("mlx/version.h");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| fail(&format!("cannot read {}: {err}", path.display())));
        let number = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix("#define ")?.strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .unwrap_or_else(|| fail(&format!("{} has no {name}", path.display())))
        };
        let [major, minor, patch] = [
            "MLX_VERSION_MAJOR",
            "MLX_VERSION_MINOR",
            "MLX_VERSION_PATCH",
        ]
        .map(number);
        format!("{major}.{minor}.{patch}")
    }
}

pub fn locate(out_dir: &Path) -> MlxDist {
    println!("cargo:rerun-if-env-changed=MLX_DIR");
    let cuda = env::var_os("CARGO_FEATURE_CUDA").is_some();
    let apple = env::var("CARGO_CFG_TARGET_VENDOR").as_deref() == Ok("apple");
    let mut wheel_root = None;
    let prefix = match env::var_os("MLX_DIR") {
        Some(dir) => user_prefix(Path::new(&dir)),
        None => {
            let package = if apple {
                "mlx-metal"
            } else if cuda {
                "mlx-cuda-13"
            } else {
                "mlx-cpu"
            };
            let target = wheel_dir(out_dir, package);
            let prefix = install_wheel(package, &target);
            wheel_root = Some(target);
            prefix
        }
    };
    let mut defines = Vec::new();
    if apple && env::var_os("CARGO_FEATURE_METAL").is_some() {
        defines.push("_METAL_");
    }
    MlxDist {
        include_dir: prefix.join("include"),
        lib_dir: prefix.join("lib"),
        needs_shlib_undefined: cuda && !apple,
        defines,
        wheel_root,
    }
}

/// Where the wheel goes: a stable per-user folder, one per MLX version,
/// package and BLAS choice (`$MLX_SYS_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/mistral-mlx`, else `~/.cache/mistral-mlx`), so that the
/// binaries' rpath outlives `cargo clean`, `cargo install`'s temporary
/// build folder and copies of the binary; `OUT_DIR` only where no such
/// folder can be named.
fn wheel_dir(out_dir: &Path, package: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed=MLX_SYS_CACHE_DIR");
    println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");
    println!("cargo:rerun-if-env-changed=HOME");
    let nonempty = |name: &str| {
        env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let root = nonempty("MLX_SYS_CACHE_DIR")
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| d.join("mistral-mlx")))
        .or_else(|| nonempty("HOME").map(|d| d.join(".cache/mistral-mlx")));
    // The CPU wheel's BLAS files are replaced in place (see `blas`), so each
    // choice gets its own copy of the wheel.
    let variant = if package == "mlx-cpu" {
        match blas_choice::choice().unwrap_or_else(|err| fail(&err)) {
            Blas::Bundled => "-bundled-blas",
            Blas::OpenBlas => "-openblas",
        }
    } else {
        ""
    };
    let name = format!("{package}-{MLX_VERSION}{variant}");
    match root {
        Some(root) => root.join(name),
        None => {
            println!(
                "cargo:warning=no HOME, XDG_CACHE_HOME or MLX_SYS_CACHE_DIR: MLX goes under OUT_DIR, \
                 and binaries stop working after `cargo clean`"
            );
            out_dir.join("mlx-dist").join(name)
        }
    }
}

/// Accepts an install prefix, or its `share/cmake/MLX` folder (what CMake's
/// `MLX_DIR` names), or a Python environment's `site-packages/mlx`.
fn user_prefix(dir: &Path) -> PathBuf {
    let candidates = [dir.to_path_buf(), dir.join("../../.."), dir.join("mlx")];
    match candidates
        .iter()
        .find(|prefix| prefix.join("include/mlx/mlx.h").is_file())
    {
        Some(prefix) => prefix.canonicalize().unwrap_or_else(|_| prefix.clone()),
        None => fail(&format!(
            "MLX_DIR={} holds no MLX install: expected include/mlx/mlx.h and lib/libmlx under it",
            dir.display()
        )),
    }
}

/// Installs MLX's official wheel into `target` (not into any Python
/// environment of the user's) and returns the MLX prefix inside it. The
/// wheel is installed into a temporary sibling folder and renamed into
/// place, so that concurrent builds never see half an install.
fn install_wheel(package: &str, target: &Path) -> PathBuf {
    let prefix = target.join("mlx");
    let stamp = target.join(format!(".installed-{package}-{MLX_VERSION}"));
    if stamp.is_file() && prefix.join("include/mlx/mlx.h").is_file() {
        return prefix;
    }
    let parent = target.parent().unwrap_or(target);
    std::fs::create_dir_all(parent).unwrap_or_else(|err| {
        fail(&format!(
            "cannot create {} for MLX ({err}); set MLX_SYS_CACHE_DIR to a writable folder",
            parent.display()
        ))
    });
    let staging = parent.join(format!(
        ".{}.partial-{}",
        target.file_name().and_then(|n| n.to_str()).unwrap_or("mlx"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    println!("cargo:rerun-if-env-changed=PYTHON");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args([
            "--no-deps",
            "--only-binary=:all:",
            "--no-warn-script-location",
        ])
        .arg("--target")
        .arg(&staging)
        .arg(format!("{package}=={MLX_VERSION}"))
        .env("PIP_REQUIRE_VIRTUALENV", "0")
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "`{python} -m pip install {package}=={MLX_VERSION}` failed ({status}).\n\
             It downloads MLX's official binary package from PyPI. Without network access, \
             install MLX yourself and set MLX_DIR to its prefix (the folder with include/ and lib/)."
        )),
        Err(err) => fail(&format!(
            "could not run `{python}` ({err}). MLX is installed from its official Python \
             wheel: install python3 and pip (Debian/Ubuntu: `apt-get install python3-pip`), \
             or set MLX_DIR to an MLX install prefix."
        )),
    }
    if !staging.join("mlx/include/mlx/mlx.h").is_file() {
        fail(&format!(
            "the {package} wheel installed into {} has no mlx/include/mlx/mlx.h",
            staging.display()
        ));
    }
    let _ = std::fs::write(
        staging.join(format!(".installed-{package}-{MLX_VERSION}")),
        "",
    );
    // An older partial install without its stamp is replaced; a complete
    // one that a concurrent build put there first is kept.
    if target.exists() && !stamp.is_file() {
        let _ = std::fs::remove_dir_all(target);
    }
    if std::fs::rename(&staging, target).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if !stamp.is_file() {
            fail(&format!(
                "cannot move the MLX wheel into {}",
                target.display()
            ));
        }
    }
    prefix
}
