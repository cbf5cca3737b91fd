//! `cargo xtask download <repo-id>`: fetches a model (config, tokenizer
//! files, safetensors weights) from the Hugging Face hub into the hub cache,
//! where mlx-lm and `huggingface-cli` find it too, or into `--local-dir`.
//!
//! - `hub`: the HTTP side (file list, sizes and ETags, GETs).
//! - `file_set`: which files make up a model.
//! - `transfer`: one file's bytes, resumed and verified.
//! - `cache_layout`: where they go on disk.
//!
//! Settings come from the same environment variables as `huggingface_hub`:
//! `HF_ENDPOINT`, `HF_TOKEN` (or the token file `huggingface-cli login`
//! writes), `HF_HOME`, `HF_HUB_CACHE`.

mod cache_layout;
mod file_set;
mod hub;
mod transfer;

use crate::hf_cache;
use anyhow::{bail, Context, Result};
use cache_layout::Target;
use hub::Hub;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// One download: what to fetch, from where, to where.
pub struct Request {
    /// `org/name` on the hub.
    pub repo_id: String,
    /// Branch, tag or commit.
    pub revision: String,
    /// The hub, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<String>,
    /// The hub cache folder (used unless `local_dir` is set).
    pub cache_dir: PathBuf,
    /// Write plain files here instead of into the cache.
    pub local_dir: Option<PathBuf>,
}

impl Request {
    /// A request for `repo_id` with endpoint, token and cache taken from
    /// the environment.
    pub fn from_env(repo_id: &str, revision: Option<&str>, local_dir: Option<PathBuf>) -> Request {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        Request {
            repo_id: repo_id.to_owned(),
            revision: revision.unwrap_or(hf_cache::DEFAULT_REVISION).to_owned(),
            endpoint,
            token: token_from_env(),
            cache_dir: hf_cache::hub_cache_dir(),
            local_dir,
        }
    }
}

/// `HF_TOKEN`, else the token saved by `huggingface-cli login`.
fn token_from_env() -> Option<String> {
    let token = std::env::var("HF_TOKEN")
        .ok()
        .or_else(|| std::fs::read_to_string(hf_cache::hf_home().join("token")).ok())?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// Downloads the model and returns the folder that holds it (the cache
/// snapshot or the local dir).
pub fn download(req: &Request) -> Result<PathBuf> {
    hf_cache::validate_repo_id(&req.repo_id)?;
    hf_cache::validate_revision(&req.revision)?;
    let hub = Hub::new(&req.endpoint, req.token.clone());
    let info = hub.repo_info(&req.repo_id, &req.revision)?;
    if !hf_cache::is_commit_hash(&info.sha) {
        bail!("the hub sent an invalid commit {:?}", info.sha);
    }
    let available: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let plan = file_set::plan(&req.repo_id, &available)?;
    let target = match &req.local_dir {
        Some(dir) => Target::LocalDir(dir.clone()),
        None => Target::cache(&req.cache_dir, &req.repo_id, &info.sha),
    };
    let mut files = plan.files;
    if plan.sharded {
        let index = fetch_one(&hub, req, &info.sha, &target, file_set::WEIGHTS_INDEX)?;
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("reading {}", index.display()))?;
        files.extend(file_set::shards(&text, &available)?);
    }
    for file in files.iter().filter(|f| *f != file_set::WEIGHTS_INDEX) {
        fetch_one(&hub, req, &info.sha, &target, file)?;
    }
    target.write_ref(&req.revision)?;
    match target {
        Target::LocalDir(dir) => Ok(dir),
        // Resolve it the way the CLI will, so the two cannot drift apart.
        Target::Cache { .. } => Ok(hf_cache::snapshot_dir(
            &req.cache_dir,
            &req.repo_id,
            Some(&req.revision),
        )?),
    }
}

/// Fetches one file unless an intact copy is already there; returns its
/// path in the model folder.
fn fetch_one(
    hub: &Hub,
    req: &Request,
    commit: &str,
    target: &Target,
    file: &str,
) -> Result<PathBuf> {
    check_file_name(file)?;
    let meta = hub.file_meta(&req.repo_id, commit, file)?;
    if meta.etag.is_empty() || meta.etag.contains(['/', '\\']) || meta.etag.starts_with('.') {
        bail!("{file}: the hub sent an unusable ETag {:?}", meta.etag);
    }
    let stored = target.storage_path(file, &meta.etag);
    if transfer::matches(&stored, &meta, target.rehash_existing()) {
        eprintln!("{file}: up to date");
    } else {
        let url = hub.file_url(&req.repo_id, commit, file);
        transfer::fetch(hub, &url, file, &meta, &stored)?;
    }
    target.publish(file, &meta.etag)?;
    Ok(target.model_dir().join(file))
}

/// Refuses file names that could leave the model folder.
fn check_file_name(file: &str) -> Result<()> {
    let path = Path::new(file);
    let safe = !file.is_empty()
        && !file.contains('\\')
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe {
        bail!("refusing the unsafe file name {file:?}");
    }
    Ok(())
}
