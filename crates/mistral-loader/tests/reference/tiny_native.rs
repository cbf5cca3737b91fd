//! A tiny random model in Mistral's own layout (`params.json`,
//! `consolidated.safetensors`), for tests that need a folder as Mistral
//! publishes it beside one of mistral-common's tokenizer files; and the
//! reference Python run for those files (shared by the CLI and server tests
//! through `#[path]`, beside `test_env.rs`, whose `python_module` makes the
//! command for a reference script).

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use mlx_rs::{random, Array, Dtype};
use serde_json::{json, Value};

/// Runs `command`, the reference interpreter (e.g. `test_env::python_module`
/// of a reference script), with `stdin` (JSON) written to it; returns its
/// output.
pub fn run_python(mut command: Command, stdin: Option<&Value>) -> String {
    use std::io::Write;
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the reference python (cargo xtask test makes it)");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(v) = stdin {
        input.write_all(v.to_string().as_bytes()).expect("write");
    }
    drop(input);
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "{shown} failed");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The path of `name` in mistral-common's data folder (its wheel's
/// tokenizer files).
pub fn mistral_common_file(python: &Path, name: &str) -> String {
    let code = format!(
        "import mistral_common, os; print(os.path.join(os.path.dirname(mistral_common.__file__), 'data', {name:?}))"
    );
    let mut command = Command::new(python);
    command.args(["-c", &code]);
    run_python(command, None).trim().to_owned()
}

/// Writes a one-layer bf16 model with a `vocab`-id vocabulary into `dir`.
pub fn write_model(dir: &Path, vocab: i32) {
    let (dim, hidden) = (32, 64);
    let params = json!({"dim": dim, "n_layers": 1, "head_dim": 16, "hidden_dim": hidden,
                        "n_heads": 2, "n_kv_heads": 1, "norm_eps": 1e-5, "vocab_size": vocab,
                        "rope_theta": 1e6});
    std::fs::write(dir.join("params.json"), params.to_string()).expect("params.json");
    random::seed(3).expect("seed");
    let matrix = |rows: i32, cols: i32| {
        random::normal::<f32>(&[rows, cols], None, Some(0.05), None)
            .expect("normal")
            .as_dtype(Dtype::Bfloat16)
            .expect("bf16")
    };
    let ones = |n: i32| {
        Array::ones::<f32>(&[n])
            .expect("ones")
            .as_dtype(Dtype::Bfloat16)
            .expect("bf16")
    };
    let tensors: Vec<(&str, Array)> = vec![
        ("tok_embeddings.weight", matrix(vocab, dim)),
        ("layers.0.attention.wq.weight", matrix(32, dim)),
        ("layers.0.attention.wk.weight", matrix(16, dim)),
        ("layers.0.attention.wv.weight", matrix(16, dim)),
        ("layers.0.attention.wo.weight", matrix(dim, 32)),
        ("layers.0.attention_norm.weight", ones(dim)),
        ("layers.0.ffn_norm.weight", ones(dim)),
        ("layers.0.feed_forward.w1.weight", matrix(hidden, dim)),
        ("layers.0.feed_forward.w2.weight", matrix(dim, hidden)),
        ("layers.0.feed_forward.w3.weight", matrix(hidden, dim)),
        ("norm.weight", ones(dim)),
        ("output.weight", matrix(vocab, dim)),
    ];
    Array::save_safetensors(tensors, None, dir.join("consolidated.safetensors")).expect("save");
}
