//! [`Embedding`]: the token embedding table, dense or MLX-quantized, which can
//! also serve as a tied LM head ([`Embedding::as_linear`]).
//!
//! A quantized table is gathered row-wise (packed weight, scales, biases)
//! and only the gathered rows are dequantized, as in mlx-lm's
//! `QuantizedEmbedding`.

use mlx_rs::{
    ops::{clip, dequantize, move_axis},
    Array, Dtype,
};

use crate::config::MistralConfig;
use crate::error::ModelError;
use crate::linear_weight::LinearWeight;
use crate::row_split::RowSplit;
use crate::weights::Weights;

/// A `[vocab, dim]` embedding table.
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: LinearWeight,
    /// The table in row blocks (views) for [`Embedding::as_linear`], when
    /// the options ask.
    head_split: Option<RowSplit>,
    dim: i32,
    /// The compute dtype the load asked for: a quantized table's gathered
    /// scales are widened to it (see `WeightOptions::narrow_scales`).
    dtype: Option<Dtype>,
}

impl Embedding {
    /// Takes the table (`weight`, and `scales`/`biases` if quantized) from
    /// the module `weights` points at.
    pub fn new(
        cfg: &MistralConfig,
        weights: &mut Weights,
        vocab: i32,
        dim: i32,
    ) -> Result<Self, ModelError> {
        let weight = LinearWeight::load(cfg, weights, vocab, dim)?;
        let head_split = match cfg.tie_word_embeddings {
            true => RowSplit::new(&weight, weights.row_split())?,
            false => None,
        };
        Ok(Embedding {
            weight,
            head_split,
            dim,
            dtype: weights.dtype(),
        })
    }

    /// The table.
    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    /// The embedding width.
    pub fn dim(&self) -> i32 {
        self.dim
    }

    /// Bytes held by the table.
    pub fn weight_bytes(&self) -> u64 {
        self.weight.weight_bytes()
    }

    /// Number of rows (the vocabulary size).
    pub fn rows(&self) -> i32 {
        match &self.weight {
            LinearWeight::Dense(w) => w.dim(0),
            LinearWeight::Transposed(w) => w.dim(1),
            LinearWeight::Quantized(q) => q.weight.dim(0),
        }
    }

    /// Looks up `ids` (any integer shape `S`), giving `[S..., dim]`.
    ///
    /// MLX's gather does not check bounds, so ids are first clamped into
    /// `0..rows` on the device: an id outside the table reads a wrong row,
    /// never memory outside it. Reporting bad ids is the callers' job
    /// ([`Mistral::forward`](crate::Mistral::forward) and the generator
    /// check them); this guard costs no host sync.
    pub fn forward(&self, ids: &Array) -> Result<Array, ModelError> {
        let bound = |v: i32| Array::from_int(v).as_dtype(ids.dtype());
        let ids = &clip(ids, (bound(0)?, bound(self.rows() - 1)?))?;
        match &self.weight {
            LinearWeight::Dense(w) => Ok(w.take_axis(ids, 0)?),
            LinearWeight::Transposed(w) => Ok(move_axis(w.take_axis(ids, 1)?, 0, -1)?),
            LinearWeight::Quantized(q) => {
                let rows = |a: &Array| -> Result<Array, ModelError> {
                    let a = a.take_axis(ids, 0)?;
                    Ok(match self.dtype {
                        Some(d) if d != a.dtype() => a.as_dtype(d)?,
                        _ => a,
                    })
                };
                Ok(dequantize(
                    q.weight.take_axis(ids, 0)?,
                    rows(&q.scales)?,
                    &rows(&q.biases)?,
                    q.params.group_size,
                    q.params.bits,
                )?)
            }
        }
    }

    /// Uses the table as a linear map `x Eᵀ` (`[..., dim]` to `[..., vocab]`),
    /// for tied LM heads.
    pub fn as_linear(&self, x: &Array) -> Result<Array, ModelError> {
        match &self.head_split {
            Some(split) => split.matmul_t(x),
            None => self.weight.matmul_t(x),
        }
    }
}
