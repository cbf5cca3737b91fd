//! Runs the Python references (`xtask/python/*.py`) live.
//!
//! The interpreter is `MISTRAL_MLX_PYTHON`, by default the venv that
//! `cargo xtask test` creates under `target/xtask/venv`. Without it the test
//! fails, naming the command that sets it up: a parity check is never skipped.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

// The reference interpreter (every test crate with this module also has
// `reference`).
pub use crate::reference::python;

/// Runs `xtask/python/<script>` with `request` as JSON on stdin; returns its
/// JSON answer.
pub fn run_json(script: &str, request: &Value) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../xtask/python")
        .join(script);
    let python = python();
    let mut child = Command::new(&python)
        .arg(&path)
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
        "{} {} failed ({}); is the venv complete? run `cargo xtask test`\n{}",
        python.display(),
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON answer")
}

/// The shared tokenizer corpus (`xtask/python/corpus.json`, also used by
/// tokenizer_check.py).
pub fn corpus() -> Vec<String> {
    let file: Value = serde_json::from_str(include_str!("../../../../xtask/python/corpus.json"))
        .expect("xtask/python/corpus.json is JSON");
    file["texts"]
        .as_array()
        .expect("corpus.json: texts")
        .iter()
        .map(|text| text.as_str().expect("corpus.json: a string").to_owned())
        .collect()
}
