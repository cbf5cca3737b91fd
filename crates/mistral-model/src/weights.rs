//! How the model receives its tensors: the [`WeightSource`] trait the loader
//! implements, and [`Weights`], a prefixed view over a source (like candle's
//! `VarBuilder::pp`) so constructor nesting mirrors Hugging Face names.
//!
//! Tensors are *taken* (removed) from the source, so after construction the
//! loader can report any tensor the model did not use. [`Weights`] also
//! checks shapes and dtypes and casts floating-point tensors to the compute
//! dtype, naming the full tensor in every error.

use std::collections::HashMap;
use std::fmt::Display;

use mlx_rs::{Array, Dtype};
use mlx_rs_core::cpu_fused::CpuFast;
use mlx_rs_core::cpu_qmm::CpuQmm;
use mlx_rs_core::quantized_matvec::QmvKernel;

use crate::error::ModelError;
use crate::tensor_parallel::{Split, TensorParallel};

/// A store of named tensors the model takes its weights from.
pub trait WeightSource {
    /// Removes and returns the tensor called `name` (Hugging Face naming), or
    /// None if absent.
    fn take(&mut self, name: &str) -> Option<Array>;

    /// Removes tensor `name` and returns only `block` of it (the whole
    /// tensor when [`Block::range`] gives none for its shape), or None if
    /// absent. The default takes the whole tensor and copies the block out
    /// ([`Block::copy_of`]); a source that can read a block alone (the
    /// loader's safetensors files) overrides it, so the rest is never read.
    fn take_block(&mut self, name: &str, block: Block) -> Option<Array> {
        self.take(name).map(|a| block.copy_of(a))
    }
}

/// Which axis a [`Block`] cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAxis {
    /// The first axis (a matrix's output rows).
    First,
    /// The last axis (a matrix's input columns).
    Last,
}

/// Part `index` of `parts` equal parts of a tensor along one axis: what a
/// rank of a tensor-parallel model keeps of a split matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The axis cut.
    pub axis: BlockAxis,
    /// Which part, from 0.
    pub index: usize,
    /// Into how many equal parts the axis is cut.
    pub parts: usize,
}

impl Block {
    /// For a tensor of `shape`: the axis cut and the range `[start, end)`
    /// of this block along it; None (the tensor stays whole) for a scalar,
    /// or when the axis does not divide into the parts or `index` is not
    /// one of them.
    pub fn range(&self, shape: &[usize]) -> Option<(usize, usize, usize)> {
        let axis = match self.axis {
            BlockAxis::First => 0,
            BlockAxis::Last => shape.len().checked_sub(1)?,
        };
        let n = *shape.get(axis)?;
        if self.parts == 0 || self.index >= self.parts || n % self.parts != 0 {
            return None;
        }
        let part = n / self.parts;
        Some((axis, self.index * part, (self.index + 1) * part))
    }

    /// This block of `a`, copied into a row-major array (and evaluated) so
    /// the whole can be freed; `a` itself when [`range`](Self::range) gives
    /// none or the copy fails.
    pub fn copy_of(&self, a: Array) -> Array {
        let shape: Vec<usize> = a.shape().iter().map(|&d| d.max(0) as usize).collect();
        let Some((axis, start, end)) = self.range(&shape) else {
            return a;
        };
        let indices = Array::from_iter(start as i32..end as i32, &[(end - start) as i32]);
        // MLX's gather along a later axis gives a strided layout.
        match a
            .take_axis(&indices, axis as i32)
            .and_then(|b| b.contiguous())
        {
            Ok(block) if block.eval().is_ok() => block,
            _ => a,
        }
    }
}

/// In-memory source, mainly for tests.
impl WeightSource for HashMap<String, Array> {
    fn take(&mut self, name: &str) -> Option<Array> {
        self.remove(name)
    }
}

/// How the tensors of a checkpoint become the model's weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightOptions {
    /// Floating-point tensors (dense weights, norms, quantization scales and
    /// biases) are cast to this dtype; `None` keeps their stored dtype.
    pub dtype: Option<Dtype>,
    /// Quantized matrices are dequantized at load into dense ones (in
    /// `dtype`, else their scales' dtype), trading memory for speed where
    /// the quantized kernel is slow (MLX's CPU backend).
    pub dequantize: bool,
    /// Dense float32 matrices of linear layers are stored transposed
    /// (`[in, out]`, contiguous), so a layer computes `x W` instead of
    /// `x Wᵀ`: with OpenBLAS behind MLX's CPU backend that product is about
    /// 1.2x faster in prefill and up to 2x in decode (see BENCHMARKS.md).
    /// Embedding tables (also used as tied heads) keep their layout.
    pub transpose_f32: bool,
    /// Linear layers (and a tied head) whose matrices MLX's CPU backend
    /// multiplies on one thread (bfloat16, float16, quantized) are cut into
    /// this many row blocks, each computed on its own stream (see
    /// [`RowSplit`](crate::RowSplit)); 0 or 1 leaves them whole.
    pub row_split: usize,
    /// Layers of one input (q, k and v; gate and up) are stacked into one
    /// matrix, so a one-row input (decode) takes one product instead of
    /// several (see [`FusedLinear`](crate::FusedLinear)). Costs a copy of
    /// those matrices at load; worth it where decode waits on the host (a
    /// GPU).
    pub fuse_projections: bool,
    /// Which one-row 4-bit products our CUDA kernel takes instead of MLX's
    /// (see [`mlx_rs_core::quantized_matvec`]); it takes none off a GPU.
    pub qmv: QmvKernel,
    /// Whether quantized products on the CPU use our kernel instead of
    /// MLX's (see [`mlx_rs_core::cpu_qmm`]); with it, quantized matrices
    /// are not cut into row blocks ([`row_split`](Self::row_split)): the
    /// kernel uses every core itself.
    pub cpu_qmm: CpuQmm,
    /// Whether RMSNorm, RoPE, decode attention and SwiGLU on a CPU stream use our
    /// kernels instead of MLX's decomposed fallbacks (see
    /// [`mlx_rs_core::cpu_fused`]).
    pub cpu_fast: CpuFast,
    /// Quantization scales and biases are kept in (or narrowed to) float16
    /// or bfloat16 wherever that holds every value exactly, instead of
    /// being cast to [`dtype`](Self::dtype): our CPU kernel widens them
    /// exactly as it reads them, so its products are unchanged and a
    /// decode step reads fewer bytes (GGUF's Q4_0, Q4_1 and Q8_0 scales are
    /// float16 values). Embedding rows are still dequantized in `dtype`.
    pub narrow_scales: bool,
}

/// A view of a [`WeightSource`] under a module path, with the compute dtype.
///
/// Every tensor it converts (a cast, a dequantization) is evaluated at once,
/// so loading pays for the conversion (as mlx-lm's `load` evaluates the
/// parameters) and holds at most one source tensor and its conversion at a
/// time.
pub struct Weights<'a> {
    source: &'a mut dyn WeightSource,
    prefix: String,
    options: WeightOptions,
    /// The group the model is split over, if any.
    parallel: Option<TensorParallel>,
    /// How this module's tensors are split (see [`Weights::sharded`]).
    split: Option<Split>,
}

impl<'a> Weights<'a> {
    /// A root view over `source`. When `dtype` is given, floating-point
    /// tensors are cast to it; otherwise they keep their stored dtype.
    pub fn new(source: &'a mut dyn WeightSource, dtype: Option<Dtype>) -> Self {
        Self::with_options(
            source,
            WeightOptions {
                dtype,
                ..WeightOptions::default()
            },
        )
    }

    /// A root view over `source` with `options`.
    pub fn with_options(source: &'a mut dyn WeightSource, options: WeightOptions) -> Self {
        Weights {
            source,
            prefix: String::new(),
            options,
            parallel: None,
            split: None,
        }
    }

    /// This view, splitting the model over `parallel`'s ranks (see
    /// [`TensorParallel`](crate::TensorParallel)); a group of one splits nothing.
    pub fn with_tensor_parallel(mut self, parallel: TensorParallel) -> Self {
        self.parallel = (parallel.size() > 1).then_some(parallel);
        self
    }

    /// The group the model is split over (none for one process).
    pub fn tensor_parallel(&self) -> Option<&TensorParallel> {
        self.parallel.as_ref()
    }

    /// The view of the sub-module `name` whose tensors this rank takes only
    /// its block of (by `split`: output rows, or input columns with the
    /// bias whole); as [`pp`](Self::pp) when the model is not split.
    pub fn sharded(&mut self, name: impl Display, split: Split) -> Weights<'_> {
        let mut view = self.pp(name);
        view.split = view.parallel.as_ref().map(|_| split);
        view
    }

    /// The view of the sub-module `name` (`weights.pp("self_attn")`).
    pub fn pp(&mut self, name: impl Display) -> Weights<'_> {
        Weights {
            prefix: self.path(&name.to_string()),
            source: &mut *self.source,
            options: self.options,
            parallel: self.parallel.clone(),
            split: None,
        }
    }

    /// The module path of this view (e.g. `model.layers.0.self_attn.q_proj`),
    /// the key used by the config's per-module quantization entries.
    pub fn module_path(&self) -> &str {
        &self.prefix
    }

    /// The options of this view.
    pub fn options(&self) -> WeightOptions {
        self.options
    }

    /// The compute dtype, if one was requested.
    pub fn dtype(&self) -> Option<Dtype> {
        self.options.dtype
    }

    /// Whether quantized matrices are to be dequantized at load.
    pub fn dequantize(&self) -> bool {
        self.options.dequantize
    }

    /// Whether dense float32 matrices of linear layers are to be stored
    /// transposed.
    pub fn transpose_f32(&self) -> bool {
        self.options.transpose_f32
    }

    /// Whether layers of one input are stacked into one matrix.
    pub fn fuse_projections(&self) -> bool {
        self.options.fuse_projections
    }

    /// Into how many row blocks matrices are cut (0 or 1: none).
    pub fn row_split(&self) -> usize {
        self.options.row_split
    }

    /// The full name of tensor `name` of this module.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Takes tensor `name` if present, without any check (in a
    /// [`sharded`](Self::sharded) view, this rank's block of it).
    pub fn take(&mut self, name: &str) -> Option<Array> {
        let path = self.path(name);
        match self.block_of(name) {
            Some(block) => self.source.take_block(&path, block),
            None => self.source.take(&path),
        }
    }

    /// Which block of tensor `name` this rank keeps, in a split module:
    /// output rows (the first axis), or input columns (the last axis; not
    /// of a `bias`). A tensor whose axis does not divide by the ranks is
    /// taken whole (its shape check then names it).
    fn block_of(&self, name: &str) -> Option<Block> {
        let (Some(split), Some(parallel)) = (self.split, &self.parallel) else {
            return None;
        };
        let axis = match split {
            Split::Outputs => BlockAxis::First,
            Split::Inputs if name == "bias" => return None,
            Split::Inputs => BlockAxis::Last,
        };
        Some(Block {
            axis,
            index: parallel.rank() as usize,
            parts: parallel.size() as usize,
        })
    }

    /// Takes the required tensor `name`.
    pub fn require(&mut self, name: &str) -> Result<Array, ModelError> {
        self.take(name).ok_or_else(|| ModelError::Missing {
            tensor: self.path(name),
        })
    }

    /// Checks that tensor `name` has shape `expected`.
    pub fn check_shape(&self, name: &str, a: &Array, expected: &[i32]) -> Result<(), ModelError> {
        if a.shape() != expected {
            return Err(ModelError::Shape {
                tensor: self.path(name),
                expected: expected.to_vec(),
                found: a.shape().to_vec(),
            });
        }
        Ok(())
    }

    /// Takes the required floating-point tensor `name` of shape `shape`,
    /// cast to the compute dtype if one was requested.
    pub fn float(&mut self, name: &str, shape: &[i32]) -> Result<Array, ModelError> {
        let a = self.require(name)?;
        self.check_float(name, a, shape)
    }

    /// Like [`float`](Self::float) but `None` when the tensor is absent.
    pub fn float_opt(&mut self, name: &str, shape: &[i32]) -> Result<Option<Array>, ModelError> {
        self.take(name)
            .map(|a| self.check_float(name, a, shape))
            .transpose()
    }

    /// Takes the required floating-point tensor `name` of shape `shape` in
    /// its stored dtype (no cast).
    pub fn float_stored(&mut self, name: &str, shape: &[i32]) -> Result<Array, ModelError> {
        let a = self.require(name)?;
        self.check_float_stored(name, a, shape)
    }

    /// Checks that `a`, tensor `name`, is floating-point of shape `shape`.
    pub fn check_float_stored(
        &self,
        name: &str,
        a: Array,
        shape: &[i32],
    ) -> Result<Array, ModelError> {
        if !a.dtype().is_float() {
            return Err(ModelError::Dtype {
                tensor: self.path(name),
                expected: "a floating-point type".to_owned(),
                found: a.dtype(),
            });
        }
        self.check_shape(name, &a, shape)?;
        Ok(a)
    }

    fn check_float(&self, name: &str, a: Array, shape: &[i32]) -> Result<Array, ModelError> {
        let a = self.check_float_stored(name, a, shape)?;
        self.cast(a)
    }

    /// `a` cast to the compute dtype (evaluated), or as it is.
    pub fn cast(&self, a: Array) -> Result<Array, ModelError> {
        match self.options.dtype {
            Some(d) if d != a.dtype() => {
                let cast = a.as_dtype(d)?;
                cast.eval()?;
                Ok(cast)
            }
            _ => Ok(a),
        }
    }

    /// Takes the required tensor `name` of shape `shape` and dtype `dtype`
    /// exactly (no cast), e.g. packed quantized weights.
    pub fn exact(&mut self, name: &str, shape: &[i32], dtype: Dtype) -> Result<Array, ModelError> {
        let a = self.require(name)?;
        if a.dtype() != dtype {
            return Err(ModelError::Dtype {
                tensor: self.path(name),
                expected: format!("{dtype:?}"),
                found: a.dtype(),
            });
        }
        self.check_shape(name, &a, shape)?;
        Ok(a)
    }
}
