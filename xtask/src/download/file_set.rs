//! Which files of a repository make up a model: the config, the tokenizer
//! files that exist, and the weights (`model.safetensors`, or the shards
//! that `model.safetensors.index.json` names).

use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Downloaded when present; `config.json` is required.
pub const CONFIG_AND_TOKENIZER: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
];

/// A single-file checkpoint.
pub const SINGLE_WEIGHTS: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// The non-weight files to fetch, and how the weights are stored.
pub struct Plan {
    /// Config and tokenizer files present in the repo, in a fixed order.
    pub files: Vec<String>,
    /// Whether the weights are sharded (then the index comes first).
    pub sharded: bool,
}

/// Picks the files to fetch from the repo's file list.
pub fn plan(repo_id: &str, available: &BTreeSet<String>) -> Result<Plan> {
    if !available.contains("config.json") {
        bail!("{repo_id} has no config.json; is it a model repository?");
    }
    let mut files: Vec<String> = CONFIG_AND_TOKENIZER
        .iter()
        .filter(|f| available.contains(**f))
        .map(|f| f.to_string())
        .collect();
    let sharded = available.contains(WEIGHTS_INDEX);
    if sharded {
        files.push(WEIGHTS_INDEX.to_owned());
    } else if available.contains(SINGLE_WEIGHTS) {
        files.push(SINGLE_WEIGHTS.to_owned());
    } else {
        bail!("{repo_id} has neither {SINGLE_WEIGHTS} nor {WEIGHTS_INDEX}");
    }
    Ok(Plan { files, sharded })
}

/// The shard files an index names (its `weight_map` values), each checked
/// against the repo's file list.
pub fn shards(index_json: &str, available: &BTreeSet<String>) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_str(index_json)
        .map_err(|e| anyhow!("{WEIGHTS_INDEX} is not a valid index: {e}"))?;
    let shards: BTreeSet<String> = index.weight_map.into_values().collect();
    if shards.is_empty() {
        bail!("{WEIGHTS_INDEX} names no shards");
    }
    for shard in &shards {
        if !available.contains(shard) {
            bail!("{WEIGHTS_INDEX} names {shard}, which is not in the repository");
        }
    }
    Ok(shards.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[&str]) -> BTreeSet<String> {
        files.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn picks_present_files_and_the_weights() {
        let repo = set(&[
            "config.json",
            "tokenizer.model",
            "model.safetensors",
            "README.md",
        ]);
        let single = plan("o/m", &repo).unwrap();
        assert_eq!(
            single.files,
            ["config.json", "tokenizer.model", "model.safetensors"]
        );
        assert!(!single.sharded);
        let repo = set(&["config.json", WEIGHTS_INDEX, "model.safetensors"]);
        assert!(plan("o/m", &repo).unwrap().sharded, "the index wins");
    }

    #[test]
    fn refuses_repos_without_config_or_weights() {
        let err = plan("o/m", &set(&["model.safetensors"])).err().unwrap();
        assert!(err.to_string().contains("config.json"));
        let err = plan("o/m", &set(&["config.json"])).err().unwrap();
        assert!(err.to_string().contains(SINGLE_WEIGHTS));
    }

    #[test]
    fn shards_come_from_the_index() {
        let index = r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s1.safetensors"}}"#;
        let repo = set(&["s1.safetensors", "s2.safetensors"]);
        assert_eq!(
            shards(index, &repo).unwrap(),
            ["s1.safetensors", "s2.safetensors"]
        );
        let err = shards(index, &set(&["s1.safetensors"])).err().unwrap();
        assert!(err.to_string().contains("s2.safetensors"));
        assert!(shards("not json", &repo).is_err());
    }
}
