//! Safetensors files read without a memory map (`FileAccess::Read`, the
//! CLI's `--no-mmap`), and the length check the mapped path makes before
//! each copy.
//!
//! Design note: a memory-mapped file that another process truncates while
//! it is mapped makes the next access of a vanished page raise SIGBUS, which
//! kills the process; no Rust code can turn that into an error. Two
//! defences: with a map, the file's current length is checked (`fstat`)
//! right before each tensor is copied, so a file truncated between tensors
//! is an error naming it; a truncation in the microseconds between that
//! check and the copy still raises SIGBUS and cannot be detected. With
//! `FileAccess::Read` nothing is mapped: the header and each tensor are read
//! with positioned reads, and a file that shrinks gives a short read, which
//! is an error naming the file and tensor. The header is checked exactly as
//! `SafeTensors::read_metadata` checks it (size cap, UTF-8, JSON, offsets
//! contiguous and matching dtype x shape, data ending at the end of the
//! file).

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use safetensors::tensor::Metadata;
use safetensors::SafeTensorError;

use crate::error::{LoadError, Result};

/// The safetensors crate's cap on the header size.
const MAX_HEADER_SIZE: u64 = 100_000_000;

/// Reads and checks the header of the safetensors file `file` (`len` bytes):
/// the header's length in bytes and its metadata.
pub(crate) fn read_header(file: &File, path: &Path, len: u64) -> Result<(usize, Metadata)> {
    let corrupt = |source| LoadError::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    if len < 8 {
        return Err(corrupt(SafeTensorError::HeaderTooSmall));
    }
    let mut size = [0u8; 8];
    read_at(file, path, &mut size, 0)?;
    let n = u64::from_le_bytes(size);
    if n > MAX_HEADER_SIZE {
        return Err(corrupt(SafeTensorError::HeaderTooLarge));
    }
    if 8 + n > len {
        return Err(corrupt(SafeTensorError::InvalidHeaderLength));
    }
    let mut header = vec![0u8; n as usize];
    read_at(file, path, &mut header, 8)?;
    let text =
        std::str::from_utf8(&header).map_err(|e| corrupt(SafeTensorError::InvalidHeader(e)))?;
    let metadata: Metadata = serde_json::from_str(text)
        .map_err(|e| corrupt(SafeTensorError::InvalidHeaderDeserialization(e)))?;
    if 8 + n + metadata.data_len() as u64 != len {
        return Err(corrupt(SafeTensorError::MetadataIncompleteBuffer));
    }
    check_unique_names(path, &header)?;
    Ok((n as usize, metadata))
}

/// Errors, naming the tensor, when the header JSON lists a name twice: the
/// `safetensors` crate reads it into a map, which silently keeps the last
/// entry, so a file could carry two different tensors under one name.
pub(crate) fn check_unique_names(path: &Path, header: &[u8]) -> Result<()> {
    struct FirstRepeat(Option<String>);

    impl<'de> Deserialize<'de> for FirstRepeat {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            d.deserialize_map(FirstRepeatVisitor)
        }
    }

    struct FirstRepeatVisitor;

    impl<'de> Visitor<'de> for FirstRepeatVisitor {
        type Value = FirstRepeat;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<FirstRepeat, A::Error> {
            let mut seen = HashSet::new();
            let mut repeat = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if repeat.is_none() && !seen.insert(key.clone()) {
                    repeat = Some(key);
                }
            }
            Ok(FirstRepeat(repeat))
        }
    }

    // A header that is not a JSON object is reported by the main parse.
    if let Ok(FirstRepeat(Some(name))) = serde_json::from_slice::<FirstRepeat>(header) {
        return Err(LoadError::InvalidField {
            path: path.to_path_buf(),
            field: name,
            reason: "this tensor name appears twice in the header".to_owned(),
        });
    }
    Ok(())
}

/// Reads bytes `start..end` of `file` (tensor `name`) into a buffer aligned
/// for any dtype.
pub(crate) fn read_tensor(
    file: &File,
    path: &Path,
    name: &str,
    start: usize,
    end: usize,
) -> Result<Vec<u64>> {
    let len = end - start;
    let mut buf = vec![0u64; len.div_ceil(8)];
    // SAFETY: `buf` owns `buf.len() * 8 >= len` initialized bytes; the byte
    // view is dropped before `buf` is used again.
    let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), len) };
    read_into(file, path, name, bytes, start)?;
    Ok(buf)
}

/// Fills `dst` with the bytes of `file` (tensor `name`) at `offset`.
pub(crate) fn read_into(
    file: &File,
    path: &Path,
    name: &str,
    dst: &mut [u8],
    offset: usize,
) -> Result<()> {
    read_at(file, path, dst, offset as u64).map_err(|err| match err {
        LoadError::Io { path, source } => LoadError::Io {
            path,
            source: std::io::Error::new(
                source.kind(),
                format!("reading tensor `{name}`: {source}"),
            ),
        },
        other => other,
    })
}

/// Errors (naming the file) unless `file` is still at least `end` bytes long.
pub(crate) fn check_length(file: &File, path: &Path, end: usize) -> Result<()> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    if len < end as u64 {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file shrank to {len} bytes while it was being loaded (it was truncated or rewritten)"),
        )));
    }
    Ok(())
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset)
        .map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source: if source.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(
                    source.kind(),
                    "the file ended early (truncated while it was being loaded?)",
                )
            } else {
                source
            },
        })
}
