//! The README's Quick Start and the original examples, run against a
//! generated test model (see `cargo xtask test`).

use std::path::{Path, PathBuf};
use std::process::Command;

use mistral_mlx::{load_model, load_tokenizer, Generate, KVCache};
use mlx_rs::ops::indexing::{IndexOp, NewAxis};

fn test_model() -> PathBuf {
    let root = std::env::var_os("MISTRAL_MLX_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/xtask/test-models")
        });
    let dir = root.join("gqa4_f32");
    assert!(
        dir.join("config.json").is_file(),
        "no test model at {}: run `cargo xtask test`",
        dir.display()
    );
    dir
}

/// The Quick Start, as the README shows it, with the model path filled in.
// `Array::item` is what the README shows; mlx-rs 0.33 marks it deprecated.
#[allow(deprecated)]
fn quick_start(model_dir: &Path) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
    let mut model = load_model(model_dir)?;
    let tokenizer = load_tokenizer(model_dir)?;

    let encoding = tokenizer.encode("Hello, ", true)?;
    let prompt = mlx_rs::Array::from(encoding.get_ids()).index(NewAxis);
    let mut cache = Vec::new();

    let generator = Generate::<KVCache>::new(&mut model, &mut cache, 0.7, &prompt);
    let mut ids = Vec::new();
    for token in generator.take(50) {
        let token = token?;
        ids.push(token.item::<u32>());
        print!("{}", tokenizer.decode(&[token.item::<u32>()], true)?);
    }
    Ok(ids)
}

#[test]
fn quick_start_generates_fifty_tokens() {
    let dir = test_model();
    let ids = quick_start(&dir).expect("the Quick Start runs");
    assert_eq!(ids.len(), 50);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap() as u32;
    assert!(
        ids.iter().all(|&id| id < vocab),
        "ids out of the vocabulary"
    );
}

fn example(name: &str) -> PathBuf {
    // cargo test builds the examples next to the test binaries' folder.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(path.is_file(), "example {} was not built", path.display());
    path
}

#[test]
fn generate_example_runs_as_the_readme_shows() {
    let output = Command::new(example("generate_mistral"))
        .arg(test_model())
        .arg("Hello")
        .arg("8")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run generate_mistral");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("tok/s"), "{stderr}");
}

#[test]
fn benchmark_example_runs_as_the_readme_shows() {
    let output = Command::new(example("benchmark_mistral"))
        .arg(test_model())
        .args(["--iterations", "2"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run benchmark_mistral");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("decode:"), "{stdout}");
    let bad = Command::new(example("benchmark_mistral"))
        .arg(test_model())
        .args(["--iterations", "zero"])
        .output()
        .expect("run benchmark_mistral");
    assert!(!bad.status.success());
}
