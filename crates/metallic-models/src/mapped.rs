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
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
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
