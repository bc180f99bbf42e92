//! `metallic.Llm`: a GGUF language model — tokenizer, generation (whole or streamed), chat.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use metallic_models::sampling::SamplingOptions;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::args;
use crate::device::{Release, new_runtime, settle};
use crate::errors::Kind;
use crate::generation::{GenerationResult, Request, run};
use crate::gpu::detached;
use crate::stream::TextStream;

/// A language model from one GGUF file (llama.cpp's format), loaded onto the GPU.
///
/// ``Llm(path, context_size=None)`` loads ``path``; ``context_size`` caps the positions (prompt
/// and generated tokens) one generation may use (default: the model's trained context, or
/// less where the device cannot hold its KV cache).
///
/// Generation methods take the same sampling arguments as ``metallic generate`` with its
/// defaults: ``temperature=0.8`` (0 is greedy), ``top_k=40`` (0: all), ``top_p=0.95``,
/// ``min_p=0.05``, ``repeat_penalty=1.0`` over the last ``repeat_last_n=64`` tokens,
/// ``presence_penalty=0.0``, ``frequency_penalty=0.0``, ``seed=None`` (a fixed default seed:
/// the same call gives the same text), and ``stop``: strings that end the generation where
/// they appear in the text (they are not part of the result). A prompt is text (tokenized with
/// BOS and special tokens parsed, as ``metallic generate`` does) or a list of token ids.
///
/// The GIL is released while the model works, and one ``Llm`` may be used from several
/// threads at once; each call has its own KV cache.
///
/// >>> llm = metallic.Llm("smollm2-135m-instruct-q4_1.gguf")
/// >>> llm.generate("The capital of France is", max_tokens=8, temperature=0).text
/// >>> for piece in llm.stream_chat([{"role": "user", "content": "Hi!"}]):
/// ...     print(piece, end="", flush=True)
#[pyclass(module = "metallic", frozen)]
pub struct Llm {
    inner: Arc<metallic_models::Llm>,
    path: PathBuf,
    _release: Release,
}

/// Sampling arguments as Python passes them.
struct Sampling {
    temperature: f64,
    top_k: i64,
    top_p: f64,
    min_p: f64,
    repeat_penalty: f64,
    repeat_last_n: i64,
    presence_penalty: f64,
    frequency_penalty: f64,
    seed: Option<i128>,
}

impl Sampling {
    /// The options, checked (`InvalidArgumentError` naming the bad value).
    fn options(&self) -> PyResult<SamplingOptions> {
        let seed = match self.seed {
            None => SamplingOptions::default().seed,
            Some(seed) => u64::try_from(seed)
                .map_err(|_| Kind::InvalidArgument.err(format!("seed must be in [0, 2**64), got {seed}")))?,
        };
        let options = SamplingOptions {
            temperature: self.temperature as f32,
            top_k: args::count(self.top_k, "top_k")?,
            top_p: self.top_p as f32,
            min_p: self.min_p as f32,
            repeat_penalty: self.repeat_penalty as f32,
            repeat_last_n: args::count(self.repeat_last_n, "repeat_last_n")?,
            presence_penalty: self.presence_penalty as f32,
            frequency_penalty: self.frequency_penalty as f32,
            seed,
        };
        options.validate().map_err(crate::errors::model_error)?;
        Ok(options)
    }
}

/// A prompt: text, or token ids.
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

impl Llm {
    fn prompt(&self, obj: &Bound<'_, PyAny>) -> PyResult<Prompt> {
        if obj.is_instance_of::<PyString>() {
            Ok(Prompt::Text(args::text(obj, "prompt")?))
        } else {
            Ok(Prompt::Ids(args::token_ids(obj, "prompt", self.inner.vocab().len())?))
        }
    }

    /// The request for `prompt`, with the text tokenized (call with the GIL released).
    fn request(&self, prompt: Prompt, max_tokens: usize, options: SamplingOptions, stops: Vec<String>) -> Request {
        let prompt = match prompt {
            Prompt::Text(text) => self.inner.tokenize(&text, true),
            Prompt::Ids(ids) => ids,
        };
        Request { prompt, max_tokens, options, stops }
    }

    /// The chat prompt of `messages` (call with the GIL released).
    fn chat_text(&self, messages: &[metallic_models::chat::ChatMessage]) -> metallic_models::Result<String> {
        Ok(self.inner.chat_prompt(messages)?.0)
    }

    fn complete(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: i64,
        sampling: Sampling,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<GenerationResult> {
        let max_tokens = args::count(max_tokens, "max_tokens")?;
        let options = sampling.options()?;
        let stops = args::stop_strings(stop)?;
        detached(py, || {
            let request = self.request(prompt, max_tokens, options, stops);
            run(&self.inner, &request, &AtomicBool::new(false), |_| true)
        })
    }

    fn start_stream(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: i64,
        sampling: Sampling,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<TextStream> {
        let max_tokens = args::count(max_tokens, "max_tokens")?;
        let options = sampling.options()?;
        let stops = args::stop_strings(stop)?;
        let request = detached(py, || Ok(self.request(prompt, max_tokens, options, stops)))?;
        TextStream::start(Arc::clone(&self.inner), request, Release(self._release.0.clone()))
    }

    fn chat_prompt_of(&self, py: Python<'_>, messages: &Bound<'_, PyAny>) -> PyResult<Prompt> {
        let messages = args::messages(messages)?;
        Ok(Prompt::Text(detached(py, || self.chat_text(&messages))?))
    }
}

#[pymethods]
impl Llm {
    #[new]
    #[pyo3(signature = (path, context_size = None, cache_type = None))]
    fn new(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        context_size: Option<i64>,
        cache_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let path = args::existing(args::path(path)?)?;
        let context = context_size.map(|n| args::count(n, "context_size")).transpose()?;
        let cache_dtype = match cache_type {
            Some(t) if !t.is_none() => match args::text(t, "cache_type")?.as_str() {
                "f16" => Some(metallic::DType::F16),
                "f32" => Some(metallic::DType::F32),
                other => {
                    return Err(
                        Kind::InvalidArgument.err(format!("cache_type must be \"f16\" or \"f32\", got {other:?}"))
                    );
                }
            },
            _ => None,
        };
        let (inner, rt) = detached(py, || {
            let rt = new_runtime()?;
            let mut llm = metallic_models::Llm::load_with(&path, &rt)?;
            if let Some(dtype) = cache_dtype {
                llm.set_cache_dtype(dtype)?;
            }
            if let Some(n) = context {
                llm.set_context_size(n)?;
            }
            settle(rt.context())?;
            Ok((llm, rt))
        })?;
        Ok(Llm { inner: Arc::new(inner), path, _release: Release(rt.context().clone()) })
    }

    /// Token ids of ``text``: BOS first when ``add_bos`` and the model's tokenizer adds one;
    /// special-token strings such as ``<|im_start|>`` become their tokens when
    /// ``parse_special`` (else they are plain text). As llama.cpp's ``llama_tokenize``.
    #[pyo3(signature = (text, add_bos = true, parse_special = true))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        add_bos: bool,
        parse_special: bool,
    ) -> PyResult<Vec<u32>> {
        let text = args::text(text, "text")?;
        detached(py, || Ok(self.inner.tokenize_with(&text, add_bos, parse_special)))
    }

    /// The text of token ids. Control tokens such as end-of-turn print nothing unless
    /// ``special`` (then their text, as llama.cpp's detokenizer with ``special``); bytes that
    /// do not form UTF-8 become U+FFFD.
    #[pyo3(signature = (ids, special = false))]
    fn detokenize(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, special: bool) -> PyResult<String> {
        let ids = args::token_ids(ids, "ids", self.inner.vocab().len())?;
        detached(py, || {
            let vocab = self.inner.vocab();
            if !special {
                return Ok(vocab.decode(&ids));
            }
            let bytes: Vec<u8> = ids.iter().flat_map(|&id| vocab.piece(id, true)).collect();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
    }

    /// Generates up to ``max_tokens`` tokens after ``prompt`` (text or token ids) and returns a
    /// ``GenerationResult``: ``text``, ``tokens``, ``finish_reason``, timings. See the class
    /// docs for the sampling arguments.
    #[pyo3(signature = (prompt, max_tokens = 128, *, temperature = 0.8, top_k = 40, top_p = 0.95, min_p = 0.05, repeat_penalty = 1.0, repeat_last_n = 64, presence_penalty = 0.0, frequency_penalty = 0.0, seed = None, stop = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        max_tokens: i64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        repeat_last_n: i64,
        presence_penalty: f64,
        frequency_penalty: f64,
        seed: Option<i128>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<GenerationResult> {
        let sampling = Sampling {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            seed,
        };
        let prompt = self.prompt(prompt)?;
        self.complete(py, prompt, max_tokens, sampling, stop)
    }

    /// ``generate``, as a ``TextStream``: an iterator of text pieces as the model produces
    /// them. Stopping early (``break``, ``close()``, leaving a ``with`` block) cancels the
    /// generation.
    #[pyo3(signature = (prompt, max_tokens = 128, *, temperature = 0.8, top_k = 40, top_p = 0.95, min_p = 0.05, repeat_penalty = 1.0, repeat_last_n = 64, presence_penalty = 0.0, frequency_penalty = 0.0, seed = None, stop = None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        max_tokens: i64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        repeat_last_n: i64,
        presence_penalty: f64,
        frequency_penalty: f64,
        seed: Option<i128>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<TextStream> {
        let sampling = Sampling {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            seed,
        };
        let prompt = self.prompt(prompt)?;
        self.start_stream(py, prompt, max_tokens, sampling, stop)
    }

    /// The model's reply to a conversation: ``messages`` is a list of ``{"role": ..., "content":
    /// ...}`` dicts (roles ``system``, ``user``, ``assistant``), rendered with the model's chat
    /// template (``apply_chat_template``). A conversation that ends with an assistant message
    /// is continued. Returns a ``GenerationResult``; sampling arguments as ``generate``.
    #[pyo3(signature = (messages, max_tokens = 128, *, temperature = 0.8, top_k = 40, top_p = 0.95, min_p = 0.05, repeat_penalty = 1.0, repeat_last_n = 64, presence_penalty = 0.0, frequency_penalty = 0.0, seed = None, stop = None))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        max_tokens: i64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        repeat_last_n: i64,
        presence_penalty: f64,
        frequency_penalty: f64,
        seed: Option<i128>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<GenerationResult> {
        let sampling = Sampling {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            seed,
        };
        let prompt = self.chat_prompt_of(py, messages)?;
        self.complete(py, prompt, max_tokens, sampling, stop)
    }

    /// ``chat``, as a ``TextStream`` of the reply's pieces.
    #[pyo3(signature = (messages, max_tokens = 128, *, temperature = 0.8, top_k = 40, top_p = 0.95, min_p = 0.05, repeat_penalty = 1.0, repeat_last_n = 64, presence_penalty = 0.0, frequency_penalty = 0.0, seed = None, stop = None))]
    #[allow(clippy::too_many_arguments)]
    fn stream_chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        max_tokens: i64,
        temperature: f64,
        top_k: i64,
        top_p: f64,
        min_p: f64,
        repeat_penalty: f64,
        repeat_last_n: i64,
        presence_penalty: f64,
        frequency_penalty: f64,
        seed: Option<i128>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<TextStream> {
        let sampling = Sampling {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            seed,
        };
        let prompt = self.chat_prompt_of(py, messages)?;
        self.start_stream(py, prompt, max_tokens, sampling, stop)
    }

    /// The prompt ``chat`` sends for ``messages``: the conversation rendered with the model's
    /// chat template (or its architecture's turn format when the file has none), ending with
    /// the opening of the model's turn. Raises ``InvalidArgumentError`` when the model has
    /// neither.
    fn apply_chat_template(&self, py: Python<'_>, messages: &Bound<'_, PyAny>) -> PyResult<String> {
        let messages = args::messages(messages)?;
        detached(py, || self.chat_text(&messages))
    }

    /// Most positions (prompt and generated tokens) one generation may use.
    #[getter]
    fn context_size(&self) -> usize {
        self.inner.context_size()
    }

    /// Number of tokens in the vocabulary.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab().len()
    }

    /// The BOS token id, if the vocabulary has one.
    #[getter]
    fn bos_token_id(&self) -> Option<u32> {
        self.inner.vocab().bos()
    }

    /// The EOS token id, if the vocabulary has one.
    #[getter]
    fn eos_token_id(&self) -> Option<u32> {
        self.inner.vocab().eos()
    }

    /// The token ids that end a generation (EOS, end-of-turn, ...).
    #[getter]
    fn end_token_ids(&self) -> Vec<u32> {
        self.inner.vocab().end_tokens().to_vec()
    }

    /// The file the model was loaded from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn __repr__(&self) -> String {
        format!("metallic.Llm({:?}, context_size={})", self.path.display().to_string(), self.inner.context_size())
    }
}
