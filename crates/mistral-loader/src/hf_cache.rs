//! The Hugging Face hub cache on disk, as `huggingface_hub` (and so mlx-lm
//! and `huggingface-cli`) lays it out:
//!
//! ```text
//! $HF_HUB_CACHE/models--{org}--{name}/
//!     blobs/{etag}                       file contents, named by hub ETag
//!     snapshots/{commit}/{file}          symlinks to ../../blobs/{etag}
//!     refs/{revision}                    the commit a branch or tag points at
//! ```
//!
//! This file is deliberately self-contained (std only, its own small error
//! type): `mistral-cli` resolves `--model <hub repo id>` with
//! [`snapshot_dir`] through mistral-loader, and xtask's downloader includes
//! the same file (`#[path]`) so that both agree on the layout without xtask
//! building MLX.

use std::fmt;
use std::path::{Path, PathBuf};

/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// Why a repo id could not be resolved to a local snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// The repo id is not `name` or `org/name` of safe characters.
    InvalidRepoId(String),
    /// The revision is empty or could escape the cache folder.
    InvalidRevision(String),
    /// Nothing for this repo and revision is in the cache.
    NotCached {
        /// The repo id asked for.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The cache folder searched.
        cache: PathBuf,
    },
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::InvalidRepoId(id) => write!(
                f,
                "invalid repo id {id:?}: expected `name` or `org/name` (letters, digits, `-`, `_`, `.`)"
            ),
            CacheError::InvalidRevision(rev) => write!(f, "invalid revision {rev:?}"),
            CacheError::NotCached {
                repo_id,
                revision,
                cache,
            } => write!(
                f,
                "{repo_id} (revision {revision}) is not in the Hugging Face cache {}; run `cargo xtask download {repo_id}`",
                cache.display()
            ),
        }
    }
}

impl std::error::Error for CacheError {}

/// The hub cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (`$XDG_CACHE_HOME/huggingface/hub` when set).
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    hf_home().join("hub")
}

/// The Hugging Face home: `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`,
/// else `~/.cache/huggingface` (also where `huggingface-cli login` keeps
/// its `token`).
pub fn hf_home() -> PathBuf {
    if let Some(dir) = non_empty_env("HF_HOME") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty_env("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("huggingface");
    }
    let home = non_empty_env("HOME")
        .or_else(|| non_empty_env("USERPROFILE"))
        .unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("huggingface")
}

fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Checks that `repo_id` is `name` or `org/name`, each part made of ASCII
/// letters, digits, `-`, `_` and `.` (and not `.` or `..`), as the hub allows.
pub fn validate_repo_id(repo_id: &str) -> Result<(), CacheError> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    let ok = (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(CacheError::InvalidRepoId(repo_id.to_owned()))
    }
}

/// Checks that `revision` (a branch, tag, `refs/pr/N` or commit) is safe to
/// use as a path under `refs/`.
pub fn validate_revision(revision: &str) -> Result<(), CacheError> {
    let ok = !revision.is_empty()
        && !revision.starts_with('/')
        && !revision.contains('\\')
        && revision
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        Ok(())
    } else {
        Err(CacheError::InvalidRevision(revision.to_owned()))
    }
}

/// The cache folder name of a model repo: `models--{org}--{name}`.
pub fn repo_folder_name(repo_id: &str) -> String {
    format!("models--{}", repo_id.replace('/', "--"))
}

/// Whether `revision` looks like a full commit hash (40 hex digits).
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// The snapshot folder of `repo_id` at `revision` (default `main`) in the
/// cache at `cache` (usually [`hub_cache_dir`]): `refs/{revision}` names
/// the commit, or `revision` is a commit itself.
pub fn snapshot_dir(
    cache: &Path,
    repo_id: &str,
    revision: Option<&str>,
) -> Result<PathBuf, CacheError> {
    validate_repo_id(repo_id)?;
    let revision = revision.unwrap_or(DEFAULT_REVISION);
    validate_revision(revision)?;
    let repo = cache.join(repo_folder_name(repo_id));
    let commit = if is_commit_hash(revision) {
        Some(revision.to_owned())
    } else {
        std::fs::read_to_string(repo.join("refs").join(revision))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| is_commit_hash(s))
    };
    commit
        .map(|c| repo.join("snapshots").join(c))
        .filter(|dir| dir.is_dir())
        .ok_or_else(|| CacheError::NotCached {
            repo_id: repo_id.to_owned(),
            revision: revision.to_owned(),
            cache: cache.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(validate_repo_id("mistralai/Mistral-7B-v0.1").is_ok());
        assert!(validate_repo_id("gpt2").is_ok());
        for bad in ["", "a/b/c", "../x", "a/..", "a b/c", "/x", "x/"] {
            assert!(validate_repo_id(bad).is_err(), "{bad}");
        }
        assert_eq!(repo_folder_name("org/name"), "models--org--name");
    }

    #[test]
    fn revisions() {
        assert!(validate_revision("main").is_ok());
        assert!(validate_revision("refs/pr/1").is_ok());
        for bad in ["", "/etc", "a/../b", "..", "a\\b"] {
            assert!(validate_revision(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshot_lookup() {
        let cache = std::env::temp_dir().join(format!("hf-cache-test-{}", std::process::id()));
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo = cache.join("models--org--m");
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        let want = repo.join("snapshots").join(commit);
        assert_eq!(snapshot_dir(&cache, "org/m", None).unwrap(), want);
        assert_eq!(snapshot_dir(&cache, "org/m", Some(commit)).unwrap(), want);
        assert!(matches!(
            snapshot_dir(&cache, "org/m", Some("dev")),
            Err(CacheError::NotCached { .. })
        ));
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
