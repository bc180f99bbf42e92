//! GGUF files (llama.cpp's model format): header, metadata, tensor infos and memory-mapped
//! tensor data, validated before anything is handed out.
//!
//! ```text
//! "GGUF" | version u32 (2 or 3) | tensor count u64 | metadata count u64
//! metadata:     (key string, value type u32, value) * metadata count
//! tensor infos: (name string, n_dims u32, dims u64 * n_dims, ggml type u32, offset u64) * tensor count
//! padding to `general.alignment` (default 32)
//! tensor data:  each tensor at data start + its offset
//! ```
//!
//! Strings are a u64 byte length and the bytes; everything is little-endian (big-endian files,
//! which GGUF v3 allows, are rejected with a message saying so).
//!
//! **Dims are exposed as stored:** [`TensorInfo::dims`] is innermost-first, as GGML's `ne`:
//! `dims()[0]` is the row length (the contiguous dimension). A matrix PyTorch calls
//! `[out_features, in_features]` is stored as `dims = [in_features, out_features]`;
//! [`TensorInfo::shape`] gives the outermost-first order.
//!
//! **Strings:** metadata strings are kept as the file's bytes ([`GgufString`]), not rejected
//! when they are not UTF-8: tokenizer vocabularies in the wild occasionally hold invalid UTF-8,
//! and refusing the whole file for one token would be unhelpful. [`GgufString::as_str`]
//! checks UTF-8 on access, [`GgufString::to_string_lossy`] replaces bad sequences, and the
//! typed accessors ([`GgufFile::get_str`], [`GgufFile::get_str_array`]) return an error naming
//! the key (and index) when a string is not UTF-8. Metadata keys and tensor names must be UTF-8
//! (they are looked up by `&str`); a file where they are not is rejected.
//!
//! **Untrusted input:** every read is bounds-checked; no count from the file is used to allocate
//! before it is checked against the bytes left (each element takes at least one byte, a string
//! at least 8, an array at least 12); arrays may nest at most [`MAX_ARRAY_DEPTH`] deep; a file
//! may hold at most [`MAX_METADATA_ENTRIES`] metadata entries and [`MAX_TENSORS`] tensors;
//! all offset and size arithmetic is checked. Tensor data ranges must lie inside the file, start
//! at a multiple of the alignment and not overlap. Errors are [`Error::Format`] naming the file
//! and, where there is one, the key or tensor.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use metallic::quant::QuantType;

use crate::mapped::Bytes;
use crate::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of tensor data when the file has no `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most metadata entries (key/value pairs) a file may declare. Real models have tens.
pub const MAX_METADATA_ENTRIES: u64 = 1 << 16;
/// The most tensors a file may declare. Real models have hundreds to a few thousand.
pub const MAX_TENSORS: u64 = 1 << 20;
/// How deep metadata arrays may nest (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// The most dimensions of a tensor (GGML's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// The type tag of a metadata value, as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgufType {
    /// `u8` (tag 0).
    U8,
    /// `i8` (tag 1).
    I8,
    /// `u16` (tag 2).
    U16,
    /// `i16` (tag 3).
    I16,
    /// `u32` (tag 4).
    U32,
    /// `i32` (tag 5).
    I32,
    /// `f32` (tag 6).
    F32,
    /// `bool`, one byte 0 or 1 (tag 7).
    Bool,
    /// A u64 length and that many bytes (tag 8).
    String,
    /// An element type tag, a u64 count and the elements (tag 9).
    Array,
    /// `u64` (tag 10).
    U64,
    /// `i64` (tag 11).
    I64,
    /// `f64` (tag 12).
    F64,
}

impl GgufType {
    /// The type with tag `id`, or `None` for tags GGUF does not define.
    pub const fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgufType::U8,
            1 => GgufType::I8,
            2 => GgufType::U16,
            3 => GgufType::I16,
            4 => GgufType::U32,
            5 => GgufType::I32,
            6 => GgufType::F32,
            7 => GgufType::Bool,
            8 => GgufType::String,
            9 => GgufType::Array,
            10 => GgufType::U64,
            11 => GgufType::I64,
            12 => GgufType::F64,
            _ => return None,
        })
    }

    /// The tag stored in the file.
    pub const fn id(self) -> u32 {
        match self {
            GgufType::U8 => 0,
            GgufType::I8 => 1,
            GgufType::U16 => 2,
            GgufType::I16 => 3,
            GgufType::U32 => 4,
            GgufType::I32 => 5,
            GgufType::F32 => 6,
            GgufType::Bool => 7,
            GgufType::String => 8,
            GgufType::Array => 9,
            GgufType::U64 => 10,
            GgufType::I64 => 11,
            GgufType::F64 => 12,
        }
    }

    /// The type's name in messages (`"u32"`, `"string"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            GgufType::U8 => "u8",
            GgufType::I8 => "i8",
            GgufType::U16 => "u16",
            GgufType::I16 => "i16",
            GgufType::U32 => "u32",
            GgufType::I32 => "i32",
            GgufType::F32 => "f32",
            GgufType::Bool => "bool",
            GgufType::String => "string",
            GgufType::Array => "array",
            GgufType::U64 => "u64",
            GgufType::I64 => "i64",
            GgufType::F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes in the file.
    const fn min_bytes(self) -> u64 {
        match self {
            GgufType::U8 | GgufType::I8 | GgufType::Bool => 1,
            GgufType::U16 | GgufType::I16 => 2,
            GgufType::U32 | GgufType::I32 | GgufType::F32 => 4,
            GgufType::U64 | GgufType::I64 | GgufType::F64 | GgufType::String => 8,
            GgufType::Array => 12,
        }
    }
}

impl std::fmt::Display for GgufType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata string: the file's bytes, UTF-8 checked on access (see the module docs).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct GgufString(Box<[u8]>);

impl GgufString {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The string, or `None` if its bytes are not UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The string with invalid UTF-8 sequences replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl From<&str> for GgufString {
    fn from(s: &str) -> Self {
        GgufString(s.as_bytes().into())
    }
}

impl From<Vec<u8>> for GgufString {
    fn from(bytes: Vec<u8>) -> Self {
        GgufString(bytes.into_boxed_slice())
    }
}

impl std::fmt::Debug for GgufString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "{s:?}"),
            None => write!(f, "bytes{:?}", &self.0),
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A string (bytes, see [`GgufString`]).
    String(GgufString),
    /// An array of one element type.
    Array(GgufArray),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl GgufValue {
    /// The value's type tag.
    pub fn ty(&self) -> GgufType {
        match self {
            GgufValue::U8(_) => GgufType::U8,
            GgufValue::I8(_) => GgufType::I8,
            GgufValue::U16(_) => GgufType::U16,
            GgufValue::I16(_) => GgufType::I16,
            GgufValue::U32(_) => GgufType::U32,
            GgufValue::I32(_) => GgufType::I32,
            GgufValue::F32(_) => GgufType::F32,
            GgufValue::Bool(_) => GgufType::Bool,
            GgufValue::String(_) => GgufType::String,
            GgufValue::Array(_) => GgufType::Array,
            GgufValue::U64(_) => GgufType::U64,
            GgufValue::I64(_) => GgufType::I64,
            GgufValue::F64(_) => GgufType::F64,
        }
    }

    /// The type in messages: `"u32"`, `"array of string"`, `"array of array of i32"`, ...
    pub fn type_name(&self) -> String {
        match self {
            GgufValue::Array(a) => format!("array of {}", a.type_name()),
            other => other.ty().name().to_string(),
        }
    }

    /// The value as an `i128` if it is one of the integer types (not bool).
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }
}

/// A metadata array: elements of one type, stored typed (a 262k-entry `f32` score array is one
/// `Vec<f32>`). Arrays of arrays hold each inner array with its own element type.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    /// `u8` elements.
    U8(Vec<u8>),
    /// `i8` elements.
    I8(Vec<i8>),
    /// `u16` elements.
    U16(Vec<u16>),
    /// `i16` elements.
    I16(Vec<i16>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `f32` elements.
    F32(Vec<f32>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// String elements.
    String(Vec<GgufString>),
    /// Array elements (each with its own element type).
    Array(Vec<GgufArray>),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `f64` elements.
    F64(Vec<f64>),
}

impl GgufArray {
    /// The element type tag.
    pub fn element_type(&self) -> GgufType {
        match self {
            GgufArray::U8(_) => GgufType::U8,
            GgufArray::I8(_) => GgufType::I8,
            GgufArray::U16(_) => GgufType::U16,
            GgufArray::I16(_) => GgufType::I16,
            GgufArray::U32(_) => GgufType::U32,
            GgufArray::I32(_) => GgufType::I32,
            GgufArray::F32(_) => GgufType::F32,
            GgufArray::Bool(_) => GgufType::Bool,
            GgufArray::String(_) => GgufType::String,
            GgufArray::Array(_) => GgufType::Array,
            GgufArray::U64(_) => GgufType::U64,
            GgufArray::I64(_) => GgufType::I64,
            GgufArray::F64(_) => GgufType::F64,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type in messages (`"string"`, `"array of u8"`; an array of arrays names the
    /// first inner array's type, or just `"array"` when empty).
    pub fn type_name(&self) -> String {
        match self {
            GgufArray::Array(inner) => match inner.first() {
                Some(first) => format!("array of {}", first.type_name()),
                None => "array".to_string(),
            },
            other => other.element_type().name().to_string(),
        }
    }
}

/// One tensor's entry in the file: name, dims, GGML type and where its data lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<usize>,
    ty: QuantType,
    offset: u64,
    start: usize,
    elements: usize,
    bytes: usize,
}

impl TensorInfo {
    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dims as stored in the file, **innermost first** (GGML's `ne`: `dims()[0]` is the row
    /// length). Between 0 and [`MAX_DIMS`] entries, each at least 1.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Dims outermost first (the reverse of [`dims`](Self::dims)), as NumPy/PyTorch write a
    /// shape.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    /// The GGML type of the data.
    pub fn ty(&self) -> QuantType {
        self.ty
    }

    /// The offset stored in the file, relative to the start of the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The absolute byte offset of the data in the file.
    pub fn file_offset(&self) -> usize {
        self.start
    }

    /// The number of weights (the product of the dims).
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// The size of the data in bytes (whole blocks of [`ty`](Self::ty)).
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

/// A GGUF file, mapped into memory, with its header, metadata and tensor infos parsed and
/// validated (see the module docs for what is checked).
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("bytes", &self.bytes.as_slice().len())
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` and parses and validates it. A directory (or a pipe or device) is an
    /// [`Error::Format`] saying so and that a GGUF file was expected.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = Bytes::map_expecting(&path, "a GGUF file (.gguf)")?;
        Self::parse(path, bytes)
    }

    /// Parses and validates a GGUF image held in memory (tests, fuzzing, downloads not yet
    /// written to disk). Errors name the path `<memory>`.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(PathBuf::from("<memory>"), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let parsed = parse(bytes.as_slice()).map_err(|message| Error::format(&path, message))?;
        Ok(GgufFile {
            path,
            bytes,
            version: parsed.version,
            alignment: parsed.alignment,
            data_start: parsed.data_start,
            metadata: parsed.metadata,
            metadata_index: parsed.metadata_index,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
        })
    }

    /// The file's path (`<memory>` for [`from_bytes`](Self::from_bytes)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The file's size in bytes.
    pub fn file_size(&self) -> usize {
        self.bytes.as_slice().len()
    }

    /// The tensor data alignment: `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The absolute offset of the data section (tensor offsets are relative to it).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The value of metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata_index.get(key).and_then(|&i| self.metadata.get(i)).map(|(_, v)| v)
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The raw bytes of `info`'s data: whole blocks in its GGML type's layout. `info` must come
    /// from this file (one from another file gives its range here, or an empty slice if that
    /// range is outside this file).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        info.start
            .checked_add(info.bytes)
            .and_then(|end| self.bytes.as_slice().get(info.start..end))
            .unwrap_or_default()
    }

    fn format_error(&self, message: String) -> Error {
        Error::format(&self.path, message)
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).ok_or_else(|| self.format_error(format!("metadata key `{key}` is missing")))
    }

    fn wrong_type(&self, key: &str, found: &GgufValue, expected: &str) -> Error {
        self.format_error(format!("metadata key `{key}` is {}, expected {expected}", found.type_name()))
    }

    fn get_integer<T: TryFrom<i128>>(&self, key: &str, target: &str) -> Result<T> {
        let value = self.require(key)?;
        let Some(n) = value.as_integer() else {
            return Err(self.wrong_type(key, value, &format!("an integer (for {target})")));
        };
        T::try_from(n).map_err(|_| {
            self.format_error(format!("metadata key `{key}`: value {n} ({}) does not fit {target}", value.type_name()))
        })
    }

    /// Key `key` as a `u32`: any integer type whose value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_integer(key, "u32")
    }

    /// Key `key` as a `u64`: any integer type whose value fits.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_integer(key, "u64")
    }

    /// Key `key` as an `i64`: any integer type whose value fits.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get_integer(key, "i64")
    }

    /// Key `key` as an `f32`: an `f32`, or an `f64` rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.require(key)? {
            GgufValue::F32(v) => Ok(*v),
            GgufValue::F64(v) => Ok(*v as f32),
            other => Err(self.wrong_type(key, other, "f32")),
        }
    }

    /// Key `key` as a `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            GgufValue::Bool(v) => Ok(*v),
            other => Err(self.wrong_type(key, other, "bool")),
        }
    }

    /// Key `key` as a UTF-8 string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            GgufValue::String(s) => {
                s.as_str().ok_or_else(|| self.format_error(format!("metadata key `{key}`: string is not valid UTF-8")))
            }
            other => Err(self.wrong_type(key, other, "string")),
        }
    }

    /// Key `key` as an array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&GgufArray> {
        match self.require(key)? {
            GgufValue::Array(a) => Ok(a),
            other => Err(self.wrong_type(key, other, "an array")),
        }
    }

    fn array_type_error(&self, key: &str, found: &GgufArray, expected: &str) -> Error {
        self.format_error(format!(
            "metadata key `{key}` is array of {}, expected array of {expected}",
            found.type_name()
        ))
    }

    /// Key `key` as an array of UTF-8 strings (an error names the first element that is not
    /// UTF-8).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        match self.get_array(key)? {
            GgufArray::String(items) => items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str().ok_or_else(|| {
                        self.format_error(format!("metadata key `{key}`: element {i} is not valid UTF-8"))
                    })
                })
                .collect(),
            other => Err(self.array_type_error(key, other, "string")),
        }
    }

    /// Key `key` as an array of `f32`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.get_array(key)? {
            GgufArray::F32(v) => Ok(v),
            other => Err(self.array_type_error(key, other, "f32")),
        }
    }

    /// Key `key` as an array of `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.get_array(key)? {
            GgufArray::I32(v) => Ok(v),
            other => Err(self.array_type_error(key, other, "i32")),
        }
    }
}

/// What [`parse`] finds; becomes a [`GgufFile`].
struct Parsed {
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// A bounds-checked little-endian reader. Every error message says what was being read, at
/// which offset, and how many bytes the file has.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type ParseResult<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> ParseResult<&'a [u8]> {
        let slice = self.pos.checked_add(n).and_then(|end| self.bytes.get(self.pos..end)).ok_or_else(|| {
            format!(
                "truncated: {} needs {n} bytes at offset {}, the file has {} bytes",
                what(),
                self.pos,
                self.bytes.len()
            )
        })?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> ParseResult<[u8; N]> {
        let slice = self.take(N, what)?;
        slice.try_into().map_err(|_| format!("internal: {} read {} bytes, not {N}", what(), slice.len()))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> ParseResult<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> ParseResult<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Checks that `count` items of at least `min_bytes` each can fit in the bytes left, and
    /// returns `count` as a `usize` (safe to preallocate with).
    fn check_count(&self, count: u64, min_bytes: u64, what: &dyn Fn() -> String) -> ParseResult<usize> {
        let remaining = self.remaining() as u64;
        match count.checked_mul(min_bytes) {
            Some(need) if need <= remaining => {
                usize::try_from(count).map_err(|_| format!("{}: count {count} too large", what()))
            }
            _ => Err(format!(
                "{}: count {count} needs at least {} bytes, only {remaining} remain at offset {}",
                what(),
                count.saturating_mul(min_bytes),
                self.pos
            )),
        }
    }

    /// A string's bytes: a u64 length, checked against the bytes left, then the bytes.
    fn string_bytes(&mut self, what: &dyn Fn() -> String) -> ParseResult<&'a [u8]> {
        let len_at = self.pos;
        let len = self.u64(&|| format!("{} (length)", what()))?;
        let remaining = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n <= remaining => self.take(n, what),
            _ => Err(format!(
                "{}: string length {len} at offset {len_at} exceeds the {remaining} bytes left in the file",
                what()
            )),
        }
    }

    /// A string that must be UTF-8 (keys, tensor names).
    fn utf8_string(&mut self, what: &dyn Fn() -> String) -> ParseResult<String> {
        let at = self.pos;
        let bytes = self.string_bytes(what)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| format!("{} at offset {at} is not valid UTF-8: {e}", what()))
    }

    fn value_type(&mut self, what: &dyn Fn() -> String) -> ParseResult<GgufType> {
        let at = self.pos;
        let id = self.u32(what)?;
        GgufType::from_id(id)
            .ok_or_else(|| format!("{}: unknown value type {id} at offset {at} (known: 0 to 12)", what()))
    }

    fn value(&mut self, ty: GgufType, depth: usize, what: &dyn Fn() -> String) -> ParseResult<GgufValue> {
        Ok(match ty {
            GgufType::U8 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            GgufType::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            GgufType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            GgufType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            GgufType::U32 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            GgufType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            GgufType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            GgufType::Bool => GgufValue::Bool(self.bool(what)?),
            GgufType::String => GgufValue::String(self.string_bytes(what)?.to_vec().into()),
            GgufType::Array => GgufValue::Array(self.array_value(depth, what)?),
            GgufType::U64 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            GgufType::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            GgufType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
        })
    }

    fn bool(&mut self, what: &dyn Fn() -> String) -> ParseResult<bool> {
        let at = self.pos;
        match self.array::<1>(what)? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(format!("{}: bool byte {b} at offset {at} is neither 0 nor 1", what())),
        }
    }

    /// `count` fixed-size elements decoded by `f`, after checking they fit in the file.
    fn fixed<T, const N: usize>(
        &mut self,
        count: u64,
        what: &dyn Fn() -> String,
        f: impl Fn([u8; N]) -> T,
    ) -> ParseResult<Vec<T>> {
        let n = self.check_count(count, N as u64, what)?;
        let bytes = self.take(n.saturating_mul(N), what)?;
        Ok(bytes.chunks_exact(N).filter_map(|c| <[u8; N]>::try_from(c).ok()).map(f).collect())
    }

    /// An array value (element type, count, elements); `depth` is this array's nesting level.
    fn array_value(&mut self, depth: usize, what: &dyn Fn() -> String) -> ParseResult<GgufArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(format!(
                "{}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels at offset {}",
                what(),
                self.pos
            ));
        }
        let elem = self.value_type(&|| format!("{} (array element type)", what()))?;
        let count = self.u64(&|| format!("{} (array length)", what()))?;
        let whats = || format!("{}: array of {count} {}", what(), elem.name());
        Ok(match elem {
            GgufType::U8 => GgufArray::U8(self.fixed(count, &whats, u8::from_le_bytes)?),
            GgufType::I8 => GgufArray::I8(self.fixed(count, &whats, i8::from_le_bytes)?),
            GgufType::U16 => GgufArray::U16(self.fixed(count, &whats, u16::from_le_bytes)?),
            GgufType::I16 => GgufArray::I16(self.fixed(count, &whats, i16::from_le_bytes)?),
            GgufType::U32 => GgufArray::U32(self.fixed(count, &whats, u32::from_le_bytes)?),
            GgufType::I32 => GgufArray::I32(self.fixed(count, &whats, i32::from_le_bytes)?),
            GgufType::F32 => GgufArray::F32(self.fixed(count, &whats, f32::from_le_bytes)?),
            GgufType::U64 => GgufArray::U64(self.fixed(count, &whats, u64::from_le_bytes)?),
            GgufType::I64 => GgufArray::I64(self.fixed(count, &whats, i64::from_le_bytes)?),
            GgufType::F64 => GgufArray::F64(self.fixed(count, &whats, f64::from_le_bytes)?),
            GgufType::Bool => {
                let n = self.check_count(count, 1, &whats)?;
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.bool(&|| format!("{} (element {i})", whats()))?);
                }
                GgufArray::Bool(v)
            }
            GgufType::String => {
                let n = self.check_count(count, GgufType::String.min_bytes(), &whats)?;
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string_bytes(&|| format!("{} (element {i})", whats()))?.to_vec().into());
                }
                GgufArray::String(v)
            }
            GgufType::Array => {
                let n = self.check_count(count, GgufType::Array.min_bytes(), &whats)?;
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.array_value(depth + 1, &|| format!("{} (element {i})", whats()))?);
                }
                GgufArray::Array(v)
            }
        })
    }
}

/// Parses and validates a whole GGUF image; errors are messages (the caller adds the path).
fn parse(bytes: &[u8]) -> ParseResult<Parsed> {
    let mut r = Cursor { bytes, pos: 0 };

    // Header.
    let magic: [u8; 4] = r
        .array(&|| "the magic bytes".to_string())
        .map_err(|_| format!("not a GGUF file: {} bytes, too short for the 4-byte magic \"GGUF\"", bytes.len()))?;
    if magic != GGUF_MAGIC {
        return Err(format!(
            "not a GGUF file: starts with bytes {:02x} {:02x} {:02x} {:02x} ({:?}), expected \"GGUF\"",
            magic[0],
            magic[1],
            magic[2],
            magic[3],
            String::from_utf8_lossy(&magic)
        ));
    }
    let version = r.u32(&|| "the version".to_string())?;
    let swapped = version.swap_bytes();
    if version & 0xffff == 0 && (1..=3).contains(&swapped) {
        return Err(format!(
            "big-endian GGUF file (version {swapped} stored big-endian); only little-endian files are supported"
        ));
    }
    match version {
        2 | 3 => {}
        1 => {
            return Err("GGUF version 1 is not supported (only versions 2 and 3); re-convert the model with a \
                        current llama.cpp"
                .to_string());
        }
        v => return Err(format!("unsupported GGUF version {v} (supported: 2 and 3)")),
    }
    let n_tensors = r.u64(&|| "the tensor count".to_string())?;
    let n_kv = r.u64(&|| "the metadata count".to_string())?;
    if n_kv > MAX_METADATA_ENTRIES {
        return Err(format!("metadata count {n_kv} exceeds the limit of {MAX_METADATA_ENTRIES} entries"));
    }
    if n_tensors > MAX_TENSORS {
        return Err(format!("tensor count {n_tensors} exceeds the limit of {MAX_TENSORS} tensors"));
    }

    // Metadata: a key (>= 8 bytes), a type (4) and a value (>= 1).
    let n_kv = r.check_count(n_kv, 13, &|| "metadata".to_string())?;
    let mut metadata = Vec::with_capacity(n_kv);
    let mut metadata_index = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = r.utf8_string(&|| format!("metadata entry {i} (key)"))?;
        let what = || format!("metadata key `{key}`");
        let ty = r.value_type(&what)?;
        let value = r.value(ty, 0, &what)?;
        match metadata_index.entry(key.clone()) {
            Entry::Occupied(_) => return Err(format!("metadata key `{key}` appears twice")),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
        metadata.push((key, value));
    }

    let alignment = match metadata_index.get("general.alignment").and_then(|&i| metadata.get(i)) {
        None => DEFAULT_ALIGNMENT,
        Some((_, value)) => {
            let a = match value.as_integer() {
                Some(n) => u32::try_from(n).map_err(|_| {
                    format!("metadata key `general.alignment` is {n} ({}), expected a u32", value.type_name())
                })?,
                None => {
                    return Err(format!("metadata key `general.alignment` is {}, expected a u32", value.type_name()));
                }
            };
            if !a.is_power_of_two() {
                return Err(format!("metadata key `general.alignment` is {a}, expected a non-zero power of two"));
            }
            u64::from(a)
        }
    };

    // Tensor infos: a name (>= 8 bytes), n_dims (4), type (4), offset (8).
    let n_tensors = r.check_count(n_tensors, 24, &|| "tensor infos".to_string())?;
    let mut raw = Vec::with_capacity(n_tensors);
    let mut tensor_index = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = r.utf8_string(&|| format!("tensor {i} (name)"))?;
        let what = || format!("tensor `{name}`");
        if tensor_index.insert(name.clone(), i).is_some() {
            return Err(format!("tensor name `{name}` appears twice"));
        }
        let n_dims = r.u32(&|| format!("{} (n_dims)", what()))?;
        let n_dims = usize::try_from(n_dims)
            .ok()
            .filter(|&n| n <= MAX_DIMS)
            .ok_or_else(|| format!("{}: {n_dims} dimensions, at most {MAX_DIMS} are supported", what()))?;
        let mut dims = Vec::with_capacity(n_dims);
        let mut elements: usize = 1;
        for d in 0..n_dims {
            let dim = r.u64(&|| format!("{} (dim {d})", what()))?;
            if dim == 0 {
                return Err(format!("{}: dim {d} is 0", what()));
            }
            let dim = usize::try_from(dim).ok();
            elements = dim
                .and_then(|dim| elements.checked_mul(dim))
                .ok_or_else(|| format!("{}: element count overflows (dims so far {dims:?}, next {dim:?})", what()))?;
            dims.push(dim.unwrap_or_default());
        }
        let type_at = r.pos;
        let type_id = r.u32(&|| format!("{} (type)", what()))?;
        let ty = QuantType::from_ggml_id(type_id)
            .ok_or_else(|| format!("{}: unknown or unsupported GGML type id {type_id} at offset {type_at}", what()))?;
        let offset = r.u64(&|| format!("{} (offset)", what()))?;
        if offset % alignment != 0 {
            return Err(format!("{}: data offset {offset} is not a multiple of the alignment {alignment}", what()));
        }
        // GGML requires whole blocks per row (ne[0]), which also makes the count whole blocks.
        let row = dims.first().copied().unwrap_or(1);
        let block = ty.block_elems();
        if !row.is_multiple_of(block) {
            return Err(format!(
                "{}: row length (dims[0]) {row} is not a multiple of {ty}'s block size {block} (dims {dims:?})",
                what()
            ));
        }
        let size = ty.bytes_for(elements).ok_or_else(|| {
            format!("{}: {elements} elements of {ty} is not a whole number of blocks or overflows", what())
        })?;
        raw.push((name, dims, ty, offset, elements, size));
    }

    // Data section: tensor offsets count from the first aligned position after the infos.
    let infos_end = r.pos as u64;
    let data_start = infos_end
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| format!("data section start overflows (tensor infos end at {infos_end})"))?;
    let file_len = bytes.len();
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ty, offset, elements, size) in raw {
        let start = data_start.checked_add(offset).and_then(|s| usize::try_from(s).ok());
        let end = start.and_then(|s| s.checked_add(size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(format!("tensor `{name}`: data offset {offset} + {size} bytes overflows"));
        };
        if end > file_len {
            return Err(format!(
                "tensor `{name}`: data [{start}, {end}) ({size} bytes of {ty}, dims {dims:?}) extends past the end \
                 of the file ({file_len} bytes)"
            ));
        }
        tensors.push(TensorInfo { name, dims, ty, offset, start, elements, bytes: size });
    }
    let mut by_start: Vec<&TensorInfo> = tensors.iter().collect();
    by_start.sort_by_key(|t| t.start);
    for pair in by_start.windows(2) {
        if let [a, b] = pair
            && a.start.saturating_add(a.bytes) > b.start
        {
            return Err(format!(
                "tensors `{}` (bytes [{}, {})) and `{}` (bytes [{}, {})) overlap",
                a.name,
                a.start,
                a.start.saturating_add(a.bytes),
                b.name,
                b.start,
                b.start.saturating_add(b.bytes)
            ));
        }
    }

    Ok(Parsed { version, alignment, data_start, metadata, metadata_index, tensors, tensor_index })
}
