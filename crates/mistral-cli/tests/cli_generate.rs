//! End-to-end: the built `mistral-cli` on the generated test models (see
//! `cargo xtask test`): every `generate` flag, `bench --json`, chat mode, and
//! one-line errors for bad arguments.

mod common;

use common::cli;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn models() -> PathBuf {
    common::test_models_root()
}

fn model(name: &str) -> String {
    models().join(name).display().to_string()
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|err| panic!("not JSON ({err}): {stdout}"))
}

/// `mistral-cli generate --model DIR --max-tokens N --json` plus `extra`,
/// parsed.
fn generate_json(dir: &str, max_tokens: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "generate",
        "--model",
        dir,
        "--max-tokens",
        max_tokens,
        "--json",
    ];
    args.extend_from_slice(extra);
    json_of(&cli(&args))
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn one_shot_decode(model_dir: &str, ids: &[u32]) -> String {
    let tokenizer =
        tokenizers::Tokenizer::from_file(Path::new(model_dir).join("tokenizer.json")).unwrap();
    tokenizer.decode(ids, true).unwrap()
}

#[test]
fn greedy_generation_streams_the_one_shot_decode() {
    let dir = model("gqa4_f32");
    let streamed = cli(&[
        "generate",
        "--model",
        &dir,
        "--prompt",
        "Hello there",
        "--max-tokens",
        "12",
        "--no-chat",
    ]);
    assert!(
        streamed.status.success(),
        "{}",
        String::from_utf8_lossy(&streamed.stderr)
    );
    let stderr = String::from_utf8_lossy(&streamed.stderr);
    for field in [
        "Prompt:",
        "tokens-per-sec",
        "Generation:",
        "Peak memory:",
        "time to first token",
    ] {
        assert!(stderr.contains(field), "missing {field} in {stderr}");
    }
    let json = generate_json(&dir, "12", &["--prompt", "Hello there", "--no-chat"]);
    let ids = ids(&json);
    assert!(!ids.is_empty() && ids.len() <= 12);
    let text = json["text"].as_str().unwrap();
    // Greedy runs agree, and the streamed text is the one-shot decode.
    assert_eq!(
        String::from_utf8_lossy(&streamed.stdout).trim_end_matches('\n'),
        text
    );
    // Whichever way the run ended (the token limit or an end-of-sequence
    // token, which the one-shot decode skips as special), the text is the
    // one-shot decode of the ids.
    let reason = &json["stop_reason"];
    assert!(
        reason == "MaxTokens" || reason.get("Eos").is_some(),
        "unexpected stop reason {reason}"
    );
    assert_eq!(text, one_shot_decode(&dir, &ids));
    for key in [
        "prompt_tokens",
        "generated_tokens",
        "time_to_first_token_seconds",
        "prompt_tokens_per_second",
        "generation_tokens_per_second",
        "peak_memory_bytes",
    ] {
        assert!(json["stats"][key].is_number(), "stats.{key}");
    }
}

#[test]
fn seeded_sampling_with_every_flag_is_reproducible() {
    let dir = model("gqa4_f32");
    let run = |seed: &str| {
        generate_json(
            &dir,
            "16",
            &[
                "--prompt",
                "Once upon a time",
                "--temp",
                "0.9",
                "--top-p",
                "0.95",
                "--top-k",
                "50",
                "--min-p",
                "0.01",
                "--repetition-penalty",
                "1.1",
                "--repetition-context-size",
                "8",
                "--seed",
                seed,
                "--dtype",
                "f32",
                "--no-chat",
            ],
        )
    };
    let first = run("11");
    assert_eq!(ids(&first), ids(&run("11")), "same seed, same tokens");
    let others: Vec<Vec<u32>> = ["12", "13", "14"].iter().map(|s| ids(&run(s))).collect();
    assert!(
        others.iter().any(|o| *o != ids(&first)),
        "other seeds never change the sample"
    );
}

#[test]
fn prompt_from_file_and_stdin_equal_the_flag() {
    let dir = model("mha_tied_f32");
    let by_flag = generate_json(&dir, "6", &["--prompt", "Bonjour à tous", "--no-chat"]);
    let file = std::env::temp_dir().join(format!("mistral-cli-prompt-{}.txt", std::process::id()));
    std::fs::write(&file, "Bonjour à tous").unwrap();
    let by_file = generate_json(
        &dir,
        "6",
        &["--prompt-file", file.to_str().unwrap(), "--no-chat"],
    );
    std::fs::remove_file(&file).ok();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mistral-cli"))
        .args([
            "generate",
            "--model",
            &dir,
            "--max-tokens",
            "6",
            "--no-chat",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("Bonjour à tous".as_bytes())
        .unwrap();
    let by_stdin = json_of(&child.wait_with_output().unwrap());
    assert_eq!(by_flag["prompt_ids"], by_file["prompt_ids"]);
    assert_eq!(by_flag["prompt_ids"], by_stdin["prompt_ids"]);
    assert_eq!(ids(&by_flag), ids(&by_file));
    assert_eq!(ids(&by_flag), ids(&by_stdin));
}

#[test]
fn stop_string_ends_the_text_before_it() {
    let dir = model("gqa4_f32");
    let free = generate_json(&dir, "24", &["--prompt", "Hi", "--no-chat"]);
    let text = free["text"].as_str().unwrap().to_owned();
    let chars: Vec<char> = text.chars().collect();
    assert!(
        chars.len() >= 6,
        "too little text to pick a stop string from: {text:?}"
    );
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let stopped = generate_json(
        &dir,
        "24",
        &["--prompt", "Hi", "--no-chat", "--stop", &stop],
    );
    let expected = &text[..text.find(&stop).unwrap()];
    assert_eq!(stopped["text"].as_str().unwrap(), expected);
    assert!(
        stopped["stop_reason"]
            .as_str()
            .unwrap()
            .contains("StopString"),
        "{}",
        stopped["stop_reason"]
    );
}

#[test]
fn chat_mode_uses_the_model_template() {
    let dir = model("gqa4_f32");
    let chat = generate_json(&dir, "4", &["--prompt", "Hello", "--system", "Be brief."]);
    assert_eq!(chat["chat"], true);
    let plain = generate_json(&dir, "4", &["--prompt", "Hello", "--no-chat"]);
    assert_eq!(plain["chat"], false);
    // The rendered prompt holds the [INST] control token; the plain one not.
    let tokenizer =
        tokenizers::Tokenizer::from_file(Path::new(&dir).join("tokenizer.json")).unwrap();
    let inst = tokenizer
        .token_to_id("[INST]")
        .expect("[INST] in the v0.3 vocabulary");
    let has_inst = |v: &serde_json::Value| {
        v["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|id| id.as_u64() == Some(inst as u64))
    };
    assert!(has_inst(&chat));
    assert!(!has_inst(&plain));
}

#[test]
fn bench_json_reports_every_metric() {
    let dir = model("gqa4_f32");
    let json = json_of(&cli(&[
        "bench",
        "--model",
        &dir,
        "--prompt-tokens",
        "16,32",
        "--gen-tokens",
        "4",
        "--depth",
        "0,8",
        "--iterations",
        "2",
        "--warmup",
        "0",
        "--json",
    ]));
    assert!(json["load_s"].is_number());
    assert!(json["dtype"].is_string() && json["blas"].is_string());
    let (total, per_token) = (&json["weight_bytes"], &json["weight_bytes_per_token"]);
    assert!(total.as_u64() >= per_token.as_u64() && per_token.as_u64() > Some(0));
    // The load's peak memory holds at least the weights it loaded.
    assert!(json["load_peak_mem_bytes"].as_u64() >= total.as_u64());
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "2 prompt lengths x 2 depths");
    for row in results {
        for key in [
            "prefill_tps",
            "decode_tps",
            "ttft_s",
            "peak_mem_GB",
            "decode_build_ms",
            "decode_dispatch_ms",
            "decode_wait_ms",
            "decode_idle_dispatch_ms",
        ] {
            for stat in ["median", "min", "max"] {
                assert!(row[key][stat].is_number(), "{key}.{stat} in {row}");
            }
            assert!(row[key]["min"].as_f64() <= row[key]["max"].as_f64());
        }
        // Every decode step builds a graph: some host time.
        assert!(row["decode_build_ms"]["min"].as_f64() > Some(0.0), "{row}");
    }
    // One run (after a warm-up of the same lengths): a decode step's three
    // parts lie within its share of the decode time (the caller's own time
    // is the rest).
    let json = json_of(&cli(&[
        "bench",
        "--model",
        &dir,
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "8",
        "--iterations",
        "1",
        "--warmup",
        "1",
        "--warmup-full",
        "--json",
    ]));
    let row = &json["results"][0];
    let get = |key: &str| row[key]["median"].as_f64().expect(key);
    let per_token_ms = 1e3 / get("decode_tps");
    let split = get("decode_build_ms") + get("decode_dispatch_ms") + get("decode_wait_ms");
    assert!(
        split <= per_token_ms * 1.001,
        "build + dispatch + wait {split} ms > {per_token_ms} ms a token: {row}"
    );
    for format in ["table", "csv", "md"] {
        let output = cli(&[
            "bench",
            "--model",
            &dir,
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "2",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--format",
            format,
        ]);
        assert!(
            output.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("decode"),
            "{format}"
        );
    }
}

#[test]
fn bad_arguments_give_one_line_and_a_non_zero_exit() {
    let dir = model("gqa4_f32");
    let cases: [&[&str]; 8] = [
        &["generate", "--model", &dir, "--prompt", "x", "--frobnicate"],
        &["generate", "--model", &dir, "--prompt", "x", "--temp", "-1"],
        &["generate", "--model", &dir, "--prompt", "x", "--top-p", "0"],
        &[
            "generate", "--model", &dir, "--prompt", "x", "--top-p", "1.5",
        ],
        &["generate", "--model", "/no/such/model", "--prompt", "x"],
        &[
            "generate",
            "--model",
            &dir,
            "--prompt",
            "x",
            "--max-tokens",
            "0",
        ],
        &[
            "generate",
            "--model",
            &dir,
            "--prompt",
            "x",
            "--prompt-file",
            "/no/such/file",
        ],
        &["bench", "--model", &dir, "--prompt-tokens", "12,abc"],
    ];
    for args in cases {
        let output = cli(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error"), "{args:?}: {stderr}");
    }
}

/// A copy of test model `name` without its weights: config, tokenizer and
/// the rest, so only checks made before loading weights can pass.
fn weightless_copy(
    name: &str,
    config_edit: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(model(name)).expect("model dir") {
        let path = entry.expect("entry").path();
        let file = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !file.ends_with(".safetensors") && !file.ends_with(".index.json") && path.is_file() {
            std::fs::copy(&path, tmp.path().join(&file)).expect("copy");
        }
    }
    let config_path = tmp.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
            .expect("json");
    config_edit(&mut config);
    std::fs::write(&config_path, config.to_string()).expect("write config");
    tmp
}

#[test]
fn top_k_is_checked_against_the_vocabulary_before_loading() {
    // Before: `--top-k` was a u32 cast to i32 (4294967295 wrapped to -1) and
    // `top_k >= vocab` failed only after loading and prefilling.
    let dir = model("gqa4_f32");
    let wrapped = cli(&[
        "generate",
        "--model",
        &dir,
        "--prompt",
        "x",
        "--top-k",
        "4294967295",
    ]);
    let stderr = String::from_utf8_lossy(&wrapped.stderr);
    assert!(!wrapped.status.success());
    assert!(stderr.contains("--top-k"), "{stderr}");

    let weightless = weightless_copy("gqa4_f32", |_| {});
    let vocab = 32768.to_string();
    let dir = weightless.path().display().to_string();
    let output = cli(&[
        "generate", "--model", &dir, "--prompt", "x", "--top-k", &vocab,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--top-k 32768 must be below the model's vocabulary size (32768)"),
        "{stderr}"
    );
}

#[test]
fn a_tokenizer_larger_than_the_model_vocabulary_is_rejected_naming_it() {
    let weightless = weightless_copy("gqa4_f32", |config| config["vocab_size"] = 1000.into());
    let dir = weightless.path().display().to_string();
    let output = cli(&["generate", "--model", &dir, "--prompt", "x"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("tokenizer.json") && stderr.contains("`vocab_size` (1000)"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_stops_and_still_prints_statistics() {
    use std::io::Read;
    let dir = model("gqa4_f32");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mistral-cli"))
        .args([
            "generate",
            "--model",
            &dir,
            "--prompt",
            "Hello",
            "--max-tokens",
            "100000",
            "--no-chat",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mistral-cli");
    // Wait until text streams, then interrupt as a terminal's Ctrl-C would.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout
        .read_exact(&mut first)
        .expect("some output before the interrupt");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "interrupted run failed: {stderr}");
    assert!(stderr.contains("Generation:"), "{stderr}");
    let generated: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Generation: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("generated token count");
    assert!(generated < 100000, "the interrupt did not stop the run");
}

#[test]
fn a_hub_repo_id_resolves_from_the_hugging_face_cache() {
    // A cache in the layout huggingface_hub writes: refs/main names the
    // commit, snapshots/<commit>/ holds the files (symlinks into blobs/).
    let source = models().join("mha_tied_f32");
    let cache = std::env::temp_dir().join(format!("mistral-cli-hf-cache-{}", std::process::id()));
    let repo = cache.join("models--test-org--tiny-mistral");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        let blob = repo.join("blobs").join(name);
        std::fs::copy(&path, &blob).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(name), snapshot.join(name))
            .unwrap();
    }
    let run = |model: &str| {
        Command::new(env!("CARGO_BIN_EXE_mistral-cli"))
            .args([
                "generate",
                "--model",
                model,
                "--prompt",
                "Hi",
                "--max-tokens",
                "4",
                "--no-chat",
                "--json",
            ])
            .env("HF_HUB_CACHE", &cache)
            .output()
            .unwrap()
    };
    let by_id = json_of(&run("test-org/tiny-mistral"));
    let by_path = json_of(&run(source.to_str().unwrap()));
    assert_eq!(ids(&by_id), ids(&by_path));
    let missing = run("test-org/not-downloaded");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("cargo xtask download test-org/not-downloaded"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&cache).ok();
}
