//! mlx-lm run live: `xtask/python/refs/sampling_reference.py` through the Python
//! named by `MISTRAL_MLX_PYTHON` (`cargo xtask test` sets it; default
//! `<workspace>/target/xtask/venv/bin/python`). A missing Python fails the
//! test with the command to run: a parity check is never skipped.

use std::path::Path;

pub use super::python_module;

/// Arguments of one mlx-lm generation (`sampling_reference.py`'s flags).
#[derive(Debug, Clone, Default)]
pub struct LiveRun {
    pub temp: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub top_k: i32,
    pub repetition: Option<(f32, usize)>,
    pub seed: Option<u64>,
    pub prefill_step_size: Option<i32>,
}

/// mlx-lm's `n` ids for `prompt` on the model in `dir`, and with
/// `logprobs` the log-probabilities of every step (`[n * vocab]`).
pub fn mlx_lm_generate(
    dir: &Path,
    prompt: &[i32],
    n: usize,
    run: &LiveRun,
    logprobs: bool,
) -> (Vec<i32>, Option<Vec<f32>>) {
    let ids = prompt
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = python_module("refs.sampling_reference");
    cmd.arg("--model")
        .arg(dir)
        .arg("--prompt-ids")
        .arg(ids)
        .arg("--n")
        .arg(n.to_string())
        .arg("--temp")
        .arg(run.temp.to_string())
        .arg("--top-p")
        .arg(run.top_p.to_string())
        .arg("--min-p")
        .arg(run.min_p.to_string())
        .arg("--top-k")
        .arg(run.top_k.to_string());
    if let Some((penalty, context)) = run.repetition {
        cmd.arg("--repetition-penalty")
            .arg(penalty.to_string())
            .arg("--repetition-context-size")
            .arg(context.to_string());
    }
    if let Some(seed) = run.seed {
        cmd.arg("--seed").arg(seed.to_string());
    }
    if let Some(step) = run.prefill_step_size {
        cmd.arg("--prefill-step-size").arg(step.to_string());
    }
    let out_file = std::env::temp_dir().join(format!(
        "mistral-mlx-logprobs-{}-{}.f32",
        std::process::id(),
        n
    ));
    if logprobs {
        cmd.arg("--logprobs-out").arg(&out_file);
    }
    let output = cmd.output().expect("run sampling_reference.py");
    assert!(
        output.status.success(),
        "sampling_reference.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("parse sampling_reference.py output");
    let ids = doc["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_i64().expect("id") as i32)
        .collect();
    let rows = logprobs.then(|| {
        let bytes = std::fs::read(&out_file).expect("read logprobs");
        let _ = std::fs::remove_file(&out_file);
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    });
    (ids, rows)
}
