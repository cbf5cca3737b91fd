//! A [`Tekken`] as a `tokenizers` tokenizer (`tokenizer.json`), so the rest
//! of the pipeline (streaming detokenizer, token bytes, chat templates,
//! the server) runs on a folder that has only `tekken.json`.
//!
//! Design notes: the document is the one transformers' tiktoken converter
//! writes for tekken files: a byte-level BPE whose vocabulary is each
//! token's bytes in GPT-2's byte-to-character mapping (ids offset by the
//! control tokens, which are special added tokens), merges recovered from
//! the ranks (a token's two parts are what tiktoken's own merging of its
//! bytes reaches with the lower ranks only), whole-word hits without
//! merges, `config.pattern` as a `Split` pre-tokenizer and `<s>` added in
//! front. Plain text encodes as [`Tekken::encode`] does; text holding a
//! control token's spelling (`[INST]`) becomes that control token here
//! (`tokenizers` always matches added tokens), where [`Tekken::encode`]
//! keeps it text, as mistral-common does.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::tekken::Tekken;

/// GPT-2's byte-to-character map: printable bytes stand for themselves,
/// the others for the characters from U+0100 on, in byte order.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{fffd}');
            next += 1;
            c
        };
    }
    map
}

/// The two parts tiktoken's merging reaches for `bytes` using only ranks
/// below `limit`; `None` when it stops at another count of parts.
fn last_merge<'a>(
    bytes: &'a [u8],
    ranks: &HashMap<&[u8], u32>,
    limit: u32,
) -> Option<(&'a [u8], &'a [u8])> {
    let mut parts: Vec<&[u8]> = bytes.chunks(1).collect();
    loop {
        if parts.len() == 2 {
            // Their join is the token itself, whose rank is `limit`.
            return Some((parts[0], parts[1]));
        }
        let (_, i) = (0..parts.len().saturating_sub(1))
            .filter_map(|i| {
                let start = offset(bytes, parts[i]);
                let joined = &bytes[start..start + parts[i].len() + parts[i + 1].len()];
                ranks.get(joined).filter(|&&r| r < limit).map(|&r| (r, i))
            })
            .min()?;
        let start = offset(bytes, parts[i]);
        parts[i] = &bytes[start..start + parts[i].len() + parts[i + 1].len()];
        parts.remove(i + 1);
    }
}

/// Where `part` (a slice of `whole`) starts in it.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

impl Tekken {
    /// The `tokenizer.json` document of this tokenizer (see the module
    /// notes).
    pub fn tokenizer_json(&self) -> Value {
        let chars = byte_chars();
        let text = |b: &[u8]| b.iter().map(|&x| chars[x as usize]).collect::<String>();
        let offset = self.num_special_tokens();
        let mut vocab = Map::new();
        let mut added = Vec::new();
        for id in 0..offset {
            let content = self.special_text(id as u32).unwrap_or_default();
            vocab.insert(content.to_owned(), json!(id));
            added.push(json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            }));
        }
        let tokens = self.vocab_bytes();
        let ranks: HashMap<&[u8], u32> = tokens
            .iter()
            .enumerate()
            .map(|(r, b)| (b.as_slice(), r as u32))
            .collect();
        let mut merges = Vec::new();
        for (rank, bytes) in tokens.iter().enumerate() {
            vocab.insert(text(bytes), json!(rank + offset));
            if bytes.len() > 1 {
                if let Some((a, b)) = last_merge(bytes, &ranks, rank as u32) {
                    merges.push(json!([text(a), text(b)]));
                }
            }
        }
        let bos = self
            .bos_id()
            .and_then(|id| self.special_text(id).map(|t| (id, t)));
        let post_processor = match bos {
            Some((id, bos)) => json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}},
            }),
            None => Value::Null,
        };
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern()}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ]},
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
                "vocab": vocab, "merges": merges,
            },
        })
    }

    /// This tokenizer as a `tokenizers` one (see the module notes).
    pub fn to_tokenizer(&self) -> Result<crate::Tokenizer, crate::TokenizerError> {
        crate::Tokenizer::from_document(&self.tokenizer_json(), "the tekken vocabulary")
    }
}
