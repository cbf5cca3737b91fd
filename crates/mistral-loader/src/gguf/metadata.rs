//! GGUF metadata: typed key/value pairs, and accessors that name the key in
//! every error.
//!
//! Design notes: values keep the type the file gives them ([`MetaValue`]);
//! the accessors accept any integer type whose value fits (converters write
//! `u32` or `i32`, `u64` now and then) and any float width for floats, so a
//! file is refused only when a value cannot mean what the key needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{LoadError, Result};

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT32`.
    F32(f32),
    /// `FLOAT64`.
    F64(f64),
    /// `BOOL`.
    Bool(bool),
    /// `STRING` (UTF-8).
    String(String),
    /// `ARRAY` of one element type.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an integer, if it is one.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float, if it is a number. A float32 becomes the
    /// float64 of its shortest decimal form (`1e-5`, not
    /// `9.999999747378752e-6`), which rounds back to the same float32.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.to_string().parse().unwrap_or(v.into())),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    /// The GGUF name of the value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "uint8",
            MetaValue::I8(_) => "int8",
            MetaValue::U16(_) => "uint16",
            MetaValue::I16(_) => "int16",
            MetaValue::U32(_) => "uint32",
            MetaValue::I32(_) => "int32",
            MetaValue::U64(_) => "uint64",
            MetaValue::I64(_) => "int64",
            MetaValue::F32(_) => "float32",
            MetaValue::F64(_) => "float64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }
}

/// The metadata of one GGUF file, with typed accessors.
#[derive(Debug, Clone)]
pub struct Metadata {
    path: PathBuf,
    values: BTreeMap<String, MetaValue>,
}

impl Metadata {
    /// Metadata read from the file `path`.
    pub fn new(path: &Path, values: BTreeMap<String, MetaValue>) -> Self {
        Metadata {
            path: path.to_path_buf(),
            values,
        }
    }

    /// The file the metadata came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.values.get(key)
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// An error about `key` naming the file.
    pub fn invalid(&self, key: &str, reason: impl Into<String>) -> LoadError {
        LoadError::InvalidField {
            path: self.path.clone(),
            field: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &MetaValue) -> LoadError {
        self.invalid(
            key,
            format!("expected {expected}, found a {}", found.type_name()),
        )
    }

    /// An integer in `T`'s range, or `None` when the key is absent.
    pub fn int<T: TryFrom<i128>>(&self, key: &str) -> Result<Option<T>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v
            .as_i128()
            .ok_or_else(|| self.wrong_type(key, "an integer", v))?;
        T::try_from(n)
            .map(Some)
            .map_err(|_| self.invalid(key, format!("{n} is out of range")))
    }

    /// A required integer in `T`'s range.
    pub fn require_int<T: TryFrom<i128>>(&self, key: &str) -> Result<T> {
        self.int(key)?
            .ok_or_else(|| self.invalid(key, "is missing from the GGUF metadata"))
    }

    /// A number (integer or float), or `None` when absent.
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.wrong_type(key, "a number", v))
            })
            .transpose()
    }

    /// A boolean, or `None` when absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, "a bool", v)),
        }
    }

    /// A string, or `None` when absent.
    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, "a string", v)),
        }
    }

    /// An array, or `None` when absent.
    pub fn array(&self, key: &str) -> Result<Option<&[MetaValue]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(items)) => Ok(Some(items)),
            Some(v) => Err(self.wrong_type(key, "an array", v)),
        }
    }

    /// An array whose every element `convert` accepts (`expected` names
    /// the element type in errors), or `None` when absent.
    fn array_of<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        convert: impl Fn(&'a MetaValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                convert(v).ok_or_else(|| self.wrong_type(&format!("{key}[{i}]"), expected, v))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An array of strings, or `None` when absent.
    pub fn str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        self.array_of(key, "a string", |v| match v {
            MetaValue::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// An array of numbers as `f32`, or `None` when absent.
    pub fn f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        self.array_of(key, "a number", |v| v.as_f64().map(|f| f as f32))
    }

    /// An array of integers as `i32`, or `None` when absent.
    pub fn i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
        self.array_of(key, "an int32", |v| {
            v.as_i128().and_then(|n| i32::try_from(n).ok())
        })
    }
}
