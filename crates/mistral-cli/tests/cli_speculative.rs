//! `--draft-model`, `--num-draft-tokens` and `--prompt-lookup` end to end
//! on the generated test models: greedy `generate --json` gives the plain
//! ids with either, reports acceptance, and bad combinations (and `serve`,
//! which does not support them yet) fail with one error line.

mod common;

use common::reject::cli_rejects;
use common::{cli, test_models_root};

fn model(name: &str) -> String {
    test_models_root().join(name).display().to_string()
}

/// `generate --json` on gqa4_f32 with `extra`, parsed.
fn generate(extra: &[&str]) -> serde_json::Value {
    let target = model("gqa4_f32");
    let mut args = vec![
        "generate",
        "--model",
        &target,
        "--prompt",
        "one two three one two three one two",
        "--no-chat",
        "--max-tokens",
        "24",
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = cli(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn speculative_generate_gives_the_plain_ids() {
    let plain = generate(&[]);
    assert!(plain.get("speculative").is_none());
    let draft = model("gqa4_q4_g64");
    let runs = [
        generate(&["--draft-model", &draft, "--num-draft-tokens", "4"]),
        generate(&["--prompt-lookup", "3"]),
    ];
    for run in &runs {
        assert_eq!(run["ids"], plain["ids"]);
        let s = &run["speculative"];
        let (drafted, accepted) = (s["drafted"].as_u64(), s["accepted"].as_u64());
        assert!(drafted.is_some_and(|d| d > 0), "{s}");
        assert!(accepted <= drafted, "{s}");
    }
}

#[test]
fn bad_speculative_flags_fail_with_one_line() {
    let target = model("gqa4_f32");
    let other_vocab = model("window_v01_f32");
    let base = ["generate", "--model", &target, "--prompt", "x"];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |args: Vec<String>, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_rejects(&args, needles);
    };
    let mut mismatch = with(&["--draft-model"]);
    mismatch.push(other_vocab);
    run(mismatch, &["--draft-model", "vocabulary"]);
    run(
        with(&["--num-draft-tokens", "2"]),
        &["--num-draft-tokens needs --draft-model"],
    );
    run(with(&["--prompt-lookup", "0"]), &["--prompt-lookup"]);
    let mut both = with(&["--prompt-lookup", "2", "--draft-model"]);
    both.push(target.clone());
    run(both, &["--prompt-lookup", "--draft-model"]);
    cli_rejects(
        &[
            "serve",
            "--model",
            &target,
            "--port",
            "0",
            "--prompt-lookup",
            "3",
        ],
        &["not supported by serve"],
    );
}
