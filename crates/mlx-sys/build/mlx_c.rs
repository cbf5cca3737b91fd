//! Where the mlx-c sources come from.
//!
//! mlx-c 0.7.0 ships inside the published `mlx-sys` 0.7.0 package
//! (`src/mlx-c`). Rather than committing it, we ask Cargo to fetch that
//! package: `cargo metadata` on a throwaway manifest that depends on it
//! downloads and unpacks it into `$CARGO_HOME/registry/src`, and reports
//! where. It is tried `--offline` first (works from Cargo's cache with no
//! network), then online. `MLX_C_DIR` overrides all of this.

use crate::fail::fail;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MLX_C_PACKAGE: &str = "mlx-sys";
const MLX_C_PACKAGE_VERSION: &str = "0.7.0";
/// A stuck Cargo (a lock held elsewhere, a dead network) must not hang the build.
const CARGO_TIMEOUT: Duration = Duration::from_secs(300);

/// Returns the mlx-c source root (the folder holding `mlx/c/array.h`).
pub fn locate(out_dir: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=MLX_C_DIR");
    if let Some(dir) = env::var_os("MLX_C_DIR") {
        let dir = PathBuf::from(dir);
        if !is_mlx_c(&dir) {
            fail(&format!(
                "MLX_C_DIR={} is not an mlx-c source tree (no mlx/c/array.h)",
                dir.display()
            ));
        }
        return dir;
    }
    let manifest = write_fetch_manifest(&out_dir.join("mlx-c-fetch"));
    let mut errors = String::new();
    for offline in [true, false] {
        match cargo_metadata(&manifest, offline) {
            Ok(package_manifest) => {
                let root = package_manifest
                    .parent()
                    .map(|dir| dir.join("src/mlx-c"))
                    .unwrap_or_default();
                if is_mlx_c(&root) {
                    return root;
                }
                errors.push_str(&format!("{} has no src/mlx-c\n", root.display()));
            }
            Err(err) => errors.push_str(&format!("{err}\n")),
        }
    }
    fail(&format!(
        "could not get the mlx-c sources from Cargo's copy of crates.io `{MLX_C_PACKAGE}` \
         {MLX_C_PACKAGE_VERSION}:\n{errors}\
         Run once with network access, or set MLX_C_DIR to an mlx-c 0.7.0 source tree."
    ))
}

/// The files of mlx-c's `mlx/c` folder whose names end in `.{extension}`, sorted.
pub fn files(mlx_c: &Path, extension: &str) -> Vec<PathBuf> {
    let dir = mlx_c.join("mlx/c");
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == extension))
            .collect(),
        Err(err) => fail(&format!("cannot list {}: {err}", dir.display())),
    };
    files.sort();
    files
}

fn is_mlx_c(dir: &Path) -> bool {
    dir.join("mlx/c/array.h").is_file()
}

/// A stand-alone manifest (its own empty `[workspace]`) that depends on the
/// published package, so that Cargo downloads it; it is never built.
fn write_fetch_manifest(dir: &Path) -> PathBuf {
    let manifest = dir.join("Cargo.toml");
    let written = fs::create_dir_all(dir.join("src"))
        .and_then(|()| fs::write(dir.join("src/lib.rs"), ""))
        .and_then(|()| {
            fs::write(
                &manifest,
                format!(
                    "[package]\nname = \"mlx-c-source-fetch\"\nversion = \"0.0.0\"\n\
                     edition = \"2021\"\npublish = false\n\n[dependencies]\n\
                     {MLX_C_PACKAGE} = {{ version = \"={MLX_C_PACKAGE_VERSION}\", \
                     default-features = false }}\n\n[workspace]\n"
                ),
            )
        });
    if let Err(err) = written {
        fail(&format!("cannot write {}: {err}", manifest.display()));
    }
    manifest
}

/// Runs `cargo metadata` and returns the manifest path of the package.
fn cargo_metadata(manifest: &Path, offline: bool) -> Result<PathBuf, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if offline {
        command.arg("--offline");
    }
    // Cargo's own settings for the outer build (e.g. the target dir) must not leak in.
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS"] {
        command.env_remove(var);
    }
    let mode = if offline { "offline" } else { "online" };
    let child = command
        .spawn()
        .map_err(|err| format!("cannot run `{cargo} metadata`: {err}"))?;
    let output =
        wait_with_timeout(child).map_err(|err| format!("`cargo metadata` ({mode}): {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "`cargo metadata` ({mode}) failed: {}",
            stderr.trim()
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|err| format!("`cargo metadata` printed invalid JSON: {err}"))?;
    json["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| {
            package["name"] == MLX_C_PACKAGE && package["version"] == MLX_C_PACKAGE_VERSION
        })
        .and_then(|package| package["manifest_path"].as_str())
        .map(PathBuf::from)
        .ok_or_else(|| format!("`cargo metadata` ({mode}) did not list {MLX_C_PACKAGE}"))
}

fn wait_with_timeout(mut child: std::process::Child) -> Result<std::process::Output, String> {
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let stdout = child.stdout.take().map(read_on_thread);
    let stderr = child.stderr.take().map(read_on_thread);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > CARGO_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no answer after {} s (is another Cargo holding the package cache lock?)",
                    CARGO_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(err) => return Err(err.to_string()),
        }
    };
    let join = |handle: Option<std::thread::JoinHandle<Vec<u8>>>| {
        handle.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(std::process::Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

fn read_on_thread<R: std::io::Read + Send + 'static>(
    mut pipe: R,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = pipe.read_to_end(&mut buffer);
        buffer
    })
}
