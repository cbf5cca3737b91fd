//! The official `openai` Python client (pinned in
//! xtask/python/requirements.txt) against the server with an API key:
//! xtask/python/openai_client_check.py makes every request and checks the
//! answers, the streamed chunks and the exceptions (see its header), and
//! the greedy answers against transformers (chat template, tokenizer) with
//! mlx-lm (generation) on SmolLM2's float32 Hugging Face conversion, and
//! the log-probabilities against mlx-lm's.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::test_env::{models_dir, python};
use common::{start, MODEL_ID};

/// SmolLM2 as a Hugging Face folder: the float32 conversion of its GGUF
/// that `cargo xtask test` writes (`gguf-hf/smollm2` in the test models).
fn smollm2_hf() -> PathBuf {
    let dir = models_dir().join("gguf-hf/smollm2");
    assert!(
        dir.join("config.json").is_file(),
        "no {}: run `cargo xtask test`",
        dir.display()
    );
    dir
}

#[test]
fn the_openai_client_gets_what_openai_would_send() {
    let server = start(Some("test-key"), 1 << 20);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/python/openai_client_check.py");
    let output = Command::new(python())
        .arg(&script)
        .args([server.base.as_str(), "test-key", MODEL_ID])
        .arg(smollm2_hf())
        .output()
        .expect("running the openai client check (run `cargo xtask test` for the venv)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "openai client check failed:\n{stdout}\n{stderr}"
    );
    // Every check printed its line.
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        18,
        "{stdout}"
    );
}
