//! `load_model`: a model directory into a ready [`Mistral`].
//!
//! Design notes: the config is parsed and validated first (errors name
//! `config.json` and the field), then the model takes its tensors one by
//! one from the memory-mapped checkpoint. A model error names a tensor; here
//! it gains the file that holds it. Conversion failures recorded by the
//! weights come first (a tensor that failed to convert looks missing to the
//! model), and tensors the model never took are an error too: they mean the
//! config and the checkpoint disagree.

use std::path::{Path, PathBuf};

use mistral_model::checkpoint_names::is_vision_tensor;
use mistral_model::{Block, MistralConfig, ModelError, TensorParallel, WeightSource};
use mlx_rs::Array;

use mlx_rs_core::cpu_fused::CpuFast;
use mlx_rs_core::cpu_qmm::CpuQmm;
use mlx_rs_core::quantized_matvec::QmvKernel;

use crate::config::read_config_str;
use crate::error::{LoadError, Result};
use crate::gguf::{self, GgufFile, GgufWeights};
use crate::native::{self, NativeWeights, WeightsLayout, PARAMS_FILE};
use crate::plan::{ComputeDtype, LoadPlan};
use crate::safetensors_files::{discover_checkpoint, CONFIG_FILE, INDEX_FILE};
use crate::safetensors_weights::{FileAccess, SafetensorsWeights};

pub use mistral_model::Mistral;

/// How to load a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// The dtype to compute in (default: the checkpoint's own, as mlx-lm
    /// loads; [`ComputeDtype::Auto`] picks what is fastest on the device).
    pub dtype: ComputeDtype,
    /// How safetensors files are read (default: memory-mapped; GGUF files
    /// are always mapped).
    pub file_access: FileAccess,
    /// Which one-row 4-bit products our CUDA kernel takes (default: none,
    /// MLX's; see [`mlx_rs_core::quantized_matvec`]).
    pub qmv: QmvKernel,
    /// Whether quantized products on the CPU use our kernel (default: MLX's;
    /// see [`mlx_rs_core::cpu_qmm`]). With [`ComputeDtype::Auto`] on the
    /// CPU it also keeps quantized weights quantized (scales in float16 or
    /// bfloat16 where that holds them exactly, else float32) instead of
    /// dequantizing them at load.
    pub cpu_qmm: CpuQmm,
    /// Whether RMSNorm, RoPE, decode attention and SwiGLU on the CPU use our
    /// kernels (default: MLX's ops; see [`mlx_rs_core::cpu_fused`]).
    pub cpu_fast: CpuFast,
    /// Which layout of a folder to read (default: the Hugging Face one when
    /// present, else Mistral's `params.json` + `consolidated.safetensors`).
    pub layout: WeightsLayout,
}

/// Loads the model at `path` like [`crate::load_model_with`], and also returns
/// every tensor the model took, as the source held it (Hugging Face names,
/// before any dtype cast): what `convert` writes out.
pub(crate) fn load_with_tensors(
    path: &Path,
    options: &LoadOptions,
) -> Result<(Mistral, Vec<(String, Array)>)> {
    let mut seen = Vec::new();
    let (model, _) = load_tapped(path, options, Some(&mut seen), None)?;
    Ok((model, seen))
}

/// A weight source that also records what it hands out.
struct Tap<'a> {
    source: &'a mut dyn WeightSource,
    seen: Option<&'a mut Vec<(String, Array)>>,
}

impl Tap<'_> {
    /// Records `array` (if any) under `name` and passes it on.
    fn record(&mut self, name: &str, array: Option<Array>) -> Option<Array> {
        if let (Some(seen), Some(array)) = (self.seen.as_mut(), &array) {
            seen.push((name.to_owned(), array.clone()));
        }
        array
    }
}

impl WeightSource for Tap<'_> {
    fn take(&mut self, name: &str) -> Option<Array> {
        let array = self.source.take(name);
        self.record(name, array)
    }

    fn take_block(&mut self, name: &str, block: Block) -> Option<Array> {
        let array = self.source.take_block(name, block);
        self.record(name, array)
    }
}

/// Builds the model from `source`, recording what it takes into `seen`.
fn build(
    config: &MistralConfig,
    source: &mut dyn WeightSource,
    seen: Option<&mut Vec<(String, Array)>>,
    plan: &LoadPlan,
    parallel: Option<TensorParallel>,
) -> std::result::Result<Mistral, ModelError> {
    let mut tap = Tap { source, seen };
    match parallel {
        Some(parallel) => Mistral::with_tensor_parallel(config, &mut tap, plan.weights, parallel),
        None => Mistral::with_options(config, &mut tap, plan.weights),
    }
}

/// The validated configuration of the model at `path` (a model directory's
/// `config.json`, or a GGUF file's metadata) without loading any weights, so
/// callers can check their arguments against it first.
pub fn load_model_config(path: impl AsRef<Path>) -> Result<MistralConfig> {
    let path = path.as_ref();
    if let Some(file) = gguf::find_gguf(path)? {
        return gguf_model_config(&file, &GgufFile::open(&file)?);
    }
    let (file, json) = config_text(path, native::use_native(path, WeightsLayout::Auto))?;
    dir_model_config(&file, &json)
}

/// The config file of the folder `dir` and its text as `config.json`:
/// `params.json` translated in Mistral's layout (`native`).
fn config_text(dir: &Path, native: bool) -> Result<(PathBuf, String)> {
    Ok(if native {
        let json = native::native_config_json(dir)?.to_string();
        (dir.join(PARAMS_FILE), json)
    } else {
        (dir.join(CONFIG_FILE), read_config_str(dir)?)
    })
}

/// `config_json` (the text of the config file `file`) parsed and
/// validated; errors name the file.
fn dir_model_config(file: &Path, config_json: &str) -> Result<MistralConfig> {
    MistralConfig::from_json_str(config_json)
        .and_then(|config| config.validate().map(|()| config))
        .map_err(|source| LoadError::Config {
            path: file.to_path_buf(),
            source,
        })
}

/// The configuration in the metadata of the GGUF file `file` (at `path`),
/// validated; errors name the file.
fn gguf_model_config(path: &Path, file: &GgufFile) -> Result<MistralConfig> {
    let config = gguf::gguf_config(file)?;
    config.validate().map_err(|source| LoadError::Config {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(config)
}

pub(crate) fn load_tapped(
    path: &Path,
    options: &LoadOptions,
    seen: Option<&mut Vec<(String, Array)>>,
    parallel: Option<TensorParallel>,
) -> Result<(Mistral, LoadPlan)> {
    if let Some(file) = gguf::find_gguf(path)? {
        return load_gguf(&file, options, seen, parallel);
    }
    // Config and checkpoint only: the tokenizer is the caller's business.
    let dir = path;
    let native = native::use_native(dir, options.layout);
    let (config_path, config_json) = config_text(dir, native)?;
    let checkpoint = if native {
        native::consolidated_checkpoint(dir)?
    } else {
        discover_checkpoint(dir)?
    };
    let config = dir_model_config(&config_path, &config_json)?;
    let mut weights = SafetensorsWeights::from_checkpoint_with(&checkpoint, options.file_access)?;
    let mut plan = LoadPlan::resolve(options.dtype, &config)
        .with_qmv(options.qmv)
        .with_cpu_qmm(options.cpu_qmm)
        .with_cpu_fast(options.cpu_fast);
    let built = if native {
        plan.summary
            .push_str("; Mistral's layout (params.json, consolidated safetensors)");
        let (heads, kv_heads) = (config.num_attention_heads, config.num_key_value_heads());
        let mut view = NativeWeights::new(&mut weights, heads, kv_heads);
        build(&config, &mut view, seen, &plan, parallel)
    } else {
        build(&config, &mut weights, seen, &plan, parallel)
    };
    let model = built.map_err(|source| match source {
        ModelError::Config(source) => LoadError::Config {
            path: config_path.clone(),
            source,
        },
        mut source => weights.take_first_failure().unwrap_or_else(|| {
            let path = tensor_of(&mut source)
                .and_then(|tensor| weights.file_of(tensor))
                .map_or_else(|| checkpoint_file(dir, &weights.files()), PathBuf::from);
            LoadError::Model { path, source }
        }),
    })?;
    let mut unused = weights.finish()?;
    if native {
        unused.retain(|(name, _)| !native::is_vision_tensor(name));
    } else if config.wrapper.is_some() {
        // A vision-language checkpoint's vision side: never read.
        unused.retain(|(name, _)| !is_vision_tensor(name));
    }
    all_used(unused)?;
    Ok((model, plan))
}

/// Loads the GGUF file `path` with `options`. Model errors name the GGUF
/// tensor next to its Hugging Face name.
fn load_gguf(
    path: &Path,
    options: &LoadOptions,
    seen: Option<&mut Vec<(String, Array)>>,
    parallel: Option<TensorParallel>,
) -> Result<(Mistral, LoadPlan)> {
    let file = GgufFile::open(path)?;
    let config_error = |source| LoadError::Config {
        path: path.to_path_buf(),
        source,
    };
    let config = gguf_model_config(path, &file)?;
    let mut weights = GgufWeights::new(
        file,
        config.num_attention_heads,
        config.num_key_value_heads(),
    );
    let plan = LoadPlan::resolve(options.dtype, &config)
        .with_qmv(options.qmv)
        .with_cpu_qmm(options.cpu_qmm)
        .with_cpu_fast(options.cpu_fast);
    let built = build(&config, &mut weights, seen, &plan, parallel);
    let model = built.map_err(|source| match source {
        ModelError::Config(source) => config_error(source),
        mut source => weights.take_first_failure().unwrap_or_else(|| {
            if let Some(tensor) = tensor_of(&mut source) {
                if let Some(name) = gguf_tensor_of(tensor) {
                    *tensor = format!("{name}` (`{tensor}");
                }
            }
            LoadError::Model {
                path: path.to_path_buf(),
                source,
            }
        }),
    })?;
    all_used(weights.finish()?)?;
    Ok((model, plan))
}

/// The GGUF name of the Hugging Face tensor `tensor` (for `scales` and
/// `biases`, the matrix they belong to).
fn gguf_tensor_of(tensor: &str) -> Option<String> {
    let (module, kind) = tensor.rsplit_once('.')?;
    let kind = if kind == "bias" { "bias" } else { "weight" };
    gguf::gguf_name(module, kind)
}

/// Tensors the model never took are an error: the config and the
/// checkpoint disagree.
fn all_used(unused: Vec<(String, PathBuf)>) -> Result<()> {
    match unused.first() {
        Some(first) => Err(LoadError::UnexpectedTensors {
            first: first.clone(),
            count: unused.len(),
        }),
        None => Ok(()),
    }
}

/// The file to name for a tensor no file holds: the single safetensors
/// file, else the shard index, else the directory.
fn checkpoint_file(dir: &Path, files: &[&Path]) -> PathBuf {
    match files {
        [single] => single.to_path_buf(),
        _ if dir.join(INDEX_FILE).is_file() => dir.join(INDEX_FILE),
        _ => dir.to_path_buf(),
    }
}

/// The tensor a model error is about, if any (mutable, for renaming).
fn tensor_of(error: &mut ModelError) -> Option<&mut String> {
    match error {
        ModelError::Missing { tensor }
        | ModelError::Shape { tensor, .. }
        | ModelError::Dtype { tensor, .. }
        | ModelError::Quantization { tensor, .. } => Some(tensor),
        _ => None,
    }
}
