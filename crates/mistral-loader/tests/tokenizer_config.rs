//! `config.json`, `tokenizer.json` and BOS/EOS ids, on files the tests write.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::TempDir;
use mistral_loader::{
    load_config, load_special_tokens, load_tokenizer, read_config_str, LoadError,
};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

/// Writes a word-level tokenizer; returns its vocabulary (token -> id),
/// added special tokens included.
fn write_tokenizer(dir: &Path) -> HashMap<String, u32> {
    let words = ["<unk>", "<s>", "</s>", "hello", "world", "[INST]"];
    let vocab: HashMap<String, u32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), (i as u32) * 3 + 1))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab.clone().into_iter().collect())
        .unk_token("<unk>".to_string())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    tok.add_special_tokens(&[
        AddedToken::from("<s>", true),
        AddedToken::from("</s>", true),
        AddedToken::from("<|im_end|>", true),
    ]);
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    let mut all = vocab;
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    all.insert("<|im_end|>".into(), im_end);
    all
}

#[test]
fn config_is_read_and_errors_name_the_file() {
    let dir = TempDir::new("config");
    let path = dir.path().join("config.json");
    let err = load_config(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingFile { path: p, .. } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("config.json"));

    let text = r#"{"hidden_size": 64, "num_hidden_layers": 2, "rope_theta": 1e6}"#;
    std::fs::write(&path, text).unwrap();
    assert_eq!(read_config_str(dir.path()).unwrap(), text);
    let v = load_config(dir.path()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(v, expected);

    std::fs::write(&path, r#"{"hidden_size": 64,"#).unwrap();
    let err = load_config(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::Json { path: p, .. } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("config.json"));

    std::fs::write(&path, "[1, 2]").unwrap();
    let err = read_config_str(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::InvalidField { .. }), "{err}");
}

#[test]
fn tokenizer_loads_and_encodes() {
    let dir = TempDir::new("tok");
    let err = load_tokenizer(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::MissingFile {
                what: "tokenizer",
                ..
            }
        ),
        "{err}"
    );

    let vocab = write_tokenizer(dir.path());
    let tok = load_tokenizer(dir.path()).unwrap();
    let enc = tok.encode("<s> hello world", false).unwrap();
    assert_eq!(
        enc.get_ids(),
        &[vocab["<s>"], vocab["hello"], vocab["world"]]
    );

    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": 5}").unwrap();
    let err = load_tokenizer(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"));
}

#[test]
fn special_tokens_from_config_only() {
    let dir = TempDir::new("st-config");
    let vocab = write_tokenizer(dir.path());
    let tok = load_tokenizer(dir.path()).unwrap();
    let (bos, eos) = (vocab["<s>"], vocab["</s>"]);
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"bos_token_id": {bos}, "eos_token_id": {eos}}}"#),
    )
    .unwrap();
    let st = load_special_tokens(dir.path(), Some(&tok)).unwrap();
    assert_eq!(st.bos, Some(bos));
    assert_eq!(st.eos, vec![eos]);
    assert!(st.is_eos(eos) && !st.is_eos(bos));
}

#[test]
fn special_tokens_union_of_all_files() {
    let dir = TempDir::new("st-all");
    let vocab = write_tokenizer(dir.path());
    let tok = load_tokenizer(dir.path()).unwrap();
    let (bos, eos, im_end, inst) = (
        vocab["<s>"],
        vocab["</s>"],
        vocab["<|im_end|>"],
        vocab["[INST]"],
    );
    std::fs::write(
        dir.path().join("generation_config.json"),
        format!(r#"{{"bos_token_id": {bos}, "eos_token_id": [{eos}, {im_end}]}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"bos_token_id": {inst}, "eos_token_id": {eos}}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "[INST]"}"#,
    )
    .unwrap();
    let st = load_special_tokens(dir.path(), Some(&tok)).unwrap();
    // generation_config wins for BOS; EOS is the ordered union.
    assert_eq!(st.bos, Some(bos));
    assert_eq!(st.eos, vec![eos, im_end, inst]);
}

#[test]
fn special_tokens_from_tokenizer_config_strings() {
    let dir = TempDir::new("st-tokcfg");
    let vocab = write_tokenizer(dir.path());
    let tok = load_tokenizer(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"bos_token_id": null, "eos_token_id": null}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": {"content": "<|im_end|>"}}"#,
    )
    .unwrap();
    let st = load_special_tokens(dir.path(), Some(&tok)).unwrap();
    assert_eq!(st.bos, Some(vocab["<s>"]));
    assert_eq!(st.eos, vec![vocab["<|im_end|>"]]);

    // No files at all: nothing declared, not an error.
    let empty = TempDir::new("st-none");
    let st = load_special_tokens(empty.path(), Some(&tok)).unwrap();
    assert_eq!(st, mistral_loader::SpecialTokens::default());
}

#[test]
fn special_token_errors_name_file_and_field() {
    let dir = TempDir::new("st-err");
    write_tokenizer(dir.path());
    let tok = load_tokenizer(dir.path()).unwrap();

    let gen = dir.path().join("generation_config.json");
    std::fs::write(&gen, r#"{"eos_token_id": "two"}"#).unwrap();
    let err = load_special_tokens(dir.path(), Some(&tok)).unwrap_err();
    match &err {
        LoadError::InvalidField { path, field, .. } => {
            assert_eq!(path, &gen);
            assert_eq!(field, "eos_token_id");
        }
        other => panic!("unexpected {other}"),
    }
    std::fs::write(&gen, r#"{"eos_token_id": [2, -1]}"#).unwrap();
    assert!(matches!(
        load_special_tokens(dir.path(), Some(&tok)).unwrap_err(),
        LoadError::InvalidField { .. }
    ));
    std::fs::write(&gen, r#"{"eos_token_id": 4294967296}"#).unwrap();
    assert!(matches!(
        load_special_tokens(dir.path(), Some(&tok)).unwrap_err(),
        LoadError::InvalidField { .. }
    ));
    std::fs::write(&gen, "not json").unwrap();
    let err = load_special_tokens(dir.path(), Some(&tok)).unwrap_err();
    assert!(
        matches!(&err, LoadError::Json { path, .. } if path == &gen),
        "{err}"
    );
    std::fs::remove_file(&gen).unwrap();

    let tc = dir.path().join("tokenizer_config.json");
    std::fs::write(&tc, r#"{"eos_token": "<nope>"}"#).unwrap();
    let err = load_special_tokens(dir.path(), Some(&tok)).unwrap_err();
    match &err {
        LoadError::UnknownToken { path, field, token } => {
            assert_eq!(path, &tc);
            assert_eq!(field, "eos_token");
            assert_eq!(token, "<nope>");
        }
        other => panic!("unexpected {other}"),
    }
    std::fs::write(&tc, r#"{"bos_token": 5}"#).unwrap();
    assert!(matches!(
        load_special_tokens(dir.path(), Some(&tok)).unwrap_err(),
        LoadError::InvalidField { .. }
    ));
}
