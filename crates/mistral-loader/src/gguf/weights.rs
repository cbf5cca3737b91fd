//! [`GgufWeights`]: the tensors of a GGUF file handed to the model under
//! Hugging Face names, as MLX arrays.
//!
//! Design notes:
//! - Q4_0, Q4_1, Q8_0 and Q4_K map exactly onto MLX's affine quantization
//!   with group size 32 ([`super::dequant::to_mlx_affine`]); such a matrix
//!   (or a Mixtral stack of experts' matrices, `[experts, out, in]`)
//!   is handed over as `weight` (packed uint32), `scales` and `biases`
//!   (float32: ggml's f16 scales widen exactly), matching the per-module
//!   quantization entries of [`super::config::gguf_config`]. No
//!   re-quantization happens.
//! - F32, F16 and BF16 tensors are handed over as they are; every other
//!   supported type is dequantized to float32 by checked code
//!   ([`super::dequant::dequantize`]); an unsupported type fails the load
//!   naming the tensor and type.
//! - llama.cpp permutes the rows of `attn_q` and `attn_k` within each head
//!   for its RoPE layout; the rows are put back in Hugging Face order here
//!   (rows only, so the packed, scale and bias arrays of a quantized matrix
//!   are permuted alike and stay exact).
//! - As with safetensors, `take` can only say "absent": a tensor that fails
//!   to convert is recorded and reported by [`GgufWeights::take_first_failure`].
//!   Each tensor's mapped pages are released once copied out.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use half::{bf16, f16};
use mistral_model::WeightSource;
use mlx_rs::Array;

use super::dequant::{affine_bits, dequantize, kept_quantized, to_mlx_affine};
use super::ggml_type::GgmlType;
use super::names::{hf_module, permuted_heads};
use super::reader::{GgufFile, TensorInfo};
use crate::error::{LoadError, Result};
use crate::rope_rows::hf_row_order;

/// The tensors of one GGUF file, by Hugging Face name.
#[derive(Debug)]
pub struct GgufWeights {
    file: GgufFile,
    /// Hugging Face tensor name (`model.layers.0.self_attn.q_proj.weight`)
    /// to tensor index.
    by_hf_name: HashMap<String, usize>,
    taken: Vec<bool>,
    /// Converted arrays not yet asked for (`scales`/`biases` of a matrix
    /// whose `weight` was converted, and the reverse).
    pending: HashMap<String, Array>,
    failures: Vec<LoadError>,
    n_heads: i32,
    n_kv_heads: i32,
}

impl GgufWeights {
    /// The tensors of `file`; `n_heads`/`n_kv_heads` undo llama.cpp's q/k
    /// row permutation.
    pub fn new(file: GgufFile, n_heads: i32, n_kv_heads: i32) -> Self {
        let by_hf_name = file
            .tensors()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| hf_module(&t.name).map(|(m, kind)| (format!("{m}.{kind}"), i)))
            .collect();
        let taken = vec![false; file.tensors().len()];
        GgufWeights {
            file,
            by_hf_name,
            taken,
            pending: HashMap::new(),
            failures: Vec::new(),
            n_heads,
            n_kv_heads,
        }
    }

    /// The file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The first conversion failure recorded, if any.
    pub fn take_first_failure(&mut self) -> Option<LoadError> {
        (!self.failures.is_empty()).then(|| self.failures.remove(0))
    }

    /// Ends loading: the first failure if any, else the GGUF names of the
    /// tensors the model did not take.
    pub fn finish(mut self) -> Result<Vec<(String, PathBuf)>> {
        if let Some(failure) = self.take_first_failure() {
            return Err(failure);
        }
        let path = self.file.path().to_path_buf();
        Ok(self
            .file
            .tensors()
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|(t, _)| (t.name.clone(), path.clone()))
            .collect())
    }

    /// Converts the tensor behind the Hugging Face name `name` (`weight`,
    /// `bias`, `scales` or `biases` of a module); `Ok(None)` if absent.
    pub fn try_take(&mut self, name: &str) -> Result<Option<Array>> {
        if let Some(a) = self.pending.remove(name) {
            return Ok(Some(a));
        }
        let Some((module, kind)) = name.rsplit_once('.') else {
            return Ok(None);
        };
        let source = match kind {
            "weight" | "bias" => name.to_owned(),
            "scales" | "biases" => format!("{module}.weight"),
            _ => return Ok(None),
        };
        let Some(&index) = self.by_hf_name.get(&source) else {
            return Ok(None);
        };
        if self.taken[index] {
            return Ok(None);
        }
        let info = self.file.tensors()[index].clone();
        let quantized =
            info.ggml_type().and_then(affine_bits).is_some() && kept_quantized(&info.dims);
        if matches!(kind, "scales" | "biases") && !quantized {
            return Ok(None);
        }
        self.taken[index] = true;
        let heads = permuted_heads(module, self.n_heads, self.n_kv_heads);
        let converted = convert(&self.file, &info, heads)?;
        let (start, len) = self.file.tensor_bytes(&info).map(|(s, b)| (s, b.len()))?;
        self.file.release(start, len);
        match converted {
            Converted::Dense(a) => Ok(Some(a)),
            Converted::Affine {
                weight,
                scales,
                biases,
            } => {
                let mut out = None;
                for (part, array) in [("weight", weight), ("scales", scales), ("biases", biases)] {
                    if part == kind {
                        out = Some(array);
                    } else {
                        self.pending.insert(format!("{module}.{part}"), array);
                    }
                }
                Ok(out)
            }
        }
    }
}

impl WeightSource for GgufWeights {
    fn take(&mut self, name: &str) -> Option<Array> {
        match self.try_take(name) {
            Ok(a) => a,
            Err(e) => {
                self.failures.push(e);
                None
            }
        }
    }
}

/// A tensor turned into MLX arrays.
enum Converted {
    /// A floating-point tensor.
    Dense(Array),
    /// An MLX affine-quantized matrix (group size 32).
    Affine {
        weight: Array,
        scales: Array,
        biases: Array,
    },
}

fn tensor_error(file: &GgufFile, info: &TensorInfo, message: impl Into<String>) -> LoadError {
    LoadError::GgufTensor {
        path: file.path().to_path_buf(),
        tensor: info.name.clone(),
        message: message.into(),
    }
}

/// Copies and converts one tensor, undoing the row permutation by `heads`.
fn convert(file: &GgufFile, info: &TensorInfo, heads: Option<i32>) -> Result<Converted> {
    mlx_rs_core::runtime::ensure_mlx_error_handler();
    let fail = |message: String| tensor_error(file, info, message);
    let ty = info
        .ggml_type()
        .ok_or_else(|| fail(format!("has unknown ggml type id {}", info.type_id)))?;
    let (_, bytes) = file.tensor_bytes(info)?;
    let shape: Vec<i32> = info
        .shape()
        .iter()
        .map(|&d| i32::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            fail(format!(
                "dimensions {:?} do not fit MLX's 32-bit sizes",
                info.dims
            ))
        })?;
    let cols = *shape.last().unwrap_or(&1) as usize;
    let rows = shape[..shape.len() - 1].iter().product::<i32>() as usize;
    let order = match heads {
        Some(h) => Some(hf_row_order(rows, h).ok_or_else(|| {
            fail(format!(
                "its {rows} rows do not split into {h} heads of even size"
            ))
        })?),
        None => None,
    };
    let row_bytes = ty.row_bytes(cols).ok_or_else(|| {
        fail(format!(
            "{cols} columns do not fill whole {} blocks",
            ty.name()
        ))
    })?;
    if let Some(bits) = affine_bits(ty).filter(|_| kept_quantized(&info.dims)) {
        let words = cols * bits as usize / 32;
        let groups = cols / 32;
        let mut packed = vec![0u32; rows * words];
        let mut scales = vec![0f32; rows * groups];
        let mut biases = vec![0f32; rows * groups];
        for r in 0..rows {
            let src = order.as_ref().map_or(r, |o| o[r]);
            to_mlx_affine(
                ty,
                &bytes[src * row_bytes..(src + 1) * row_bytes],
                cols,
                &mut packed[r * words..(r + 1) * words],
                &mut scales[r * groups..(r + 1) * groups],
                &mut biases[r * groups..(r + 1) * groups],
            )
            .map_err(&fail)?;
        }
        // A matrix, or a stack of experts' matrices: the leading axes stay.
        let lead = &shape[..shape.len() - 1];
        let with_last = |n: usize| [lead, &[n as i32]].concat();
        let (w, g) = (with_last(words), with_last(groups));
        return Ok(Converted::Affine {
            weight: checked(file, info, Array::from_slice(&packed, &w))?,
            scales: checked(file, info, Array::from_slice(&scales, &g))?,
            biases: checked(file, info, Array::from_slice(&biases, &g))?,
        });
    }
    // Row-permuted tensors need a reordered copy; the rest are read in place.
    let raw: Cow<[u8]> = match &order {
        Some(o) => (0..rows)
            .flat_map(|r| {
                bytes[o[r] * row_bytes..(o[r] + 1) * row_bytes]
                    .iter()
                    .copied()
            })
            .collect::<Vec<u8>>()
            .into(),
        None => Cow::Borrowed(bytes),
    };
    let dense = match ty {
        GgmlType::F32 => checked(
            file,
            info,
            Array::from_slice(&le_values(&raw, f32::from_le_bytes), &shape),
        )?,
        GgmlType::F16 => {
            let values = le_values(&raw, |b| f16::from_bits(u16::from_le_bytes(b)));
            checked(file, info, Array::from_slice(&values, &shape))?
        }
        GgmlType::BF16 => {
            let values = le_values(&raw, |b| bf16::from_bits(u16::from_le_bytes(b)));
            checked(file, info, Array::from_slice(&values, &shape))?
        }
        _ => {
            let mut out = vec![0f32; rows * cols];
            dequantize(ty, &raw, &mut out).map_err(fail)?;
            checked(file, info, Array::from_slice(&out, &shape))?
        }
    };
    Ok(Converted::Dense(dense))
}

/// Little-endian values of `N` bytes each.
fn le_values<T, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

/// `a`, checked to have been created (MLX reports a failed allocation as a
/// null array once mlx-rs's error handler is installed).
fn checked(file: &GgufFile, info: &TensorInfo, a: Array) -> Result<Array> {
    if a.as_ptr().ctx.is_null() {
        return Err(tensor_error(
            file,
            info,
            "MLX could not create the array (out of memory?)",
        ));
    }
    Ok(a)
}
