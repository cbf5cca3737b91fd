//! `--model`: a directory, a GGUF file, or a Hugging Face repo id already
//! downloaded into the local Hugging Face cache (by mlx-lm,
//! `huggingface-cli` or `cargo xtask download`).

use anyhow::{bail, Result};
use mistral_loader::hf_cache;
use std::path::{Path, PathBuf};

/// The model directory or GGUF file `model` names.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() || (path.is_file() && mistral_loader::gguf::find_gguf(path)?.is_some()) {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        bail!("--model {model}: not a directory or a .gguf file");
    }
    let looks_like_repo = hf_cache::validate_repo_id(model).is_ok() && !model.starts_with('.');
    if !looks_like_repo {
        bail!("--model {model}: no such directory");
    }
    let cache = hf_cache::hub_cache_dir();
    match hf_cache::snapshot_dir(&cache, model, None) {
        Ok(dir) => Ok(dir),
        Err(_) => bail!(
            "--model {model}: no such directory, and no download of that repo in the Hugging Face \
             cache {} (fetch it with `cargo xtask download {model}`)",
            cache.display()
        ),
    }
}
