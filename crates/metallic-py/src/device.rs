//! The process's GPU device, shared by every model, and `metallic.info()` /
//! `metallic.adapters()`.
//!
//! The device (a [`Context`]) is created on first use and kept for the life of the process:
//! a Python program that loads several models runs them on one device, as `metallic serve`
//! does. Each model gets a [`Runtime`] of its own on it (its own pipeline cache, memory pool
//! and command stream), so dropping a model frees everything it allocated.

use std::sync::{Mutex, PoisonError};

use metallic::{Context, Runtime};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::gpu::detached;

static DEVICE: Mutex<Option<Context>> = Mutex::new(None);

/// The shared device, created on first use (the adapter as `metallic::Context::new` chooses
/// it, `METALLIC_*` environment variables included). Call with the GIL released.
fn shared_context() -> metallic::Result<Context> {
    let mut device = DEVICE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = device.as_ref() {
        return Ok(ctx.clone());
    }
    let ctx = Context::new()?;
    *device = Some(ctx.clone());
    Ok(ctx)
}

/// A fresh runtime on the shared device, for one model. Call with the GIL released.
pub fn new_runtime() -> metallic::Result<Runtime> {
    Runtime::with_context(&shared_context()?)
}

fn adapter_dict<'py>(py: Python<'py>, info: &metallic::wgpu::AdapterInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &info.name)?;
    d.set_item("backend", format!("{:?}", info.backend))?;
    d.set_item("device_type", format!("{:?}", info.device_type))?;
    d.set_item("driver", &info.driver)?;
    d.set_item("driver_info", &info.driver_info)?;
    d.set_item("vendor", info.vendor)?;
    d.set_item("device", info.device)?;
    Ok(d)
}

/// Every GPU adapter wgpu finds (all backends), as dicts: `name`, `backend`, `device_type`,
/// `driver`, `driver_info`, `vendor`, `device` (PCI ids).
///
/// Creates no device. `metallic.info()` says which adapter metallic uses.
#[pyfunction]
pub fn adapters(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let all = detached(py, || Ok(metallic::adapters(metallic::wgpu::Backends::all())))?;
    let dicts = all.iter().map(|a| adapter_dict(py, a)).collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, dicts)
}

/// The adapter metallic runs on and what it can do, as a dict: the adapter's identity (as in
/// `adapters()`), `subgroups`, `subgroup_min_size`, `subgroup_max_size`, `shader_f16`,
/// `timestamps`, `cooperative_matrix`, `unified_memory`, `cpu` (a software adapter such as
/// llvmpipe), `params` (how kernel parameters travel: `Immediates` or `Uniform`), `features`
/// (names of the device features enabled) and `limits` (the device limits metallic uses).
///
/// Creates the process's device if no model has yet (the `METALLIC_*` environment variables
/// choose the adapter); raises `DeviceError` when there is none.
#[pyfunction]
pub fn info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let ctx = detached(py, || Ok(shared_context()?))?;
    let caps = ctx.caps();
    let info = ctx.adapter_info();
    let d = adapter_dict(py, info)?;
    d.set_item("subgroups", caps.subgroups())?;
    d.set_item("subgroup_min_size", info.subgroup_min_size)?;
    d.set_item("subgroup_max_size", info.subgroup_max_size)?;
    d.set_item("shader_f16", caps.shader_f16())?;
    d.set_item("timestamps", caps.timestamps())?;
    d.set_item("cooperative_matrix", caps.cooperative_matrix())?;
    d.set_item("unified_memory", caps.unified_memory)?;
    d.set_item("cpu", caps.cpu())?;
    d.set_item("params", format!("{:?}", caps.params))?;
    let features: Vec<&str> = caps.features.iter_names().map(|(name, _)| name).collect();
    d.set_item("features", features)?;
    let l = &caps.limits;
    let limits = PyDict::new(py);
    limits.set_item("max_buffer_size", l.max_buffer_size)?;
    limits.set_item("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size)?;
    limits.set_item("min_storage_buffer_offset_alignment", l.min_storage_buffer_offset_alignment)?;
    limits.set_item("max_compute_workgroup_storage_size", l.max_compute_workgroup_storage_size)?;
    limits.set_item("max_compute_invocations_per_workgroup", l.max_compute_invocations_per_workgroup)?;
    limits.set_item("max_compute_workgroups_per_dimension", l.max_compute_workgroups_per_dimension)?;
    limits.set_item("max_immediate_size", l.max_immediate_size)?;
    d.set_item("limits", limits)?;
    Ok(d)
}

/// Submits the uploads a model's loading queued (wgpu keeps a staging copy of every written
/// buffer until the next submission) and waits for them, so that a loaded model holds no
/// second copy of its weights. Call with the GIL released.
pub fn settle(ctx: &Context) -> metallic::Result<()> {
    let index = ctx.queue().submit([]);
    ctx.device()
        .poll(metallic::wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
        .map_err(|e| metallic::Error::Validation { context: "loading a model".into(), message: e.to_string() })?;
    Ok(())
}

/// Held as the last field of an object that owns GPU memory: once the fields before it have
/// dropped, it submits and polls the device without waiting, so that wgpu frees what they
/// released (it frees dropped buffers, and the staging copies of their writes, only at a
/// later submission and poll, which an idle program would not make).
pub struct Release(pub Context);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.queue().submit([]);
        let _ = self.0.device().poll(metallic::wgpu::PollType::Poll);
    }
}
