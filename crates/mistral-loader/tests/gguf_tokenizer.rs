//! The tokenizer rebuilt from GGUF metadata against independent ones.
//!
//! References, run live (`xtask/python/refs/gguf_tokenizer_ref.py`):
//! - SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`, the GGUF
//!   files `make_gguf_models.py` writes from the real Mistral v0.3 and v0.1
//!   models as llama.cpp's converter does): sentencepiece itself on the
//!   source `.model` file. Ids of every corpus text (and with BOS, as the
//!   file's `add_bos_token` asks) and decodes of the corpus ids and of
//!   seeded random ids over normal and byte pieces.
//! - byte-level BPE (`"gpt2"`, the real SmolLM2 file and a synthetic one
//!   carrying its vocabulary): transformers' own GGUF tokenizer converter on
//!   the same metadata. Ids of every corpus text (with and without special
//!   tokens: SmolLM2 adds no BOS) and decodes, special tokens kept.

mod python;
mod reference;

use mistral_loader::{load_special_tokens, load_tokenizer};
use python::{corpus, run_json};
use reference::gguf_models;
use serde_json::{json, Value};

fn ids_of(value: &Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .expect("a list of id lists")
        .iter()
        .map(|ids| {
            ids.as_array()
                .expect("an id list")
                .iter()
                .map(|id| id.as_u64().expect("an id") as u32)
                .collect()
        })
        .collect()
}

fn strings_of(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("a list of strings")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn gguf_tokenizers_match_independent_references() {
    let texts = corpus();
    let mut checked_kinds = Vec::new();
    let mut seen = Vec::new();
    for gguf in gguf_models() {
        // One file per distinct tokenizer (most synthetic files share the
        // v0.3 one).
        let tokenizer_key = gguf.manifest["tokenizer"].to_string();
        if !gguf.manifest.is_null() && seen.contains(&tokenizer_key) {
            continue;
        }
        seen.push(tokenizer_key);
        let tokenizer = load_tokenizer(&gguf.file).expect("load_tokenizer(gguf)");
        let special = load_special_tokens(&gguf.file, None).expect("special tokens");
        let encode = |text: &str, add: bool| -> Vec<u32> {
            tokenizer
                .encode(text, add)
                .expect("encode")
                .get_ids()
                .to_vec()
        };
        let corpus_ids: Vec<Vec<u32>> = texts.iter().map(|t| encode(t, false)).collect();
        // Seeded random ids over the pieces a text can decode to (not
        // control or unknown pieces).
        let vocab = tokenizer.get_vocab_size(true) as u32;
        let added = tokenizer.get_added_vocabulary();
        let mut rng = fastrand::Rng::with_seed(2026);
        let mut random_ids = Vec::new();
        while random_ids.len() < 100 {
            let len = rng.usize(1..24);
            let ids: Vec<u32> = (0..len)
                .map(|_| loop {
                    let id = rng.u32(0..vocab);
                    let token = tokenizer.id_to_token(id).expect("a token");
                    if !added.is_special_token(&token) {
                        break id;
                    }
                })
                .collect();
            random_ids.push(ids);
        }
        let mut all_ids = corpus_ids.clone();
        all_ids.extend(random_ids.iter().cloned());
        let answer = run_json(
            "refs.gguf_tokenizer_ref",
            &json!({"gguf": gguf.file, "texts": texts, "ids": all_ids}),
        );
        let kind = answer["kind"].as_str().expect("kind").to_owned();
        let add_bos = answer["add_bos"].as_bool().unwrap_or(kind == "llama");
        assert_eq!(
            special.bos,
            answer["bos"].as_u64().map(|b| b as u32),
            "{}: BOS",
            gguf.name
        );
        assert!(
            special
                .eos
                .contains(&(answer["eos"].as_u64().expect("eos") as u32)),
            "{}: EOS",
            gguf.name
        );
        let (want_ids, want_decode) = match &answer["sentencepiece"] {
            Value::Null => (ids_of(&answer["ids"]), strings_of(&answer["decode"])),
            sp => (ids_of(&sp["ids"]), strings_of(&sp["decode"])),
        };
        let skip_special = answer["sentencepiece"].is_object();
        assert_eq!(want_ids.len(), texts.len(), "{}: reference ids", gguf.name);
        assert_eq!(
            want_decode.len(),
            all_ids.len(),
            "{}: reference decodes",
            gguf.name
        );
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(corpus_ids[i], want_ids[i], "{}: ids of {text:?}", gguf.name);
            let mut with_special = corpus_ids[i].clone();
            if add_bos {
                with_special.insert(0, special.bos.expect("a BOS id"));
            }
            assert_eq!(
                encode(text, true),
                with_special,
                "{}: ids of {text:?} with special tokens",
                gguf.name
            );
            if answer["sentencepiece"].is_null() {
                assert_eq!(
                    encode(text, true),
                    ids_of(&answer["ids_special"])[i],
                    "{}: ids of {text:?} with special tokens (transformers)",
                    gguf.name
                );
            }
        }
        for (ids, want) in all_ids.iter().zip(&want_decode) {
            let ours = tokenizer.decode(ids, skip_special).expect("decode");
            assert_eq!(&ours, want, "{}: decode of {ids:?}", gguf.name);
        }
        eprintln!(
            "{:<18} {kind}: {} texts and {} decodes equal the reference",
            gguf.name,
            texts.len(),
            all_ids.len()
        );
        checked_kinds.push(kind);
    }
    for kind in ["llama", "gpt2"] {
        assert!(
            checked_kinds.iter().any(|k| k == kind),
            "no GGUF file with a {kind} tokenizer was checked"
        );
    }
}
