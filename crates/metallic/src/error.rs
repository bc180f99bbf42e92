//! The engine's error type.
//!
//! Every fallible call in `metallic` returns [`Result`]. Messages name the operation, the
//! shapes and dtypes involved, and for GPU-side failures the kernel and the driver's text.

use crate::tensor::{DType, Shape};

/// Everything that can go wrong in `metallic`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No GPU adapter matched the request (or none exists at all).
    #[error("no GPU adapter found{}: {hint}", requested.as_deref().map(|r| format!(" matching {r:?}")).unwrap_or_default())]
    NoAdapter {
        /// The adapter name or index that was asked for, if any.
        requested: Option<String>,
        /// What the user can do about it.
        hint: String,
    },
    /// The adapter refused to create a device.
    #[error("device request failed on {adapter}: {message}")]
    DeviceRequest {
        /// Name of the adapter.
        adapter: String,
        /// The driver's message.
        message: String,
    },
    /// A WGSL kernel failed to parse, validate or build into a pipeline.
    #[error("shader compilation failed for kernel `{kernel}`: {message}")]
    ShaderCompilation {
        /// Name of the kernel.
        kernel: String,
        /// The compiler's message.
        message: String,
    },
    /// A buffer larger than the device allows was asked for.
    #[error("buffer allocation of {requested} bytes exceeds the device limit of {limit} bytes ({what})")]
    BufferAllocation {
        /// Bytes requested.
        requested: u64,
        /// The limit that was exceeded.
        limit: u64,
        /// Which limit.
        what: &'static str,
    },
    /// The device ran out of memory.
    #[error("GPU out of memory while {context}")]
    OutOfMemory {
        /// What was being done.
        context: String,
    },
    /// A shape is not valid for the operation.
    #[error("invalid shape for {op}: {message}")]
    InvalidShape {
        /// The operation.
        op: &'static str,
        /// What is wrong, with the shapes.
        message: String,
    },
    /// Two shapes that must agree do not.
    #[error("shape mismatch in {op}: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// The first shape's dimensions.
        lhs: Vec<usize>,
        /// The second shape's dimensions.
        rhs: Vec<usize>,
    },
    /// A dtype that is not the expected one.
    #[error("dtype mismatch in {op}: expected {expected}, got {got}")]
    DTypeMismatch {
        /// The operation.
        op: &'static str,
        /// The dtype required.
        expected: DType,
        /// The dtype given.
        got: DType,
    },
    /// An argument is out of range or otherwise invalid.
    #[error("invalid argument to {op}: {message}")]
    InvalidArgument {
        /// The operation or function.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The adapter lacks a feature the operation needs.
    #[error("{op} needs {feature}, which this adapter ({adapter}) does not offer")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The missing feature.
        feature: &'static str,
        /// Name of the adapter.
        adapter: String,
    },
    /// A resource was looked up in the cache without being created first.
    #[error("resource not cached: {key}")]
    ResourceNotCached {
        /// The key that missed, as text.
        key: String,
    },
    /// The memory pool cannot satisfy an allocation.
    #[error(
        "memory pool exhausted: requested {requested} bytes, {used} of {reserved} bytes in use, limit {limit} bytes"
    )]
    PoolExhausted {
        /// Bytes requested (after alignment).
        requested: u64,
        /// Bytes currently handed out.
        used: u64,
        /// Bytes the pool holds in GPU buffers.
        reserved: u64,
        /// The pool's byte limit.
        limit: u64,
    },
    /// The GPU device was lost (driver reset, removal, or destroyed).
    #[error("GPU device lost: {reason}")]
    DeviceLost {
        /// The driver's reason.
        reason: String,
    },
    /// Mapping a buffer for host access failed.
    #[error("buffer map failed: {message}")]
    BufferMap {
        /// The driver's message.
        message: String,
    },
    /// The GPU reported a validation or internal error.
    #[error("GPU validation error during {context}: {message}")]
    Validation {
        /// What was being done.
        context: String,
        /// The driver's message.
        message: String,
    },
    /// A file could not be read or written.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument { op, message: message.into() }
    }

    pub(crate) fn mismatch(op: &'static str, lhs: Shape, rhs: Shape) -> Self {
        Error::ShapeMismatch { op, lhs: lhs.dims().to_vec(), rhs: rhs.dims().to_vec() }
    }

    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidShape { op, message: message.into() }
    }
}
