//! Where downloaded files go: the Hugging Face cache layout (see
//! `crate::hf_cache`), with blobs named by ETag and relative symlinks from
//! the snapshot, or a plain `--local-dir`.

use crate::hf_cache;
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The destination of one download run.
pub enum Target {
    /// `{cache}/models--{org}--{name}` in the hub cache.
    Cache {
        /// The repo's folder in the cache.
        repo_dir: PathBuf,
        /// The commit being downloaded.
        commit: String,
    },
    /// Files straight under this folder.
    LocalDir(PathBuf),
}

impl Target {
    /// The cache target for `repo_id` at `commit` under `cache`.
    pub fn cache(cache: &Path, repo_id: &str, commit: &str) -> Target {
        Target::Cache {
            repo_dir: cache.join(hf_cache::repo_folder_name(repo_id)),
            commit: commit.to_owned(),
        }
    }

    /// The folder the model ends up in (the snapshot, or the local dir).
    pub fn model_dir(&self) -> PathBuf {
        match self {
            Target::Cache { repo_dir, commit } => repo_dir.join("snapshots").join(commit),
            Target::LocalDir(dir) => dir.clone(),
        }
    }

    /// Where the bytes of `file` (with hub ETag `etag`) are stored.
    pub fn storage_path(&self, file: &str, etag: &str) -> PathBuf {
        match self {
            Target::Cache { repo_dir, .. } => repo_dir.join("blobs").join(etag),
            Target::LocalDir(dir) => dir.join(file),
        }
    }

    /// Whether a stored file must be re-hashed to be trusted (plain files
    /// in a local dir may have been edited; cache blobs are named by hash).
    pub fn rehash_existing(&self) -> bool {
        matches!(self, Target::LocalDir(_))
    }

    /// Makes `file` visible in the model folder once its bytes are stored:
    /// a relative symlink `snapshots/{commit}/{file} -> ../../blobs/{etag}`
    /// in the cache; nothing to do for a local dir.
    pub fn publish(&self, file: &str, etag: &str) -> Result<()> {
        let Target::Cache { .. } = self else {
            return Ok(());
        };
        let link = self.model_dir().join(file);
        let depth = file.split('/').count() + 1;
        let mut blob = PathBuf::new();
        for _ in 0..depth {
            blob.push("..");
        }
        blob.push("blobs");
        blob.push(etag);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
        }
        link_or_copy(&blob, &link).with_context(|| format!("linking {}", link.display()))
    }

    /// Records `refs/{revision}` = commit in the cache (unless the revision
    /// is the commit itself).
    pub fn write_ref(&self, revision: &str) -> Result<()> {
        let Target::Cache { repo_dir, commit } = self else {
            return Ok(());
        };
        if revision == commit {
            return Ok(());
        }
        let path = repo_dir.join("refs").join(revision);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, commit).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(unix)]
fn link_or_copy(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Where symlinks are not available, copy as `huggingface_hub` does.
#[cfg(not(unix))]
fn link_or_copy(target: &Path, link: &Path) -> std::io::Result<()> {
    let source = link.parent().unwrap_or(Path::new(".")).join(target);
    fs::copy(source, link).map(drop)
}
