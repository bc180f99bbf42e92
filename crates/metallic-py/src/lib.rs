//! Python bindings of metallic: `import metallic` (distribution `metallic-engine`; the name
//! `metallic` on PyPI belongs to an unrelated project).
//!
//! - `metallic.Embedder`: sentence embeddings with sentence-transformers' call shape, NumPy out.
//! - `metallic.Llm`: a GGUF language model — tokenizer, generation (whole or streamed), chat.
//! - `metallic.info()` / `metallic.adapters()`: the GPU adapter and its capabilities.
//! - `metallic.Error` and its subclasses (see [`errors`]).
//!
//! Every call into the engine releases the GIL and catches panics; `docs/PYTHON.md` describes
//! the API, and `metallic.pyi` holds its type stubs.
#![deny(unsafe_code)]

mod args;
mod device;
mod embedder;
mod errors;
mod generation;
mod gpu;
mod llm;
mod stream;

use pyo3::prelude::*;

/// GPU inference with metallic (wgpu: Metal, Vulkan, DX12): sentence embeddings
/// (``Embedder``) and GGUF language models (``Llm``), with the GIL released while the GPU
/// works.
#[pymodule]
#[pyo3(name = "metallic")]
fn metallic_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<embedder::Embedder>()?;
    m.add_class::<llm::Llm>()?;
    m.add_class::<generation::GenerationResult>()?;
    m.add_class::<stream::TextStream>()?;
    m.add_function(wrap_pyfunction!(device::info, m)?)?;
    m.add_function(wrap_pyfunction!(device::adapters, m)?)?;
    errors::register(m)
}
