//! The tokenizer stored in GGUF metadata, rebuilt with the `tokenizers`
//! crate.
//!
//! Design notes: the metadata is turned into a `tokenizer.json` document
//! (the format the `tokenizers` crate reads and writes), so the result is a
//! plain `tokenizers::Tokenizer` that `mistral-cli convert` can also save.
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE over `tokens` and
//!   `merges`; the pre-tokenizer is the one `tokenizer.ggml.pre` names, as
//!   llama.cpp defines them: `smollm` (single digits, then GPT-2's
//!   byte-level split), `gpt2`/`default` (GPT-2's split), `llama-bpe`/
//!   `llama3` (Llama 3's regex) and `tekken` (Mistral Nemo's regex); for
//!   these two, whole-word vocabulary hits skip the merges and BOS is added
//!   by default, as llama.cpp does. Other names are refused, naming the key.
//! - `tokenizer.ggml.model = "llama"`: SentencePiece BPE over `tokens` and
//!   `scores` ([`mistral_text::sentencepiece_hf`]), built as `xtask/python/common/spconvert.py` builds Mistral's
//!   tokenizer.json (proven equal to sentencepiece): every split of a normal
//!   piece into two normal pieces is a merge, ranked by the merged piece's
//!   score; byte fallback on `<0xNN>` pieces; the dummy-prefix `▁` added to
//!   each text segment when `tokenizer.ggml.add_space_prefix` (default true).
//! - `token_type`: control (3) and unknown (2) tokens become special added
//!   tokens, user-defined ones (4) non-special added tokens.
//! - BOS/EOS come from `tokenizer.ggml.add_bos_token`/`add_eos_token`
//!   (defaults as llama.cpp's: BOS for SentencePiece, `llama-bpe` and
//!   `tekken`, none for other byte-level BPE) through a template
//!   post-processor.

use mistral_text::sentencepiece_hf;
use serde_json::{json, Value};

use super::metadata::Metadata;
use crate::error::{LoadError, Result};

/// llama.cpp token types (sentencepiece's numbering).
const TYPE_UNKNOWN: i32 = sentencepiece_hf::KIND_UNKNOWN;
const TYPE_NORMAL: i32 = sentencepiece_hf::KIND_NORMAL;

/// Llama 3's pre-tokenizer regex (llama.cpp's `llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral Nemo's (tekken) pre-tokenizer regex.
const TEKKEN_REGEX: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer of a GGUF file.
pub fn gguf_tokenizer(meta: &Metadata) -> Result<tokenizers::Tokenizer> {
    let document = tokenizer_json(meta)?;
    let text = document.to_string();
    text.parse::<tokenizers::Tokenizer>()
        .map_err(|e| LoadError::Tokenizer {
            path: meta.path().to_path_buf(),
            message: format!("the GGUF tokenizer metadata does not make a tokenizer: {e}"),
        })
}

/// The `tokenizer.json` document for the GGUF metadata.
pub fn tokenizer_json(meta: &Metadata) -> Result<Value> {
    let model_key = "tokenizer.ggml.model";
    let kind = meta
        .str(model_key)?
        .ok_or_else(|| meta.invalid(model_key, "is missing: the GGUF file has no tokenizer"))?;
    let tokens_key = "tokenizer.ggml.tokens";
    let tokens = meta
        .str_array(tokens_key)?
        .ok_or_else(|| meta.invalid(tokens_key, "is missing"))?;
    let types = match meta.i32_array("tokenizer.ggml.token_type")? {
        Some(t) if t.len() != tokens.len() => {
            return Err(meta.invalid(
                "tokenizer.ggml.token_type",
                format!("has {} entries for {} tokens", t.len(), tokens.len()),
            ))
        }
        Some(t) => t,
        None => vec![TYPE_NORMAL; tokens.len()],
    };
    let (model, normalizer, pre_tokenizer, decoder) = match kind {
        "gpt2" => {
            let (model, pre) = byte_level_bpe(meta, &tokens)?;
            (
                model,
                Value::Null,
                pre,
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
            )
        }
        "llama" => {
            let (model, normalizer, decoder) = sentencepiece_bpe(meta, &tokens, &types)?;
            (model, normalizer, Value::Null, decoder)
        }
        other => {
            return Err(meta.invalid(
                model_key,
                format!(
                    "tokenizer model {other:?} is not supported (supported: \"gpt2\", \"llama\")"
                ),
            ))
        }
    };
    let added = sentencepiece_hf::added_tokens(&tokens, &types);
    let post_processor = post_processor(meta, &tokens)?;
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model,
    }))
}

fn vocab(tokens: &[&str]) -> serde_json::Map<String, Value> {
    tokens
        .iter()
        .enumerate()
        .map(|(id, t)| ((*t).to_owned(), json!(id)))
        .collect()
}

/// The BPE model and pre-tokenizer of a `gpt2` tokenizer.
fn byte_level_bpe(meta: &Metadata, tokens: &[&str]) -> Result<(Value, Value)> {
    let merges_key = "tokenizer.ggml.merges";
    let merges = meta
        .str_array(merges_key)?
        .ok_or_else(|| meta.invalid(merges_key, "is missing (a gpt2 tokenizer needs merges)"))?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // As llama.cpp: the separator is the first space after the first
            // character.
            let cut = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i)
                .ok_or_else(|| {
                    meta.invalid(
                        &format!("{merges_key}[{i}]"),
                        format!("{m:?} is not two tokens separated by a space"),
                    )
                })?;
            Ok(json!([&m[..cut], &m[cut + 1..]]))
        })
        .collect::<Result<Vec<_>>>()?;
    let pre_key = "tokenizer.ggml.pre";
    let pre = meta.str(pre_key)?.unwrap_or("default");
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    let (pre_tokenizer, ignore_merges) = match pre {
        "default" | "gpt2" => (byte_level(true), false),
        "smollm" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            false,
        ),
        "llama-bpe" | "llama3" => (
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
            true,
        ),
        "tekken" => (
            json!({"type": "Sequence", "pretokenizers": [split(TEKKEN_REGEX), byte_level(false)]}),
            true,
        ),
        other => {
            return Err(meta.invalid(
                pre_key,
                format!(
                    "pre-tokenizer {other:?} is not supported (supported: default, gpt2, smollm, \
                     llama-bpe, llama3, tekken)"
                ),
            ))
        }
    };
    let model = json!({
        "type": "BPE", "dropout": null, "unk_token": null,
        "continuing_subword_prefix": null, "end_of_word_suffix": null,
        "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
        "vocab": vocab(tokens), "merges": merges,
    });
    Ok((model, pre_tokenizer))
}

/// The BPE model, normalizer and decoder of a `llama` (SentencePiece)
/// tokenizer ([`mistral_text::sentencepiece_hf::bpe_parts`]).
fn sentencepiece_bpe(
    meta: &Metadata,
    tokens: &[&str],
    types: &[i32],
) -> Result<(Value, Value, Value)> {
    let scores_key = "tokenizer.ggml.scores";
    let scores = meta
        .f32_array(scores_key)?
        .ok_or_else(|| meta.invalid(scores_key, "is missing (a llama tokenizer needs scores)"))?;
    if scores.len() != tokens.len() {
        return Err(meta.invalid(
            scores_key,
            format!("has {} entries for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let unk = meta
        .int::<usize>("tokenizer.ggml.unknown_token_id")?
        .or_else(|| types.iter().position(|&t| t == TYPE_UNKNOWN))
        .and_then(|id| tokens.get(id).copied());
    let add_prefix = meta
        .bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    Ok(sentencepiece_hf::bpe_parts(
        tokens, &scores, types, unk, add_prefix,
    ))
}

/// Whether encoding adds BOS: `tokenizer.ggml.add_bos_token`, else
/// llama.cpp's default for the tokenizer (SentencePiece, and byte-level BPE
/// with the `llama-bpe`/`llama3`/`tekken` pre-tokenizers).
pub fn adds_bos(meta: &Metadata) -> Result<bool> {
    if let Some(flag) = meta.bool("tokenizer.ggml.add_bos_token")? {
        return Ok(flag);
    }
    Ok(match meta.str("tokenizer.ggml.model")? {
        Some("llama") => true,
        Some("gpt2") => matches!(
            meta.str("tokenizer.ggml.pre")?,
            Some("llama-bpe" | "llama3" | "tekken")
        ),
        _ => false,
    })
}

/// BOS/EOS insertion as the metadata asks.
fn post_processor(meta: &Metadata, tokens: &[&str]) -> Result<Value> {
    let special = |add: bool, id_key: &str| -> Result<Option<(String, usize)>> {
        if !add {
            return Ok(None);
        }
        let Some(id) = meta.int::<usize>(id_key)? else {
            return Ok(None);
        };
        let token = tokens.get(id).ok_or_else(|| {
            meta.invalid(
                id_key,
                format!("{id} is not a token id (vocabulary of {})", tokens.len()),
            )
        })?;
        Ok(Some(((*token).to_owned(), id)))
    };
    let add_eos = meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let bos = special(adds_bos(meta)?, "tokenizer.ggml.bos_token_id")?;
    let eos = special(add_eos, "tokenizer.ggml.eos_token_id")?;
    Ok(sentencepiece_hf::post_processor(
        bos.as_ref().map(|t| (t.0.as_str(), t.1 as u32)),
        eos.as_ref().map(|t| (t.0.as_str(), t.1 as u32)),
    ))
}
