//! Bad `tekken.json` files: each is an error naming the file and the field,
//! never a panic. (Encoding and decoding are checked against mistral-common
//! on its real files in `mistral-loader/tests/tekken.rs`.)

use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};

use crate::tekken::{SpecialTokenPolicy, Tekken, TekkenError};

/// A small valid file: the 256 bytes, then "ab", "abc", " a"; 3 control
/// tokens listed (v13), 10 ids in all reserved for them.
fn tiny() -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut vocab: Vec<Value> = (0..=255u8)
        .map(|i| json!({"rank": i, "token_bytes": b64(&[i]), "token_str": null}))
        .collect();
    for (i, t) in ["ab", "abc", " a"].iter().enumerate() {
        vocab.push(json!({"rank": 256 + i, "token_bytes": b64(t.as_bytes()), "token_str": t}));
    }
    json!({
        "config": {"pattern": r"\s?\p{L}+|\s+|.", "num_vocab_tokens": 259,
                   "default_vocab_size": 269, "default_num_special_tokens": 10,
                   "version": "v13"},
        "vocab": vocab,
        "special_tokens": [
            {"rank": 0, "token_str": "<unk>", "is_control": true},
            {"rank": 1, "token_str": "<s>", "is_control": true},
            {"rank": 2, "token_str": "</s>", "is_control": true},
        ],
    })
}

fn load(v: &Value) -> Result<Tekken, TekkenError> {
    Tekken::from_json(&v.to_string(), Path::new("tekken.json"))
}

/// The error of `v`, checked to name the file and `field`.
fn error(v: &Value, field: &str) -> String {
    let e = load(v).expect_err("a bad file");
    let text = e.to_string();
    assert!(text.starts_with("tekken.json: "), "{text}");
    match e {
        TekkenError::File { field: f, .. } => assert_eq!(f, field, "{text}"),
        other => panic!("{other:?}"),
    }
    text
}

#[test]
fn the_tiny_file_loads_and_round_trips() {
    let t = load(&tiny()).expect("valid");
    assert_eq!(t.vocab_size(), 269);
    assert_eq!(t.num_special_tokens(), 10);
    assert_eq!(t.special_text(9), Some("<SPECIAL_9>"));
    let ids = t.encode("abc ab a", true, true);
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(
        t.decode(&ids, SpecialTokenPolicy::Ignore).unwrap(),
        "abc ab a"
    );
    assert_eq!(
        t.decode(&ids, SpecialTokenPolicy::Keep).unwrap(),
        "<s>abc ab a</s>"
    );
    assert!(matches!(
        t.decode(&ids, SpecialTokenPolicy::Raise),
        Err(TekkenError::SpecialToken(1))
    ));
    assert!(matches!(
        t.decode(&[269], SpecialTokenPolicy::Ignore),
        Err(TekkenError::UnknownId(269))
    ));
}

#[test]
fn bad_files_name_the_field() {
    let mut v = tiny();
    v["config"]["version"] = json!("v8");
    assert!(error(&v, "config.version").contains("v8"));

    let mut v = tiny();
    v.as_object_mut().unwrap().remove("special_tokens");
    assert!(error(&v, "special_tokens").contains("v13"));
    v["config"]["version"] = json!("v7"); // up to v7 the defaults serve
    assert!(
        load(&v).is_err(),
        "20 default control tokens do not fit in 10"
    );
    v["config"]["default_num_special_tokens"] = json!(20);
    v["config"]["default_vocab_size"] = json!(279);
    assert_eq!(load(&v).expect("v7 defaults").special_id("[INST]"), Some(3));

    let mut v = tiny();
    v["config"]["default_vocab_size"] = json!(300);
    assert!(error(&v, "config.default_vocab_size").contains("vocab has 259"));

    let mut v = tiny();
    v["config"]["default_vocab_size"] = json!(5);
    error(&v, "config.default_vocab_size");

    let mut v = tiny();
    v["vocab"][7]["rank"] = json!(8);
    error(&v, "vocab[7].rank");

    let mut v = tiny();
    v["vocab"][65]["token_bytes"] = json!("Qg==");
    error(&v, "vocab[65].token_bytes");

    let mut v = tiny();
    v["vocab"][258]["token_bytes"] = json!("YWI="); // "ab" again
    assert!(error(&v, "vocab[258].token_bytes").contains("vocab[256]"));

    let mut v = tiny();
    v["vocab"][257]["token_bytes"] = json!("not base64!");
    error(&v, "vocab[257].token_bytes");

    let mut v = tiny();
    v["special_tokens"][1]["rank"] = json!(5);
    error(&v, "special_tokens[1].rank");

    let mut v = tiny();
    v["special_tokens"][2]["token_str"] = json!("<s>");
    error(&v, "special_tokens");

    let mut v = tiny();
    v["config"]["pattern"] = json!("(unclosed");
    error(&v, "config.pattern");

    let mut v = tiny();
    v["config"].as_object_mut().unwrap().remove("pattern");
    error(&v, "config.pattern");

    error(&json!([1, 2]), "JSON");
    let e = Tekken::from_file("/no/such/tekken.json").expect_err("missing");
    assert!(e.to_string().contains("/no/such/tekken.json"), "{e}");
}
