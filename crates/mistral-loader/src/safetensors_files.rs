//! Finding the safetensors checkpoint inside a model directory.
//!
//! Design notes:
//! - Layouts, tried in this order (the order `transformers` uses):
//!   1. a single `model.safetensors`;
//!   2. `model.safetensors.index.json`, whose `weight_map` maps every tensor
//!      name to the shard file holding it (the index is authoritative: tensors
//!      a shard holds but the index does not list are not loaded);
//!   3. `model-XXXXX-of-YYYYY.safetensors` shards without an index; then all
//!      `YYYYY` shards must be present and a tensor may appear only once.
//! - This module only looks at the directory and the index JSON; it never
//!   opens a safetensors file. Checking that each indexed tensor is really in
//!   its shard happens when the shards' headers are parsed
//!   (`SafetensorsWeights::open`).
//! - Shard names from the index must be plain file names: a name with a path
//!   separator or `..` is rejected, so a hostile index cannot point the
//!   loader outside the model directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{LoadError, Result};

/// File name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// File name of the model configuration.
pub const CONFIG_FILE: &str = "config.json";

/// How the checkpoint's weights are laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// One `model.safetensors`.
    Single,
    /// Shards listed by `model.safetensors.index.json`.
    Indexed,
    /// `model-XXXXX-of-YYYYY.safetensors` shards without an index.
    ShardsWithoutIndex,
}

/// The weight files of a model directory, as found by [`discover_checkpoint`].
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    /// The model directory.
    pub dir: PathBuf,
    /// Which layout was found.
    pub layout: CheckpointLayout,
    /// The safetensors files, sorted by name, each once.
    pub files: Vec<PathBuf>,
    /// The index file, for [`CheckpointLayout::Indexed`].
    pub index: Option<PathBuf>,
    /// For [`CheckpointLayout::Indexed`]: tensor name -> position in `files`.
    pub weight_map: Option<BTreeMap<String, usize>>,
}

/// Checks that `dir` exists and is a directory.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(LoadError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LoadError::DirNotFound {
            dir: dir.to_path_buf(),
        }),
        Err(source) => Err(LoadError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Checks that `dir/config.json` exists (a model directory without one is
/// almost always the wrong directory). Returns its path.
pub fn require_config(dir: &Path) -> Result<PathBuf> {
    check_model_dir(dir)?;
    let path = dir.join(CONFIG_FILE);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LoadError::MissingFile {
            path,
            what: "config",
        })
    }
}

/// Finds the checkpoint's weight files in `dir` (see the module docs for the
/// layouts). Does not require `config.json`; see `require_config`.
pub fn discover_checkpoint(dir: &Path) -> Result<CheckpointFiles> {
    check_model_dir(dir)?;
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(CheckpointFiles {
            dir: dir.to_path_buf(),
            layout: CheckpointLayout::Single,
            files: vec![single],
            index: None,
            weight_map: None,
        });
    }
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        return read_index(dir, &index);
    }
    find_unindexed_shards(dir)
}

/// Reads `model.safetensors.index.json` and checks that every shard it names exists.
fn read_index(dir: &Path, index: &Path) -> Result<CheckpointFiles> {
    let text = std::fs::read_to_string(index).map_err(|source| LoadError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: index.to_path_buf(),
            source,
        })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| LoadError::InvalidIndex {
            index: index.to_path_buf(),
            reason: "no `weight_map` object".to_string(),
        })?;
    if map.is_empty() {
        return Err(LoadError::InvalidIndex {
            index: index.to_path_buf(),
            reason: "`weight_map` is empty".to_string(),
        });
    }

    let mut files: Vec<PathBuf> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(map.len());
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| LoadError::InvalidField {
            path: index.to_path_buf(),
            field: format!("weight_map.{tensor}"),
            reason: format!("expected a file name string, found {shard}"),
        })?;
        if !is_plain_file_name(shard) {
            return Err(LoadError::InvalidField {
                path: index.to_path_buf(),
                field: format!("weight_map.{tensor}"),
                reason: format!("{shard:?} is not a plain file name inside the model directory"),
            });
        }
        pairs.push((tensor.clone(), shard.to_string()));
        by_name.entry(shard.to_string()).or_insert(0);
    }
    // Sorted, unique file list; then tensor -> position in it.
    for (pos, (name, slot)) in by_name.iter_mut().enumerate() {
        *slot = pos;
        let path = dir.join(name);
        files.push(path);
    }
    let mut weight_map = BTreeMap::new();
    for (tensor, shard) in pairs {
        let pos = by_name[&shard];
        if !files[pos].is_file() {
            return Err(LoadError::MissingShard {
                index: index.to_path_buf(),
                shard: files[pos].clone(),
                tensor,
            });
        }
        weight_map.insert(tensor, pos);
    }
    Ok(CheckpointFiles {
        dir: dir.to_path_buf(),
        layout: CheckpointLayout::Indexed,
        files,
        index: Some(index.to_path_buf()),
        weight_map: Some(weight_map),
    })
}

/// True for a non-empty name without path separators that is not `.`/`..`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
}

/// Parses `model-XXXXX-of-YYYYY.safetensors` into `(XXXXX, YYYYY)`.
pub fn parse_shard_name(name: &str) -> Option<(u32, u32)> {
    let middle = name.strip_prefix("model-")?.strip_suffix(".safetensors")?;
    let (part, total) = middle.split_once("-of-")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(part) || !digits(total) {
        return None;
    }
    Some((part.parse().ok()?, total.parse().ok()?))
}

/// Looks for `model-XXXXX-of-YYYYY.safetensors` shards without an index.
fn find_unindexed_shards(dir: &Path) -> Result<CheckpointFiles> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut shards: BTreeMap<u32, (u32, PathBuf)> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some((part, total)) = name.to_str().and_then(parse_shard_name) else {
            continue;
        };
        let path = entry.path();
        if let Some((_, first)) = shards.get(&part) {
            // `model-1-of-2` and `model-00001-of-00002` are the same shard.
            return Err(LoadError::ShardSet {
                dir: dir.to_path_buf(),
                reason: format!(
                    "{} and {} both claim to be shard {part}",
                    first.display(),
                    path.display()
                ),
            });
        }
        shards.insert(part, (total, path));
    }
    let Some((_, (total, _))) = shards.iter().next() else {
        return Err(LoadError::NoWeights {
            dir: dir.to_path_buf(),
        });
    };
    let total = *total;
    for (part, (t, path)) in &shards {
        if *t != total {
            return Err(LoadError::ShardSet {
                dir: dir.to_path_buf(),
                reason: format!(
                    "{} says {t} shards, another shard says {total}",
                    path.display()
                ),
            });
        }
        if *part == 0 || *part > total {
            return Err(LoadError::ShardSet {
                dir: dir.to_path_buf(),
                reason: format!("{} is numbered outside 1..={total}", path.display()),
            });
        }
    }
    // Every part is in 1..=total and unique, so fewer parts than `total`
    // means a gap: the first part not at its rank (never a loop up to a
    // `total` that a file name can set to u32::MAX).
    if (shards.len() as u64) < u64::from(total) {
        let missing = (1u32..)
            .zip(shards.keys())
            .find(|(rank, part)| rank != *part)
            .map_or(shards.len() as u32 + 1, |(rank, _)| rank);
        return Err(LoadError::ShardSet {
            dir: dir.to_path_buf(),
            reason: format!("shard {missing} of {total} is missing and there is no {INDEX_FILE}"),
        });
    }
    Ok(CheckpointFiles {
        dir: dir.to_path_buf(),
        layout: CheckpointLayout::ShardsWithoutIndex,
        files: shards.into_values().map(|(_, p)| p).collect(),
        index: None,
        weight_map: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert_eq!(
            parse_shard_name("model-00002-of-00003.safetensors"),
            Some((2, 3))
        );
        assert_eq!(parse_shard_name("model.safetensors"), None);
        assert_eq!(parse_shard_name("model--of-3.safetensors"), None);
        assert_eq!(parse_shard_name("model-1-of-3.safetensors.tmp"), None);
        assert!(!is_plain_file_name("../x.safetensors"));
        assert!(!is_plain_file_name("sub/x.safetensors"));
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
    }
}
