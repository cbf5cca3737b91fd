//! `mistral-cli bench`: load time, prefill and decode throughput, time to
//! first token and peak memory, each as median, min and max over
//! `--iterations` runs (after `--warmup` unrecorded ones).
//!
//! `--depth D` first fills the cache with D tokens (untimed), then times the
//! prompt and the decode after them, as llama-bench's `-d` does: how fast a
//! model is deep into a conversation, which a prompt-only benchmark misses.
//! Prompts are deterministic pseudo-random ids, so runs are comparable.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::time::Instant;

use mistral_loader::{load_model_with, LoadOptions};
use mlx_rs::Array;
use mlx_rs_core::{Generate, RotatingKVCache};

use crate::args::ModelArgs;
use crate::model_source;
use crate::report::GenerationStats;
use crate::stats::Summary;

/// Output formats of `bench`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON object.
    Json,
    /// Comma-separated values with a header.
    Csv,
    /// A Markdown table.
    Md,
}

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt lengths to measure, comma-separated.
    #[arg(long, default_value = "512", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    prompt_tokens: Vec<u32>,
    /// Tokens to generate after each prompt (at least 2: the first comes
    /// from the prefill).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..))]
    gen_tokens: u32,
    /// Tokens already in the cache before the prompt, comma-separated.
    #[arg(long, default_value = "0", value_delimiter = ',')]
    depth: Vec<u32>,
    /// Measured runs per setting.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Unrecorded runs before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Shorthand for `--format json`.
    #[arg(long)]
    json: bool,
}

/// All runs of one (prompt, depth) setting.
struct Row {
    prompt_tokens: usize,
    depth: usize,
    samples: Vec<GenerationStats>,
}

/// Runs `bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let prompt_lengths: Vec<usize> = args.prompt_tokens.iter().map(|&n| n as usize).collect();
    let depths: Vec<usize> = args.depth.iter().map(|&n| n as usize).collect();
    let dir = model_source::resolve(&args.model.model)?;
    let options = LoadOptions {
        dtype: args.model.dtype.to_mlx(),
    };
    let format = if args.json { Format::Json } else { args.format };

    let mut load_seconds = Vec::new();
    let mut rows: Vec<Row> = prompt_lengths
        .iter()
        .flat_map(|&p| depths.iter().map(move |&d| (p, d)))
        .map(|(prompt_tokens, depth)| Row {
            prompt_tokens,
            depth,
            samples: Vec::new(),
        })
        .collect();
    for iteration in 0..args.warmup + args.iterations {
        let recorded = iteration >= args.warmup;
        let start = Instant::now();
        let mut model = load_model_with(&dir, &options)?;
        if recorded {
            load_seconds.push(start.elapsed().as_secs_f64());
        }
        let vocab = model.config().vocab_size;
        for row in rows.iter_mut() {
            let sample = measure(
                &mut model,
                vocab,
                row.prompt_tokens,
                row.depth,
                args.gen_tokens,
            )
            .with_context(|| format!("prompt {} tokens, depth {}", row.prompt_tokens, row.depth))?;
            if recorded {
                row.samples.push(sample);
            }
        }
    }
    print!(
        "{}",
        render(
            format,
            &dir.display().to_string(),
            &load_seconds,
            &rows,
            args.gen_tokens
        )
    );
    Ok(())
}

/// Deterministic pseudo-random ids in `[min(1000, vocab/2), vocab)`.
fn synthetic_ids(count: usize, vocab: i32, salt: u64) -> Vec<u32> {
    let low = 1000.min(vocab / 2) as u64;
    let span = (vocab as u64).saturating_sub(low).max(1);
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (low + state % span) as u32
        })
        .collect()
}

fn measure(
    model: &mut mistral_model::Mistral,
    vocab: i32,
    prompt_tokens: usize,
    depth: usize,
    gen_tokens: u32,
) -> Result<GenerationStats> {
    // Bounded by the window for sliding-window models, a plain cache otherwise.
    let mut cache: Vec<Option<RotatingKVCache>> = Vec::new();
    if depth > 0 {
        let context = synthetic_ids(depth, vocab, 1);
        let context = Array::from_slice(&context, &[1, depth as i32]);
        // Untimed: fill the cache, then evaluate its state.
        let mut fill = Generate::new(model, &mut cache, 0.0, &context).max_tokens(1);
        if let Some(token) = fill.next() {
            token?.eval()?;
        }
    }
    let ids = synthetic_ids(prompt_tokens, vocab, 2);
    let prompt = Array::from_slice(&ids, &[1, prompt_tokens as i32]);
    let _ = mlx_rs::memory::reset_peak_memory();
    let start = Instant::now();
    let mut first = None;
    let mut count = 0usize;
    let generator = Generate::new(model, &mut cache, 0.0, &prompt).max_tokens(gen_tokens as usize);
    for token in generator {
        token?.eval()?;
        first.get_or_insert_with(Instant::now);
        count += 1;
    }
    Ok(GenerationStats::measure(
        prompt_tokens,
        count,
        0.0, // load time is measured once per iteration, in `run`
        start,
        first,
        Instant::now(),
        mlx_rs::memory::peak_memory().unwrap_or(0),
    ))
}

/// A metric column: name, unit, and how to read it from a sample.
type Metric = (&'static str, &'static str, fn(&GenerationStats) -> f64);

/// The metric columns.
const METRICS: [Metric; 4] = [
    ("prefill", "tok/s", |s| s.prompt_tps),
    ("decode", "tok/s", |s| s.generation_tps),
    ("ttft", "s", |s| s.time_to_first_token),
    ("peak_mem", "GB", |s| s.peak_memory_bytes as f64 / 1e9),
];

fn summaries(row: &Row) -> Vec<(&'static str, &'static str, Option<Summary>)> {
    METRICS
        .iter()
        .map(|(name, unit, read)| {
            let values: Vec<f64> = row.samples.iter().map(read).collect();
            (*name, *unit, Summary::of(&values))
        })
        .collect()
}

fn render(format: Format, model: &str, load: &[f64], rows: &[Row], gen: u32) -> String {
    let load = Summary::of(load);
    match format {
        Format::Json => {
            let rows: Vec<_> = rows
                .iter()
                .map(|row| {
                    let mut object = serde_json::json!({
                        "prompt_tokens": row.prompt_tokens,
                        "depth": row.depth,
                        "gen_tokens": gen,
                        "iterations": row.samples.len(),
                    });
                    for (name, unit, summary) in summaries(row) {
                        let key = format!("{name}_{}", unit.replace("tok/s", "tps"));
                        object[key] = summary.map_or(serde_json::Value::Null, Summary::to_json);
                    }
                    object
                })
                .collect();
            let load = load.map_or(serde_json::Value::Null, Summary::to_json);
            format!(
                "{}\n",
                serde_json::json!({ "model": model, "load_s": load, "results": rows })
            )
        }
        Format::Csv | Format::Md | Format::Table => {
            let mut header = vec!["prompt".to_owned(), "depth".to_owned(), "gen".to_owned()];
            for (name, unit, _) in METRICS {
                header.push(format!("{name} {unit} (median [min, max])"));
            }
            let mut lines: Vec<Vec<String>> = vec![header];
            for row in rows {
                let mut cells = vec![
                    row.prompt_tokens.to_string(),
                    row.depth.to_string(),
                    gen.to_string(),
                ];
                for (_, _, summary) in summaries(row) {
                    cells.push(summary.map_or("-".to_owned(), |s| {
                        format!("{:.3} [{:.3}, {:.3}]", s.median, s.min, s.max)
                    }));
                }
                lines.push(cells);
            }
            let load_line = load.map_or("load: -".to_owned(), |s| {
                format!(
                    "load: {:.3} s median [{:.3}, {:.3}]",
                    s.median, s.min, s.max
                )
            });
            match format {
                Format::Csv => {
                    let mut out = String::new();
                    for cells in &lines {
                        let quoted: Vec<String> =
                            cells.iter().map(|c| format!("\"{c}\"")).collect();
                        out.push_str(&quoted.join(","));
                        out.push('\n');
                    }
                    out
                }
                Format::Md => {
                    let mut out = format!("{model}, {load_line}\n\n");
                    for (i, cells) in lines.iter().enumerate() {
                        out.push_str(&format!("| {} |\n", cells.join(" | ")));
                        if i == 0 {
                            out.push_str(&format!("|{}\n", " --- |".repeat(cells.len())));
                        }
                    }
                    out
                }
                _ => {
                    let widths: Vec<usize> = (0..lines[0].len())
                        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
                        .collect();
                    let mut out = format!("{model}\n{load_line}\n");
                    for cells in &lines {
                        let padded: Vec<String> = cells
                            .iter()
                            .zip(&widths)
                            .map(|(c, w)| format!("{c:>w$}"))
                            .collect();
                        out.push_str(&padded.join("  "));
                        out.push('\n');
                    }
                    out
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_ids_are_in_range_and_repeatable() {
        let ids = synthetic_ids(500, 32768, 7);
        assert_eq!(ids, synthetic_ids(500, 32768, 7));
        assert!(ids.iter().all(|&id| (1000..32768).contains(&id)));
        let small = synthetic_ids(50, 100, 7);
        assert!(small.iter().all(|&id| (50..100).contains(&id)));
    }
}
