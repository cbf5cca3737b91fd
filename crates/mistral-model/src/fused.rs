//! [`FusedLinear`]: linear layers of one input (q, k and v; gate and up)
//! that a one-row input multiplies as one matrix.
//!
//! Design note: a decode step multiplies one row by every matrix of every
//! layer. On a GPU each product is a kernel the host encodes at every step,
//! and there the host, not the device, sets decode's pace for small models.
//! With `WeightOptions::fuse_projections` the layers' matrices are stacked
//! by rows at load into one; each layer keeps a view of its rows (no second
//! copy). A one-row input takes one product over the stack, whose output
//! columns are cut into the layers' outputs: each is the dot product the
//! layer's own matrix-vector product computes, as MLX's matrix-vector
//! kernels compute every output row alone. Inputs of more rows run the
//! layers one by one on their views, as unstacked layers do: a
//! matrix-matrix product's blocking may depend on the matrix's height, so
//! stacking could change its rounding. For the same reason quantized
//! matrices stack only up to 16384 rows: past that MLX's CUDA backend
//! computes even one row with a matrix-matrix kernel (on sm90 GPUs), unless
//! our own quantized kernel (`WeightOptions::qmv`) takes the stack's product.

use mlx_rs::{ops::split_at_indices, Array};

use crate::error::ModelError;
use crate::linear::{output_bounds, Linear};
use crate::linear_weight::LinearWeight;

/// Layers of one input, stacked for one-row inputs when asked and possible.
#[derive(Debug, Clone)]
pub struct FusedLinear {
    /// The layers (views of `stacked`'s rows when stacked).
    parts: Vec<Linear>,
    /// All the layers' rows as one layer.
    stacked: Option<Linear>,
    /// Where each part's outputs end in `stacked`'s, less the last.
    bounds: Vec<i32>,
}

impl FusedLinear {
    /// `parts` stacked when `fuse` is set and [`Linear::stack_rows`] can
    /// stack them; else kept as they are.
    pub fn new(parts: Vec<Linear>, fuse: bool) -> Result<Self, ModelError> {
        let stacked = if fuse {
            Linear::stack_rows(&parts)?
        } else {
            None
        };
        let Some((stacked, views)) = stacked else {
            return Ok(FusedLinear {
                parts,
                stacked: None,
                bounds: Vec::new(),
            });
        };
        Ok(FusedLinear {
            bounds: output_bounds(&views),
            parts: views,
            stacked: Some(stacked),
        })
    }

    /// Whether the layers are stacked.
    pub fn is_stacked(&self) -> bool {
        self.stacked.is_some()
    }

    /// The layers, in order.
    pub fn parts(&self) -> &[Linear] {
        &self.parts
    }

    /// Bytes held by the layers (the stack's, counted once).
    pub fn weight_bytes(&self) -> u64 {
        self.parts.iter().map(Linear::weight_bytes).sum()
    }

    /// Each layer applied to `x` `[..., in]`, in order: one product over
    /// the stack when `x` is one row `[1, in]`.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>, ModelError> {
        match self.forward_stacked(x)? {
            Some(all) => Ok(split_at_indices(&all, &self.bounds, -1)?),
            None => self.parts.iter().map(|part| part.forward(x)).collect(),
        }
    }

    /// `silu(gate(x)) * up(x)` for a stacked gate and up of one size
    /// without biases, quantized, and `x` one row `[1, in]`, in one launch
    /// of our CUDA kernel where it takes the stack's product; `None`
    /// otherwise (then use [`FusedLinear::forward`] and a SwiGLU).
    pub fn forward_swiglu(&self, x: &Array) -> Result<Option<Array>, ModelError> {
        let Some(stacked) = &self.stacked else {
            return Ok(None);
        };
        let halves = matches!(&self.parts[..], [g, u] if g.out_dim() == u.out_dim());
        match stacked.weight() {
            LinearWeight::Quantized(q)
                if halves && stacked.bias().is_none() && x.ndim() == 2 && x.dim(0) == 1 =>
            {
                q.matvec_swiglu(x)
            }
            _ => Ok(None),
        }
    }

    /// The layers' outputs side by side, `[1, out of all]`, as one product
    /// over the stack, where the layers are stacked and `x` is one row
    /// `[1, in]`; `None` otherwise (then use [`FusedLinear::forward`]). For
    /// a caller that cuts the outputs itself, e.g. attention's heads.
    pub fn forward_stacked(&self, x: &Array) -> Result<Option<Array>, ModelError> {
        match &self.stacked {
            Some(stacked) if x.ndim() == 2 && x.dim(0) == 1 => Ok(Some(stacked.forward(x)?)),
            _ => Ok(None),
        }
    }
}
