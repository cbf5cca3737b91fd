//! `cargo xtask compare --vs llama.cpp`: our `mistral-cli bench` and
//! llama.cpp's `llama-bench` on the same GGUF files, interleaved.
//!
//! Design notes:
//! - The files: the real demo model (SmolLM2-135M-Instruct Q4_1, name
//!   `smollm2_q4_1`) and random-weight ones at Llama 3.2 1B's shape (`1b_*`)
//!   and at Mistral 7B's width with 2 of its 32 layers (`7bw_*`), each in
//!   Q4_0, Q4_1, Q8_0 and Q4_K (`xtask/python/models/llama_gguf_models.py`, in
//!   `<target>/xtask/llama-gguf`, written when missing); `--only` may also
//!   name any `.gguf` path.
//! - Every measured run is its own process: llama.cpp
//!   `llama-bench -m FILE -p P -n N -t THREADS -r 1 -o json` (its own
//!   warm-up: one full prompt and one token), ours `mistral-cli bench
//!   --iterations 1 --warmup 1 --json` with `--dtype checkpoint` (weights
//!   kept quantized, as llama.cpp) and `--dtype auto` (on the CPU: float32,
//!   dequantized at load), plus `--ours-args` on both (a kernel flag to try).
//!   Repetition r runs every engine on every file before repetition r + 1.
//! - Measures: prefill and decode tokens/s; time to first token (ours: from
//!   its JSON; llama.cpp: the prompt test's time, see `llama_cpp.rs`); the
//!   process's maximum resident set (`/usr/bin/time -f %M`, both engines;
//!   memory-mapped weights count once touched); ours also MLX's peak
//!   allocation during the timed generation (its JSON's `peak_mem_GB`).
//!   llama.cpp decodes from an empty cache (its `n_gen` test), ours after
//!   the prompt: at P = 128 the attention over 128 more positions is a
//!   small share of a step.
//! - A run that fails (a type our loader refuses, say) is a cell saying so,
//!   not the end of the comparison.
//! - Results: a Markdown table on stdout and in
//!   `<target>/xtask/compare/llama.md`, raw JSON in `llama.json` beside it,
//!   both rewritten after every file's runs.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench_env::{build_cli, machine, ours_bench, summary, today};
use crate::llama_cpp;
use crate::paths::{workspace_root, xtask_dir};
use crate::python;

/// The options of `compare --vs llama.cpp`.
#[derive(Args, Debug, Clone)]
pub struct LlamaArgs {
    /// (--vs llama.cpp) Prompt tokens.
    #[arg(long, default_value_t = 128)]
    prompt: u32,
    /// (--vs llama.cpp) Generated tokens.
    #[arg(long, default_value_t = 64)]
    gen: u32,
    /// (--vs llama.cpp) llama.cpp's threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// (--vs llama.cpp) Extra arguments for every run of ours (split at
    /// spaces), e.g. a CPU kernel flag.
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    ours_args: String,
    /// (--vs llama.cpp) Leave out ours with `--dtype auto`.
    #[arg(long)]
    no_auto: bool,
}

/// The generated files, by name (`llama_gguf_models.py`'s `NAMES`).
const GENERATED: [&str; 8] = [
    "1b_q4_0", "1b_q4_1", "1b_q8_0", "1b_q4_k", "7bw_q4_0", "7bw_q4_1", "7bw_q8_0", "7bw_q4_k",
];
/// The demo model's name here.
const SMOLLM2: &str = "smollm2_q4_1";

/// Who runs a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    LlamaCpp,
    OursCheckpoint,
    OursAuto,
}

impl Engine {
    fn label(self) -> &'static str {
        match self {
            Engine::LlamaCpp => "llama.cpp",
            Engine::OursCheckpoint => "ours (checkpoint)",
            Engine::OursAuto => "ours (auto)",
        }
    }
}

/// What one run measured (NaN: not measured by that engine).
#[derive(Debug, Clone, Copy)]
struct Sample {
    prefill_tps: f64,
    decode_tps: f64,
    ttft_s: f64,
    max_rss_gb: f64,
    mlx_peak_gb: f64,
}

/// A run's result: a sample, or why there is none.
type Outcome = std::result::Result<Sample, String>;

/// Runs `compare --vs llama.cpp`.
pub fn run(args: &LlamaArgs, reps: u32, only: &[String]) -> Result<()> {
    let names: Vec<String> = if only.is_empty() {
        std::iter::once(SMOLLM2)
            .chain(GENERATED)
            .map(str::to_owned)
            .collect()
    } else {
        only.to_vec()
    };
    for name in &names {
        if !(name == SMOLLM2 || GENERATED.contains(&name.as_str()) || name.ends_with(".gguf")) {
            bail!(
                "--only: unknown model {name} (one of {SMOLLM2}, {}, or a .gguf path)",
                GENERATED.join(", ")
            );
        }
    }
    let llama_bench = llama_cpp::ensure_llama_bench()?;
    let cli = build_cli()?;
    let files: Vec<PathBuf> = resolve(&names)?;
    let engines: Vec<Engine> = [Engine::LlamaCpp, Engine::OursCheckpoint, Engine::OursAuto]
        .into_iter()
        .filter(|&e| !(args.no_auto && e == Engine::OursAuto))
        .collect();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let out_dir = xtask_dir().join("compare");
    let mut outcomes: Vec<Vec<Vec<Outcome>>> = vec![vec![Vec::new(); engines.len()]; files.len()];
    let mut raw = Vec::new();
    let load_start = load_average();
    for rep in 0..reps {
        for (f, file) in files.iter().enumerate() {
            for (e, &engine) in engines.iter().enumerate() {
                let load_before = load_average();
                let (outcome, output) = match engine {
                    Engine::LlamaCpp => {
                        let (outcome, text) = run_llama(&llama_bench, file, args, threads);
                        (outcome, Value::String(text))
                    }
                    Engine::OursCheckpoint => run_ours(&cli, file, args, "checkpoint"),
                    Engine::OursAuto => run_ours(&cli, file, args, "auto"),
                };
                match &outcome {
                    Ok(s) => eprintln!(
                        "rep {}/{reps} {:<14} {:<18} prefill {:>8.2} tok/s  decode {:>7.2} tok/s  rss {:.2} GB",
                        rep + 1,
                        names[f],
                        engine.label(),
                        s.prefill_tps,
                        s.decode_tps,
                        s.max_rss_gb
                    ),
                    Err(why) => eprintln!(
                        "rep {}/{reps} {:<14} {:<18} FAILED: {why}",
                        rep + 1,
                        names[f],
                        engine.label()
                    ),
                }
                raw.push(json!({
                    "rep": rep, "model": names[f], "file": file.display().to_string(),
                    "engine": engine.label(), "error": outcome.as_ref().err(),
                    "load_average_1min": { "before": load_before, "after": load_average() },
                    "max_rss_GB": outcome.as_ref().ok().map(|s| s.max_rss_gb),
                    "output": output,
                }));
                outcomes[f][e].push(outcome);
            }
            // Rewritten after every file, so a cut-short run keeps its rows.
            let loads = (load_start, load_average());
            let done = rep + u32::from(f + 1 == files.len());
            let header = header(args, reps, only, done, threads, loads);
            let text = format!("{header}\n\n{}", render(&names, &engines, &outcomes));
            write(
                &out_dir,
                &text,
                &raw,
                rep + 1 == reps && f + 1 == files.len(),
            )?;
        }
    }
    Ok(())
}

/// The files of `names`: generated ones written when missing.
fn resolve(names: &[String]) -> Result<Vec<PathBuf>> {
    let wanted: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| GENERATED.contains(n))
        .collect();
    let dir = python::ensure_llama_gguf(&wanted)?;
    names
        .iter()
        .map(|name| {
            Ok(if name == SMOLLM2 {
                crate::smollm2::for_tests()?
            } else if name.ends_with(".gguf") {
                let path = PathBuf::from(name);
                if !path.is_file() {
                    bail!("--only: {name} is not a file");
                }
                path
            } else {
                dir.join(format!("{name}.gguf"))
            })
        })
        .collect()
}

/// Runs `command` under `/usr/bin/time -f %M` (when present): its exit
/// status, stdout, stderr and maximum resident set in GB (NaN without it).
fn timed(command: &Command) -> Result<(std::process::Output, f64)> {
    let time = Path::new("/usr/bin/time");
    let rss_file = std::env::temp_dir().join(format!("xtask-rss-{}", std::process::id()));
    let mut wrapped = if time.is_file() {
        let mut c = Command::new(time);
        c.args(["-f", "%M", "-o"]).arg(&rss_file);
        c.arg(command.get_program()).args(command.get_args());
        c
    } else {
        let mut c = Command::new(command.get_program());
        c.args(command.get_args());
        c
    };
    let output = wrapped
        .output()
        .with_context(|| format!("cannot start {command:?}"))?;
    let rss = fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| parse_max_rss_kib(&t))
        .map_or(f64::NAN, |kib| kib * 1024.0 / 1e9);
    let _ = fs::remove_file(&rss_file);
    Ok((output, rss))
}

/// The kibibytes `/usr/bin/time -f %M` wrote (its last line; earlier lines
/// may say the command was signalled).
fn parse_max_rss_kib(text: &str) -> Option<f64> {
    text.lines()
        .rev()
        .find_map(|l| l.trim().parse::<f64>().ok())
}

fn failure(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    format!(
        "{} ({})",
        last.unwrap_or("no message").trim(),
        output.status
    )
}

fn run_llama(bin: &Path, file: &Path, args: &LlamaArgs, threads: usize) -> (Outcome, String) {
    let mut command = Command::new(bin);
    command
        .arg("-m")
        .arg(file)
        .args(["-p", &args.prompt.to_string(), "-n", &args.gen.to_string()])
        .args(["-t", &threads.to_string(), "-r", "1", "-o", "json"]);
    let (output, rss) = match timed(&command) {
        Ok(x) => x,
        Err(e) => return (Err(format!("{e:#}")), String::new()),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return (Err(failure(&output)), text);
    }
    let outcome = llama_cpp::parse_bench(&text)
        .map(|r| Sample {
            prefill_tps: r.prefill_tps,
            decode_tps: r.decode_tps,
            ttft_s: r.ttft_s,
            max_rss_gb: rss,
            mlx_peak_gb: f64::NAN,
        })
        .map_err(|e| format!("{e:#}"));
    (outcome, text)
}

fn run_ours(cli: &Path, file: &Path, args: &LlamaArgs, dtype: &str) -> (Outcome, Value) {
    let mut command = ours_bench(cli, file, dtype, args.prompt, args.gen);
    command.args(args.ours_args.split_whitespace());
    let (output, rss) = match timed(&command) {
        Ok(x) => x,
        Err(e) => return (Err(format!("{e:#}")), Value::Null),
    };
    if !output.status.success() {
        return (Err(failure(&output)), Value::Null);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: Value = match serde_json::from_str(stdout.lines().last().unwrap_or_default()) {
        Ok(v) => v,
        Err(e) => {
            return (
                Err(format!("no JSON from ours ({e}): {stdout}")),
                Value::Null,
            )
        }
    };
    let row = &json["results"][0];
    let median = |key: &str| row[key]["median"].as_f64().unwrap_or(f64::NAN);
    let sample = Sample {
        prefill_tps: median("prefill_tps"),
        decode_tps: median("decode_tps"),
        ttft_s: median("ttft_s"),
        max_rss_gb: rss,
        mlx_peak_gb: median("peak_mem_GB"),
    };
    (Ok(sample), json)
}

/// A metric row: name, how to read it, digits.
type Metric = (&'static str, fn(&Sample) -> f64, usize);

const METRICS: [Metric; 5] = [
    ("prefill tok/s", |s| s.prefill_tps, 1),
    ("decode tok/s", |s| s.decode_tps, 2),
    ("time to first token s", |s| s.ttft_s, 3),
    ("max RSS GB", |s| s.max_rss_gb, 2),
    ("MLX peak GB", |s| s.mlx_peak_gb, 2),
];

/// `median [min, max]` of the runs that succeeded, or why none did.
fn cell(outcomes: &[Outcome], read: fn(&Sample) -> f64, digits: usize) -> (String, f64) {
    let values: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().map(read))
        .filter(|v| !v.is_nan())
        .collect();
    if values.is_empty() {
        let text = match outcomes.iter().find_map(|o| o.as_ref().err()) {
            Some(why) if outcomes.iter().all(Result::is_err) => {
                format!("failed: {}", why.replace('|', "/"))
            }
            _ => "-".to_owned(),
        };
        return (text, f64::NAN);
    }
    let (median, min, max) = summary(&values);
    if values.len() == 1 {
        return (format!("{median:.digits$}"), median);
    }
    (
        format!("{median:.digits$} [{min:.digits$}, {max:.digits$}]"),
        median,
    )
}

/// One table per file: a row per metric, a column per engine and one per
/// ratio of ours to llama.cpp's median.
fn render(names: &[String], engines: &[Engine], outcomes: &[Vec<Vec<Outcome>>]) -> String {
    let mut out = String::new();
    for (name, per_engine) in names.iter().zip(outcomes) {
        out.push_str(&format!("### {name}\n\n"));
        let mut header = vec!["metric".to_owned()];
        header.extend(engines.iter().map(|e| e.label().to_owned()));
        header.extend(
            engines
                .iter()
                .filter(|&&e| e != Engine::LlamaCpp)
                .map(|e| format!("{} / llama.cpp", e.label())),
        );
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
        for (metric, read, digits) in METRICS {
            let (cells, medians): (Vec<String>, Vec<f64>) = per_engine
                .iter()
                .map(|runs| cell(runs, read, digits))
                .unzip();
            let llama = engines.iter().position(|&e| e == Engine::LlamaCpp);
            let mut row = vec![metric.to_owned()];
            row.extend(cells);
            for (i, &engine) in engines.iter().enumerate() {
                if engine == Engine::LlamaCpp {
                    continue;
                }
                row.push(ratio(medians[i], llama.map_or(f64::NAN, |l| medians[l])));
            }
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out.push('\n');
    }
    out
}

fn ratio(ours: f64, theirs: f64) -> String {
    if ours.is_nan() || theirs.is_nan() || theirs <= 0.0 {
        "-".to_owned()
    } else {
        format!("{:.2}x", ours / theirs)
    }
}

fn header(
    args: &LlamaArgs,
    reps: u32,
    only: &[String],
    done: u32,
    threads: usize,
    loads: (Option<f64>, Option<f64>),
) -> String {
    let mut command = format!("cargo xtask compare --vs llama.cpp --reps {reps}");
    if !only.is_empty() {
        command.push_str(&format!(" --only {}", only.join(",")));
    }
    if (args.prompt, args.gen) != (128, 64) {
        command.push_str(&format!(" --prompt {} --gen {}", args.prompt, args.gen));
    }
    if !args.ours_args.is_empty() {
        command.push_str(&format!(" --ours-args '{}'", args.ours_args));
    }
    if args.no_auto {
        command.push_str(" --no-auto");
    }
    format!(
        "{} on {}; commit {}; llama.cpp from {} ({threads} threads); prompt {}, {} generated; \
         {done} of {reps} interleaved repetitions done (median [min, max]); 1-minute load \
         average {} at the start, {} now (the machine is shared; llama.cpp's threads wait \
         for each other, so it slows down most when a core is busy); command: `{command}`",
        today(),
        machine(),
        commit(),
        llama_cpp::REQUIREMENT,
        args.prompt,
        args.gen,
        show(loads.0),
        show(loads.1),
    )
}

fn show(load: Option<f64>) -> String {
    load.map_or("unknown".to_owned(), |l| format!("{l:.2}"))
}

/// The 1-minute load average (`/proc/loadavg`, Linux).
fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `git describe`-like: the short commit, `-dirty` with local changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(workspace_root())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let hash = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{hash}-dirty")
    } else {
        hash
    }
}

fn write(out_dir: &Path, text: &str, raw: &[Value], last: bool) -> Result<()> {
    fs::create_dir_all(out_dir)?;
    let md = out_dir.join("llama.md");
    fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
    let json_path = out_dir.join("llama.json");
    let document = json!({ "date": today(), "machine": machine(), "runs": raw });
    fs::write(&json_path, serde_json::to_string_pretty(&document)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    if last {
        println!("{text}");
        eprintln!("written: {} and {}", md.display(), json_path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(prefill: f64) -> Sample {
        Sample {
            prefill_tps: prefill,
            decode_tps: 10.0,
            ttft_s: 0.5,
            max_rss_gb: 1.0,
            mlx_peak_gb: f64::NAN,
        }
    }

    #[test]
    fn cells_show_median_and_range_of_what_succeeded() {
        let runs = vec![
            Ok(sample(3.0)),
            Err("boom".to_owned()),
            Ok(sample(1.0)),
            Ok(sample(2.0)),
        ];
        let (text, median) = cell(&runs, |s| s.prefill_tps, 1);
        assert_eq!(text, "2.0 [1.0, 3.0]");
        assert_eq!(median, 2.0);
        // A metric the engine does not measure.
        assert_eq!(cell(&runs, |s| s.mlx_peak_gb, 2).0, "-");
        // Every run failed: the reason, without breaking the table.
        let failed: Vec<Outcome> = vec![Err("Q9 | unsupported".to_owned())];
        assert_eq!(
            cell(&failed, |s| s.prefill_tps, 1).0,
            "failed: Q9 / unsupported"
        );
    }

    #[test]
    fn ratios_and_rss() {
        assert_eq!(ratio(50.0, 100.0), "0.50x");
        assert_eq!(ratio(f64::NAN, 100.0), "-");
        assert_eq!(
            parse_max_rss_kib("Command exited with non-zero status 1\n2048\n"),
            Some(2048.0)
        );
        assert_eq!(parse_max_rss_kib(""), None);
    }

    #[test]
    fn the_tables_have_a_column_per_engine_and_ratio() {
        let names = vec!["m".to_owned()];
        let engines = [Engine::LlamaCpp, Engine::OursCheckpoint];
        let outcomes = vec![vec![vec![Ok(sample(100.0))], vec![Ok(sample(25.0))]]];
        let text = render(&names, &engines, &outcomes);
        assert!(
            text.contains("| prefill tok/s | 100.0 | 25.0 | 0.25x |"),
            "{text}"
        );
        assert!(text.contains("ours (checkpoint) / llama.cpp"), "{text}");
    }
}
