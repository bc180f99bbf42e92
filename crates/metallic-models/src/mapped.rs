//! The bytes behind a model file: a read-only memory map of the file, or an owned buffer (an
//! image built in memory: tests, fuzzing, a download not yet written out). The crate's one
//! `unsafe` block lives here.

use std::fs::File;
use std::path::Path;

use crate::{Error, Result};

pub(crate) enum Bytes {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Maps the file at `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Self> {
        Self::map_expecting(path, "a file")
    }

    /// Maps the file at `path` read-only; a directory or another non-regular path (a pipe, a
    /// device) is an error naming the path and `expected` (mapping a directory would say only
    /// `No such device`).
    pub(crate) fn map_expecting(path: &Path, expected: &str) -> Result<Self> {
        let wrong_kind = |kind: &str| Error::format(path, format!("is {kind}; expected {expected}"));
        let file = File::open(path).map_err(|e| {
            // Windows refuses to open a directory; say what it is rather than "access denied".
            if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
                wrong_kind("a directory")
            } else {
                Error::io(path, e)
            }
        })?;
        // Checked on the opened file, so the answer is about what is mapped.
        let kind = file.metadata().map_err(|e| Error::io(path, e))?.file_type();
        if kind.is_dir() {
            return Err(wrong_kind("a directory"));
        }
        if !kind.is_file() {
            return Err(wrong_kind("not a regular file (a pipe, socket or device)"));
        }
        // SAFETY: the map is read-only and lives as long as the value that holds it. The one
        // hazard of mapping a file is another process truncating or rewriting it while it is
        // mapped; like every mmap-based weights loader we document that model files must not
        // change while loaded.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Bytes::Map(map))
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}
