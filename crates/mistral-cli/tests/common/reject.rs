//! Rejections: a broken model or bad arguments must fail through the
//! library and through `mistral-cli generate` with a clear error, within a
//! bound (no hang), without a panic.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mistral_loader::{load_model, load_model_config, load_special_tokens, load_tokenizer};

/// The longest a rejected run may take before it counts as a hang.
pub const HANG: Duration = Duration::from_secs(120);

/// Runs `mistral-cli` with `args`: it must fail within [`HANG`] with one
/// `error:` line on stderr that contains every needle, and no panic.
pub fn cli_rejects(args: &[&str], needles: &[&str]) {
    let mut child = super::cli_command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mistral-cli");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > HANG {
            let _ = child.kill();
            panic!("{args:?}: still running after {HANG:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} succeeded: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("error"), "{args:?}: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: no {needle:?} in {stderr}"
        );
    }
}

/// `generate` on `dir` with a short prompt and `extra` arguments.
pub fn generate_rejects(dir: &Path, extra: &[&str], needles: &[&str]) {
    let dir = dir.display().to_string();
    let mut args = vec![
        "generate",
        "--model",
        &dir,
        "--prompt",
        "Hello",
        "--max-tokens",
        "4",
    ];
    args.extend_from_slice(extra);
    cli_rejects(&args, needles);
}

/// What the CLI does with a model directory, through the library: the
/// first error, as text.
pub fn library_error(dir: &Path) -> String {
    let run = || -> Result<(), String> {
        let config = load_model_config(dir).map_err(|e| e.to_string())?;
        let tokenizer = load_tokenizer(dir).map_err(|e| e.to_string())?;
        mistral_loader::check_tokenizer_fits(&tokenizer, config.vocab_size, dir)
            .map_err(|e| e.to_string())?;
        load_special_tokens(dir, Some(&tokenizer)).map_err(|e| e.to_string())?;
        load_model(dir).map_err(|e| e.to_string())?;
        Ok(())
    };
    match run() {
        Ok(()) => panic!("{}: the library loaded a broken model", dir.display()),
        Err(message) => message,
    }
}

/// The library and the CLI both reject `dir`, naming every needle.
pub fn both_reject(dir: &Path, needles: &[&str]) {
    let message = library_error(dir);
    for needle in needles {
        assert!(
            message.contains(needle),
            "library: no {needle:?} in {message}"
        );
    }
    generate_rejects(dir, &[], needles);
}
