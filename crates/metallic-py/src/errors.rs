//! The `metallic.Error` hierarchy and the mapping of engine errors onto it.
//!
//! Each class derives from `metallic.Error` and from the built-in exception a Python user
//! would catch for that kind of failure, so `except ValueError` and `except metallic.Error`
//! both work:
//!
//! | class | built-in base | raised for |
//! |---|---|---|
//! | `InvalidArgumentError` | `ValueError` | a bad argument (range, length, sampling values) |
//! | `ArgumentTypeError` | `TypeError` (and `InvalidArgumentError`) | an argument of the wrong type |
//! | `ModelFileError` | `OSError` | a model file that cannot be read |
//! | `ModelNotFoundError` | `FileNotFoundError` (and `ModelFileError`) | a missing model file |
//! | `ModelFormatError` | `ValueError` | a malformed or unsupported model file or tokenizer |
//! | `DeviceError` | `RuntimeError` | the GPU or the engine failed while working |

use std::io::ErrorKind;

use pyo3::exceptions::{PyException, PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

pyo3::create_exception!(
    metallic,
    Error,
    PyException,
    "Base class of every error metallic raises; the message is the engine's."
);

/// The classes below `Error`, in the order they are created (a class's bases come first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    ArgumentType,
    ModelFile,
    ModelNotFound,
    ModelFormat,
    Device,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::InvalidArgument,
        Kind::ArgumentType,
        Kind::ModelFile,
        Kind::ModelNotFound,
        Kind::ModelFormat,
        Kind::Device,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::InvalidArgument => "InvalidArgumentError",
            Kind::ArgumentType => "ArgumentTypeError",
            Kind::ModelFile => "ModelFileError",
            Kind::ModelNotFound => "ModelNotFoundError",
            Kind::ModelFormat => "ModelFormatError",
            Kind::Device => "DeviceError",
        }
    }

    fn doc(self) -> &'static str {
        match self {
            Kind::InvalidArgument => "An argument is out of range or otherwise invalid (also a ValueError).",
            Kind::ArgumentType => {
                "An argument has the wrong type, e.g. a number where text is expected (also a TypeError)."
            }
            Kind::ModelFile => "A model file could not be read (also an OSError).",
            Kind::ModelNotFound => "A model file or directory does not exist (also a FileNotFoundError).",
            Kind::ModelFormat => {
                "A model file or its tokenizer is malformed, truncated or of an unsupported kind (also a ValueError)."
            }
            Kind::Device => {
                "The GPU or the engine failed while working: no adapter, out of memory, a lost device, a kernel \
                  that did not build, non-finite model output (also a RuntimeError)."
            }
        }
    }

    /// The class's bases besides the `metallic` ones.
    fn bases<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let error = py.get_type::<Error>();
        match self {
            Kind::InvalidArgument => PyTuple::new(py, [error, py.get_type::<PyValueError>()]),
            Kind::ArgumentType => PyTuple::new(py, [Kind::InvalidArgument.class(py)?, py.get_type::<PyTypeError>()]),
            Kind::ModelFile => PyTuple::new(py, [error, py.get_type::<PyOSError>()]),
            Kind::ModelNotFound => PyTuple::new(py, [Kind::ModelFile.class(py)?, py.get_type::<PyFileNotFoundError>()]),
            Kind::ModelFormat => PyTuple::new(py, [error, py.get_type::<PyValueError>()]),
            Kind::Device => PyTuple::new(py, [error, py.get_type::<PyRuntimeError>()]),
        }
    }

    fn cell(self) -> &'static PyOnceLock<Py<PyType>> {
        static INVALID_ARGUMENT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static ARGUMENT_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static MODEL_FILE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static MODEL_NOT_FOUND: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static MODEL_FORMAT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static DEVICE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        match self {
            Kind::InvalidArgument => &INVALID_ARGUMENT,
            Kind::ArgumentType => &ARGUMENT_TYPE,
            Kind::ModelFile => &MODEL_FILE,
            Kind::ModelNotFound => &MODEL_NOT_FOUND,
            Kind::ModelFormat => &MODEL_FORMAT,
            Kind::Device => &DEVICE,
        }
    }

    /// The Python class, created on first use with `type(name, bases, namespace)`: a class
    /// with two built-in bases cannot be declared through PyO3's exception macro.
    pub fn class(self, py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
        let class = self.cell().get_or_try_init(py, || -> PyResult<Py<PyType>> {
            let namespace = PyDict::new(py);
            namespace.set_item("__module__", "metallic")?;
            namespace.set_item("__doc__", self.doc())?;
            let made = py.get_type::<PyType>().call1((self.name(), self.bases(py)?, namespace))?;
            Ok(made.cast_into::<PyType>()?.unbind())
        })?;
        Ok(class.bind(py).clone())
    }

    /// An exception of this class carrying `message`.
    pub fn err(self, message: impl Into<String>) -> PyErr {
        let message = message.into();
        Python::attach(|py| match self.class(py) {
            Ok(class) => PyErr::from_type(class, message),
            Err(failed) => failed,
        })
    }
}

/// The Python exception for an error of the model layer.
pub fn model_error(err: metallic_models::Error) -> PyErr {
    use metallic_models::Error as E;
    let kind = match &err {
        E::Io { source, .. } if source.kind() == ErrorKind::NotFound => Some(Kind::ModelNotFound),
        E::Io { .. } => Some(Kind::ModelFile),
        E::Format { .. } | E::Weight { .. } | E::Unsupported { .. } | E::Tokenizer(_) => Some(Kind::ModelFormat),
        E::InvalidInput(_) => Some(Kind::InvalidArgument),
        E::NotFinite(_) => Some(Kind::Device),
        E::Engine(engine) => engine_kind(engine),
        _ => None,
    };
    match kind {
        Some(kind) => kind.err(err.to_string()),
        None => Error::new_err(err.to_string()),
    }
}

fn engine_kind(err: &metallic::Error) -> Option<Kind> {
    use metallic::Error as E;
    Some(match err {
        E::InvalidShape { .. } | E::ShapeMismatch { .. } | E::DTypeMismatch { .. } | E::InvalidArgument { .. } => {
            Kind::InvalidArgument
        }
        E::Io(io) if io.kind() == ErrorKind::NotFound => Kind::ModelNotFound,
        E::Io(_) => Kind::ModelFile,
        E::NoAdapter { .. }
        | E::DeviceRequest { .. }
        | E::ShaderCompilation { .. }
        | E::BufferAllocation { .. }
        | E::OutOfMemory { .. }
        | E::Unsupported { .. }
        | E::ResourceNotCached { .. }
        | E::PoolExhausted { .. }
        | E::DeviceLost { .. }
        | E::BufferMap { .. }
        | E::Validation { .. } => Kind::Device,
        _ => return None,
    })
}

/// A `DeviceError` for a panic caught on its way to Python (the engine does not panic by
/// design; this keeps a bug from aborting the interpreter or raising `PanicException`).
pub fn panic_error(payload: &(dyn std::any::Any + Send)) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    Kind::Device.err(format!("internal error in metallic (a Rust panic): {what}"))
}

/// Adds `Error` and every class below it to `module`.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("Error", py.get_type::<Error>())?;
    for kind in Kind::ALL {
        module.add(kind.name(), kind.class(py)?)?;
    }
    Ok(())
}
