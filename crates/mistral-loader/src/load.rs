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

use mistral_model::{MistralConfig, ModelError};
use mlx_rs::Dtype;

use crate::error::{LoadError, Result};
use crate::model_dir::ModelDir;
use crate::safetensors_files::{CONFIG_FILE, INDEX_FILE};

pub use mistral_model::Mistral;

/// How to load a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// The dtype to compute in: float weights (and quantization scales) are
    /// cast to it. `None` keeps the checkpoint's own dtype.
    pub dtype: Option<Dtype>,
}

/// Loads the model in `dir` (`config.json` and safetensors weights) in the
/// checkpoint's own dtype.
pub fn load_model(dir: impl AsRef<Path>) -> Result<Mistral> {
    load_model_with(dir, &LoadOptions::default())
}

/// Loads the model in `dir` with `options`.
pub fn load_model_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Mistral> {
    let ModelDir {
        dir,
        config_json,
        mut weights,
        ..
    } = ModelDir::open(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let config = MistralConfig::from_json_str(&config_json)
        .and_then(|config| config.validate().map(|()| config))
        .map_err(|source| LoadError::Config {
            path: config_path.clone(),
            source,
        })?;
    let model =
        Mistral::new(&config, &mut weights, options.dtype).map_err(|source| match source {
            ModelError::Config(source) => LoadError::Config {
                path: config_path.clone(),
                source,
            },
            source => weights
                .take_first_failure()
                .unwrap_or_else(|| LoadError::Model {
                    path: tensor_of(&source)
                        .and_then(|tensor| weights.file_of(tensor))
                        .map_or_else(|| checkpoint_file(&dir, &weights.files()), PathBuf::from),
                    source,
                }),
        })?;
    let unused = weights.finish()?;
    if let Some(first) = unused.first() {
        return Err(LoadError::UnexpectedTensors {
            first: first.clone(),
            count: unused.len(),
        });
    }
    Ok(model)
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

/// The tensor a model error is about, if any.
fn tensor_of(error: &ModelError) -> Option<&str> {
    match error {
        ModelError::Missing { tensor }
        | ModelError::Shape { tensor, .. }
        | ModelError::Dtype { tensor, .. }
        | ModelError::Quantization { tensor, .. } => Some(tensor),
        _ => None,
    }
}
