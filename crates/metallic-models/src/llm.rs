//! A language model from one GGUF file: tokenizer, decoder and sampler together — load once,
//! generate many times, tokens streamed through a callback.

use std::path::Path;
use std::time::{Duration, Instant};

use metallic::kernels::topk::TopK;
use metallic::{DType, Runtime, Tensor};

use crate::chat::{ChatMessage, ChatTemplate, RenderOptions};
use crate::decoder::{Decoder, DecoderConfig, KvCache, PREFILL_CHUNK};
use crate::gguf::GgufFile;
use crate::sampling::{Sampler, SamplingOptions, check_logits};
use crate::vocab::{StreamDecoder, Vocab};
use crate::{Error, Result};

/// A loaded GGUF language model.
#[derive(Debug)]
pub struct Llm {
    vocab: Vocab,
    decoder: Decoder,
    /// Tokens that end a generation (EOS, end-of-turn).
    stops: Vec<u32>,
    /// The chat template, and whether it is the architecture's fallback.
    chat: Option<(ChatTemplate, bool)>,
    /// Most positions (prompt and generated tokens) one generation may use.
    context: usize,
}

/// What one [`Llm::generate`] call produced.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The prompt's token ids.
    pub prompt_tokens: Vec<u32>,
    /// The generated token ids (without the stop token).
    pub tokens: Vec<u32>,
    /// The generated text.
    pub text: String,
    /// Time to run the prompt through the model.
    pub prompt_time: Duration,
    /// Time for the generated tokens.
    pub generation_time: Duration,
    /// Of `generation_time`: recording decode steps on the CPU (the GPU runs meanwhile).
    pub record_time: Duration,
    /// Of `generation_time`: waiting for the GPU and reading tokens (or sampling candidates)
    /// back, and sampling.
    pub sample_time: Duration,
}

impl Llm {
    /// Loads `path` onto the default adapter.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &Runtime::new()?)
    }

    /// Loads `path` onto `rt`.
    pub fn load_with(path: impl AsRef<Path>, rt: &Runtime) -> Result<Self> {
        Self::load_with_progress(path, rt, |_, _| {})
    }

    /// [`load_with`](Self::load_with), calling `progress(done, total)` as layers are uploaded.
    pub fn load_with_progress(
        path: impl AsRef<Path>,
        rt: &Runtime,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let rows = DecoderConfig::from_gguf(&file)?.vocab;
        // The tokenizer (262,144 tokens for Gemma 3: tens of milliseconds) builds on another
        // core while the weights upload.
        let (vocab, decoder) = std::thread::scope(|scope| {
            let vocab = scope.spawn(|| Vocab::from_gguf(&file));
            let decoder = Decoder::load_with_progress(&file, rt, progress);
            let vocab =
                vocab.join().unwrap_or_else(|_| Err(Error::Tokenizer("building the vocabulary panicked".into())));
            // A vocabulary error first: it says more about the file than a weight's would.
            Ok::<_, Error>((vocab?, decoder?))
        })?;
        // Ids the tokenizer makes must have embeddings: fail here, not at the first such token.
        if vocab.len() > rows {
            return Err(Error::format(
                file.path(),
                format!("the tokenizer has {} tokens but token_embd.weight only {rows} rows", vocab.len()),
            ));
        }
        let stops = vocab.end_tokens().to_vec();
        let chat = ChatTemplate::from_gguf(&file)?;
        let context = decoder.config().n_ctx_train.min(decoder.max_context());
        Ok(Llm { vocab, decoder, stops, chat, context })
    }

    /// Most positions — prompt and generated tokens together — one generation may use: the
    /// model's trained context, or less where the device cannot hold its KV cache (see
    /// [`Decoder::max_context`]), unless set with [`set_context_size`](Self::set_context_size).
    pub fn context_size(&self) -> usize {
        self.context
    }

    /// Sets [`context_size`](Self::context_size). It may exceed the model's trained context
    /// (quality past it is the model's affair), not what the device can hold.
    pub fn set_context_size(&mut self, positions: usize) -> Result<()> {
        let most = self.decoder.max_context();
        if positions == 0 || positions > most {
            return Err(Error::InvalidInput(format!(
                "a context of {positions} positions; this model's KV cache holds 1 to {most} on this device"
            )));
        }
        self.context = positions;
        Ok(())
    }

    /// Sets the element type of the KV cache ([`Decoder::set_cache_dtype`]: f16, the default
    /// where the device has f16 shaders, or f32). A context size left to its default follows
    /// what the device holds at the new size; one that no longer fits is an error.
    pub fn set_cache_dtype(&mut self, dtype: DType) -> Result<()> {
        let defaulted = self.context == self.decoder.config().n_ctx_train.min(self.decoder.max_context());
        let before = self.decoder.cache_dtype();
        self.decoder.set_cache_dtype(dtype)?;
        let most = self.decoder.max_context();
        if defaulted {
            self.context = self.decoder.config().n_ctx_train.min(most);
        } else if self.context > most {
            self.decoder.set_cache_dtype(before)?;
            return Err(Error::InvalidInput(format!(
                "a context of {} positions with a {dtype} KV cache; this device holds 1 to {most}",
                self.context
            )));
        }
        Ok(())
    }

    /// Keeps batched steps bit-identical to solo ones at every sequence count
    /// ([`Decoder::set_exact_batches`]).
    pub fn set_exact_batches(&mut self, exact: bool) {
        self.decoder.set_exact_batches(exact);
    }

    /// Solo decode steps on the integer-dot GEMV over x rounded to 8 bits, or on the f32
    /// GEMV ([`Decoder::set_q8_products`]: by default on GPUs for models 2048 or more wide).
    pub fn set_q8_products(&mut self, on: bool) -> Result<()> {
        self.decoder.set_q8_products(on)
    }

    /// Experimental: the cooperative GEMM splits K for products of few output tiles
    /// ([`Decoder::set_coop_split_k`]).
    #[doc(hidden)]
    pub fn set_coop_split_k(&mut self, on: bool) {
        self.decoder.set_coop_split_k(on);
    }

    /// The tokenizer.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The model.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The prompt for a conversation, ending with the opening of the model's turn, and whether
    /// the architecture's fallback format was used (the file has no `tokenizer.chat_template`).
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<(String, bool)> {
        let Some((template, fallback)) = &self.chat else {
            return Err(Error::InvalidInput("the model has no chat template and no known turn format".into()));
        };
        let text_of = |id: Option<u32>| id.and_then(|id| self.vocab.text(id)).unwrap_or_default().to_string();
        let (bos, eos) = (text_of(self.vocab.bos()), text_of(self.vocab.eos()));
        let specials = RenderOptions { bos: &bos, eos: &eos, strip_bos: self.vocab.adds_bos(), continue_final: true };
        Ok((template.render_with(messages, &specials, true)?, *fallback))
    }

    /// Token ids of `prompt` as llama.cpp makes them by default: BOS first (unless `bos` is
    /// false), special-token strings such as `<start_of_turn>` parsed.
    pub fn tokenize(&self, prompt: &str, bos: bool) -> Vec<u32> {
        self.tokenize_with(prompt, bos, true)
    }

    /// [`tokenize`](Self::tokenize), with special-token strings parsed only when
    /// `parse_special` (otherwise `<start_of_turn>` is plain text). Without `bos`, only the BOS
    /// token the tokenizer adds is left out: a prompt that spells the BOS token's text itself
    /// (SmolLM2's `<|im_start|>`, with a tokenizer that adds none) keeps it, as in llama.cpp.
    pub fn tokenize_with(&self, prompt: &str, bos: bool, parse_special: bool) -> Vec<u32> {
        let mut ids = self.vocab.encode(prompt, true, parse_special);
        if !bos && self.vocab.adds_bos() && ids.first().is_some_and(|&id| Some(id) == self.vocab.bos()) {
            ids.remove(0);
        }
        ids
    }

    /// Generates up to `max_tokens` tokens after `prompt_tokens`, calling `on_text` with each
    /// piece of text as soon as it is complete UTF-8; stops at an end token.
    ///
    /// Greedy decoding without a repetition penalty runs pipelined: each step's argmax stays on
    /// the GPU and feeds the next step's embedding, so the host records step `i + 1` while the
    /// GPU computes step `i`, and only reads token `i` back afterwards (one step is computed in
    /// vain when the generation stops). Other sampling reads the candidates back every step.
    pub fn generate(
        &self,
        prompt_tokens: &[u32],
        max_tokens: usize,
        options: SamplingOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        self.generate_while(prompt_tokens, max_tokens, options, |piece| {
            on_text(piece);
            true
        })
    }

    /// [`generate`](Self::generate), stopping early when `on_text` returns `false` (the reader
    /// went away: a closed pipe, a cancelled request). The piece it was given is part of the
    /// result.
    pub fn generate_while(
        &self,
        prompt_tokens: &[u32],
        max_tokens: usize,
        options: SamplingOptions,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.generate_with_progress(prompt_tokens, max_tokens, options, &mut |_, _| {}, on_text)
    }

    /// [`generate_while`](Self::generate_while), calling `on_prefill(tokens done, prompt tokens)`
    /// as a long prompt is run through the model (after each chunk of
    /// [`PREFILL_CHUNK`](crate::decoder::PREFILL_CHUNK) tokens but the last).
    ///
    /// The prompt and `max_tokens` must fit in [`context_size`](Self::context_size); the KV cache
    /// is sized for exactly what they need.
    pub fn generate_with_progress(
        &self,
        prompt_tokens: &[u32],
        max_tokens: usize,
        options: SamplingOptions,
        on_prefill: &mut dyn FnMut(usize, usize),
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        if prompt_tokens.is_empty() {
            return Err(Error::InvalidInput("the prompt has no tokens (is --no-bos set on an empty prompt?)".into()));
        }
        let mut sampler = Sampler::new(options)?;
        let capacity = self.positions_needed(prompt_tokens.len(), max_tokens)?;
        let mut cache: KvCache = self.decoder.new_cache(capacity)?;
        let start = Instant::now();
        let mut out = Output {
            stops: &self.stops,
            vocab: &self.vocab,
            tokens: Vec::new(),
            text: String::new(),
            stream: StreamDecoder::new(),
            on_text,
        };
        let mut prompt_time = Duration::ZERO;
        let mut times = (Duration::ZERO, Duration::ZERO);
        if max_tokens > 0 {
            let logits = self.decoder.prefill(prompt_tokens, &mut cache, 1, PREFILL_CHUNK, on_prefill)?;
            // The prompt's time is what the user waits for: the GPU's work, not its recording.
            logits.runtime().synchronize()?;
            prompt_time = start.elapsed();
            times = if sampler.is_greedy() {
                self.decode_greedy(&logits, &mut cache, max_tokens, &mut out)?
            } else {
                self.decode_sampled(logits, &mut cache, max_tokens, &mut sampler, prompt_tokens, &mut out)?
            };
            out.finish();
        }
        let generation_time = start.elapsed().saturating_sub(prompt_time);
        Ok(Generation {
            prompt_tokens: prompt_tokens.to_vec(),
            tokens: out.tokens,
            text: out.text,
            prompt_time,
            generation_time,
            record_time: times.0,
            sample_time: times.1,
        })
    }

    /// Positions a generation of `max_tokens` after `prompt` tokens needs, checked against the
    /// context size.
    fn positions_needed(&self, prompt: usize, max_tokens: usize) -> Result<usize> {
        match prompt.checked_add(max_tokens) {
            Some(n) if n <= self.context => Ok(n),
            _ => Err(Error::InvalidInput(format!(
                "the prompt's {prompt} tokens and up to {max_tokens} generated ones exceed the context of {} positions",
                self.context
            ))),
        }
    }

    /// Sampling with the candidates read back each step. Returns (recording, sampling) time.
    fn decode_sampled(
        &self,
        mut logits: Tensor,
        cache: &mut KvCache,
        max_tokens: usize,
        sampler: &mut Sampler,
        prompt_tokens: &[u32],
        out: &mut Output<'_, impl FnMut(&str) -> bool>,
    ) -> Result<(Duration, Duration)> {
        let (mut record_time, mut sample_time) = (Duration::ZERO, Duration::ZERO);
        let mut history = prompt_tokens.to_vec();
        for i in 0..max_tokens {
            let sampling = Instant::now();
            let next = sampler.sample(&logits, &history).map_err(|e| at_step(e, i))?;
            sample_time += sampling.elapsed();
            if !out.push(next) {
                break;
            }
            history.push(next);
            if i + 1 < max_tokens {
                let recording = Instant::now();
                logits = self.decoder.forward(&[next], cache)?;
                record_time += recording.elapsed();
            }
        }
        Ok((record_time, sample_time))
    }

    /// Greedy decoding, pipelined (see [`generate`](Self::generate)): two GPU slots for the
    /// argmax, alternating. Returns (recording, waiting) time.
    fn decode_greedy(
        &self,
        prompt_logits: &Tensor,
        cache: &mut KvCache,
        max_tokens: usize,
        out: &mut Output<'_, impl FnMut(&str) -> bool>,
    ) -> Result<(Duration, Duration)> {
        let rt = prompt_logits.runtime();
        let slot = || -> Result<Slot> {
            Ok(Slot {
                values: Tensor::empty(rt, [1, 1], DType::F32)?,
                id: Tensor::empty(rt, [1, 1], DType::U32)?,
                argmax: None,
            })
        };
        let (mut this, mut next) = (slot()?, slot()?);
        let (mut record_time, mut wait_time) = (Duration::ZERO, Duration::ZERO);
        rt.record(&TopK::new(prompt_logits, 1, &this.values, &this.id)?)?;
        // The best logit travels with its id: a non-finite one stops the generation.
        let mut pending = Some(rt.start_read(&[&this.values, &this.id])?);
        for i in 0..max_tokens {
            let mut started = None;
            if i + 1 < max_tokens {
                let recording = Instant::now();
                let logits = self.decoder.forward_token_on_gpu(&this.id, cache)?;
                // The step logits live in the cache's reused activations: one argmax op per
                // slot, built once.
                let op = match next.argmax.take() {
                    Some(op) => op,
                    None => TopK::new(&logits, 1, &next.values, &next.id)?,
                };
                rt.record(&op)?;
                next.argmax = Some(op);
                started = Some(rt.start_read(&[&next.values, &next.id])?);
                record_time += recording.elapsed();
            }
            std::mem::swap(&mut this, &mut next);
            let waiting = Instant::now();
            let bytes = match pending.take() {
                Some(read) => read.wait()?,
                None => return Err(Error::InvalidInput("no token read under way".into())),
            };
            wait_time += waiting.elapsed();
            let word = |k: usize| -> Result<[u8; 4]> {
                bytes
                    .get(k)
                    .and_then(|b| b.get(..4))
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| Error::InvalidInput("the token read-back is empty".into()))
            };
            check_logits([f32::from_le_bytes(word(0)?)].into_iter()).map_err(|e| at_step(e, i))?;
            let token = u32::from_le_bytes(word(1)?);
            if !out.push(token) {
                break;
            }
            pending = started;
        }
        Ok((record_time, wait_time))
    }
}

/// `err` with the generation step it happened at, where it is about the model's numbers.
fn at_step(err: Error, step: usize) -> Error {
    match err {
        Error::NotFinite(what) => Error::NotFinite(format!("generation step {step}: {what}")),
        other => other,
    }
}

/// One GPU slot of the pipelined greedy loop: the argmax of a step's logits.
struct Slot {
    values: Tensor,
    id: Tensor,
    argmax: Option<TopK>,
}

/// Where generated tokens go: stop check, ids, text, and the streaming callback.
struct Output<'a, F: FnMut(&str) -> bool> {
    stops: &'a [u32],
    vocab: &'a Vocab,
    tokens: Vec<u32>,
    text: String,
    stream: StreamDecoder,
    on_text: F,
}

impl<F: FnMut(&str) -> bool> Output<'_, F> {
    /// Takes a generated token; `false` if it ends the generation (a stop token, or the
    /// callback asked to stop).
    fn push(&mut self, token: u32) -> bool {
        if self.stops.contains(&token) {
            return false;
        }
        self.tokens.push(token);
        let piece = self.stream.push(self.vocab, token);
        if !piece.is_empty() {
            self.text.push_str(&piece);
            return (self.on_text)(&piece);
        }
        true
    }

    /// Flushes text held back for an incomplete UTF-8 sequence.
    fn finish(&mut self) {
        let rest = self.stream.finish();
        if !rest.is_empty() {
            self.text.push_str(&rest);
            (self.on_text)(&rest);
        }
    }
}
