//! Structured output (`response_format`: JSON schema, JSON object, regex,
//! Lark grammar) through the official `openai` Python client on the real
//! SmolLM2 model: xtask/python/structured_output_check.py asks for each of
//! its schemas at temperature 0 and 0.8 (two seeds, streamed and not) and
//! validates every answer with the `jsonschema` package, and checks that
//! unusable formats are a 400 (see its header).

mod common;

use std::path::Path;
use std::process::Command;

use common::test_env::python;
use common::{start, MODEL_ID};

#[test]
fn every_constrained_answer_validates() {
    let server = start(Some("test-key"), 1 << 20);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/python/structured_output_check.py");
    let output = Command::new(python())
        .arg(&script)
        .args([server.base.as_str(), "test-key", MODEL_ID])
        .output()
        .expect("running the structured output check (run `cargo xtask test` for the venv)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "structured output check failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        26,
        "{stdout}"
    );
}
