//! Runs the Python references (`xtask/python/refs/*.py`) live.
//!
//! The interpreter is `MISTRAL_MLX_PYTHON`, by default the venv that
//! `cargo xtask test` creates under `target/xtask/venv`. Without it the test
//! fails, naming the command that sets it up: a parity check is never skipped.

#![allow(dead_code)]

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

// The reference scripts' command (every test crate with this module also
// has `reference`).
pub use crate::reference::python_module;

/// Runs the reference script `module` (e.g. `refs.tekken_ref`) with
/// `request` as JSON on stdin; returns its JSON answer.
pub fn run_json(module: &str, request: &Value) -> Value {
    let mut command = python_module(module);
    let python = std::path::PathBuf::from(command.get_program());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run `cargo xtask test`",
                python.display()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write request");
    let out = child.wait_with_output().expect("wait for python");
    assert!(
        out.status.success(),
        "{} -m {module} failed ({}); is the venv complete? run `cargo xtask test`\n{}",
        python.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON answer")
}

/// The shared tokenizer corpus (`xtask/python/common/corpus.json`, also
/// used by checks/tokenizer_check.py).
pub fn corpus() -> Vec<String> {
    let file: Value =
        serde_json::from_str(include_str!("../../../../xtask/python/common/corpus.json"))
            .expect("xtask/python/common/corpus.json is JSON");
    file["texts"]
        .as_array()
        .expect("corpus.json: texts")
        .iter()
        .map(|text| text.as_str().expect("corpus.json: a string").to_owned())
        .collect()
}

/// The ids of a JSON list.
pub fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|i| i.as_u64().expect("an id") as u32)
        .collect()
}

/// Seeded random text: ASCII, Latin, Greek, CJK, emoji, combining marks,
/// digits and whitespace runs, mixed.
pub fn random_texts(n: usize) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(2027);
    let ranges: [(u32, u32); 9] = [
        (0x20, 0x7e),
        (0x09, 0x0d),
        (0xc0, 0x17f),
        (0x391, 0x3c9),
        (0x4e00, 0x4fff),
        (0x1f600, 0x1f64f),
        (0x300, 0x36f),
        (0x30, 0x39),
        (0x600, 0x6ff),
    ];
    (0..n)
        .map(|_| {
            let len = rng.usize(1..60);
            (0..len)
                .map(|_| {
                    let (lo, hi) = ranges[rng.usize(0..ranges.len())];
                    char::from_u32(rng.u32(lo..=hi)).unwrap_or(' ')
                })
                .collect()
        })
        .collect()
}

/// Checks `tokenizer` against a reference `answer` of tekken_ref.py or
/// sentencepiece_ref.py (one file's entry): each of `texts` encodes to its
/// ids with and without `<s>`/`</s>`, each of `sequences` decodes to its
/// text under each special-token policy.
pub fn check_encode_decode(
    tokenizer: &mistral_text::MistralTokenizer,
    answer: &Value,
    texts: &[String],
    sequences: &[Vec<u32>],
    path: &str,
) {
    use mistral_text::tekken::SpecialTokenPolicy;
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(
            tokenizer.encode(text, false, false),
            ids_of(&answer["ids"][i]),
            "{path}: ids of {text:?}"
        );
        assert_eq!(
            tokenizer.encode(text, true, true),
            ids_of(&answer["ids_bos_eos"][i]),
            "{path}: ids with <s> and </s> of {text:?}"
        );
    }
    for (i, ids) in sequences.iter().enumerate() {
        for (policy, key) in [
            (SpecialTokenPolicy::Ignore, "decode_ignore"),
            (SpecialTokenPolicy::Keep, "decode_keep"),
            (SpecialTokenPolicy::Raise, "decode_raise"),
        ] {
            assert_eq!(
                tokenizer.decode(ids, policy).ok(),
                answer[key][i].as_str().map(str::to_owned),
                "{path}: {key} of {ids:?}"
            );
        }
    }
}
