//! Running engine work with the GIL released, and no panic let through to Python.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::prelude::*;

use crate::errors::{model_error, panic_error};

/// Runs `f` with the GIL released (other Python threads run meanwhile), turning its error into
/// the matching `metallic` exception and a panic into `DeviceError`.
pub fn detached<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> metallic_models::Result<T> + Send,
{
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(model_error(err)),
        Err(panic) => Err(panic_error(panic.as_ref())),
    }
}
