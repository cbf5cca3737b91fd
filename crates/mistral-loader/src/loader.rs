//! [`Loader`]: the one way to load a model with options.
//!
//! `Loader::new(path).dtype(..).ranks(..).load()` reads a model directory
//! (Hugging Face or Mistral layout) or a GGUF file; every option has the
//! default [`load_model`](crate::load_model) uses. The tokenizer and chat
//! protocol are loaded on their own ([`load_tokenizer`](crate::load_tokenizer),
//! [`load_chat_protocol`](crate::load_chat_protocol)): a model is often
//! loaded without them (tests, conversion, a draft model).

use std::path::{Path, PathBuf};

use mistral_model::{Mistral, TensorParallel};
use mlx_rs_core::{cpu_fused::CpuFast, cpu_qmm::CpuQmm, quantized_matvec::QmvKernel};

use crate::error::Result;
use crate::load::{load_tapped, LoadOptions};
use crate::native::WeightsLayout;
use crate::plan::{ComputeDtype, LoadPlan};
use crate::safetensors_weights::FileAccess;

/// How to load the model at one path; see the module docs.
#[derive(Debug, Clone)]
pub struct Loader {
    path: PathBuf,
    options: LoadOptions,
    parallel: Option<TensorParallel>,
}

impl Loader {
    /// A loader of the model at `path` with every option at its default.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Loader {
            path: path.as_ref().to_path_buf(),
            options: LoadOptions::default(),
            parallel: None,
        }
    }

    /// All options at once (e.g. as a CLI has gathered them).
    pub fn options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// The dtype to compute in ([`LoadOptions::dtype`]).
    pub fn dtype(mut self, dtype: ComputeDtype) -> Self {
        self.options.dtype = dtype;
        self
    }

    /// How safetensors files are read ([`LoadOptions::file_access`]).
    pub fn file_access(mut self, access: FileAccess) -> Self {
        self.options.file_access = access;
        self
    }

    /// Which quantized products our CUDA kernel takes ([`LoadOptions::qmv`]).
    pub fn qmv(mut self, kernel: QmvKernel) -> Self {
        self.options.qmv = kernel;
        self
    }

    /// Whether quantized products on the CPU use our kernel
    /// ([`LoadOptions::cpu_qmm`]).
    pub fn cpu_qmm(mut self, kernel: CpuQmm) -> Self {
        self.options.cpu_qmm = kernel;
        self
    }

    /// Whether the fast ops on the CPU use our kernels
    /// ([`LoadOptions::cpu_fast`]).
    pub fn cpu_fast(mut self, kernel: CpuFast) -> Self {
        self.options.cpu_fast = kernel;
        self
    }

    /// Which layout of a folder to read ([`LoadOptions::layout`]).
    pub fn layout(mut self, layout: WeightsLayout) -> Self {
        self.options.layout = layout;
        self
    }

    /// Keep only this process's share of a model split over `parallel`'s
    /// ranks (`None`: the whole model); every rank loads the same path with
    /// the same options (see `mistral_model`'s tensor parallelism).
    pub fn ranks(mut self, parallel: Option<TensorParallel>) -> Self {
        self.parallel = parallel;
        self
    }

    /// Loads the model.
    pub fn load(self) -> Result<Mistral> {
        Ok(self.load_planned()?.0)
    }

    /// Loads the model, and also says what the options resolved to (the
    /// [`LoadPlan`]: e.g. what [`ComputeDtype::Auto`] chose), for reports.
    pub fn load_planned(self) -> Result<(Mistral, LoadPlan)> {
        load_tapped(&self.path, &self.options, None, self.parallel)
    }
}

/// Loads the model at `path` in the checkpoint's own dtype: a directory of
/// `config.json` and safetensors weights, or a GGUF file (or a directory
/// holding one, see [`crate::gguf::find_gguf`]).
pub fn load_model(dir: impl AsRef<Path>) -> Result<Mistral> {
    Loader::new(dir).load()
}

/// Loads the model at `path` (see [`load_model`]) with `options`: a
/// shorthand for `Loader::new(path).options(*options).load()`.
pub fn load_model_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Mistral> {
    Loader::new(path).options(*options).load()
}
