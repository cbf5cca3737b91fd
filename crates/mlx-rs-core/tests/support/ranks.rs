//! Runs test scenarios as several MLX ranks on 127.0.0.1: the test binary
//! starts itself once per rank with `MLX_RANK` and `MLX_HOSTFILE` set, as
//! MLX's launcher does, running its `rank_child` test with the scenario's
//! name in `MISTRAL_MLX_DISTRIBUTED_CHILD`; each rank prints `RESULT name:
//! [values]` lines. Shared by the distributed tests of several crates.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the children: which scenario to run.
pub const CHILD: &str = "MISTRAL_MLX_DISTRIBUTED_CHILD";
const LIMIT: Duration = Duration::from_secs(120);

/// Starts `n` ranks of this binary running `scenario`; returns each one's
/// exit status and stdout, killing them all past the time limit.
pub fn run_ranks(n: usize, scenario: &str) -> Vec<(Option<i32>, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let hostfile = dir.path().join("hosts.json");
    mlx_rs_core::distributed::write_loopback_hostfile(n, &hostfile).expect("a hostfile");
    let exe = std::env::current_exe().expect("test binary");
    let mut children: Vec<Child> = (0..n)
        .map(|rank| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "rank_child",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD, scenario)
                .env("MLX_RANK", rank.to_string())
                .env("MLX_HOSTFILE", &hostfile)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a rank")
        })
        .collect();
    let status = wait_all(&mut children, scenario);
    children
        .into_iter()
        .zip(status)
        .map(|(mut child, code)| {
            let mut out = String::new();
            let _ = child.stdout.take().unwrap().read_to_string(&mut out);
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            if !err.trim().is_empty() {
                eprintln!("{scenario} rank stderr: {}", err.trim());
            }
            (code, out)
        })
        .collect()
}

/// Waits for every child; their exit codes (`None`: ended by a signal).
/// Past the time limit it kills them all and fails the test: a rank that
/// hangs must not hang the test.
pub fn wait_all(children: &mut [Child], what: &str) -> Vec<Option<i32>> {
    let start = Instant::now();
    let mut status = vec![None; children.len()];
    while status.iter().any(Option::is_none) {
        for (i, child) in children.iter_mut().enumerate() {
            if status[i].is_none() {
                if let Some(s) = child.try_wait().expect("wait") {
                    status[i] = Some(s.code());
                }
            }
        }
        if start.elapsed() > LIMIT {
            for child in children.iter_mut() {
                let _ = child.kill();
            }
            panic!("{what}: the ranks did not end within {LIMIT:?} (hung)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    status.into_iter().map(Option::flatten).collect()
}

/// What a rank prints: `name: values` lines.
pub fn report(name: &str, values: &[f32]) {
    println!("RESULT {name}: {}", serde_json::to_string(values).unwrap());
}

pub fn result(out: &str, name: &str) -> Vec<f32> {
    let prefix = format!("RESULT {name}: ");
    let line = out
        .lines()
        .find_map(|l| l.split_once(prefix.as_str()).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"));
    serde_json::from_str(line).unwrap()
}
