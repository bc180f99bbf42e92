//! `metallic.Embedder`: sentence embeddings with sentence-transformers' call shape, NumPy out.

use std::path::PathBuf;

use metallic::DType;
use metallic_models::{EmbedderOptions, Pooling, l2_normalize};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};

use crate::args;
use crate::device::{Release, new_runtime, settle};
use crate::errors::Kind;
use crate::gpu::detached;

/// A sentence-embedding model (a sentence-transformers directory such as all-MiniLM-L6-v2, or
/// a Hugging Face BERT directory) loaded onto the GPU.
///
/// ``Embedder(path, dtype="f32")``: ``dtype`` is the storage precision of weights and
/// activations, ``"f32"`` or ``"f16"`` (arithmetic is f32 either way).
///
/// ``encode`` takes the arguments of sentence-transformers' ``SentenceTransformer.encode`` and
/// gives the same vectors. The GIL is released while the model works, and one ``Embedder`` may
/// be used from several threads at once.
///
/// >>> model = metallic.Embedder("all-MiniLM-L6-v2")
/// >>> vectors = model.encode(["The cat sat on the mat.", "A feline rested on a rug."])
/// >>> vectors.shape
/// (2, 384)
/// >>> model.similarity(vectors[0], vectors[1])
#[pyclass(module = "metallic", frozen)]
pub struct Embedder {
    inner: metallic_models::Embedder,
    path: PathBuf,
    dtype: &'static str,
    _release: Release,
}

/// `rows` vectors of `dim` floats as a float32 NumPy array `[rows, dim]` (`[dim]` when
/// `single`).
fn numpy_matrix<'py>(
    py: Python<'py>,
    flat: &[f32],
    rows: usize,
    dim: usize,
    single: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let bytes: Vec<u8> = flat.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let numpy = py.import("numpy")?;
    // A bytearray makes a writable array, as sentence-transformers' arrays are.
    let array = numpy.call_method1("frombuffer", (PyByteArray::new(py, &bytes), numpy.getattr("float32")?))?;
    if single { array.call_method1("reshape", (dim,)) } else { array.call_method1("reshape", (rows, dim)) }
}

/// `obj` (an array or nested list of numbers, one vector or a matrix of row vectors) as rows of
/// f32: (values, rows, width).
fn rows_of(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<f32>, usize, usize)> {
    let numpy = py.import("numpy")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", numpy.getattr("float32")?)?;
    let array = numpy.getattr("ascontiguousarray")?.call((obj,), Some(&kwargs)).map_err(|e| {
        Kind::ArgumentType.err(format!("{what} must be an array of numbers (one embedding or a matrix of them): {e}"))
    })?;
    let shape: Vec<usize> = array.getattr("shape")?.extract()?;
    let (rows, width) = match shape.as_slice() {
        [width] => (1, *width),
        [rows, width] => (*rows, *width),
        _ => {
            return Err(Kind::InvalidArgument
                .err(format!("{what} must be one embedding or a matrix of them, not an array of shape {shape:?}")));
        }
    };
    let bytes = array.call_method0("tobytes")?;
    let bytes = bytes.cast::<PyBytes>()?.as_bytes();
    let values = bytes.chunks_exact(4).filter_map(|b| b.try_into().ok().map(f32::from_ne_bytes)).collect();
    Ok((values, rows, width))
}

/// Cosine similarity of every row of `a` with every row of `b`, each row divided by
/// `max(‖row‖, 1e-12)` first (sentence-transformers' `cos_sim`).
fn cosine_matrix(a: &[f32], b: &[f32], width: usize) -> Vec<f32> {
    let unit = |m: &[f32]| -> Vec<Vec<f64>> {
        m.chunks_exact(width.max(1))
            .map(|row| {
                let norm = row.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt().max(1e-12);
                row.iter().map(|&x| f64::from(x) / norm).collect()
            })
            .collect()
    };
    let (ua, ub) = (unit(a), unit(b));
    ua.iter()
        .flat_map(|ra| ub.iter().map(move |rb| ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f64>() as f32))
        .collect()
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (path, dtype = None), text_signature = "(path, dtype=\"f32\")")]
    fn new(py: Python<'_>, path: &Bound<'_, PyAny>, dtype: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let path = args::existing(args::path(path)?)?;
        let dtype = match dtype {
            Some(dtype) if !dtype.is_none() => args::text(dtype, "dtype")?,
            _ => "f32".to_string(),
        };
        let (dtype, name) = match dtype.as_str() {
            "f32" | "float32" => (DType::F32, "f32"),
            "f16" | "float16" => (DType::F16, "f16"),
            other => return Err(Kind::InvalidArgument.err(format!("dtype must be \"f32\" or \"f16\", got {other:?}"))),
        };
        let inner = detached(py, || {
            let options = EmbedderOptions { dtype, runtime: Some(new_runtime()?), ..EmbedderOptions::default() };
            let embedder = metallic_models::Embedder::load_with(&path, options)?;
            settle(embedder.runtime().context())?;
            Ok(embedder)
        })?;
        let release = Release(inner.runtime().context().clone());
        Ok(Embedder { inner, path, dtype: name, _release: release })
    }

    /// Embeddings of ``sentences``: a float32 NumPy array ``[len(sentences), dimension]``, or
    /// ``[dimension]`` for a single ``str`` (as sentence-transformers does; an empty list gives
    /// ``[0, dimension]``).
    ///
    /// ``batch_size``: texts per forward pass (texts are sorted by length first, so padding
    /// stays small). ``normalize_embeddings``: ``True`` makes every vector unit length; ``None``
    /// or ``False`` give what the model's pipeline gives (all-MiniLM-L6-v2's ends in a
    /// Normalize module, so its vectors are unit length anyway — as in sentence-transformers).
    /// ``show_progress_bar`` is accepted for compatibility and draws nothing.
    /// ``convert_to_numpy=False`` returns lists of floats instead.
    #[pyo3(signature = (sentences, batch_size = 32, normalize_embeddings = None, show_progress_bar = false, convert_to_numpy = true))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        sentences: &Bound<'py, PyAny>,
        batch_size: i64,
        normalize_embeddings: Option<bool>,
        show_progress_bar: bool,
        convert_to_numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = show_progress_bar;
        let (texts, single) = args::one_or_many_texts(sentences, "sentences")?;
        let batch_size = args::count(batch_size, "batch_size")?;
        let normalize = normalize_embeddings == Some(true) && !self.inner.normalizes();
        let dim = self.inner.dim();
        let vectors = detached(py, || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let (mut vectors, _) = self.inner.embed_batched(&refs, batch_size)?;
            if normalize {
                vectors.iter_mut().for_each(|v| l2_normalize(v));
            }
            Ok(vectors)
        })?;
        if !convert_to_numpy {
            return match (single, vectors.first()) {
                (true, Some(v)) => Ok(PyList::new(py, v)?.into_any()),
                _ => Ok(PyList::new(py, vectors)?.into_any()),
            };
        }
        let flat: Vec<f32> = vectors.concat();
        numpy_matrix(py, &flat, vectors.len(), dim, single)
    }

    /// Cosine similarity between embeddings, as sentence-transformers' ``similarity``: a
    /// float32 array ``[len(a), len(b)]`` (a single vector counts as one row).
    fn similarity<'py>(
        &self,
        py: Python<'py>,
        a: &Bound<'py, PyAny>,
        b: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (a, rows_a, width_a) = rows_of(py, a, "a")?;
        let (b, rows_b, width_b) = rows_of(py, b, "b")?;
        if width_a != width_b {
            return Err(Kind::InvalidArgument.err(format!("embeddings of different widths: {width_a} and {width_b}")));
        }
        let scores = py.detach(|| cosine_matrix(&a, &b, width_a));
        numpy_matrix(py, &scores, rows_a, rows_b, false)
    }

    /// Token ids the model sees for ``text`` (``[CLS]`` and ``[SEP]`` included, truncated to
    /// ``max_seq_length``); a list of texts gives a list of lists.
    fn tokenize<'py>(&self, py: Python<'py>, text: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (texts, single) = args::one_or_many_texts(text, "text")?;
        let ids = detached(py, || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            self.inner.tokenize_batch(&refs)
        })?;
        match (single, ids.first()) {
            (true, Some(one)) => Ok(PyList::new(py, one)?.into_any()),
            _ => Ok(PyList::new(py, ids)?.into_any()),
        }
    }

    /// Longest input in tokens (special tokens included); longer texts are truncated.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.inner.max_seq_length()
    }

    /// Width of an embedding.
    #[getter]
    fn dimension(&self) -> usize {
        self.inner.dim()
    }

    /// Width of an embedding (sentence-transformers' name).
    fn get_sentence_embedding_dimension(&self) -> usize {
        self.inner.dim()
    }

    /// Whether the model's pipeline makes unit-length vectors (a Normalize module).
    #[getter]
    fn normalizes(&self) -> bool {
        self.inner.normalizes()
    }

    /// How token states become one vector: ``"mean"``, ``"mean_sqrt_len"`` or ``"cls"``.
    #[getter]
    fn pooling(&self) -> &'static str {
        match self.inner.pooling() {
            Pooling::Mean => "mean",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
            Pooling::Cls => "cls",
        }
    }

    /// Storage precision: ``"f32"`` or ``"f16"``.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.dtype
    }

    /// The model directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "metallic.Embedder({:?}, dtype={:?}, dimension={}, max_seq_length={})",
            self.path.display().to_string(),
            self.dtype,
            self.inner.dim(),
            self.inner.max_seq_length()
        )
    }
}
