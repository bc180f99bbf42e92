//! Memory-mapped safetensors files, uploaded to the GPU one tensor at a time.

use std::path::{Path, PathBuf};

use metallic::{DType, Runtime, Tensor, f16};
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::mapped::Bytes;
use crate::{Error, Result};

/// A safetensors file, mapped into memory and its header validated (every tensor's byte range
/// lies inside the file and matches its dtype and shape).
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Bytes,
    /// Bytes before the data section: the 8-byte length and the JSON header.
    data_start: usize,
    metadata: Metadata,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("bytes", &self.bytes.as_slice().len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Maps `path` and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = Bytes::map(&path)?;
        Self::parse(path, bytes)
    }

    /// Validates a safetensors image held in memory (tests, fuzzing). Errors name the path
    /// `<memory>`.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(PathBuf::from("<memory>"), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let (header, metadata) = SafeTensors::read_metadata(bytes.as_slice())
            .map_err(|e| Error::format(&path, format!("not a valid safetensors file: {e}")))?;
        Ok(SafetensorsFile { path, bytes, data_start: header + 8, metadata })
    }

    /// The tensors' names, in the header's order.
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.info(name)?.shape)
    }

    fn info(&self, name: &str) -> Result<&safetensors::tensor::TensorInfo> {
        self.metadata.info(name).ok_or_else(|| self.weight_error(name, "missing from the file".into()))
    }

    /// An error naming this file and tensor `name`.
    pub(crate) fn weight_error(&self, name: &str, message: String) -> Error {
        Error::Weight { path: self.path.clone(), name: name.to_string(), message }
    }

    /// Tensor `name` converted to f32 on the host, after checking its shape is `shape` and that
    /// every value is finite (a NaN or infinite weight is an error naming the tensor and the
    /// element, not a model that computes NaN). F32, F16 and BF16 tensors are accepted.
    pub fn read_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.read_as(name, shape, DType::F32)
    }

    /// [`read_f32`](Self::read_f32) for storage as `dtype`: with `F16`, every value must also
    /// be within f16's range.
    pub fn read_as(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.shape != shape {
            return Err(self.weight_error(name, format!("shape {:?}, expected {:?}", info.shape, shape)));
        }
        let (start, end) = info.data_offsets;
        let bytes = self
            .bytes
            .as_slice()
            .get(self.data_start.saturating_add(start)..self.data_start.saturating_add(end))
            .ok_or_else(|| self.weight_error(name, "data range outside the file".into()))?;
        let values: Vec<f32> = match info.dtype {
            Dtype::F32 => words::<4>(bytes).map(f32::from_le_bytes).collect(),
            Dtype::F16 => words::<2>(bytes).map(|w| f16::from_le_bytes(w).to_f32()).collect(),
            Dtype::BF16 => words::<2>(bytes).map(|w| half::bf16::from_le_bytes(w).to_f32()).collect(),
            other => return Err(self.weight_error(name, format!("dtype {other:?}; expected F32, F16 or BF16"))),
        };
        match bad_value(&values, shape, dtype) {
            Some(problem) => Err(self.weight_error(name, problem)),
            None => Ok(values),
        }
    }

    /// Tensor `name` uploaded to `rt` as `dtype` (F32 or F16), after the checks of
    /// [`read_as`](Self::read_as).
    pub fn tensor(&self, rt: &Runtime, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let values = self.read_as(name, shape, dtype)?;
        upload(rt, shape, &values, dtype)
    }
}

/// The largest magnitude that rounds to a finite f16 (65504 is f16's largest value; from 65520
/// on, rounding gives infinity).
const F16_LIMIT: f32 = 65520.0;

/// The first value of `values` (laid out as `shape`) that is not finite or that `dtype` cannot
/// hold, described with its index; `None` when all are fine. One pass over the values.
pub(crate) fn bad_value(values: &[f32], shape: &[usize], dtype: DType) -> Option<String> {
    let limit = if dtype == DType::F16 { F16_LIMIT } else { f32::INFINITY };
    let (i, &v) = values.iter().enumerate().find(|&(_, v)| v.is_nan() || v.abs() >= limit)?;
    let at = index(i, shape);
    Some(if v.is_finite() {
        format!("element {at:?} is {v}, outside f16's range (±65504); load the model in f32")
    } else {
        format!("element {at:?} is {v}; weights must be finite numbers")
    })
}

/// The multi-dimensional index of flat position `i` in a row-major tensor of `shape`.
fn index(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut at = vec![0; shape.len()];
    for (slot, &dim) in at.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *slot = i % dim;
            i /= dim;
        }
    }
    at
}

/// The little-endian words of `bytes` (whose length the header check made a multiple of `N`).
fn words<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).filter_map(|c| c.try_into().ok())
}

/// `values` (f32 on the host) as a new tensor of `dtype` (F32 or F16).
pub(crate) fn upload(rt: &Runtime, shape: &[usize], values: &[f32], dtype: DType) -> Result<Tensor> {
    match dtype {
        DType::F32 => Ok(Tensor::from_slice(rt, shape, values)?),
        DType::F16 => {
            let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            Ok(Tensor::from_slice(rt, shape, &halves)?)
        }
        other => Err(Error::InvalidInput(format!("weights can be f32 or f16, not {other:?}"))),
    }
}
