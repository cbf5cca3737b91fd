//! `mistral-cli convert`: a model (directory or GGUF file) written as an
//! MLX safetensors folder that mlx-lm and this project load, like
//! `mlx_lm.convert`. The work is `mistral_loader::convert_model`'s; this
//! module parses the arguments and prints what was written.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use mistral_loader::{convert_model, ConvertOptions};
use mistral_model::QuantParams;

use crate::args::DtypeArg;
use crate::model_source;

/// Arguments of `convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model to convert: a directory, a GGUF file, or a Hugging Face
    /// repo id in the local cache.
    #[arg(long, short)]
    model: String,
    /// The folder to write (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Cast floating-point tensors to this dtype (auto: keep them).
    #[arg(long, value_enum, default_value_t = DtypeArg::Auto)]
    dtype: DtypeArg,
    /// Quantize the dense matrices to this many bits (already-quantized
    /// ones, e.g. GGUF Q4_0/Q4_1/Q8_0, are kept as they are).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["4", "8"]))]
    q_bits: Option<String>,
    /// Group size of the quantization (with --q-bits).
    #[arg(long, default_value = "64", value_parser = clap::builder::PossibleValuesParser::new(["32", "64", "128"]))]
    q_group_size: String,
}

/// Runs `convert`.
pub fn run(args: ConvertArgs) -> Result<()> {
    let source = model_source::resolve(&args.model)?;
    let quantize = match &args.q_bits {
        Some(bits) => Some(QuantParams {
            bits: bits.parse()?,
            group_size: args.q_group_size.parse()?,
        }),
        None => None,
    };
    let options = ConvertOptions {
        dtype: args.dtype.to_mlx(),
        quantize,
    };
    let report = convert_model(&source, &args.out, &options)?;
    eprintln!(
        "Wrote {} tensors: {} matrices quantized ({} newly), {} dense",
        report.tensors, report.quantized, report.newly_quantized, report.dense
    );
    for file in &report.files {
        println!("{}", file.display());
    }
    Ok(())
}
