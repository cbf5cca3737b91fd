//! Tool calls through the official `openai` Python client on the real
//! SmolLM2 model (the generic JSON tool format, its template having none):
//! xtask/python/tool_calls_check.py checks named, required and auto tool
//! choices, streamed deltas against the whole answer, one call when
//! parallel calls are off, a tool result round trip, and the 400s (see its
//! header).

mod common;

use std::path::Path;
use std::process::Command;

use common::test_env::python;
use common::{start, MODEL_ID};

#[test]
fn the_openai_client_gets_valid_tool_calls() {
    let server = start(Some("test-key"), 1 << 20);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/python/tool_calls_check.py");
    let output = Command::new(python())
        .arg(&script)
        .args([server.base.as_str(), "test-key", MODEL_ID])
        .output()
        .expect("running the tool call check (run `cargo xtask test` for the venv)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "tool call check failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        8,
        "{stdout}"
    );
}
