//! `Tensor`: a typed, shaped view of GPU memory.

mod dtype;
mod ops;
mod shape;

use std::fmt;
use std::sync::Arc;

pub use dtype::{DType, Element};
pub use shape::{IntoShape, MAX_DIMS, Shape, Strides};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::copy::Copy as CopyOp;
use crate::kernels::fill::Fill;
use crate::kernels::random::RandomUniform;
use crate::pool::Allocation;
use crate::runtime::Runtime;

/// An n-dimensional array on the GPU: dtype, shape (contiguous, row-major), and a byte offset
/// into a buffer region it shares with its views.
///
/// Cloning a `Tensor` clones the handle, not the data. Operators record GPU work into the
/// [`Runtime`]'s implicit command buffer; reading data back ([`to_vec`](Self::to_vec))
/// submits it and waits.
///
/// ```
/// use metallic::{DType, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let a = Tensor::from_slice(&rt, [2, 2], &[1.0f32, 2.0, 3.0, 4.0])?;
/// let b = Tensor::ones(&rt, [2], DType::F32)?;        // broadcast over the last dimension
/// let c = ((&a + &b)? * 10.0)?;
/// assert_eq!(c.to_vec::<f32>()?, [20.0, 30.0, 40.0, 50.0]);
/// assert_eq!(c.get_batch(1)?.to_vec::<f32>()?, [40.0, 50.0]);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    rt: Runtime,
    storage: Arc<Allocation>,
    /// Absolute byte offset of element 0 in `storage.buffer()`.
    offset: u64,
    shape: Shape,
    dtype: DType,
}

impl Tensor {
    /// A tensor with unspecified contents, allocated from the runtime's pool.
    pub fn empty(rt: &Runtime, shape: impl IntoShape, dtype: DType) -> Result<Self> {
        let shape = shape.into_shape()?;
        let bytes = shape
            .numel()
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(|| Error::shape("Tensor::empty", format!("{shape} of {dtype} overflows")))?;
        let storage = Arc::new(rt.pool().alloc(bytes as u64)?);
        let offset = storage.offset();
        Ok(Tensor { rt: rt.clone(), storage, offset, shape, dtype })
    }

    /// A tensor with every element `value` (converted to `dtype`).
    pub fn full(rt: &Runtime, shape: impl IntoShape, dtype: DType, value: f32) -> Result<Self> {
        let t = Self::empty(rt, shape, dtype)?;
        t.fill(value)?;
        Ok(t)
    }

    /// A tensor of zeros.
    pub fn zeros(rt: &Runtime, shape: impl IntoShape, dtype: DType) -> Result<Self> {
        Self::full(rt, shape, dtype, 0.0)
    }

    /// A tensor of ones.
    pub fn ones(rt: &Runtime, shape: impl IntoShape, dtype: DType) -> Result<Self> {
        Self::full(rt, shape, dtype, 1.0)
    }

    /// A tensor holding `data` (whose length must match `shape`); the dtype follows `T`.
    pub fn from_slice<T: Element>(rt: &Runtime, shape: impl IntoShape, data: &[T]) -> Result<Self> {
        let t = Self::empty(rt, shape, T::DTYPE)?;
        t.write(data)?;
        Ok(t)
    }

    /// Like [`from_slice`](Self::from_slice), taking the vector.
    pub fn from_vec<T: Element>(rt: &Runtime, shape: impl IntoShape, data: Vec<T>) -> Result<Self> {
        Self::from_slice(rt, shape, &data)
    }

    /// `start, start + step, ...` up to (not including) `end`, as a 1-D tensor. Values are
    /// computed in f32 on the GPU (`u32` results are exact below 2^24).
    pub fn arange(rt: &Runtime, start: f32, end: f32, step: f32, dtype: DType) -> Result<Self> {
        let count = ((end - start) / step).ceil();
        if !count.is_finite() || step == 0.0 || count < 0.0 || count > u32::MAX as f32 {
            return Err(Error::invalid("Tensor::arange", format!("no sequence from {start} to {end} by {step}")));
        }
        let t = Self::empty(rt, [count as usize], dtype)?;
        rt.record(&Fill::new(&t, start, step)?)?;
        Ok(t)
    }

    /// Uniform random values in `[low, high)`, generated on the GPU from `seed` by a
    /// counter-based hash: the same seed gives the same tensor on every device.
    pub fn random_uniform(
        rt: &Runtime,
        shape: impl IntoShape,
        dtype: DType,
        low: f32,
        high: f32,
        seed: u64,
    ) -> Result<Self> {
        let t = Self::empty(rt, shape, dtype)?;
        rt.record(&RandomUniform::new(&t, low, high, seed)?)?;
        Ok(t)
    }

    /// Wraps `shape` elements of `dtype` in `buffer` from `byte_offset`. The buffer needs
    /// `STORAGE`, `COPY_SRC` and `COPY_DST` usage and must belong to the runtime's device.
    pub fn from_existing_buffer(
        rt: &Runtime,
        buffer: wgpu::Buffer,
        byte_offset: u64,
        shape: impl IntoShape,
        dtype: DType,
    ) -> Result<Self> {
        let shape = shape.into_shape()?;
        let op = "Tensor::from_existing_buffer";
        let needed = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        if !buffer.usage().contains(needed) {
            return Err(Error::invalid(op, format!("buffer usage {:?} lacks {needed:?}", buffer.usage())));
        }
        if !byte_offset.is_multiple_of(dtype.size_in_bytes() as u64) || !buffer.size().is_multiple_of(4) {
            return Err(Error::invalid(
                op,
                format!("offset {byte_offset} not aligned to {dtype}, or buffer size not a multiple of 4"),
            ));
        }
        let bytes = shape.numel().checked_mul(dtype.size_in_bytes()).and_then(|b| u64::try_from(b).ok());
        if bytes.and_then(|b| byte_offset.checked_add(b)).is_none_or(|end| end > buffer.size()) {
            return Err(Error::invalid(
                op,
                format!("{shape} of {dtype} at byte {byte_offset} exceeds the {}-byte buffer", buffer.size()),
            ));
        }
        let size = buffer.size() - byte_offset;
        let storage = Arc::new(Allocation::external(buffer, byte_offset, size));
        Ok(Tensor { rt: rt.clone(), storage, offset: byte_offset, shape, dtype })
    }

    /// A tensor like `self` with unspecified contents.
    pub fn empty_like(&self) -> Result<Self> {
        Self::empty(&self.rt, self.shape, self.dtype)
    }

    /// Zeros shaped like `self`.
    pub fn zeros_like(&self) -> Result<Self> {
        Self::zeros(&self.rt, self.shape, self.dtype)
    }

    /// Ones shaped like `self`.
    pub fn ones_like(&self) -> Result<Self> {
        Self::ones(&self.rt, self.shape, self.dtype)
    }

    /// Sets every element to `value` (on the GPU).
    pub fn fill(&self, value: f32) -> Result<()> {
        self.rt.record(&Fill::new(self, value, 0.0)?)
    }

    /// A new tensor with a copy of this one's data.
    pub fn copy(&self) -> Result<Self> {
        let out = self.empty_like()?;
        self.rt.record(&CopyOp::new(self, &out)?)?;
        Ok(out)
    }

    /// Overwrites this tensor's data with `data` from the host, after all recorded work.
    pub fn write<T: Element>(&self, data: &[T]) -> Result<()> {
        if T::DTYPE != self.dtype {
            return Err(Error::DTypeMismatch { op: "Tensor::write", expected: self.dtype, got: T::DTYPE });
        }
        if data.len() != self.numel() {
            return Err(Error::invalid("Tensor::write", format!("{} values for shape {}", data.len(), self.shape)));
        }
        self.rt.write_bytes(self.storage.buffer(), self.offset, bytemuck::cast_slice(data))
    }

    /// Sets the tensor's bytes in `range` (whole words) to what `fill` writes into the
    /// (write-only) staging memory of the upload: data built on the host goes up without a copy
    /// of its own first. `fill` must write every byte; where it fails, the range's contents are
    /// unspecified. Several threads may each fill a range.
    pub(crate) fn write_with(
        &self,
        range: std::ops::Range<usize>,
        fill: impl FnOnce(wgpu::WriteOnly<'_, [u8]>) -> Result<()>,
    ) -> Result<()> {
        if range.start > range.end || range.end > self.size_in_bytes() {
            return Err(Error::invalid(
                "Tensor::write_with",
                format!("bytes {range:?} of a {}-byte tensor", self.size_in_bytes()),
            ));
        }
        let at = self.offset + range.start as u64;
        self.rt.write_bytes_with(self.storage.buffer(), at, range.len() as u64, fill)
    }

    /// Copies the data to the host (submits pending work and waits for it).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(Error::DTypeMismatch { op: "Tensor::to_vec", expected: self.dtype, got: T::DTYPE });
        }
        let bytes = self.rt.read_bytes(self.storage.buffer(), self.offset, self.size_in_bytes() as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Copies the data to the host as `f32`, whatever the dtype.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => self.to_vec::<f32>(),
            DType::F16 => Ok(self.to_vec::<half::f16>()?.into_iter().map(half::f16::to_f32).collect()),
            DType::U32 => Ok(self.to_vec::<u32>()?.into_iter().map(Element::to_f32).collect()),
        }
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(&self, shape: impl IntoShape) -> Result<Self> {
        let shape = shape.into_shape()?;
        if shape.numel() != self.numel() {
            return Err(Error::mismatch("reshape", self.shape, shape));
        }
        Ok(Tensor { shape, ..self.clone() })
    }

    /// The same data as one dimension.
    pub fn flatten(&self) -> Result<Self> {
        self.reshape([self.numel()])
    }

    /// Rows `start..start + len` of dimension 0, sharing this tensor's buffer.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        let rows = self.shape.dim(0, "narrow")?;
        if start.checked_add(len).is_none_or(|end| end > rows) {
            return Err(Error::invalid(
                "narrow",
                format!("rows {start}..{} of shape {}", start.saturating_add(len), self.shape),
            ));
        }
        let mut dims = self.shape.dims().to_vec();
        if let Some(first) = dims.first_mut() {
            *first = len;
        }
        let row_bytes = (self.numel() / rows.max(1) * self.dtype.size_in_bytes()) as u64;
        Ok(Tensor { shape: Shape::new(&dims)?, offset: self.offset + start as u64 * row_bytes, ..self.clone() })
    }

    /// Item `i` of dimension 0, with that dimension removed, sharing this tensor's buffer.
    pub fn get_batch(&self, i: usize) -> Result<Self> {
        let row = self.narrow(i, 1)?;
        row.reshape(Shape::new(self.shape.dims().get(1..).unwrap_or(&[]))?)
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// Row-major strides, in elements.
    pub fn strides(&self) -> Strides {
        self.shape.strides()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// Bytes of data.
    pub fn size_in_bytes(&self) -> usize {
        self.numel() * self.dtype.size_in_bytes()
    }

    /// Byte offset of the first element in [`buffer`](Self::buffer).
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }

    /// The GPU buffer holding the data.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buffer()
    }

    /// The runtime the tensor belongs to.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The context (device) the tensor lives on.
    pub fn context(&self) -> &Context {
        self.rt.context()
    }

    pub(crate) fn storage(&self) -> &Arc<Allocation> {
        &self.storage
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("byte_offset", &self.offset)
            .finish()
    }
}
