//! A tiny fake model repository: config, tokenizer files, a sharded
//! safetensors index and two shards of pseudo-random bytes, plus files a
//! download must leave alone. Contents only need the right names and sizes.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// One file of a fake repository.
#[derive(Clone)]
pub struct FakeFile {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Whether the hub would store it in LFS (ETag = sha256).
    pub lfs: bool,
}

impl FakeFile {
    /// The hub's ETag: sha256 for LFS files, a git-blob-like hash otherwise.
    pub fn etag(&self) -> String {
        if self.lfs {
            sha256_hex(&self.bytes)
        } else {
            let mut blob = format!("blob {}\0", self.bytes.len()).into_bytes();
            blob.extend_from_slice(&self.bytes);
            sha256_hex(&blob)[..40].to_owned()
        }
    }
}

/// A fake repository at one commit.
#[derive(Clone)]
pub struct FakeRepo {
    /// The commit `main` points at.
    pub commit: String,
    /// Files by path.
    pub files: BTreeMap<String, FakeFile>,
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` pseudo-random bytes (fixed seed per call site).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

/// Shard names of the fake model.
pub const SHARDS: [&str; 2] = [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

/// Files a model download must fetch.
pub const MODEL_FILES: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
    SHARDS[0],
    SHARDS[1],
];

/// The fake sharded model; `README.md` and `consolidated.safetensors`
/// are there too and must not be downloaded.
pub fn sharded_model() -> FakeRepo {
    let text = |s: &str| FakeFile {
        bytes: s.as_bytes().to_vec(),
        lfs: false,
    };
    let index = format!(
        r#"{{"metadata": {{"total_size": 1}}, "weight_map": {{"a.weight": "{0}", "b.weight": "{1}", "c.weight": "{0}"}}}}"#,
        SHARDS[0], SHARDS[1]
    );
    let mut files = BTreeMap::new();
    files.insert("config.json".into(), text(r#"{"model_type": "mistral"}"#));
    files.insert("tokenizer.json".into(), text(r#"{"version": "1.0"}"#));
    files.insert("tokenizer_config.json".into(), text("{}"));
    files.insert("model.safetensors.index.json".into(), text(&index));
    files.insert("README.md".into(), text("# fake"));
    for (i, (name, len)) in [(SHARDS[0], 300_001), (SHARDS[1], 200_003)]
        .into_iter()
        .enumerate()
    {
        let bytes = random_bytes(len, 0x9e37_79b9 + i as u64);
        files.insert(name.into(), FakeFile { bytes, lfs: true });
    }
    let consolidated = FakeFile {
        bytes: random_bytes(1000, 7),
        lfs: true,
    };
    files.insert("consolidated.safetensors".into(), consolidated);
    FakeRepo {
        commit: "1234567890abcdef1234567890abcdef12345678".into(),
        files,
    }
}
