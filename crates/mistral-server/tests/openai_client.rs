//! The official `openai` Python client (pinned in
//! xtask/python/requirements.txt) against the server with an API key:
//! xtask/python/checks/openai_client_check.py makes every request and checks the
//! answers, the streamed chunks and the exceptions (see its header), and
//! the greedy answers against transformers (chat template, tokenizer) with
//! mlx-lm (generation) on SmolLM2's float32 Hugging Face conversion, and
//! the log-probabilities against mlx-lm's.

mod common;

use std::path::PathBuf;

use common::test_env::models_dir;
use common::{run_client_check, start};

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
    let hf = smollm2_hf();
    run_client_check(&server, "checks.openai_client_check", &[hf.as_os_str()], 18);
}
