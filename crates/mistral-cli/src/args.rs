//! Command-line arguments of `generate`, `bench` and `serve`, with their
//! checks.
//!
//! Every bad value is rejected by clap's value parsers, so the user gets one
//! `error:` line and exit status 2 before any model is loaded.

use clap::{Args, ValueEnum};
use mlx_rs_core::{
    cpu_fused::CpuFast, cpu_qmm::CpuQmm, quantized_matvec::QmvKernel, KvQuantization,
};
use std::path::PathBuf;

/// Sampling options shared by `generate` (and usable by `bench`).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f32)]
    pub temp: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability
    /// adds up to P, in (0, 1]; 1 disables it.
    #[arg(long, default_value_t = 1.0, value_parser = probability_open_closed)]
    pub top_p: f32,
    /// Keep only the K most likely tokens; 0 disables it (must be below the
    /// model's vocabulary size, checked before loading).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..))]
    pub top_k: i32,
    /// Drop tokens less likely than P times the most likely one, in [0, 1);
    /// 0 disables it.
    #[arg(long, default_value_t = 0.0, value_parser = probability_closed_open)]
    pub min_p: f32,
    /// Penalize tokens seen in the last `--repetition-context-size` tokens
    /// (> 0; 1 disables it).
    #[arg(long, value_parser = positive_f32)]
    pub repetition_penalty: Option<f32>,
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub repetition_context_size: u32,
    /// Random seed, for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The quantized key/value cache (mlx-lm's `--kv-bits`, `--kv-group-size`
/// and `--quantized-kv-start`).
#[derive(Args, Debug, Clone)]
pub struct KvCacheArgs {
    /// Store keys and values quantized to this many bits (4 or 8; also 2,
    /// 3, 5 or 6); default: as they come.
    #[arg(long, value_parser = kv_bits)]
    pub kv_bits: Option<i32>,
    /// Elements sharing one scale and bias in the quantized cache (32, 64 or
    /// 128; must divide the model's head dimension).
    #[arg(long, default_value_t = 64, value_parser = kv_group_size)]
    pub kv_group_size: i32,
    /// Quantize a layer's cache once it holds this many positions (as
    /// mlx-lm, 5000 by default; 0: from the first forward call on).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i32).range(0..))]
    pub quantized_kv_start: i32,
}

impl KvCacheArgs {
    /// The cache quantization asked for (`None` without `--kv-bits`).
    pub fn quantization(&self) -> Option<KvQuantization> {
        let bits = self.kv_bits?;
        // The value parsers checked every field.
        KvQuantization::new(bits, self.kv_group_size, self.quantized_kv_start).ok()
    }
}

/// The dtype to compute in.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeArg {
    /// What is fastest on the device: the checkpoint's dtypes on a GPU;
    /// float32 on the CPU, quantized weights kept quantized for our CPU
    /// kernel (with `--cpu-qmm mlx`: dequantized when they fit in half of
    /// the available memory) (for `convert`: keep the dtypes).
    Auto,
    /// The checkpoint's own dtypes, quantized weights kept quantized (what
    /// mlx-lm runs).
    Checkpoint,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
    /// float32.
    F32,
}

impl DtypeArg {
    /// The MLX dtype, or `None` for the checkpoint's own (what `convert`
    /// casts to).
    pub fn to_mlx(self) -> Option<mlx_rs::Dtype> {
        match self {
            DtypeArg::Auto | DtypeArg::Checkpoint => None,
            DtypeArg::Bf16 => Some(mlx_rs::Dtype::Bfloat16),
            DtypeArg::F16 => Some(mlx_rs::Dtype::Float16),
            DtypeArg::F32 => Some(mlx_rs::Dtype::Float32),
        }
    }

    /// What the loader is asked for.
    pub fn to_compute(self) -> mistral_loader::ComputeDtype {
        match (self, self.to_mlx()) {
            (DtypeArg::Auto, _) => mistral_loader::ComputeDtype::Auto,
            (_, Some(dtype)) => mistral_loader::ComputeDtype::Exact(dtype),
            (_, None) => mistral_loader::ComputeDtype::Checkpoint,
        }
    }
}

/// Where the model comes from: a directory, a GGUF file, or a Hugging Face
/// repo id found in the local Hugging Face cache.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory, GGUF file, or a Hugging Face repo id (e.g.
    /// mlx-community/Mistral-7B-Instruct-v0.3-4bit) already in the local
    /// Hugging Face cache (HF_HUB_CACHE, HF_HOME).
    #[arg(long, short)]
    pub model: String,
    /// The dtype to compute in.
    #[arg(long, value_enum, default_value_t = DtypeArg::Auto)]
    pub dtype: DtypeArg,
    /// Read safetensors weights with plain reads instead of a memory map: a
    /// file truncated while loading is then an error instead of a crash
    /// (SIGBUS). GGUF files are always mapped.
    #[arg(long)]
    pub no_mmap: bool,
    /// Which 4- and 8-bit products of 1 to 4 rows our CUDA kernel computes
    /// instead of MLX's: `ours` (all it can take, the default), `ours-large`
    /// (the large matrices only) or `mlx` (none). Only on an NVIDIA GPU.
    #[arg(long, env = "MISTRAL_MLX_QMV", default_value = "ours", value_parser = parse_qmv)]
    pub qmv: QmvKernel,
    /// Which kernel computes quantized products on the CPU: `ours` (SIMD and
    /// multi-threaded, the default; see mlx_rs_core::cpu_qmm), `ours-q8`
    /// (ours with the activations quantized to int8 per group, as
    /// llama.cpp does: integer dot products, faster, rounds x to 8 bits) or
    /// `mlx` (MLX's `quantized_matmul`). With `ours` or `ours-q8`,
    /// `--dtype auto` keeps quantized weights quantized on the CPU instead
    /// of dequantizing them to float32. No effect on a GPU.
    #[arg(long, default_value = "ours", value_parser = parse_cpu_qmm)]
    pub cpu_qmm: CpuQmm,
    /// Which kernels compute RMSNorm, RoPE, one-token attention and SwiGLU on the
    /// CPU: `ours` (one primitive each, the default; see
    /// mlx_rs_core::cpu_fused) or `mlx` (MLX's fast ops, which expand into
    /// many primitives on the CPU). No effect on a GPU.
    #[arg(long, default_value = "ours", value_parser = parse_cpu_fast)]
    pub cpu_fast: CpuFast,
    /// Which layout of a folder to read: `hf` (config.json and
    /// model*.safetensors), `mistral` (Mistral's params.json and
    /// consolidated*.safetensors), or `auto`: the Hugging Face one when
    /// present, else Mistral's.
    #[arg(long, value_enum, default_value_t = LayoutArg::Auto)]
    pub layout: LayoutArg,
}

/// `--tokenizer-mode`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerModeArg {
    /// `mistral` when the folder's tekken.json or tokenizer.model.vN has a
    /// protocol implemented here.
    Auto,
    /// The chat template.
    Hf,
    /// mistral-common's protocol, from tekken.json or tokenizer.model.vN.
    Mistral,
}

impl From<TokenizerModeArg> for mistral_loader::TokenizerMode {
    fn from(mode: TokenizerModeArg) -> Self {
        match mode {
            TokenizerModeArg::Auto => mistral_loader::TokenizerMode::Auto,
            TokenizerModeArg::Hf => mistral_loader::TokenizerMode::Template,
            TokenizerModeArg::Mistral => mistral_loader::TokenizerMode::Mistral,
        }
    }
}

/// `--layout`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutArg {
    /// The Hugging Face layout when present, else Mistral's.
    Auto,
    /// config.json and model*.safetensors.
    Hf,
    /// params.json and consolidated*.safetensors.
    Mistral,
}

fn parse_qmv(text: &str) -> Result<QmvKernel, String> {
    text.parse()
}

fn parse_cpu_qmm(text: &str) -> Result<CpuQmm, String> {
    text.parse()
}

fn parse_cpu_fast(text: &str) -> Result<CpuFast, String> {
    text.parse()
}

impl ModelArgs {
    /// The loader options these arguments ask for.
    pub fn load_options(&self) -> mistral_loader::LoadOptions {
        mistral_loader::LoadOptions {
            dtype: self.dtype.to_compute(),
            file_access: if self.no_mmap {
                mistral_loader::FileAccess::Read
            } else {
                mistral_loader::FileAccess::Mmap
            },
            qmv: self.qmv,
            cpu_qmm: self.cpu_qmm,
            cpu_fast: self.cpu_fast,
            layout: match self.layout {
                LayoutArg::Auto => mistral_loader::WeightsLayout::Auto,
                LayoutArg::Hf => mistral_loader::WeightsLayout::HuggingFace,
                LayoutArg::Mistral => mistral_loader::WeightsLayout::Mistral,
            },
        }
    }
}

fn parse_f32(text: &str) -> Result<f32, String> {
    let value: f32 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("`{text}` is not a finite number"))
    }
}

fn non_negative_f32(text: &str) -> Result<f32, String> {
    let value = parse_f32(text)?;
    if value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("must be 0 or more, got {value}"))
    }
}

fn positive_f32(text: &str) -> Result<f32, String> {
    let value = parse_f32(text)?;
    if value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be more than 0, got {value}"))
    }
}

fn probability_open_closed(text: &str) -> Result<f32, String> {
    let value = parse_f32(text)?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!("must be in (0, 1], got {value}"))
    }
}

fn probability_closed_open(text: &str) -> Result<f32, String> {
    let value = parse_f32(text)?;
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be in [0, 1), got {value}"))
    }
}

/// Prompt sources of `generate`: at most one of text and file; stdin when
/// neither is given.
#[derive(Args, Debug, Clone)]
#[group(multiple = false)]
pub struct PromptArgs {
    /// The prompt text.
    #[arg(long, short)]
    pub prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
}

fn kv_bits(text: &str) -> Result<i32, String> {
    let bits: i32 = text
        .parse()
        .map_err(|_| format!("not an integer: {text}"))?;
    if KvQuantization::BITS.contains(&bits) {
        Ok(bits)
    } else {
        Err(format!("must be one of {:?}", KvQuantization::BITS))
    }
}

fn kv_group_size(text: &str) -> Result<i32, String> {
    let size: i32 = text
        .parse()
        .map_err(|_| format!("not an integer: {text}"))?;
    if KvQuantization::GROUP_SIZES.contains(&size) {
        Ok(size)
    } else {
        Err(format!("must be one of {:?}", KvQuantization::GROUP_SIZES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_enforced() {
        assert!(probability_open_closed("0").is_err());
        assert!(probability_open_closed("1").is_ok());
        assert!(probability_open_closed("1.5").is_err());
        assert!(probability_closed_open("0").is_ok());
        assert!(probability_closed_open("1").is_err());
        assert!(non_negative_f32("-0.1").is_err());
        assert!(non_negative_f32("nan").is_err());
        assert!(positive_f32("0").is_err());
    }
}
