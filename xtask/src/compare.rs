//! `cargo xtask compare`: our `mistral-cli bench` and mlx-lm 0.32.2 side by
//! side on the same files, interleaved, on this machine.
//!
//! Design notes:
//! - Every measured run is its own process (ours: `mistral-cli bench
//!   --iterations 1 --warmup 1 --json`; mlx-lm:
//!   `xtask/python/bench/mlx_lm_bench.py`, which mirrors it: same
//!   pseudo-random prompt ids, same short warm-up, greedy, no EOS stop,
//!   clock stopped at the last token). So each run also times a load, and
//!   no engine inherits the other's caches.
//! - Runs are interleaved: repetition r runs every engine of a case (mlx-lm,
//!   then ours with each `--dtype`) before repetition r + 1, so a drift of
//!   the machine's speed hits every engine alike.
//! - The machine's memory read bandwidth is measured in the same run (MLX
//!   `sum` over 1 GiB, before and after); decode is reported as a fraction
//!   of the bound `bandwidth / weight bytes read per token`.
//! - The plan (`plan`) keeps a repetition near 18 minutes on a 2-core CPU
//!   (mlx-lm's CPU runs are the slow part; 5 repetitions take 1.5 hours);
//!   `--full` runs every model at prompts 16, 512 and 2048 with 128 tokens.
//!   Results: a Markdown table on stdout and in
//!   `<target>/xtask/compare/compare.md`, with the raw numbers in
//!   `compare.json` beside it; both are rewritten after every repetition.
//! - `--before CLI` adds another build of `mistral-cli` (e.g. an older
//!   commit's) as engines of their own, interleaved with the rest: a
//!   change's before and after in one run, each against mlx-lm.
//! - `--vs llama.cpp` compares with llama.cpp's `llama-bench` on GGUF files
//!   instead: `compare_llama.rs`.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::bench_env::{build_cli, machine, ours_bench, summary, today};
use crate::compare_llama::{self, LlamaArgs};
use crate::paths::xtask_dir;
use crate::python;

/// Arguments of `compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The engine to compare with.
    #[arg(long, value_enum, default_value_t = Versus::MlxLm)]
    vs: Versus,
    /// Measured runs of each engine per case (default 5 against mlx-lm, at
    /// least 5 for a report; 3 against llama.cpp).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    reps: Option<u32>,
    /// Only the cases of these models (comma-separated, e.g. m150_bf16; with
    /// --vs llama.cpp: smollm2_q4_1, 1b_q4_0, 7bw_q8_0, ... or .gguf paths).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Every model at prompts 16, 512 and 2048, 128 generated tokens, every
    /// engine (hours on a small CPU).
    #[arg(long)]
    full: bool,
    /// Another `mistral-cli` binary (e.g. an older commit's release build)
    /// run as well, with the same arguments as ours, interleaved.
    #[arg(long, value_name = "CLI")]
    before: Option<std::path::PathBuf>,
    #[command(flatten)]
    llama: LlamaArgs,
}

/// The engine `compare` measures ours against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Versus {
    /// mlx-lm 0.32.2 on the random-weight Mistral shapes and SmolLM2.
    #[value(name = "mlx-lm")]
    MlxLm,
    /// llama.cpp's llama-bench on the same GGUF files.
    #[value(name = "llama.cpp")]
    LlamaCpp,
}

/// Who runs a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// mlx-lm 0.32.2 with its defaults (the checkpoint's dtypes).
    MlxLm,
    /// `mistral-cli bench --dtype checkpoint`: the same dtypes as mlx-lm.
    OursCheckpoint,
    /// `mistral-cli bench --dtype auto`.
    OursAuto,
    /// `--before`'s binary, `--dtype checkpoint`.
    BeforeCheckpoint,
    /// `--before`'s binary, `--dtype auto`.
    BeforeAuto,
}

impl Engine {
    fn label(self) -> &'static str {
        match self {
            Engine::MlxLm => "mlx-lm",
            Engine::OursCheckpoint => "ours (checkpoint dtype)",
            Engine::OursAuto => "ours (--dtype auto)",
            Engine::BeforeCheckpoint => "before (checkpoint dtype)",
            Engine::BeforeAuto => "before (--dtype auto)",
        }
    }

    /// The `--before` twin of one of ours.
    fn before(self) -> Option<Engine> {
        match self {
            Engine::OursCheckpoint => Some(Engine::BeforeCheckpoint),
            Engine::OursAuto => Some(Engine::BeforeAuto),
            _ => None,
        }
    }
}

const ALL: &[Engine] = &[Engine::MlxLm, Engine::OursCheckpoint, Engine::OursAuto];
const NO_CHECKPOINT: &[Engine] = &[Engine::MlxLm, Engine::OursAuto];

/// One model at one prompt length.
#[derive(Debug, Clone)]
struct Case {
    model: &'static str,
    prompt: u32,
    gen: u32,
    engines: Vec<Engine>,
}

const MODELS: [&str; 6] = [
    "m150_bf16",
    "m150_q4",
    "m150_q8",
    "m150_window",
    "m7b_2l_bf16",
    "smollm2_bf16",
];

/// The cases run by default: every model, and the settings that fit on a
/// 2-core CPU (mlx-lm's CPU quantized matmul runs about 1 token/s, its
/// bf16 prefill about 40 tokens/s).
fn plan(full: bool) -> Vec<Case> {
    let case = |model, prompt, gen, engines: &[Engine]| Case {
        model,
        prompt,
        gen,
        engines: engines.to_vec(),
    };
    if full {
        return MODELS
            .iter()
            .flat_map(|&m| [16, 512, 2048].map(|p| case(m, p, 128, ALL)))
            .collect();
    }
    vec![
        case("m150_bf16", 16, 128, ALL),
        case("m150_bf16", 512, 128, ALL),
        case("m150_bf16", 2048, 32, NO_CHECKPOINT),
        case("m150_q4", 16, 32, ALL),
        case("m150_q8", 16, 32, NO_CHECKPOINT),
        case("m150_window", 512, 128, ALL),
        case("m7b_2l_bf16", 16, 32, ALL),
        case("smollm2_bf16", 512, 128, ALL),
    ]
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    load_s: f64,
    ttft_s: f64,
    prefill_tps: f64,
    decode_tps: f64,
    peak_mem_gb: f64,
    bytes_per_token: f64,
}

/// Runs `compare`.
pub fn run(mut args: CompareArgs) -> Result<()> {
    if args.vs == Versus::LlamaCpp {
        if args.full {
            bail!("--full is for --vs mlx-lm");
        }
        return compare_llama::run(&args.llama, args.reps.unwrap_or(3), &args.only);
    }
    let reps = *args.reps.get_or_insert(5);
    let mut cases = plan(args.full);
    if !args.only.is_empty() {
        if let Some(unknown) = args.only.iter().find(|m| !MODELS.contains(&m.as_str())) {
            bail!(
                "--only: unknown model {unknown} (one of {})",
                MODELS.join(", ")
            );
        }
        cases.retain(|c| args.only.iter().any(|m| m == c.model));
    }
    if let Some(before) = &args.before {
        if !before.is_file() {
            bail!("--before: no mistral-cli binary at {}", before.display());
        }
        for case in &mut cases {
            let twins: Vec<Engine> = case.engines.iter().filter_map(|e| e.before()).collect();
            case.engines.extend(twins);
        }
    }
    let cli = build_cli()?;
    let python = python::ensure_env()?;
    let models = python::ensure_bench_models()?;

    let out_dir = xtask_dir().join("compare");
    let bandwidth_before = bandwidth(&python)?;
    eprintln!("memory read bandwidth: {bandwidth_before:.2} GB/s");
    let mut samples: Vec<Vec<Vec<Sample>>> = cases
        .iter()
        .map(|c| vec![Vec::new(); c.engines.len()])
        .collect();
    let mut raw = Vec::new();
    for rep in 0..reps {
        for (case, per_engine) in cases.iter().zip(samples.iter_mut()) {
            for (engine, runs) in case.engines.iter().zip(per_engine.iter_mut()) {
                let dir = models.join(case.model);
                let (sample, json) = match engine {
                    Engine::MlxLm => run_mlx_lm(&python, &dir, case)?,
                    Engine::OursCheckpoint => run_ours(&cli, &dir, case, "checkpoint")?,
                    Engine::OursAuto => run_ours(&cli, &dir, case, "auto")?,
                    Engine::BeforeCheckpoint | Engine::BeforeAuto => {
                        let before = args.before.as_deref().context("--before")?;
                        let dtype = if *engine == Engine::BeforeAuto {
                            "auto"
                        } else {
                            "checkpoint"
                        };
                        run_ours(before, &dir, case, dtype)?
                    }
                };
                eprintln!(
                    "rep {}/{} {} p{} g{} {:<24} prefill {:>8.2} tok/s  decode {:>7.2} tok/s",
                    rep + 1,
                    reps,
                    case.model,
                    case.prompt,
                    case.gen,
                    engine.label(),
                    sample.prefill_tps,
                    sample.decode_tps
                );
                raw.push(json!({
                    "rep": rep, "model": case.model, "prompt": case.prompt,
                    "gen": case.gen, "engine": engine.label(), "output": json,
                }));
                runs.push(sample);
            }
        }
        write_report(&Report {
            args: &args,
            cases: &cases,
            samples: &samples,
            bandwidth: (bandwidth_before, None),
            raw: &raw,
            out_dir: &out_dir,
            reps_done: rep + 1,
        })?;
    }
    let bandwidth_after = bandwidth(&python)?;
    write_report(&Report {
        args: &args,
        cases: &cases,
        samples: &samples,
        bandwidth: (bandwidth_before, Some(bandwidth_after)),
        raw: &raw,
        out_dir: &out_dir,
        reps_done: reps,
    })
}

/// Everything a report is made of.
struct Report<'a> {
    args: &'a CompareArgs,
    cases: &'a [Case],
    samples: &'a [Vec<Vec<Sample>>],
    /// Bandwidth before, and after (None while still running).
    bandwidth: (f64, Option<f64>),
    raw: &'a [Value],
    out_dir: &'a Path,
    reps_done: u32,
}

/// Prints the tables and writes them with the raw runs to
/// `compare.md` / `compare.json` in `out_dir` (rewritten after every
/// repetition, so an interrupted run keeps what it measured).
fn write_report(report: &Report) -> Result<()> {
    let (before, after) = report.bandwidth;
    let bandwidth = after.map_or(before, |a| (before + a) / 2.0);
    let after_text = after.map_or("not measured yet".to_owned(), |a| format!("{a:.2}"));
    let header = format!(
        "{} on {}; memory read bandwidth {:.2} GB/s (before {:.2}, after {}); {} of {} \
         interleaved repetitions per engine done; command: `cargo xtask compare{}`",
        today(),
        machine(),
        bandwidth,
        before,
        after_text,
        report.reps_done,
        report.args.reps.unwrap_or(5),
        if report.args.full { " --full" } else { "" },
    );
    let header = match &report.args.before {
        Some(before) => format!("{header}; before: `--before {}`", before.display()),
        None => header,
    };
    let table = render(report.cases, report.samples, bandwidth);
    let text = format!("{header}\n\n{table}");
    if after.is_some() {
        println!("{text}");
    }
    fs::create_dir_all(report.out_dir)?;
    let md = report.out_dir.join("compare.md");
    fs::write(&md, &text).with_context(|| format!("writing {}", md.display()))?;
    let raw_path = report.out_dir.join("compare.json");
    let document = json!({
        "date": today(), "machine": machine(), "reps": report.args.reps.unwrap_or(5),
        "reps_done": report.reps_done,
        "bandwidth_GBps": { "before": before, "after": after },
        "runs": report.raw,
    });
    fs::write(&raw_path, serde_json::to_string_pretty(&document)?)
        .with_context(|| format!("writing {}", raw_path.display()))?;
    if after.is_some() {
        eprintln!("written: {} and {}", md.display(), raw_path.display());
    }
    Ok(())
}

/// Runs `command` and parses the last line of its stdout as JSON.
fn json_output(command: &mut Command) -> Result<Value> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{shown} printed no JSON: {stdout}"))
}

fn number(value: &Value, what: &str) -> Result<f64> {
    value
        .as_f64()
        .with_context(|| format!("`{what}` is not a number in {value}"))
}

fn run_ours(cli: &Path, dir: &Path, case: &Case, dtype: &str) -> Result<(Sample, Value)> {
    let json = json_output(&mut ours_bench(cli, dir, dtype, case.prompt, case.gen))?;
    let row = &json["results"][0];
    let median = |key: &str| number(&row[key]["median"], key);
    let sample = Sample {
        load_s: number(&json["load_s"], "load_s")?,
        ttft_s: median("ttft_s")?,
        prefill_tps: median("prefill_tps")?,
        decode_tps: median("decode_tps")?,
        peak_mem_gb: median("peak_mem_GB")?,
        bytes_per_token: number(&json["weight_bytes_per_token"], "weight_bytes_per_token")?,
    };
    Ok((sample, json))
}

fn run_mlx_lm(python: &Path, dir: &Path, case: &Case) -> Result<(Sample, Value)> {
    let json = json_output(
        python::module(python, "bench.mlx_lm_bench")
            .arg("--model")
            .arg(dir)
            .args(["--prompt-tokens", &case.prompt.to_string()])
            .args(["--gen-tokens", &case.gen.to_string()]),
    )?;
    let field = |key: &str| number(&json[key], key);
    let sample = Sample {
        load_s: field("load_s")?,
        ttft_s: field("ttft_s")?,
        prefill_tps: field("prefill_tps")?,
        decode_tps: field("decode_tps")?,
        peak_mem_gb: field("peak_mem_GB")?,
        bytes_per_token: field("weight_bytes_per_token")?,
    };
    Ok((sample, json))
}

/// Memory read bandwidth in GB/s, measured through MLX.
fn bandwidth(python: &Path) -> Result<f64> {
    let json = json_output(python::module(python, "bench.mlx_lm_bench").arg("--bandwidth"))?;
    number(&json["read_GBps"], "read_GBps")
}

/// A metric row: name, how to read it, and its number format.
type Metric = (&'static str, fn(&Sample) -> f64, usize);

const METRICS: [Metric; 5] = [
    ("prefill tok/s", |s| s.prefill_tps, 1),
    ("decode tok/s", |s| s.decode_tps, 2),
    ("time to first token s", |s| s.ttft_s, 3),
    ("peak memory GB", |s| s.peak_mem_gb, 3),
    ("load s", |s| s.load_s, 2),
];

/// One Markdown table per case: a row per metric, a column per engine
/// (median [min, max]) and the ratio of each of ours to mlx-lm's median.
fn render(cases: &[Case], samples: &[Vec<Vec<Sample>>], bandwidth: f64) -> String {
    let mut out = String::new();
    for (case, per_engine) in cases.iter().zip(samples) {
        out.push_str(&format!(
            "### {} — prompt {}, {} generated\n\n",
            case.model, case.prompt, case.gen
        ));
        let mut header = vec!["metric".to_owned()];
        let mlx = case.engines.iter().position(|&e| e == Engine::MlxLm);
        for engine in &case.engines {
            header.push(engine.label().to_owned());
        }
        for engine in case.engines.iter().filter(|&&e| e != Engine::MlxLm) {
            header.push(format!("{} / mlx-lm", engine.label()));
        }
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
        for (name, read, digits) in METRICS.iter().copied().chain(std::iter::once((
            "decode / bandwidth bound",
            (|s: &Sample| s.decode_tps * s.bytes_per_token) as fn(&Sample) -> f64,
            3,
        ))) {
            let fraction = name.starts_with("decode /");
            let mut cells = vec![name.to_owned()];
            let mut medians = Vec::new();
            for runs in per_engine {
                let values: Vec<f64> = runs
                    .iter()
                    .map(|s| {
                        if fraction {
                            read(s) / (bandwidth * 1e9)
                        } else {
                            read(s)
                        }
                    })
                    .collect();
                let (median, min, max) = summary(&values);
                medians.push(median);
                cells.push(format!(
                    "{median:.digits$} [{min:.digits$}, {max:.digits$}]"
                ));
            }
            for (i, engine) in case.engines.iter().enumerate() {
                if *engine == Engine::MlxLm {
                    continue;
                }
                cells.push(match mlx {
                    Some(m) if medians[m] > 0.0 => format!("{:.2}x", medians[i] / medians[m]),
                    _ => "-".to_owned(),
                });
            }
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_planned_model_is_generated() {
        for full in [false, true] {
            for case in plan(full) {
                assert!(MODELS.contains(&case.model), "{}", case.model);
                assert!(case.engines.contains(&Engine::MlxLm));
            }
        }
        // Every model appears in the default plan.
        let default = plan(false);
        assert!(MODELS.iter().all(|m| default.iter().any(|c| c.model == *m)));
    }
}
