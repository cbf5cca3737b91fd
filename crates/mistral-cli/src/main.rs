//! `mistral-cli`: run Mistral models on MLX from the command line.
//!
//! Each subcommand lives in its own module; `main` only parses arguments and
//! turns errors into one line on stderr and a non-zero exit.

mod info;

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
    /// Show the MLX build in use and check that it computes correctly.
    Info,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info::run(),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
