//! [`GgufFile`]: a memory-mapped GGUF file (llama.cpp's format), its
//! metadata and tensor directory.
//!
//! Design notes:
//! - Layout (GGUF v2 and v3, little-endian): magic `GGUF`, version `u32`,
//!   tensor count `u64`, metadata count `u64`, the metadata key/value pairs,
//!   the tensor infos (name, dimensions, ggml type, offset), padding to
//!   `general.alignment` (default 32), then the tensor data. v1 (32-bit
//!   counts, 2023) is refused with a message saying so.
//! - Every read goes through a bounds-checked cursor over the map, and every
//!   count is checked against the bytes left before anything is allocated,
//!   so a truncated or garbage file is an error naming the file and what was
//!   being read, never a panic or a huge allocation.
//! - Tensor data is only located here (and checked to lie inside the file);
//!   turning it into MLX arrays is [`super::weights`]' job.
//! - Why our own reader, not MLX's (`mlx_load_gguf`): MLX's loader fails
//!   the whole file on types it does not know (Q5_0, Q3_K, ...) and
//!   dequantizes K-quants itself (its Q4_K result was found to differ from
//!   ggml's); reading the bytes ourselves lets each type be kept quantized
//!   exactly, dequantized by checked code, or refused by name.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::ggml_type::GgmlType;
use super::metadata::{MetaValue, Metadata};
use crate::error::{LoadError, Result};

/// The GGUF magic, the first four bytes of the file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The deepest nesting of metadata arrays accepted.
const MAX_ARRAY_DEPTH: usize = 4;

/// One tensor's entry in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name (llama.cpp naming, e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Its dimensions in ggml order: `dims[0]` is the contiguous one (the
    /// number of columns of a matrix).
    pub dims: Vec<u64>,
    /// The ggml type id as written.
    pub type_id: u32,
    /// Where its data starts, relative to the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Its ggml type, if the id is known.
    pub fn ggml_type(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.type_id)
    }

    /// The type's name for messages (`Q4_K`, or `type id 99`).
    pub fn type_name(&self) -> String {
        self.ggml_type().map_or_else(
            || format!("type id {}", self.type_id),
            |t| t.name().to_owned(),
        )
    }

    /// Number of elements.
    pub fn elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Its shape in row-major (MLX / PyTorch) order: `dims` reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// The byte size of its data, when the type is known and the
    /// dimensions fit whole blocks.
    pub fn byte_size(&self) -> Option<u64> {
        let ty = self.ggml_type()?;
        let cols = *self.dims.first()?;
        let rows = self.dims[1..]
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))?;
        let row = ty.row_bytes(usize::try_from(cols).ok()?)? as u64;
        row.checked_mul(rows)
    }
}

/// An opened GGUF file.
pub struct GgufFile {
    path: PathBuf,
    /// Kept open to re-check the length before each tensor is read.
    file: File,
    mmap: Mmap,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` and reads its metadata and tensor directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this struct. Every
        // access is bounds-checked against the map, and `tensor_bytes`
        // re-checks the file's length first; a truncation by another
        // process in between still raises SIGBUS (see `safetensors_read`).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, file, mmap)
    }

    fn parse(path: &Path, file: File, mmap: Mmap) -> Result<Self> {
        let mut c = Cursor {
            path,
            bytes: &mmap,
            pos: 0,
        };
        let magic = c.take(4, "the magic number")?;
        if magic != GGUF_MAGIC {
            return Err(c.error(format!(
                "does not start with the GGUF magic (found {magic:02x?})"
            )));
        }
        let version = c.u32("the version")?;
        match version {
            2 | 3 => {}
            1 => return Err(c.error("is GGUF version 1, which is not supported (convert it again with a current llama.cpp)".into())),
            v => return Err(c.error(format!("has GGUF version {v}; versions 2 and 3 are supported"))),
        }
        let n_tensors = c.count("the tensor count", 4 + 8 + 8 + 4 + 8)?;
        let n_kv = c.count("the metadata count", 8 + 4 + 1)?;
        let mut values = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&format!("the type of metadata `{key}`"))?;
            let value = c.value(ty, &key, 0)?;
            if values.insert(key.clone(), value).is_some() {
                return Err(c.error(format!("has metadata key `{key}` twice")));
            }
        }
        let metadata = Metadata::new(path, values);
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut by_name = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = c.string(&format!("the name of tensor #{i}"))?;
            let what = format!("tensor `{name}`");
            let n_dims = c.u32(&format!("the dimension count of {what}"))?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.error(format!(
                    "gives {what} {n_dims} dimensions (1 to 4 expected)"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| c.u64(&format!("the dimensions of {what}")))
                .collect::<Result<Vec<_>>>()?;
            let type_id = c.u32(&format!("the type of {what}"))?;
            let offset = c.u64(&format!("the offset of {what}"))?;
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(c.error(format!("has tensor `{name}` twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                type_id,
                offset,
            });
        }
        let alignment = match metadata.int::<u64>("general.alignment")? {
            None => DEFAULT_ALIGNMENT,
            Some(a) if a > 0 && a.is_power_of_two() => a,
            Some(a) => {
                return Err(
                    metadata.invalid("general.alignment", format!("{a} is not a power of two"))
                )
            }
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = mmap.len() as u64;
        for t in &tensors {
            let Some(size) = t.byte_size() else {
                if t.ggml_type().is_some() {
                    return Err(c.error(format!(
                        "gives tensor `{}` dimensions {:?} that do not fit whole {} blocks",
                        t.name,
                        t.dims,
                        t.type_name()
                    )));
                }
                // An unknown type: refused by name when the tensor is loaded.
                continue;
            };
            let end = data_start
                .checked_add(t.offset)
                .and_then(|start| start.checked_add(size));
            if end.is_none_or(|end| end > file_len) {
                return Err(c.error(format!(
                    "is truncated: tensor `{}` ends past the end of the file ({file_len} bytes)",
                    t.name
                )));
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            file,
            version,
            metadata,
            tensors,
            by_name,
            data_start,
            mmap,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensor directory, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of tensor `info` (checked at open to lie in the file), and
    /// their offset in the file.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<(usize, &[u8])> {
        let fail = || LoadError::GgufTensor {
            path: self.path.clone(),
            tensor: info.name.clone(),
            message: format!(
                "ggml {} with dimensions {:?} is not supported",
                info.type_name(),
                info.dims
            ),
        };
        let size = info.byte_size().ok_or_else(fail)?;
        let start = self.data_start + info.offset;
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(start + size).ok());
        let (start, end) = range.ok_or_else(fail)?;
        crate::safetensors_read::check_length(&self.file, &self.path, end)?;
        Ok((start, self.mmap.get(start..end).ok_or_else(fail)?))
    }

    /// Tells the OS the pages of `len` bytes at `start` can be dropped (they
    /// were copied out).
    pub(crate) fn release(&self, start: usize, len: usize) {
        crate::safetensors_weights::release_pages(&self.mmap, start, len);
    }
}

/// A bounds-checked reader over the mapped bytes.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: String) -> LoadError {
        LoadError::Gguf {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.error(format!(
                "is truncated: the file ends inside {what} (at byte {})",
                self.pos
            )));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_item` bytes each, checked against
    /// the bytes left so that no allocation can exceed the file.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left / min_item as u64 {
            return Err(self.error(format!(
                "is truncated or corrupt: {what} is {n}, more than the {left} bytes left can hold"
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .map_err(|_| self.error(format!("is corrupt: {what} has length {len}")))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.error(format!("is corrupt: {what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
        let what = format!("metadata `{key}`");
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(&what)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.error(format!("is corrupt: {what} is a bool of value {b}"))),
            },
            8 => MetaValue::String(self.string(&what)?),
            9 if depth < MAX_ARRAY_DEPTH => {
                let item_ty = self.u32(&what)?;
                let n = self.count(&format!("the length of {what}"), 1)?;
                // Each item takes at least one byte of the file but more in memory:
                // grow as items are read rather than trusting the count.
                let mut items = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            9 => return Err(self.error(format!("is corrupt: {what} nests arrays too deeply"))),
            t => return Err(self.error(format!("is corrupt: {what} has unknown value type {t}"))),
        })
    }
}
