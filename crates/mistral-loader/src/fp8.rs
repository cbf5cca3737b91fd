//! FP8 checkpoints (`F8_E4M3` safetensors tensors, as Mistral publishes
//! Ministral 3 and Mistral Large 3): each FP8 matrix is dequantized when
//! taken, `from_fp8(w) * weight_scale_inv` in bfloat16 as mlx-lm's
//! `mistral4.py` sanitize does, with the scale per tensor (a scalar), per
//! expert (broadcasting) or per 128x128 block (a `[ceil(rows / 128),
//! ceil(cols / 128)]` matrix). The model then casts it to the computing
//! dtype like any bfloat16 tensor. Static `activation_scale`s have no use
//! here and are dropped.

use mlx_rs::{
    error::Exception,
    ops::{indexing::IndexOp, pad},
    Array, Dtype,
};

/// The FP8 block edge of block-scaled checkpoints.
const BLOCK: i32 = 128;

/// The scale tensor of FP8 tensor `name` (`x.weight` -> `x.weight_scale_inv`).
pub(crate) fn scale_name(name: &str) -> String {
    format!("{name}_scale_inv")
}

/// The activation scale beside FP8 tensor `name` (dropped with it).
pub(crate) fn activation_scale_name(name: &str) -> Option<String> {
    name.strip_suffix("weight")
        .map(|module| format!("{module}activation_scale"))
}

/// Whether a scale of `scale` shape broadcasts against `weight` shape.
fn broadcasts(scale: &[i32], weight: &[i32]) -> bool {
    scale.len() <= weight.len()
        && scale
            .iter()
            .rev()
            .zip(weight.iter().rev())
            .all(|(&s, &w)| s == 1 || s == w)
}

/// The bfloat16 values of FP8 E4M3 `bytes` (a uint8 array) times `scale`;
/// an error message when the scale fits neither form.
pub(crate) fn dequantize(bytes: &Array, scale: Option<&Array>) -> Result<Array, String> {
    let mlx = |e: Exception| e.to_string();
    let weight = bytes.from_fp8(Dtype::Bfloat16).map_err(mlx)?;
    let Some(scale) = scale else {
        return Ok(weight);
    };
    let (shape, scale_shape) = (weight.shape().to_vec(), scale.shape().to_vec());
    if broadcasts(&scale_shape, &shape) {
        return weight
            .multiply(scale)
            .and_then(|w| w.as_dtype(Dtype::Bfloat16))
            .map_err(mlx);
    }
    let &[rows, cols] = shape.as_slice() else {
        return Err(format!(
            "its scale of shape {scale_shape:?} does not fit its shape {shape:?}"
        ));
    };
    let blocks = [(rows + BLOCK - 1) / BLOCK, (cols + BLOCK - 1) / BLOCK];
    if scale_shape != blocks {
        return Err(format!(
            "its scale of shape {scale_shape:?} is neither a broadcast nor one per \
             {BLOCK}x{BLOCK} block ({blocks:?})"
        ));
    }
    let (padded_rows, padded_cols) = (blocks[0] * BLOCK, blocks[1] * BLOCK);
    let widths: &[(i32, i32)] = &[(0, padded_rows - rows), (0, padded_cols - cols)];
    let blocked = pad(&weight, widths, None, None)
        .and_then(|w| w.reshape(&[blocks[0], BLOCK, blocks[1], BLOCK]))
        .map_err(mlx)?;
    let scaled = scale
        .reshape(&[blocks[0], 1, blocks[1], 1])
        .and_then(|s| blocked.multiply(&s))
        .and_then(|w| w.reshape(&[padded_rows, padded_cols]))
        .map_err(mlx)?;
    scaled
        .index((..rows, ..cols))
        .as_dtype(Dtype::Bfloat16)
        .map_err(mlx)
}
