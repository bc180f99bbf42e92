//! One generation as the Python API sees it: `Llm::generate_while` with stop strings applied to
//! the text (the matcher `metallic serve` uses), a way to cancel it, and why it ended.

use std::sync::atomic::{AtomicBool, Ordering};

use metallic_models::sampling::SamplingOptions;
use metallic_models::{Generation, Llm};
use pyo3::prelude::*;

use metallic_models::stop::{Scan, StopMatcher};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub options: SamplingOptions,
    pub stops: Vec<String>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token, or a stop string.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
    /// The consumer stopped it (a stream closed or dropped early).
    Cancelled,
}

impl Finish {
    fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// Runs `request`, handing each piece of text to `emit` as soon as no stop string can begin
/// in it; stops when `cancel` is set or `emit` returns `false`. The text of the result is what
/// `emit` was given: everything before the first stop string.
pub fn run(
    llm: &Llm,
    request: &Request,
    cancel: &AtomicBool,
    mut emit: impl FnMut(String) -> bool,
) -> metallic_models::Result<GenerationResult> {
    let mut matcher = StopMatcher::new(request.stops.iter().cloned());
    let mut text = String::new();
    let (mut stopped, mut cancelled) = (false, false);
    let mut release = |piece: String, cancelled: &mut bool| {
        if !piece.is_empty() {
            text.push_str(&piece);
            if !emit(piece) {
                *cancelled = true;
            }
        }
    };
    let generation = llm.generate_while(&request.prompt, request.max_tokens, request.options, |piece| {
        // After the end (a stop string, a cancel) the generator may still flush held bytes.
        if stopped || cancelled {
            return false;
        }
        if cancel.load(Ordering::SeqCst) {
            cancelled = true;
            return false;
        }
        let released = match matcher.push(piece) {
            Scan::Continue(released) => released,
            Scan::Stopped(released) => {
                stopped = true;
                released
            }
        };
        release(released, &mut cancelled);
        !stopped && !cancelled
    })?;
    if !stopped && !cancelled {
        release(matcher.finish(), &mut cancelled);
    }
    let finish = if cancelled {
        Finish::Cancelled
    } else if stopped || generation.tokens.len() < request.max_tokens {
        Finish::Stop
    } else {
        Finish::Length
    };
    Ok(GenerationResult::new(generation, text, finish))
}

/// The result of `Llm.generate` / `Llm.chat`, or of a finished `TextStream`.
///
/// `text` is the generated text (cut before a stop string); `tokens` the generated token ids
/// (an end-of-generation token excluded; the tokens of a stop string included);
/// `prompt_tokens` the prompt's ids; `finish_reason` is `"stop"` (an end-of-generation token
/// or a stop string), `"length"` (`max_tokens` reached) or `"cancelled"` (a stream closed
/// early); `prompt_time` and `generation_time` are seconds (wall clock: the prompt's pass
/// through the model, and the generated tokens).
#[pyclass(module = "metallic", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct GenerationResult {
    /// The generated text, cut before a stop string.
    pub text: String,
    /// The generated token ids (an end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// The prompt's token ids.
    pub prompt_tokens: Vec<u32>,
    /// ``"stop"``, ``"length"`` or ``"cancelled"``.
    pub finish_reason: &'static str,
    /// Seconds the prompt's pass through the model took.
    pub prompt_time: f64,
    /// Seconds the generated tokens took.
    pub generation_time: f64,
}

impl GenerationResult {
    fn new(generation: Generation, text: String, finish: Finish) -> Self {
        GenerationResult {
            text,
            tokens: generation.tokens,
            prompt_tokens: generation.prompt_tokens,
            finish_reason: finish.as_str(),
            prompt_time: generation.prompt_time.as_secs_f64(),
            generation_time: generation.generation_time.as_secs_f64(),
        }
    }
}

/// `count / seconds`, or 0 when nothing was timed.
fn rate(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

#[pymethods]
impl GenerationResult {
    /// Generated tokens per second (`len(tokens) / generation_time`).
    #[getter]
    fn tokens_per_second(&self) -> f64 {
        rate(self.tokens.len(), self.generation_time)
    }

    /// Prompt tokens per second (`len(prompt_tokens) / prompt_time`).
    #[getter]
    fn prompt_tokens_per_second(&self) -> f64 {
        rate(self.prompt_tokens.len(), self.prompt_time)
    }

    fn __repr__(&self) -> String {
        format!(
            "GenerationResult(text={:?}, tokens=[{} ids], finish_reason={:?}, prompt_tokens=[{} ids], \
             prompt_time={:.3}, generation_time={:.3})",
            self.text,
            self.tokens.len(),
            self.finish_reason,
            self.prompt_tokens.len(),
            self.prompt_time,
            self.generation_time
        )
    }
}
