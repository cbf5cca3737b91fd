//! `mistral-cli`: run Mistral models on MLX from the command line.
//!
//! Each subcommand lives in its own module; `main` only parses arguments and
//! turns errors into one line on stderr and a non-zero exit.

mod args;
mod bench;
mod convert;
mod generate;
mod info;
mod model_source;
mod ranks;
mod report;
mod serve;
mod speculative;
mod stats;

use clap::{Parser, Subcommand};

/// Mistral-family LLM inference on MLX.
#[derive(Parser)]
#[command(name = "mistral-cli", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // `allow_negative_numbers` is a per-command setting in clap (not
    // propagated), so each subcommand with numeric options gets it: `--temp
    // -1` is then a bad value of `--temp`, not an unknown argument.
    /// Generate text from a prompt (streamed to stdout; statistics to stderr).
    #[command(allow_negative_numbers = true)]
    Generate(generate::GenerateArgs),
    /// Measure load time, prefill and decode speed, time to first token and
    /// peak memory.
    #[command(allow_negative_numbers = true)]
    Bench(bench::BenchArgs),
    /// Write a model (directory or GGUF file) as an MLX safetensors folder
    /// that mlx-lm also loads, optionally cast or quantized.
    #[command(allow_negative_numbers = true)]
    Convert(convert::ConvertArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (chat and text
    /// completions, streaming or not) until Ctrl-C.
    Serve(serve::ServeArgs),
    /// Show the MLX build in use and check that it computes correctly.
    Info,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print in full; argument errors as one line.
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let rendered = err.render().to_string();
            eprintln!(
                "{}",
                rendered.lines().next().unwrap_or("error: bad arguments")
            );
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Info => info::run(),
    };
    if let Err(err) = result {
        eprintln!("error: {}", error_line(&err));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: a library error
/// that already shows its source (`file: field: what`) is not followed by
/// that source again.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}
