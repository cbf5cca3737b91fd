//! [`Tekken`]: Mistral's own tokenizer file, `tekken.json`, read and run as
//! mistral-common's `Tekkenizer` runs it.
//!
//! Design notes:
//! - A tiktoken byte-level BPE: `vocab` entries give each token's bytes
//!   (base64) and rank, `config.pattern` is the pre-split regex; encoding is
//!   tiktoken's (the `tiktoken-rs` crate's `CoreBPE`, plain text only:
//!   control-token text such as `[INST]` in the input stays text, as
//!   mistral-common encodes it).
//! - Ids: the `default_num_special_tokens` control tokens come first, a
//!   vocabulary token's id is its rank plus that count, and the vocabulary is
//!   cut to `default_vocab_size` ids in all.
//! - Control tokens: the file's `special_tokens` list, else (up to v7) the
//!   20 mistral-common has always used; past v7 the file must list them. The
//!   rest up to the count are fillers `<SPECIAL_N>`.
//! - Decoding as mistral-common's `decode`: consecutive vocabulary tokens
//!   are decoded together, invalid UTF-8 replaced by U+FFFD per such run,
//!   control tokens dropped, kept as their text, or refused
//!   ([`SpecialTokenPolicy`]).
//! - Every check mistral-common makes on the file is an error naming the
//!   file and the field, never a panic.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use tiktoken_rs::CoreBPE;

use crate::tokenizer_file_error::file_error;
pub use crate::tokenizer_file_error::TokenizerFileError;

/// A `tekken.json` that cannot be used, or ids that cannot be decoded.
pub type TekkenError = TokenizerFileError;

/// What decoding does with control tokens (mistral-common's
/// `SpecialTokenPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpecialTokenPolicy {
    /// Leave them out (mistral-common's default).
    #[default]
    Ignore,
    /// Write their text (`[INST]`).
    Keep,
    /// Refuse them.
    Raise,
}

/// The control tokens mistral-common uses for files that list none (up to
/// v7), in id order.
const DEFAULT_SPECIAL_TOKENS: [&str; 20] = [
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
];

/// The versions mistral-common knows, by number.
pub const VERSIONS: [u32; 7] = [1, 2, 3, 7, 11, 13, 15];

#[derive(Deserialize)]
struct TekkenFile {
    config: Option<TekkenConfig>,
    vocab: Option<Vec<VocabEntry>>,
    special_tokens: Option<Vec<SpecialEntry>>,
}

#[derive(Deserialize)]
struct TekkenConfig {
    pattern: Option<String>,
    default_vocab_size: Option<u32>,
    default_num_special_tokens: Option<u32>,
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabEntry {
    rank: u32,
    token_bytes: String,
    #[allow(dead_code)] // mistral-common requires the key, never reads it
    token_str: Option<String>,
}

#[derive(Deserialize)]
struct SpecialEntry {
    rank: u32,
    token_str: String,
}

/// A loaded `tekken.json` (see the module notes).
#[derive(Clone)]
pub struct Tekken {
    bpe: CoreBPE,
    pattern: String,
    /// Bytes of each vocabulary token, by rank.
    bytes: Vec<Vec<u8>>,
    /// Control tokens' text, by id.
    specials: Vec<String>,
    special_ids: HashMap<String, u32>,
    version: u32,
}

impl std::fmt::Debug for Tekken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tekken")
            .field("version", &self.version)
            .field("vocab_size", &self.vocab_size())
            .field("num_special_tokens", &self.specials.len())
            .finish()
    }
}

impl Tekken {
    /// Reads and checks `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TekkenError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, "file", e))?;
        Self::from_json(&text, path)
    }

    /// Parses the text of a `tekken.json`; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, TekkenError> {
        let fail = |field: &str, message: String| file_error(path, field, message);
        let file: TekkenFile =
            serde_json::from_str(text).map_err(|e| fail("JSON", e.to_string()))?;
        let config = file
            .config
            .ok_or_else(|| fail("config", "is missing".into()))?;
        let version =
            parse_version(config.version.as_deref()).map_err(|m| fail("config.version", m))?;
        let pattern = config
            .pattern
            .ok_or_else(|| fail("config.pattern", "is missing".into()))?;
        let vocab_size = config
            .default_vocab_size
            .ok_or_else(|| fail("config.default_vocab_size", "is missing".into()))?;
        let num_special = config
            .default_num_special_tokens
            .ok_or_else(|| fail("config.default_num_special_tokens", "is missing".into()))?;
        let vocab = file
            .vocab
            .ok_or_else(|| fail("vocab", "is missing".into()))?;

        let specials = special_tokens(file.special_tokens, version, num_special)
            .map_err(|(field, m)| fail(&field, m))?;
        let inner = vocab_size.checked_sub(num_special).ok_or_else(|| {
            fail(
                "config.default_vocab_size",
                format!("{vocab_size} is less than default_num_special_tokens {num_special}"),
            )
        })?;
        if vocab.len() < inner as usize {
            return Err(fail(
                "config.default_vocab_size",
                format!(
                    "{vocab_size} ids need {inner} vocabulary tokens besides the {num_special} \
                     control tokens, but vocab has {}",
                    vocab.len()
                ),
            ));
        }
        let bytes = vocab_bytes(&vocab[..inner as usize]).map_err(|(field, m)| fail(&field, m))?;
        let ranks = bytes
            .iter()
            .enumerate()
            .map(|(rank, b)| (b.clone(), rank as u32));
        let bpe = CoreBPE::new(ranks.collect(), Default::default(), &pattern)
            .map_err(|e| fail("config.pattern", e.to_string()))?;
        let special_ids = specials
            .iter()
            .enumerate()
            .map(|(id, s)| (s.clone(), id as u32))
            .collect();
        Ok(Tekken {
            bpe,
            pattern,
            bytes,
            specials,
            special_ids,
            version,
        })
    }

    /// The pre-split regex (`config.pattern`).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Each vocabulary token's bytes, by rank.
    pub fn vocab_bytes(&self) -> &[Vec<u8>] {
        &self.bytes
    }

    /// The protocol version (`config.version`, `v7` -> 7).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Ids in all: control tokens plus vocabulary tokens.
    pub fn vocab_size(&self) -> usize {
        self.specials.len() + self.bytes.len()
    }

    /// How many control tokens come first.
    pub fn num_special_tokens(&self) -> usize {
        self.specials.len()
    }

    /// The id of control token `text` (`[INST]`), if the file has it.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.special_ids.get(text).copied()
    }

    /// The text of control token `id`, if `id` is one.
    pub fn special_text(&self, id: u32) -> Option<&str> {
        self.specials.get(id as usize).map(String::as_str)
    }

    /// `<s>`'s id.
    pub fn bos_id(&self) -> Option<u32> {
        self.special_id("<s>")
    }

    /// `</s>`'s id.
    pub fn eos_id(&self) -> Option<u32> {
        self.special_id("</s>")
    }

    /// Encodes `text` as plain text (control-token text included), with
    /// `<s>` first and `</s>` last when asked.
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        let offset = self.specials.len() as u32;
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if let Some(b) = self.bos_id().filter(|_| bos) {
            ids.push(b);
        }
        ids.extend(
            self.bpe
                .encode_ordinary(text)
                .into_iter()
                .map(|r| r + offset),
        );
        if let Some(e) = self.eos_id().filter(|_| eos) {
            ids.push(e);
        }
        ids
    }

    /// The bytes token `id` stands for: a vocabulary token's bytes, or a
    /// control token's text under `policy` (nothing for `Ignore`).
    pub fn token_bytes(&self, id: u32, policy: SpecialTokenPolicy) -> Result<&[u8], TekkenError> {
        let offset = self.specials.len();
        let i = id as usize;
        if i < offset {
            return match policy {
                SpecialTokenPolicy::Ignore => Ok(&[]),
                SpecialTokenPolicy::Keep => Ok(self.specials[i].as_bytes()),
                SpecialTokenPolicy::Raise => Err(TekkenError::SpecialToken(id)),
            };
        }
        self.bytes
            .get(i - offset)
            .map(Vec::as_slice)
            .ok_or(TekkenError::UnknownId(id))
    }

    /// Decodes `ids` as mistral-common does (see the module notes).
    pub fn decode(&self, ids: &[u32], policy: SpecialTokenPolicy) -> Result<String, TekkenError> {
        let offset = self.specials.len() as u32;
        let mut out = String::new();
        let mut run: Vec<u8> = Vec::new();
        for &id in ids {
            if id >= offset {
                run.extend_from_slice(self.token_bytes(id, policy)?);
                continue;
            }
            out.push_str(&String::from_utf8_lossy(&run));
            run.clear();
            out.push_str(std::str::from_utf8(self.token_bytes(id, policy)?).unwrap_or_default());
        }
        out.push_str(&String::from_utf8_lossy(&run));
        Ok(out)
    }
}

/// `v7` -> 7, for the versions mistral-common knows.
fn parse_version(version: Option<&str>) -> Result<u32, String> {
    let v = version.ok_or("is missing")?;
    v.strip_prefix('v')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| VERSIONS.contains(n))
        .ok_or_else(|| format!("unknown version {v:?} (known: v1, v2, v3, v7, v11, v13, v15)"))
}

/// The control tokens by id: the file's, or the defaults up to v7, then
/// fillers up to `count`.
fn special_tokens(
    listed: Option<Vec<SpecialEntry>>,
    version: u32,
    count: u32,
) -> Result<Vec<String>, (String, String)> {
    let mut tokens: Vec<String> = match listed {
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                if s.rank as usize != i {
                    return Err((
                        format!("special_tokens[{i}].rank"),
                        format!("is {}, but control tokens are listed in id order", s.rank),
                    ));
                }
            }
            list.into_iter().map(|s| s.token_str).collect()
        }
        None if version > 7 => {
            return Err((
                "special_tokens".into(),
                format!("is missing: a v{version} file must list its control tokens"),
            ))
        }
        None => DEFAULT_SPECIAL_TOKENS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    if tokens.len() > count as usize {
        return Err((
            "config.default_num_special_tokens".into(),
            format!(
                "{count} is fewer than the {} control tokens listed",
                tokens.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = tokens.iter().find(|t| !seen.insert(t.to_string())) {
        return Err(("special_tokens".into(), format!("{dup:?} is listed twice")));
    }
    for i in tokens.len()..count as usize {
        let filler = format!("<SPECIAL_{i}>");
        if seen.contains(&filler) {
            return Err((
                "special_tokens".into(),
                format!("{filler:?} is listed and also a filler"),
            ));
        }
        tokens.push(filler);
    }
    Ok(tokens)
}

/// Each vocabulary token's bytes, checked as mistral-common checks them:
/// ranks in order, the first 256 the single bytes, no bytes twice.
fn vocab_bytes(vocab: &[VocabEntry]) -> Result<Vec<Vec<u8>>, (String, String)> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(vocab.len());
    let bytes = vocab
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            if entry.rank as usize != i {
                return Err((
                    format!("vocab[{i}].rank"),
                    format!(
                        "is {}, but the vocabulary is listed in rank order",
                        entry.rank
                    ),
                ));
            }
            let b = engine.decode(&entry.token_bytes).map_err(|e| {
                (
                    format!("vocab[{i}].token_bytes"),
                    format!("is not base64: {e}"),
                )
            })?;
            if i < 256 && b != [i as u8] {
                return Err((
                    format!("vocab[{i}].token_bytes"),
                    format!("rank {i} must be the single byte {i}"),
                ));
            }
            Ok(b)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, b) in bytes.iter().enumerate() {
        if let Some(first) = seen.insert(b.as_slice(), i) {
            return Err((
                format!("vocab[{i}].token_bytes"),
                format!("the same bytes as vocab[{first}]"),
            ));
        }
    }
    Ok(bytes)
}
