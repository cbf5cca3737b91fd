//! `cargo xtask serve-bench`: the server's throughput with 1 and 8
//! concurrent streaming clients on the demo model (SmolLM2), through
//! `xtask/python/bench/serve_bench.py`; the JSON goes to
//! `benches/results/<date>-serve-bench.json` and a line per client count
//! to stdout.

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{bench_env, paths, python, smollm2};

/// `cargo xtask serve-bench` arguments.
#[derive(clap::Args)]
pub struct ServeBenchArgs {
    /// Client counts, comma separated (the first is the baseline).
    #[arg(long, default_value = "1,8")]
    clients: String,
    /// Rounds per client count, interleaved.
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Completion tokens per request at most.
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// Also run every round with the answers constrained to a JSON schema
    /// (`<date>-serve-bench-schema.json`).
    #[arg(long)]
    schema: bool,
}

pub fn run(args: &ServeBenchArgs) -> Result<()> {
    let cli = bench_env::build_cli()?;
    let model = smollm2::for_tests()?;
    let python = python::ensure_env()?;
    let output = python::module(&python, "bench.serve_bench")
        .arg("--cli")
        .arg(&cli)
        .arg("--model")
        .arg(&model)
        .args(["--clients", &args.clients])
        .args(["--reps", &args.reps.to_string()])
        .args(["--max-tokens", &args.max_tokens.to_string()])
        .args(args.schema.then_some("--schema"))
        .output()
        .context("running bench.serve_bench")?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(
        output.status.success(),
        "serve_bench.py failed ({})",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .context("serve_bench.py printed nothing")?;
    let report: Value = serde_json::from_str(line).context("serve_bench.py's JSON")?;
    let results = paths::workspace_root().join("benches/results");
    std::fs::create_dir_all(&results)?;
    let suffix = if args.schema { "-schema" } else { "" };
    let file = results.join(format!("{}-serve-bench{suffix}.json", bench_env::today()));
    std::fs::write(&file, format!("{line}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    println!("machine: {}", bench_env::machine());
    for (clients, r) in report["clients"].as_object().context("clients")? {
        println!(
            "{clients} clients: median {:.1} tok/s (min {:.1}, max {:.1}), {:.2}x the first{}",
            r["median_tok_s"].as_f64().unwrap_or(f64::NAN),
            r["min_tok_s"].as_f64().unwrap_or(f64::NAN),
            r["max_tok_s"].as_f64().unwrap_or(f64::NAN),
            r["ratio_to_first"].as_f64().unwrap_or(f64::NAN),
            r["ratio_to_free"]
                .as_f64()
                .map(|f| format!(", {f:.2}x free decoding"))
                .unwrap_or_default(),
        );
    }
    println!("written to {}", file.display());
    Ok(())
}
