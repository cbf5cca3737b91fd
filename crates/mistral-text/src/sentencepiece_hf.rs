//! A SentencePiece BPE vocabulary as a `tokenizer.json` document (for the
//! `tokenizers` crate), shared by Mistral's `tokenizer.model.vN` files
//! ([`crate::sentencepiece`]) and GGUF files whose tokenizer is `llama`.
//!
//! Design notes: built as transformers' SentencePiece converter builds
//! Mistral's `tokenizer.json`: every split of a normal piece into two normal
//! pieces is a merge, ranked by the merged piece's score; byte fallback on
//! `<0xNN>` pieces; the dummy-prefix `▁` put in front of each text segment.
//! Piece kinds are numbered as sentencepiece and llama.cpp number them.

use std::collections::HashMap;

use serde_json::{json, Value};

/// A normal piece.
pub const KIND_NORMAL: i32 = 1;
/// The unknown piece (`<unk>`).
pub const KIND_UNKNOWN: i32 = 2;
/// A control piece (`<s>`, `[INST]`).
pub const KIND_CONTROL: i32 = 3;
/// A user-defined piece (matched whole in the text).
pub const KIND_USER_DEFINED: i32 = 4;
/// A byte piece (`<0x0A>`).
pub const KIND_BYTE: i32 = 6;

/// SentencePiece's escaped space.
pub const SPACE: &str = "\u{2581}";

/// The `model`, `normalizer` and `decoder` of a SentencePiece BPE
/// vocabulary: `tokens` with their `scores` and `kinds`, `unk` the unknown
/// piece's text, `add_prefix` whether a `▁` goes in front of the text.
pub fn bpe_parts(
    tokens: &[&str],
    scores: &[f32],
    kinds: &[i32],
    unk: Option<&str>,
    add_prefix: bool,
) -> (Value, Value, Value) {
    let normal: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| kinds.get(*id) == Some(&KIND_NORMAL))
        .map(|(id, t)| (*t, id))
        .collect();
    let score = |id: usize| scores.get(id).copied().unwrap_or(0.0);
    let mut ranked = Vec::new();
    for (&merged, &merged_id) in &normal {
        for (cut, _) in merged.char_indices().skip(1) {
            let (left, right) = merged.split_at(cut);
            if let (Some(&l), Some(&r)) = (normal.get(left), normal.get(right)) {
                ranked.push(((-score(merged_id), merged_id, l, r), left, right));
            }
        }
    }
    ranked.sort_by(|a, b| {
        a.0 .0
            .total_cmp(&b.0 .0)
            .then((a.0 .1, a.0 .2, a.0 .3).cmp(&(b.0 .1, b.0 .2, b.0 .3)))
    });
    let merges: Vec<Value> = ranked.iter().map(|(_, l, r)| json!([l, r])).collect();
    let byte_fallback = tokens
        .iter()
        .any(|t| t.len() == 6 && t.starts_with("<0x") && t.ends_with('>'));
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| ((*t).to_owned(), json!(id)))
        .collect();
    let model = json!({
        "type": "BPE", "dropout": null, "unk_token": unk,
        "continuing_subword_prefix": null, "end_of_word_suffix": null,
        "fuse_unk": true, "byte_fallback": byte_fallback, "ignore_merges": false,
        "vocab": vocab, "merges": merges,
    });
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE});
    let normalizer = if add_prefix {
        json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE}, replace]})
    } else {
        replace
    };
    let mut steps = vec![
        json!({"type": "Replace", "pattern": {"String": SPACE}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_prefix {
        steps.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    (
        model,
        normalizer,
        json!({"type": "Sequence", "decoders": steps}),
    )
}

/// The `added_tokens` entries of a vocabulary: control and unknown pieces
/// as special tokens, user-defined ones as plain added tokens.
pub fn added_tokens(tokens: &[&str], kinds: &[i32]) -> Vec<Value> {
    let mut added = Vec::new();
    for (id, (token, kind)) in tokens.iter().zip(kinds).enumerate() {
        let special = match *kind {
            KIND_CONTROL | KIND_UNKNOWN => true,
            KIND_USER_DEFINED => false,
            _ => continue,
        };
        added.push(json!({
            "id": id, "content": token, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": special,
        }));
    }
    added
}

/// The `post_processor` that puts `bos` (text, id) in front of the text and
/// `eos` after it; `null` when there is neither.
pub fn post_processor(bos: Option<(&str, u32)>, eos: Option<(&str, u32)>) -> Value {
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let piece =
        |t: (&str, u32), type_id: u32| json!({"SpecialToken": {"id": t.0, "type_id": type_id}});
    let sequence = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    single.extend(bos.map(|b| piece(b, 0)));
    single.push(sequence("A", 0));
    single.extend(eos.map(|e| piece(e, 0)));
    pair.extend(single.iter().cloned());
    pair.extend(bos.map(|b| piece(b, 1)));
    pair.push(sequence("B", 1));
    pair.extend(eos.map(|e| piece(e, 1)));
    let specials: serde_json::Map<String, Value> = bos
        .iter()
        .chain(eos.iter())
        .map(|(t, id)| {
            (
                (*t).to_owned(),
                json!({"id": t, "ids": [id], "tokens": [t]}),
            )
        })
        .collect();
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}
