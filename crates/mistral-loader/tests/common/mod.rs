//! Test helpers: temporary directories and safetensors files written with
//! the `safetensors` crate's own serializer (an independent writer).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use safetensors::tensor::{Dtype, TensorView};

pub mod gguf_writer;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "mistral-loader-test-{}-{n}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tensor to write: dtype, shape, raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Deterministic pseudo-random bytes, `n` of them.
pub fn pseudo_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

pub fn f32_tensor(shape: &[usize], seed: u64) -> RawTensor {
    let n: usize = shape.iter().product();
    let bytes = (0..n)
        .flat_map(|i| ((i as f32) * 0.25 - seed as f32).to_le_bytes())
        .collect();
    RawTensor {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes,
    }
}

/// Any 16-bit pattern is a valid f16/bf16 value (NaNs included); the test
/// compares bits, so random bytes are fine.
pub fn half_tensor(dtype: Dtype, shape: &[usize], seed: u64) -> RawTensor {
    let n: usize = shape.iter().product();
    RawTensor {
        dtype,
        shape: shape.to_vec(),
        bytes: pseudo_bytes(seed, n * 2),
    }
}

pub fn u32_tensor(shape: &[usize], seed: u64) -> RawTensor {
    let n: usize = shape.iter().product();
    RawTensor {
        dtype: Dtype::U32,
        shape: shape.to_vec(),
        bytes: pseudo_bytes(seed, n * 4),
    }
}

pub fn int_tensor(dtype: Dtype, shape: &[usize], seed: u64) -> RawTensor {
    let n: usize = shape.iter().product();
    let size = dtype.bitsize() / 8;
    RawTensor {
        dtype,
        shape: shape.to_vec(),
        bytes: pseudo_bytes(seed, n * size),
    }
}

/// Writes `tensors` to `path` with `safetensors::serialize_to_file`.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, RawTensor>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).expect("valid view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write safetensors");
}

/// Writes a sharded checkpoint: `shards[i]` goes to
/// `model-0000{i+1}-of-0000{n}.safetensors`, plus the index. Returns the
/// tensor -> file name map written into the index.
pub fn write_sharded(
    dir: &Path,
    shards: &[BTreeMap<String, RawTensor>],
) -> BTreeMap<String, String> {
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, tensors) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        write_safetensors(&dir.join(&name), tensors);
        for t in tensors.keys() {
            weight_map.insert(t.clone(), name.clone());
        }
    }
    write_index(dir, &weight_map);
    weight_map
}

pub fn write_index(dir: &Path, weight_map: &BTreeMap<String, String>) {
    let index = serde_json::json!({
        "metadata": {"total_size": 0},
        "weight_map": weight_map,
    });
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).expect("json"),
    )
    .expect("write index");
}

pub fn write_config(dir: &Path) {
    std::fs::write(dir.join("config.json"), r#"{"model_type": "mistral"}"#).expect("config");
}

/// The bytes of an MLX array, read back through `as_slice` of its dtype.
pub fn array_bytes(a: &mlx_rs::Array) -> Vec<u8> {
    use mlx_rs::Dtype as D;
    a.eval().expect("eval");
    fn bytes_of<T: Copy>(s: &[T]) -> Vec<u8> {
        let len = std::mem::size_of_val(s);
        // SAFETY: plain-old-data slice viewed as bytes.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), len) }.to_vec()
    }
    if a.size() == 0 {
        return Vec::new();
    }
    match a.dtype() {
        D::Float32 => bytes_of(a.as_slice::<f32>()),
        D::Float16 => bytes_of(a.as_slice::<half::f16>()),
        D::Bfloat16 => bytes_of(a.as_slice::<half::bf16>()),
        D::Uint32 => bytes_of(a.as_slice::<u32>()),
        D::Int32 => bytes_of(a.as_slice::<i32>()),
        D::Int64 => bytes_of(a.as_slice::<i64>()),
        D::Uint8 => bytes_of(a.as_slice::<u8>()),
        D::Int8 => bytes_of(a.as_slice::<i8>()),
        D::Uint16 => bytes_of(a.as_slice::<u16>()),
        D::Int16 => bytes_of(a.as_slice::<i16>()),
        other => panic!("test helper does not read {other:?}"),
    }
}
