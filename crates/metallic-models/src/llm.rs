//! A language model from one GGUF file: tokenizer, decoder and sampler together — load once,
//! generate many times, tokens streamed through a callback.

use std::path::Path;
use std::time::{Duration, Instant};

use metallic::Runtime;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::decoder::{Decoder, KvCache};
use crate::gguf::GgufFile;
use crate::sampling::{Sampler, SamplingOptions};
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
    /// Of `generation_time`: sampling, which waits for the GPU and reads the candidates back.
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
        let vocab = Vocab::from_gguf(&file)?;
        let decoder = Decoder::load_with_progress(&file, rt, progress)?;
        let stops = vocab.end_tokens().to_vec();
        let chat = ChatTemplate::from_gguf(&file)?;
        Ok(Llm { vocab, decoder, stops, chat })
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
        Ok((template.render(messages, &bos, &eos, true)?, *fallback))
    }

    /// Token ids of `prompt` as llama.cpp makes them by default: BOS first (unless `bos` is
    /// false), special-token strings such as `<start_of_turn>` parsed.
    pub fn tokenize(&self, prompt: &str, bos: bool) -> Vec<u32> {
        let mut ids = self.vocab.encode(prompt, true, true);
        if !bos && ids.first().is_some_and(|&id| Some(id) == self.vocab.bos()) {
            ids.remove(0);
        }
        ids
    }

    /// Generates up to `max_tokens` tokens after `prompt_tokens`, calling `on_text` with each
    /// piece of text as soon as it is complete UTF-8; stops at an end token.
    pub fn generate(
        &self,
        prompt_tokens: &[u32],
        max_tokens: usize,
        options: SamplingOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        if prompt_tokens.is_empty() {
            return Err(Error::InvalidInput("the prompt has no tokens (is --no-bos set on an empty prompt?)".into()));
        }
        let mut sampler = Sampler::new(options)?;
        let capacity = (prompt_tokens.len() + max_tokens).max(1);
        let mut cache: KvCache = self.decoder.new_cache(capacity)?;
        let start = Instant::now();
        let mut history = prompt_tokens.to_vec();
        let mut tokens = Vec::new();
        let mut text = String::new();
        let mut stream = StreamDecoder::new();
        let mut prompt_time = Duration::ZERO;
        let (mut record_time, mut sample_time) = (Duration::ZERO, Duration::ZERO);
        if max_tokens > 0 {
            let mut logits = self.decoder.forward(prompt_tokens, &mut cache)?;
            prompt_time = start.elapsed();
            for i in 0..max_tokens {
                let sampling = Instant::now();
                let next = sampler.sample(&logits, &history)?;
                sample_time += sampling.elapsed();
                if self.stops.contains(&next) {
                    break;
                }
                tokens.push(next);
                history.push(next);
                let piece = stream.push(&self.vocab, next);
                if !piece.is_empty() {
                    on_text(&piece);
                    text.push_str(&piece);
                }
                if i + 1 < max_tokens {
                    let recording = Instant::now();
                    logits = self.decoder.forward(&[next], &mut cache)?;
                    record_time += recording.elapsed();
                }
            }
            let rest = stream.finish();
            if !rest.is_empty() {
                on_text(&rest);
                text.push_str(&rest);
            }
        }
        let generation_time = start.elapsed().saturating_sub(prompt_time);
        Ok(Generation {
            prompt_tokens: prompt_tokens.to_vec(),
            tokens,
            text,
            prompt_time,
            generation_time,
            record_time,
            sample_time,
        })
    }
}
