//! The CLI on GGUF models: the README's main command (the real SmolLM2
//! model answers its question), `--model` given a `.gguf` file, and
//! `convert` with its argument errors.

mod common;
#[path = "../../mistral-loader/tests/reference/test_env.rs"]
mod test_env;

use common::cli;
use std::process::Output;

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The README's main command, on the folder `cargo xtask demo-model` fills
/// (one GGUF file in it): the answer names Paris, and generation stops at
/// the model's end-of-turn token well before the limit.
#[test]
fn the_readme_question_is_answered() {
    let file = test_env::smollm2_path();
    let folder = file
        .parent()
        .expect("the GGUF's folder")
        .display()
        .to_string();
    let output = cli(&[
        "generate",
        "--model",
        &folder,
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "64",
    ]);
    let answer = stdout_of(&output);
    assert!(answer.contains("Paris"), "answer: {answer:?}");

    // The same through the file itself, as JSON: it stopped on EOS.
    let output = cli(&[
        "generate",
        "--model",
        &file.display().to_string(),
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "64",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(stdout_of(&output).trim()).expect("JSON");
    assert_eq!(json["text"].as_str(), Some(answer.trim_end_matches('\n')));
    assert!(json["ids"].as_array().expect("ids").len() < 64, "{json}");
}

#[test]
fn convert_writes_a_folder_and_rejects_bad_arguments() {
    let file = test_env::smollm2_path().display().to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("smollm2-mlx");
    let out_str = out.display().to_string();
    let listed = stdout_of(&cli(&["convert", "--model", &file, "--out", &out_str]));
    for name in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "chat_template.jinja",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
        assert!(listed.contains(name), "{name} not listed: {listed}");
    }
    // The converted folder generates the same answer.
    let again = stdout_of(&cli(&[
        "generate",
        "--model",
        &out_str,
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "64",
    ]));
    assert!(again.contains("Paris"), "{again}");

    let cases: [(&[&str], i32); 4] = [
        (
            &[
                "convert", "--model", &file, "--out", "/tmp/x", "--q-bits", "3",
            ],
            2,
        ),
        (
            &[
                "convert",
                "--model",
                &file,
                "--out",
                "/tmp/x",
                "--q-group-size",
                "48",
            ],
            2,
        ),
        (&["convert", "--model", &file], 2),
        // The output folder exists and is not empty.
        (&["convert", "--model", &file, "--out", &out_str], 1),
    ];
    for (args, code) in cases {
        let output = cli(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}
