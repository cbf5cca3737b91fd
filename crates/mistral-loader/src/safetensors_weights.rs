//! Tensors of a safetensors checkpoint, turned into MLX arrays on demand.
//!
//! Design notes:
//! - Each file is memory-mapped with `memmap2` and its header parsed once
//!   with `safetensors::SafeTensors::read_metadata`, which checks the header
//!   JSON, that the data offsets are contiguous, that each tensor's byte
//!   size matches dtype x shape, and that the data ends exactly at the end of
//!   the file. A truncated or garbage file is therefore an error (naming the
//!   file) at open time; nothing later indexes outside the map. The header
//!   size is capped (100 MB) by the crate, so a garbage length cannot make
//!   us allocate or read unboundedly.
//! - `open` only reads headers. [`SafetensorsWeights::take`] creates the
//!   `mlx_rs::Array` when the model asks for a tensor: `Array::from_raw_data`
//!   (mlx-c `mlx_array_new_data`) copies the bytes into an MLX-owned buffer
//!   right away, so the array never points into the map.
//! - [`SafetensorsWeights::try_take_block`] (the [`WeightSource::take_block`]
//!   of a tensor-parallel rank) copies only a block of a tensor: one run of
//!   bytes for a block of rows, one run per row for a block of columns. The
//!   rest of the tensor is never read, so a rank's memory holds only its
//!   share, during the load as after it.
//! - Peak memory: the copy touches the tensor's mmap pages, which then count
//!   as resident (file-backed) memory next to the copy; over a whole load
//!   that would approach 2x the checkpoint size. So after each copy the
//!   tensor's pages are released with `madvise(MADV_DONTNEED)`
//!   ([`memmap2::UncheckedAdvice::DontNeed`]); peak RSS stays near the
//!   arrays' size plus one tensor. Measured in `tests/peak_rss.rs`; numbers
//!   in the crate README.
//! - Why mmap + copy and not positioned reads into the array: mlx-c has no
//!   way to hand out a writable buffer of a not-yet-materialised array, so
//!   reading into it would need a second buffer anyway; and a zero-copy
//!   array over the map (`mlx_array_new_data_managed`) is not valid for
//!   MLX's Metal/CUDA allocators, which need their own buffers.
//! - Alignment: mlx-c copies through a typed pointer (`uint32_t*`, ...). The
//!   official writer pads headers to 8 bytes so data is aligned, but the
//!   format does not require it; a misaligned tensor is first copied into an
//!   aligned temporary.
//! - `WeightSource::take` can only say "absent". A tensor that is present but
//!   cannot be converted (an F8 dtype, a dimension over `i32::MAX`, an MLX
//!   allocation failure) is recorded; [`SafetensorsWeights::finish`] reports
//!   it. [`SafetensorsWeights::try_take`] returns it directly. MLX failures
//!   show as a null array; before the first call, mlx-rs's error handler
//!   (which records) is installed in place of mlx-c's default one (which
//!   exits the process).

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use mlx_rs::{Array, Dtype};
use safetensors::tensor::Dtype as StDtype;
use safetensors::SafeTensors;

use crate::error::{LoadError, Result};
use crate::fp8;
use crate::safetensors_files::{discover_checkpoint, CheckpointFiles};
use crate::safetensors_read::{
    check_length, check_unique_names, read_header, read_into, read_tensor,
};
use mistral_model::{Block, WeightSource};

/// How tensor bytes are reached (see `safetensors_read` for the trade).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FileAccess {
    /// Memory-map each file and copy tensors out of the map (default).
    #[default]
    Mmap,
    /// Read the header and each tensor with positioned reads; nothing is
    /// mapped, so a file truncated while loading is an error, never SIGBUS.
    Read,
}

/// One open safetensors file, mapped unless read with [`FileAccess::Read`].
struct MappedFile {
    path: PathBuf,
    file: File,
    mmap: Option<Mmap>,
}

/// Where one tensor lives and what it is.
#[derive(Debug, Clone)]
struct Entry {
    /// Position in `SafetensorsWeights::files`.
    file: usize,
    /// Dtype as written in the file.
    st_dtype: StDtype,
    /// Shape as written in the file.
    shape: Vec<usize>,
    /// Byte range inside the whole mapped file (header included).
    start: usize,
    end: usize,
}

/// A tensor's description, read from the safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// The file that holds it.
    pub file: PathBuf,
    /// Its safetensors dtype.
    pub dtype: StDtype,
    /// Its MLX dtype, or None when MLX has no equivalent.
    pub mlx_dtype: Option<Dtype>,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its size in bytes.
    pub nbytes: usize,
}

/// The MLX dtype for a safetensors dtype, where MLX has one.
pub fn mlx_dtype(dtype: StDtype) -> Option<Dtype> {
    Some(match dtype {
        StDtype::BOOL => Dtype::Bool,
        StDtype::U8 => Dtype::Uint8,
        StDtype::I8 => Dtype::Int8,
        StDtype::U16 => Dtype::Uint16,
        StDtype::I16 => Dtype::Int16,
        StDtype::U32 => Dtype::Uint32,
        StDtype::I32 => Dtype::Int32,
        StDtype::U64 => Dtype::Uint64,
        StDtype::I64 => Dtype::Int64,
        StDtype::F16 => Dtype::Float16,
        StDtype::BF16 => Dtype::Bfloat16,
        StDtype::F32 => Dtype::Float32,
        StDtype::F64 => Dtype::Float64,
        StDtype::C64 => Dtype::Complex64,
        _ => return None,
    })
}

/// The tensors of a safetensors checkpoint (one file or shards), created as
/// MLX arrays when taken. Implements [`WeightSource`].
pub struct SafetensorsWeights {
    files: Vec<MappedFile>,
    tensors: BTreeMap<String, Entry>,
    /// Every tensor of the checkpoint (taken or not) -> position in `files`,
    /// so model errors about an already taken tensor can name its file.
    locations: BTreeMap<String, usize>,
    release_pages: bool,
    failures: Vec<LoadError>,
}

impl std::fmt::Debug for SafetensorsWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsWeights")
            .field(
                "files",
                &self.files.iter().map(|m| &m.path).collect::<Vec<_>>(),
            )
            .field("tensors_left", &self.tensors.len())
            .field("failures", &self.failures.len())
            .finish()
    }
}

impl SafetensorsWeights {
    /// Finds the checkpoint in the model directory `dir` (see
    /// [`discover_checkpoint`]) and opens it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, FileAccess::Mmap)
    }

    /// [`open`](Self::open) with the given file access.
    pub fn open_with(dir: impl AsRef<Path>, access: FileAccess) -> Result<Self> {
        let checkpoint = discover_checkpoint(dir.as_ref())?;
        Self::from_checkpoint_with(&checkpoint, access)
    }

    /// Opens the files of an already discovered checkpoint, parsing every
    /// header and, for an indexed checkpoint, checking that each indexed
    /// tensor is in its shard.
    pub fn from_checkpoint(checkpoint: &CheckpointFiles) -> Result<Self> {
        Self::from_checkpoint_with(checkpoint, FileAccess::Mmap)
    }

    /// [`from_checkpoint`](Self::from_checkpoint) with the given file access.
    pub fn from_checkpoint_with(checkpoint: &CheckpointFiles, access: FileAccess) -> Result<Self> {
        let mut files = Vec::with_capacity(checkpoint.files.len());
        let mut per_file = Vec::with_capacity(checkpoint.files.len());
        for path in &checkpoint.files {
            let (mapped, entries) = map_file(path, files.len(), access)?;
            files.push(mapped);
            per_file.push(entries);
        }
        let mut tensors = BTreeMap::new();
        match (&checkpoint.weight_map, &checkpoint.index) {
            (Some(weight_map), Some(index)) => {
                for (tensor, &pos) in weight_map {
                    let entry = per_file
                        .get_mut(pos)
                        .and_then(|entries| entries.remove(tensor))
                        .ok_or_else(|| LoadError::TensorNotInShard {
                            index: index.clone(),
                            tensor: tensor.clone(),
                            shard: checkpoint.files.get(pos).cloned().unwrap_or_default(),
                        })?;
                    tensors.insert(tensor.clone(), entry);
                }
            }
            _ => {
                for entries in per_file {
                    for (name, entry) in entries {
                        if let Some(previous) = tensors.get(&name) {
                            let previous: &Entry = previous;
                            return Err(LoadError::DuplicateTensor {
                                tensor: name,
                                first: files[previous.file].path.clone(),
                                second: files[entry.file].path.clone(),
                            });
                        }
                        tensors.insert(name, entry);
                    }
                }
            }
        }
        let locations = tensors.iter().map(|(n, e)| (n.clone(), e.file)).collect();
        Ok(Self {
            files,
            tensors,
            locations,
            release_pages: true,
            failures: Vec::new(),
        })
    }

    /// Opens the given safetensors files as one checkpoint (no index; a
    /// tensor present in two files is an error).
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let dir = paths
            .first()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut files = paths.to_vec();
        files.sort();
        files.dedup();
        Self::from_checkpoint(&CheckpointFiles {
            dir,
            layout: crate::safetensors_files::CheckpointLayout::ShardsWithoutIndex,
            files,
            index: None,
            weight_map: None,
        })
    }

    /// Whether to release each tensor's mmap pages after copying it (default
    /// `true`; see the module docs). Turning it off only costs memory.
    pub fn set_release_pages(&mut self, release: bool) {
        self.release_pages = release;
    }

    /// Number of tensors not yet taken.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when every tensor has been taken.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Whether a tensor called `name` is still available.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Names of the tensors not yet taken, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// The checkpoint's files, sorted by name.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// The file holding `tensor`, whether or not it has been taken (so a
    /// model's shape error about a taken tensor can name the file); None if
    /// the checkpoint has no such tensor.
    pub fn file_of(&self, tensor: &str) -> Option<&Path> {
        let &pos = self.locations.get(tensor)?;
        Some(self.files[pos].path.as_path())
    }

    /// Header information about `tensor`, while it has not been taken.
    pub fn meta(&self, tensor: &str) -> Option<TensorMeta> {
        let e = self.tensors.get(tensor)?;
        Some(TensorMeta {
            file: self.files[e.file].path.clone(),
            dtype: e.st_dtype,
            mlx_dtype: mlx_dtype(e.st_dtype),
            shape: e.shape.clone(),
            nbytes: e.end - e.start,
        })
    }

    /// Total bytes of tensor data not yet taken.
    pub fn remaining_bytes(&self) -> usize {
        self.tensors.values().map(|e| e.end - e.start).sum()
    }

    /// The tensors not yet taken, with their files, sorted by name. After
    /// building a model these are the checkpoint's unexpected tensors.
    pub fn remaining(&self) -> Vec<(String, PathBuf)> {
        self.tensors
            .iter()
            .map(|(name, e)| (name.clone(), self.files[e.file].path.clone()))
            .collect()
    }

    /// Errors met by [`WeightSource::take`] for tensors that were present
    /// but could not be turned into arrays.
    pub fn failures(&self) -> &[LoadError] {
        &self.failures
    }

    /// Removes and returns the first recorded [`failures`](Self::failures).
    pub fn take_first_failure(&mut self) -> Option<LoadError> {
        (!self.failures.is_empty()).then(|| self.failures.remove(0))
    }

    /// Ends loading: the first recorded [`failures`](Self::failures) if any,
    /// else the tensors nobody took (see [`remaining`](Self::remaining)).
    pub fn finish(mut self) -> Result<Vec<(String, PathBuf)>> {
        if !self.failures.is_empty() {
            return Err(self.failures.swap_remove(0));
        }
        Ok(self.remaining())
    }

    /// Removes `name` and returns it as an MLX array; `Ok(None)` when
    /// absent, `Err` (naming file and tensor) when present but not
    /// convertible. The tensor is gone afterwards either way.
    pub fn try_take(&mut self, name: &str) -> Result<Option<Array>> {
        self.take_part(name, None)
    }

    /// As [`try_take`](Self::try_take), but returns only `block` of the
    /// tensor, reading only its bytes from the file (the whole tensor when
    /// [`Block::range`] gives none for its shape).
    pub fn try_take_block(&mut self, name: &str, block: Block) -> Result<Option<Array>> {
        self.take_part(name, Some(block))
    }

    fn take_part(&mut self, name: &str, block: Option<Block>) -> Result<Option<Array>> {
        let Some(entry) = self.tensors.remove(name) else {
            return Ok(None);
        };
        if entry.st_dtype == StDtype::F8_E4M3 {
            let whole = self.take_fp8(name, &entry)?;
            return Ok(Some(match block {
                Some(block) => block.copy_of(whole),
                None => whole,
            }));
        }
        let file = &self.files[entry.file];
        let array = match block.and_then(|b| b.range(&entry.shape)) {
            Some(range) => block_to_array(file, name, &entry, range)?,
            None => to_array(file, name, &entry)?,
        };
        if self.release_pages {
            release(file, &entry);
        }
        Ok(Some(array))
    }

    /// FP8 tensor `name` dequantized with its scale (see [`crate::fp8`]);
    /// its scale and activation scale are taken with it.
    fn take_fp8(&mut self, name: &str, entry: &Entry) -> Result<Array> {
        let file = &self.files[entry.file];
        let bytes = to_array(file, name, entry)?;
        let scale = match self.tensors.remove(&fp8::scale_name(name)) {
            Some(scale_entry) => {
                let scale_file = &self.files[scale_entry.file];
                Some(to_array(scale_file, &fp8::scale_name(name), &scale_entry)?)
            }
            None => None,
        };
        if let Some(activation) = fp8::activation_scale_name(name) {
            self.tensors.remove(&activation);
        }
        let file = &self.files[entry.file];
        let weight = fp8::dequantize(&bytes, scale.as_ref())
            .map_err(|message: String| mlx_error(file, name)(message.as_str()))?;
        weight
            .eval()
            .map_err(|e| mlx_error(file, name)(&e.to_string()))?;
        if self.release_pages {
            release(file, entry);
        }
        Ok(weight)
    }

    /// Records a failed take for [`finish`](Self::finish) to report.
    fn recorded(&mut self, taken: Result<Option<Array>>) -> Option<Array> {
        taken.unwrap_or_else(|e| {
            self.failures.push(e);
            None
        })
    }
}

impl WeightSource for SafetensorsWeights {
    fn take(&mut self, name: &str) -> Option<Array> {
        let taken = self.try_take(name);
        self.recorded(taken)
    }

    fn take_block(&mut self, name: &str, block: Block) -> Option<Array> {
        let taken = self.try_take_block(name, block);
        self.recorded(taken)
    }
}

/// Opens `path` (mapping it unless `access` says read) and reads its
/// header: tensor name -> entry.
fn map_file(
    path: &Path,
    pos: usize,
    access: FileAccess,
) -> Result<(MappedFile, BTreeMap<String, Entry>)> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 8 {
        // Too short for the header length; also avoids mapping empty files.
        return Err(LoadError::Safetensors {
            path: path.to_path_buf(),
            source: safetensors::SafeTensorError::HeaderTooSmall,
        });
    }
    let (mmap, (header_len, metadata)) = match access {
        FileAccess::Read => (None, read_header(&file, path, len)?),
        FileAccess::Mmap => {
            // SAFETY: the map is read-only and private to this struct. As
            // with every mmap-based loader, the file must not be truncated
            // or rewritten by another process while it is mapped (that
            // would be undefined behaviour or SIGBUS; `to_array` re-checks
            // the length before each copy, see `safetensors_read`). No
            // `&mut` access to the mapped bytes is ever created.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
            let header =
                SafeTensors::read_metadata(&mmap).map_err(|source| LoadError::Safetensors {
                    path: path.to_path_buf(),
                    source,
                })?;
            let header_bytes = mmap.get(8..8 + header.0).unwrap_or_default();
            check_unique_names(path, header_bytes)?;
            (Some(mmap), header)
        }
    };
    // read_metadata checked 8 + header_len + data length == file length.
    let data_start = 8 + header_len;
    let mut entries = BTreeMap::new();
    for (name, info) in metadata.tensors() {
        let (s, e) = info.data_offsets;
        entries.insert(
            name,
            Entry {
                file: pos,
                st_dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + s,
                end: data_start + e,
            },
        );
    }
    Ok((
        MappedFile {
            path: path.to_path_buf(),
            file,
            mmap,
        },
        entries,
    ))
}

/// A tensor's MLX dtype and shape; an error naming it when MLX has no such
/// dtype or a dimension does not fit MLX's `i32`.
fn describe(file: &MappedFile, name: &str, e: &Entry) -> Result<(Dtype, Vec<i32>)> {
    // FP8 tensors are read as their bytes and dequantized by `take_fp8`.
    let as_read = match e.st_dtype {
        StDtype::F8_E4M3 => Some(Dtype::Uint8),
        other => mlx_dtype(other),
    };
    let dtype = as_read.ok_or_else(|| LoadError::UnsupportedDtype {
        path: file.path.clone(),
        tensor: name.to_string(),
        dtype: e.st_dtype.to_string(),
    })?;
    let shape = e
        .shape
        .iter()
        .map(|&d| i32::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| LoadError::ShapeTooLarge {
            path: file.path.clone(),
            tensor: name.to_string(),
            shape: e.shape.clone(),
        })?;
    Ok((dtype, shape))
}

/// The error for an MLX failure while making tensor `name`.
fn mlx_error<'a>(file: &'a MappedFile, name: &'a str) -> impl Fn(&str) -> LoadError + 'a {
    move |message| LoadError::Mlx {
        path: file.path.clone(),
        tensor: name.to_string(),
        message: message.to_string(),
    }
}

/// Copies one tensor out of its map into a new MLX array.
fn to_array(file: &MappedFile, name: &str, e: &Entry) -> Result<Array> {
    let (dtype, shape) = describe(file, name, e)?;
    let mlx_error = mlx_error(file, name);
    let item = e.st_dtype.bitsize() / 8;
    let aligned_copy: Vec<u64>;
    let Some(mmap) = &file.mmap else {
        aligned_copy = read_tensor(&file.file, &file.path, name, e.start, e.end)?;
        return new_array(aligned_copy.as_ptr().cast(), &shape, dtype, mlx_error);
    };
    check_length(&file.file, &file.path, e.end)?;
    let bytes = mmap
        .get(e.start..e.end)
        .ok_or_else(|| mlx_error("tensor data lies outside the file"))?;
    let ptr: *const c_void = if item > 1 && (bytes.as_ptr() as usize) % item != 0 {
        // Rare: a header not padded to the dtype's alignment.
        let mut buf = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `buf` has at least `bytes.len()` bytes; the regions are
        // distinct allocations.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                buf.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            )
        };
        aligned_copy = buf;
        aligned_copy.as_ptr().cast()
    } else {
        bytes.as_ptr().cast()
    };
    new_array(ptr, &shape, dtype, mlx_error)
}

/// Copies the block `[start, end)` along `axis` of one tensor into a new MLX
/// array, reading only the block's bytes: one run per index of the axes
/// before `axis` (one run in all for the first axis, one per row for the
/// last axis of a matrix).
fn block_to_array(
    file: &MappedFile,
    name: &str,
    e: &Entry,
    (axis, start, end): (usize, usize, usize),
) -> Result<Array> {
    let (dtype, mut shape) = describe(file, name, e)?;
    let mlx_error = mlx_error(file, name);
    let item = e.st_dtype.bitsize() / 8;
    let outer: usize = e.shape[..axis].iter().product();
    let inner = e.shape[axis + 1..].iter().product::<usize>() * item;
    let (stride, run) = (e.shape[axis] * inner, (end - start) * inner);
    let mut buf = vec![0u64; (outer * run).div_ceil(8)];
    // SAFETY: `buf` owns at least `outer * run` initialized bytes; the byte
    // view is dropped before `buf` is used again.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), outer * run) };
    if file.mmap.is_some() {
        check_length(&file.file, &file.path, e.end)?;
    }
    for (o, to) in dst.chunks_exact_mut(run.max(1)).enumerate() {
        let from = e.start + o * stride + start * inner;
        match &file.mmap {
            Some(mmap) => to.copy_from_slice(
                mmap.get(from..from + run)
                    .ok_or_else(|| mlx_error("tensor data lies outside the file"))?,
            ),
            None => read_into(&file.file, &file.path, name, to, from)?,
        }
    }
    shape[axis] = (end - start) as i32;
    new_array(buf.as_ptr().cast(), &shape, dtype, mlx_error)
}

/// An MLX array copied from `ptr`: the tensor's bytes, aligned for `dtype`,
/// whose length the header check matched to `shape` and `dtype`.
fn new_array(
    ptr: *const c_void,
    shape: &[i32],
    dtype: Dtype,
    mlx_error: impl Fn(&str) -> LoadError,
) -> Result<Array> {
    mlx_rs_core::runtime::ensure_mlx_error_handler();
    // SAFETY: `ptr` points to the tensor's readable bytes (a map slice or
    // an owned buffer the caller keeps alive), aligned for `dtype`, and the
    // header check made their length the element count of `shape` times the
    // dtype's size, so mlx-c reads exactly the tensor. mlx-c copies the data
    // before returning; the array does not keep the pointer.
    let array = unsafe { Array::from_raw_data(ptr, shape, dtype) };
    if array.as_ptr().ctx.is_null() {
        return Err(mlx_error("mlx_array_new_data failed (out of memory?)"));
    }
    Ok(array)
}

/// Drops the resident pages of a tensor that has been copied out.
fn release(file: &MappedFile, e: &Entry) {
    if let Some(mmap) = &file.mmap {
        release_pages(mmap, e.start, e.end.saturating_sub(e.start));
    }
}

/// Drops the resident pages of `len` bytes at `start` of a read-only map
/// whose contents were copied out (no-op off Unix).
#[cfg(unix)]
pub(crate) fn release_pages(mmap: &Mmap, start: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: `UncheckedAdvice::DontNeed` is unsafe because, on a mapping
    // that was written to, it discards the writes. Our maps are read-only
    // and never written, so the next access of these pages (e.g. another
    // tensor sharing a boundary page) reads the same bytes back from the
    // file: no live reference can observe a change. No borrow of the bytes
    // is held here; the array owns its own copy. The call is purely
    // advisory; its failure only means the pages stay resident, so the
    // result is ignored.
    let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
}

/// Page release needs `madvise`; elsewhere it is skipped.
#[cfg(not(unix))]
pub(crate) fn release_pages(_mmap: &Mmap, _start: usize, _len: usize) {}
