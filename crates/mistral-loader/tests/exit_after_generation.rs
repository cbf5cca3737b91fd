//! A program may stop iterating a `Generate` at any token and end at once:
//! the Quick Start does exactly that (`generator.take(50)`, then `main`
//! returns). `Generate` starts each next step with `async_eval` before it
//! returns a token, and MLX 0.32 can corrupt its heap when a thread or the
//! process ends while a stream still runs such work (before `Generate`
//! waited for it on drop, up to one exit in seven aborted with
//! `malloc_consolidate(): unaligned fastbin chunk detected` or SIGSEGV).
//!
//! The test runs this binary again as child processes, each generating a
//! few tokens on the main thread and on two spawned threads and then
//! exiting, and requires every one to exit cleanly.

mod reference;

use std::process::Command;

use mistral_loader::load_model;
use mlx_rs::Array;
use mlx_rs_core::{Generate, KVCache};

/// Set in the child processes: the model directory to generate with.
const CHILD_ENV: &str = "MISTRAL_MLX_EXIT_CHILD_MODEL";

/// Child processes started. Without the wait each child (three generations)
/// failed with a probability of about 0.2 here, so all of them passing by
/// luck is about 1e-3.
const CHILDREN: usize = 30;

fn generate_a_few(dir: &str, n: usize) {
    let mut model = load_model(dir).expect("load_model");
    let prompt = Array::from_slice(&[1i32, 5, 9, 200, 31], &[1, 5]);
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let ids: Vec<u32> = Generate::<KVCache>::new(&mut model, &mut cache, 0.0, &prompt)
        .take(n)
        .map(|t| t.expect("generate").item_exact::<u32>())
        .collect();
    assert_eq!(ids.len(), n);
}

/// The child's work, run by the parent test as `--ignored --exact` in a new
/// process (ignored in normal runs: its point is the process exit that
/// follows). Run by hand it uses the same test model.
#[test]
#[ignore = "child process of processes_exit_cleanly_right_after_generating"]
fn child_generates_and_returns() {
    let dir = std::env::var(CHILD_ENV)
        .unwrap_or_else(|_| reference::test_model("gqa4_f32").dir.display().to_string());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || generate_a_few(&dir, 3 + t))
        })
        .collect();
    for thread in threads {
        thread.join().expect("generation thread");
    }
    generate_a_few(&dir, 2);
}

#[test]
fn processes_exit_cleanly_right_after_generating() {
    let spec = reference::test_model("gqa4_f32");
    let exe = std::env::current_exe().expect("test binary path");
    for run in 0..CHILDREN {
        let out = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_generates_and_returns",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &spec.dir)
            .output()
            .expect("start the child");
        assert!(
            out.status.success(),
            "child {run} ended with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The child really ran the generation (not zero filtered tests).
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("test child_generates_and_returns ... ok")
                && stdout.contains("1 passed"),
            "child {run} did not run the generation: {stdout}"
        );
    }
}
