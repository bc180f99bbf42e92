//! The errors of model loading and inference.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file is not what it should be: malformed JSON or safetensors, a missing or invalid
    /// field, an absurd dimension.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field or value.
        message: String,
    },
    /// A weight is missing, or has the wrong shape or an unsupported dtype.
    #[error("{}: tensor `{name}`: {message}", path.display())]
    Weight {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The model's architecture or a module it lists is not one this crate implements.
    #[error("{}: unsupported {what} `{found}` (supported: {supported})", path.display())]
    Unsupported {
        /// The file naming it.
        path: PathBuf,
        /// What kind of thing (architecture, module, pooling mode, ...).
        what: &'static str,
        /// The value found.
        found: String,
        /// The values this crate implements.
        supported: &'static str,
    },
    /// The tokenizer failed to load or to encode a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A request that cannot be served (e.g. a zero batch size).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The model computed NaN or infinite values where a result must be finite (broken or
    /// overflowing weights); the message says where.
    #[error("non-finite values: {0}")]
    NotFinite(String),
    /// The engine reported an error (device, kernel, shape).
    #[error(transparent)]
    Engine(#[from] metallic::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format { path: path.into(), message: message.into() }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
