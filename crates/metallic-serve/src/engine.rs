//! The scheduler: one thread owns the model and the GPU. Requests arrive through a channel and
//! wait in a bounded queue; each admitted request gets a KV slot (`--parallel` slots of
//! `--ctx-size` positions each), its prompt is prefilled a chunk at a time between decode
//! steps (a long prompt never stalls the running streams for more than one chunk), and every
//! decode step runs all running sequences together.
//!
//! Prefix caching: a slot keeps the tokens whose keys and values it holds after its request
//! ends. A new request takes the free slot whose tokens share the longest prefix with its
//! prompt (the earlier turns of a chat) and prefills only the rest; where another slot, busy
//! or not, shares a longer prefix (a system prompt other requests use), those positions are
//! copied from it on the GPU instead. Reused positions are the ones computed before, so a
//! continuation equals the uncached one up to float rounding (the rest of the prompt runs as
//! a shorter chunk, possibly on other kernels); `cache_prompt: false` turns reuse off.
//!
//! A request is cancelled by dropping its event receiver (a client that hung up): the
//! scheduler sees it before the next step and frees the slot.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metallic::kernels::topk::TopK;
use metallic::{DType, PendingRead, Tensor};
use metallic_models::decoder::KvSlots;
use metallic_models::sampling::{Sampler, SamplingOptions};
use metallic_models::vocab::StreamDecoder;
use metallic_models::{Error, Llm, Result};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// How the engine shares the GPU between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Sequences decoded together (KV slots).
    pub parallel: usize,
    /// Positions of one slot: a request's prompt and generated tokens together.
    pub ctx_size: usize,
    /// Requests that may wait for a slot; one more is refused ([`SubmitError::QueueFull`]).
    pub max_queue: usize,
    /// Prompt tokens prefilled between two decode steps at most while streams decode (eight
    /// times as many while none does).
    pub prefill_chunk: usize,
    /// Run short prompts and steps of 1 to 8 sequences before the first request
    /// ([`Engine::start`]), so that requests do not wait for the GPU pipelines they need to
    /// be compiled.
    pub warm_up: bool,
    /// Pipelined greedy steps in flight at once (1 to [`MAX_PIPELINE_DEPTH`]): with 1, a step's
    /// tokens are read back right after the next step is recorded; with 2, after the one
    /// after it, so the read-back's latency hides behind a step's recording. Experimental
    /// (not measured yet); a sequence that ends has up to this many positions computed in vain.
    pub pipeline_depth: usize,
}

/// Most pipelined steps in flight ([`EngineConfig::pipeline_depth`]).
pub const MAX_PIPELINE_DEPTH: usize = 4;

/// One generation asked of the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// Prompt token ids (BOS and chat template already applied).
    pub prompt: Vec<u32>,
    /// Tokens to generate at most; fewer when the slot's context ends first.
    pub max_tokens: usize,
    /// Sampling (greedy when the temperature is 0), seeded per request.
    pub sampling: SamplingOptions,
    /// Log-probabilities of each chosen token and of the `n` most likely ones (`Some(n)`).
    pub logprobs: Option<usize>,
    /// Whether the prompt may reuse a cached prefix (llama-server's `cache_prompt`).
    pub cache_prompt: bool,
}

/// A token id with its log-probability under the model (the raw distribution, before
/// penalties and temperature).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLogprob {
    /// Token id.
    pub id: u32,
    /// Natural logarithm of its probability.
    pub logprob: f32,
}

/// Log-probabilities at one generated position.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLogprobs {
    /// The chosen token.
    pub chosen: TokenLogprob,
    /// The most likely tokens, most likely first.
    pub top: Vec<TokenLogprob>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token (not sent).
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (the end-of-generation token not counted).
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
}

/// What the engine tells a request's receiver, in order: tokens, then one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A generated token and the text it completes (empty while a UTF-8 character is split
    /// across tokens).
    Token {
        /// Token id.
        id: u32,
        /// Text completed by this token.
        text: String,
        /// When the request asked for them.
        logprobs: Option<StepLogprobs>,
    },
    /// The generation ended; `text` is what was still held back (an incomplete character).
    Done {
        /// Why.
        reason: FinishReason,
        /// Token counts.
        usage: Usage,
        /// Text flushed at the end.
        text: String,
    },
    /// The generation failed (the model's numbers broke, the device was lost).
    Failed(String),
}

/// Why a request was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds `limit` requests already.
    QueueFull {
        /// `--max-queue`.
        limit: usize,
    },
    /// The request cannot run (empty prompt, longer than the context, unknown ids, bad
    /// sampling values); the message says why.
    Invalid(String),
    /// The engine has stopped.
    Stopped,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::QueueFull { limit } => write!(f, "the server is busy: {limit} requests are already waiting"),
            SubmitError::Invalid(message) => f.write_str(message),
            SubmitError::Stopped => f.write_str("the server is shutting down"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Counters and gauges of the engine, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Sequences holding a slot (prefilling or decoding).
    pub active: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// KV positions in use by active sequences.
    pub kv_used: usize,
    /// KV positions in all slots.
    pub kv_total: usize,
    /// Prompt tokens run through the model since start.
    pub prompt_tokens: u64,
    /// Prompt tokens served from the prefix cache since start.
    pub cached_tokens: u64,
    /// Requests that reused a cached prefix.
    pub prefix_hits: u64,
    /// Tokens generated since start.
    pub generated_tokens: u64,
    /// Decode steps run since start.
    pub steps: u64,
    /// Prompt chunks run in one pass with others since start (a burst's short prompts).
    pub prompts_together: u64,
    /// Time the scheduler spent on everything but [`scheduler_waiting`](Self::scheduler_waiting)
    /// since start (not counting idle waits for requests): recording passes and steps,
    /// sampling (with the logits it reads back), detokenizing, bookkeeping.
    pub scheduler_busy: Duration,
    /// Time the scheduler waited for the token read-backs of pipelined greedy steps and of
    /// greedy prompts' first tokens since start.
    pub scheduler_waiting: Duration,
}

/// Counters the scheduler updates and anyone may read.
#[derive(Debug, Default)]
struct Shared {
    queued: AtomicUsize,
    active: AtomicUsize,
    kv_used: AtomicUsize,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    prefix_hits: AtomicU64,
    generated_tokens: AtomicU64,
    steps: AtomicU64,
    prompts_together: AtomicU64,
    /// Nanoseconds (see [`EngineStats`]).
    busy_ns: AtomicU64,
    waiting_ns: AtomicU64,
}

impl Shared {
    /// Adds `d` to a nanosecond counter.
    fn add_time(counter: &AtomicU64, d: Duration) {
        counter.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

enum Message {
    Submit(Box<Pending>),
    CancelAll,
}

/// A request waiting for a slot.
struct Pending {
    request: GenerationRequest,
    sampler: Sampler,
    events: UnboundedSender<Event>,
}

/// The GPU scheduler (see the module docs). Dropping it stops the scheduler after the step in
/// flight; running requests get no more events.
pub struct Engine {
    llm: Arc<Llm>,
    config: EngineConfig,
    messages: Option<mpsc::Sender<Message>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the scheduler for `llm`, allocating every slot's KV cache now (a configuration
    /// the device cannot hold fails here, not at the first request), after the warm-up when
    /// the configuration asks for it (see [`EngineConfig::warm_up`]).
    pub fn start(llm: Arc<Llm>, config: EngineConfig) -> Result<Self> {
        if config.parallel == 0 || config.ctx_size == 0 || config.prefill_chunk == 0 {
            return Err(Error::InvalidInput(format!(
                "parallel ({}), context size ({}) and prefill chunk ({}) must be at least 1",
                config.parallel, config.ctx_size, config.prefill_chunk
            )));
        }
        if !(1..=MAX_PIPELINE_DEPTH).contains(&config.pipeline_depth) {
            return Err(Error::InvalidInput(format!(
                "a pipeline depth of {}: 1 to {MAX_PIPELINE_DEPTH} steps",
                config.pipeline_depth
            )));
        }
        // The device's limits (one layer's keys in one binding, all in the memory pool) are
        // linear in the positions of all slots together.
        let most = llm.decoder().max_context() / config.parallel;
        if config.ctx_size > most {
            return Err(Error::InvalidInput(format!(
                "a context of {} positions for each of {} sequences; this model's KV cache holds at most {most} per \
                 sequence on this device (lower --ctx-size or --parallel)",
                config.ctx_size, config.parallel
            )));
        }
        let mut kv = llm.decoder().new_slots(config.parallel, config.ctx_size)?;
        let argmax = if config.warm_up { warm_up(&llm, &mut kv, &config)? } else { Vec::new() };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let scheduler = Scheduler {
            llm: llm.clone(),
            config,
            slots: (0..config.parallel).map(|_| Slot { tokens: Vec::new(), used: 0 }).collect(),
            kv,
            flights: VecDeque::new(),
            argmax,
            queue: VecDeque::new(),
            running: Vec::new(),
            shared: shared.clone(),
            clock: 0,
        };
        let thread = std::thread::Builder::new()
            .name("metallic-scheduler".into())
            .spawn(move || scheduler.run(rx))
            .map_err(|e| Error::InvalidInput(format!("cannot start the scheduler thread: {e}")))?;
        Ok(Engine { llm, config, messages: Some(tx), shared, thread: Some(thread) })
    }

    /// The model (tokenizer, chat template) for request threads.
    pub fn llm(&self) -> &Arc<Llm> {
        &self.llm
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Queues `request`; its events arrive on the returned receiver (drop it to cancel).
    pub fn submit(&self, request: GenerationRequest) -> std::result::Result<UnboundedReceiver<Event>, SubmitError> {
        self.check(&request)?;
        let sampler = Sampler::new(request.sampling).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let messages = self.messages.as_ref().ok_or(SubmitError::Stopped)?;
        let limit = self.config.max_queue;
        self.shared
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1))
            .map_err(|_| SubmitError::QueueFull { limit })?;
        let (events, receiver) = unbounded_channel();
        if messages.send(Message::Submit(Box::new(Pending { request, sampler, events }))).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(receiver)
    }

    /// Cancels every queued and running request (their receivers get `Failed`); used when a
    /// shutdown's grace period ends.
    pub fn cancel_all(&self) {
        if let Some(messages) = &self.messages {
            // A stopped scheduler has nothing to cancel.
            let _ = messages.send(Message::CancelAll);
        }
    }

    /// The counters now.
    pub fn stats(&self) -> EngineStats {
        let s = &self.shared;
        EngineStats {
            active: s.active.load(Ordering::SeqCst),
            queued: s.queued.load(Ordering::SeqCst),
            kv_used: s.kv_used.load(Ordering::SeqCst),
            kv_total: self.config.parallel * self.config.ctx_size,
            prompt_tokens: s.prompt_tokens.load(Ordering::SeqCst),
            cached_tokens: s.cached_tokens.load(Ordering::SeqCst),
            prefix_hits: s.prefix_hits.load(Ordering::SeqCst),
            generated_tokens: s.generated_tokens.load(Ordering::SeqCst),
            steps: s.steps.load(Ordering::SeqCst),
            prompts_together: s.prompts_together.load(Ordering::SeqCst),
            scheduler_busy: Duration::from_nanos(s.busy_ns.load(Ordering::SeqCst)),
            scheduler_waiting: Duration::from_nanos(s.waiting_ns.load(Ordering::SeqCst)),
        }
    }

    /// What `submit` refuses before queueing.
    fn check(&self, request: &GenerationRequest) -> std::result::Result<(), SubmitError> {
        let invalid = |m: String| Err(SubmitError::Invalid(m));
        let n = request.prompt.len();
        if n == 0 {
            return invalid("the prompt has no tokens".into());
        }
        if n >= self.config.ctx_size {
            return invalid(format!(
                "the prompt has {n} tokens; the context holds {} positions per request, so at most {} prompt tokens",
                self.config.ctx_size,
                self.config.ctx_size - 1
            ));
        }
        let vocab = self.llm.decoder().config().vocab;
        if let Some(bad) = request.prompt.iter().find(|&&id| id as usize >= vocab) {
            return invalid(format!("token id {bad} is outside the vocabulary of {vocab} tokens"));
        }
        if request.max_tokens == 0 {
            return invalid("max_tokens must be at least 1".into());
        }
        if request.logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return invalid(format!("at most {MAX_TOP_LOGPROBS} top log-probabilities per token"));
        }
        Ok(())
    }
}

/// Most `top_logprobs` a request may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the channel stops the scheduler after its step in flight.
        self.messages = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a KV slot holds.
struct Slot {
    /// The tokens whose keys and values the cache holds (kept after a request ends, for the
    /// prefix cache).
    tokens: Vec<u32>,
    /// When it was last given to a request (least recently used slots are taken first).
    used: u64,
}

/// A request holding a slot.
struct Running {
    /// Unique among the requests this engine has taken.
    id: u64,
    slot: usize,
    request: GenerationRequest,
    sampler: Sampler,
    events: UnboundedSender<Event>,
    /// Prompt tokens in the cache so far.
    prefilled: usize,
    cached: usize,
    /// The generated tokens (the last is the next step's input).
    generated: Vec<u32>,
    /// Tokens this request may still generate (max_tokens, or the context).
    budget: usize,
    stream: StreamDecoder,
}

impl Running {
    /// Past its prompt with a token to feed: in the next decode step.
    fn is_decoding(&self) -> bool {
        self.prefilled == self.request.prompt.len() && !self.generated.is_empty()
    }
}

struct Scheduler {
    llm: Arc<Llm>,
    config: EngineConfig,
    slots: Vec<Slot>,
    kv: KvSlots,
    /// Pipelined steps recorded and not yet read back, oldest first (at most
    /// [`EngineConfig::pipeline_depth`]).
    flights: VecDeque<Flight>,
    /// Argmax ops of the step logits, one per row count seen.
    argmax: Vec<Argmax>,
    queue: VecDeque<Pending>,
    running: Vec<Running>,
    shared: Arc<Shared>,
    clock: u64,
}

/// Prompt chunks run between two scheduler steps while no stream is decoding.
const IDLE_PREFILL_CHUNKS: usize = 8;

impl Scheduler {
    fn run(mut self, messages: mpsc::Receiver<Message>) {
        loop {
            // Idle: wait for work; busy: take what has arrived and go on.
            if self.running.is_empty() && self.queue.is_empty() && self.flights.is_empty() {
                match messages.recv() {
                    Ok(m) => self.take(m),
                    Err(_) => return,
                }
            }
            let started = Instant::now();
            let waited_before = self.shared.waiting_ns.load(Ordering::SeqCst);
            loop {
                match messages.try_recv() {
                    Ok(m) => self.take(m),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            self.drop_cancelled();
            self.admit();
            // Up to a chunk's worth of prompt tokens between two decode steps, over as many
            // prompts as that covers: a burst of short prompts starts together instead of one
            // per step, and a long one still never stalls the running streams for more. With no
            // stream decoding there is nothing to stall: up to IDLE_PREFILL_CHUNKS chunks run
            // (a burst of prompts arriving at once all start before the first decode step).
            // Greedy prompts' first tokens are read back together after the loop, so the GPU
            // runs one prompt while the host records the next.
            let idle = self.flights.is_empty() && !self.running.iter().any(Running::is_decoding);
            let mut budget = self.config.prefill_chunk * if idle { IDLE_PREFILL_CHUNKS } else { 1 };
            let mut firsts = Vec::new();
            while budget > 0 {
                match self.prefill_next(budget, &mut firsts) {
                    Ok(0) => break,
                    Ok(done) => budget = budget.saturating_sub(done),
                    Err(e) => {
                        self.fail_all(&e);
                        break;
                    }
                }
            }
            if let Err(e) = self.land_firsts(firsts) {
                self.fail_all(&e);
            }
            if let Err(e) = self.decode_step() {
                self.fail_all(&e);
            }
            self.publish();
            let waited = Duration::from_nanos(self.shared.waiting_ns.load(Ordering::SeqCst) - waited_before);
            Shared::add_time(&self.shared.busy_ns, started.elapsed().saturating_sub(waited));
        }
    }

    /// Waits for `read`, counting the time as waiting for the GPU.
    fn wait_for(&self, read: PendingRead) -> Result<Vec<Vec<u8>>> {
        let start = Instant::now();
        let bytes = read.wait();
        Shared::add_time(&self.shared.waiting_ns, start.elapsed());
        Ok(bytes?)
    }

    fn take(&mut self, message: Message) {
        match message {
            Message::Submit(p) => self.queue.push_back(*p),
            Message::CancelAll => {
                for p in self.queue.drain(..) {
                    let _ = p.events.send(Event::Failed("cancelled: the server is shutting down".into()));
                    self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                }
                for r in self.running.drain(..) {
                    let _ = r.events.send(Event::Failed("cancelled: the server is shutting down".into()));
                }
            }
        }
    }

    /// Forgets requests whose receiver is gone.
    fn drop_cancelled(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|p| !p.events.is_closed());
        self.shared.queued.fetch_sub(before - self.queue.len(), Ordering::SeqCst);
        self.running.retain(|r| !r.events.is_closed());
    }

    /// Gives free slots to waiting requests, oldest first.
    fn admit(&mut self) {
        while !self.queue.is_empty() {
            let busy: Vec<usize> = self.running.iter().map(|r| r.slot).collect();
            let Some(p) = self.queue.pop_front() else { break };
            let prompt = &p.request.prompt;
            // Positions a slot's cached tokens could give this prompt: the last prompt token
            // always runs (its logits give the first generated token).
            let usable = |tokens: &[u32]| {
                if p.request.cache_prompt {
                    common_prefix(tokens, prompt).min(prompt.len().saturating_sub(1))
                } else {
                    0
                }
            };
            // The free slot sharing the longest prefix; the least recently used among equals.
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(i, _)| !busy.contains(i))
                .max_by_key(|(_, slot)| (usable(&slot.tokens), std::cmp::Reverse(slot.used)));
            let Some((i, _)) = best else {
                self.queue.push_front(p);
                break;
            };
            // Any other slot, busy or not, may hold a longer prefix (a system prompt another
            // request is using): its positions are copied rather than computed again.
            let own = self.slots.get(i).map_or(0, |slot| usable(&slot.tokens));
            let donor = self
                .slots
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, slot)| (usable(&slot.tokens), j))
                .max()
                .filter(|&(len, _)| len > own);
            let reuse = match donor {
                Some((len, j)) => match self.llm.decoder().copy_prefix(&mut self.kv, j, i, len) {
                    Ok(()) => {
                        if let Some(slot) = self.slots.get_mut(i) {
                            slot.tokens = prompt.get(..len).unwrap_or_default().to_vec();
                        }
                        len
                    }
                    // The copy failed (the device): compute the prompt instead.
                    Err(_) => 0,
                },
                None => own,
            };
            let Some(slot) = self.slots.get_mut(i) else { break };
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            self.clock += 1;
            slot.used = self.clock;
            self.kv.truncate(i, reuse);
            slot.tokens.truncate(reuse);
            if reuse > 0 {
                self.shared.prefix_hits.fetch_add(1, Ordering::SeqCst);
                self.shared.cached_tokens.fetch_add(reuse as u64, Ordering::SeqCst);
            }
            let budget = p.request.max_tokens.min(self.config.ctx_size.saturating_sub(prompt.len()));
            self.running.push(Running {
                id: self.clock,
                slot: i,
                budget,
                request: p.request,
                sampler: p.sampler,
                events: p.events,
                prefilled: reuse,
                cached: reuse,
                generated: Vec::new(),
                stream: StreamDecoder::new(),
            });
        }
    }

    /// Runs the next prompt chunks, `limit` tokens at most: the oldest prompt still
    /// prefilling, together with the later ones whose next chunks fit in one pass where each
    /// gives in a pass with others the bits it gives alone
    /// ([`Decoder::prefills_together`](metallic_models::decoder::Decoder::prefills_together):
    /// a burst of short prompts then runs its products once, filling the GPU where each
    /// prompt alone leaves most of it idle); else that oldest chunk alone
    /// ([`prefill_one`](Self::prefill_one)). Returns the tokens run: 0 when no prompt is left.
    fn prefill_next(&mut self, limit: usize, firsts: &mut Vec<First>) -> Result<usize> {
        let chunk = self.config.prefill_chunk;
        let room = chunk.min(limit);
        let decoder = self.llm.decoder();
        // (index in `running`, end of its chunk)
        let mut batch: Vec<(usize, usize)> = Vec::new();
        let mut rows = 0;
        for (at, r) in self.running.iter().enumerate().filter(|(_, r)| r.prefilled < r.request.prompt.len()) {
            let len = (r.request.prompt.len() - r.prefilled).min(chunk);
            let joins = rows + len <= room && decoder.prefills_together(len);
            // The oldest prompt goes first, alone if it cannot lead a pass.
            if batch.is_empty() && !joins {
                break;
            }
            if joins {
                batch.push((at, r.prefilled + len));
                rows += len;
            }
        }
        if batch.len() < 2 {
            return self.prefill_one(limit, firsts);
        }
        let parts: Vec<(usize, &[u32])> = batch
            .iter()
            .filter_map(|&(at, end)| self.running.get(at).map(|r| (r.slot, r.request.prompt.get(r.prefilled..end))))
            .map(|(slot, part)| (slot, part.unwrap_or_default()))
            .collect();
        let logits = self.llm.decoder().prefill_slots(&parts, &mut self.kv, chunk)?;
        self.shared.prompt_tokens.fetch_add(rows as u64, Ordering::SeqCst);
        self.shared.prompts_together.fetch_add(batch.len() as u64, Ordering::SeqCst);
        // Prompts that ended: greedy ones without log-probabilities read their first tokens
        // with one argmax over the pass's logits (landed with the other firsts); the others
        // take theirs now, before the next pass overwrites the logits.
        let mut greedy = Vec::new();
        // (request id, row, greedy)
        let mut others = Vec::new();
        for (row, &(at, end)) in batch.iter().enumerate() {
            let Some(r) = self.running.get_mut(at) else { continue };
            if let Some(slot) = self.slots.get_mut(r.slot) {
                slot.tokens.extend_from_slice(r.request.prompt.get(r.prefilled..end).unwrap_or_default());
            }
            r.prefilled = end;
            if end < r.request.prompt.len() {
                continue;
            }
            match (r.sampler.is_greedy(), r.request.logprobs) {
                (true, None) => greedy.push((r.id, row)),
                (is_greedy, _) => others.push((r.id, row, is_greedy)),
            }
        }
        if greedy.is_empty() && others.is_empty() {
            logits.runtime().synchronize()?;
        }
        if !greedy.is_empty() {
            firsts.push(self.start_firsts(greedy, &logits)?);
        }
        let best = if others.iter().any(|o| o.2) { self.argmax(&logits)?.read()? } else { Vec::new() };
        for (id, row, is_greedy) in others {
            let Some(at) = self.running.iter().position(|r| r.id == id) else { continue };
            let greedy = best.get(row).copied().filter(|_| is_greedy);
            let (token, logprobs) = self.pick(at, &logits.narrow(row, 1)?, greedy)?;
            if !self.accept(at, token, logprobs) {
                self.finish(at);
            }
        }
        Ok(rows)
    }

    /// Runs one chunk (of `limit` tokens at most) of the oldest prompt still prefilling; when it
    /// completes the prompt, the first token is sampled from its logits — or, for a greedy
    /// request without log-probabilities, its argmax is recorded and its read started, pushed
    /// to `firsts` for [`land_firsts`](Self::land_firsts). Returns the tokens run: 0 when no
    /// prompt is left.
    fn prefill_one(&mut self, limit: usize, firsts: &mut Vec<First>) -> Result<usize> {
        let Some(at) = self.running.iter().position(|r| r.prefilled < r.request.prompt.len()) else {
            return Ok(0);
        };
        let Some(r) = self.running.get_mut(at) else { return Ok(0) };
        let end = (r.prefilled + self.config.prefill_chunk.min(limit)).min(r.request.prompt.len());
        let part = r.request.prompt.get(r.prefilled..end).unwrap_or_default();
        let logits = self.llm.decoder().prefill_slot(part, &mut self.kv, r.slot, self.config.prefill_chunk)?;
        if let Some(slot) = self.slots.get_mut(r.slot) {
            slot.tokens.extend_from_slice(part);
        }
        self.shared.prompt_tokens.fetch_add(part.len() as u64, Ordering::SeqCst);
        let done = end - r.prefilled;
        r.prefilled = end;
        if end < r.request.prompt.len() {
            logits.runtime().synchronize()?;
            return Ok(done);
        }
        let (id, greedy) = (r.id, r.sampler.is_greedy());
        if greedy && r.request.logprobs.is_none() {
            // Every prompt's logits live in the slots' one set of row buffers, so one argmax op
            // serves them all; its read-back is copied out before the next prompt runs.
            firsts.push(self.start_firsts(vec![(id, 0)], &logits)?);
            return Ok(done);
        }
        let greedy = if greedy { self.argmax(&logits)?.read()?.first().copied() } else { None };
        let (token, logprobs) = self.pick(at, &logits, greedy)?;
        if !self.accept(at, token, logprobs) {
            self.finish(at);
        }
        Ok(done)
    }

    /// Records the argmax of `logits` (prompts' last rows) and starts reading it back for the
    /// greedy requests `rows` ((request id, row)), landed by [`land_firsts`](Self::land_firsts).
    fn start_firsts(&mut self, rows: Vec<(u64, usize)>, logits: &Tensor) -> Result<First> {
        let read = self.argmax(logits)?.start()?;
        Ok(First { rows, logits: logits.clone(), read })
    }

    /// Waits for the first tokens the prefills left reading and hands
    /// them to their sequences.
    fn land_firsts(&mut self, firsts: Vec<First>) -> Result<()> {
        for first in firsts {
            let tokens = argmax_of_bytes(&self.wait_for(first.read)?);
            for (id, row) in first.rows {
                let best = tokens
                    .get(row)
                    .copied()
                    .ok_or_else(|| Error::InvalidInput("a first token's read-back is short".into()))?;
                let Some(at) = self.running.iter().position(|r| r.id == id) else { continue };
                // Greedy, no log-probabilities: the logits themselves are not read again (later
                // prompts may have overwritten them).
                let (token, logprobs) = self.pick(at, &first.logits.narrow(row, 1)?, Some(best))?;
                if !self.accept(at, token, logprobs) {
                    self.finish(at);
                }
            }
        }
        Ok(())
    }

    /// One decode step over every sequence past its prompt, all in one pass
    /// ([`Decoder::step`](metallic_models::decoder::Decoder::step)).
    ///
    /// When every such sequence is greedy (and wants no log-probabilities) the steps are
    /// pipelined: a step's argmax stays on the GPU and feeds the next step, which is recorded
    /// before this one's tokens are read back (a [`Flight`]; up to
    /// [`EngineConfig::pipeline_depth`] of them), so the GPU never waits for the host between
    /// steps. A sequence that ends (or is cancelled) meanwhile has had a position computed in
    /// vain for each step in flight; its slot forgets them. Otherwise greedy rows take one
    /// argmax over every row and the others sample their own row, step by step.
    fn decode_step(&mut self) -> Result<()> {
        let decoding = self.decoding();
        if let Some(newest) = self.flights.back() {
            let steady = newest.rows.iter().map(|r| r.0).eq(decoding.iter().map(|d| d.id));
            let slots: Vec<usize> = newest.rows.iter().map(|r| r.1).collect();
            // Each step in flight took a position: one more must fit in every slot.
            let room = slots.iter().all(|&slot| self.kv.len(slot) < self.kv.capacity());
            if steady && room {
                // The same sequences: the next step takes the newest one's tokens on the GPU.
                let (rows, ids) = (newest.rows.clone(), newest.ids.clone());
                let logits = self.llm.decoder().step_on_gpu(&slots, &ids, &mut self.kv)?;
                self.shared.steps.fetch_add(1, Ordering::SeqCst);
                let next = Flight::start(rows, self.argmax(&logits)?)?;
                self.flights.push_back(next);
                while self.flights.len() > self.config.pipeline_depth {
                    if let Some(oldest) = self.flights.pop_front() {
                        self.land(oldest)?;
                    }
                }
                return Ok(());
            }
            while let Some(oldest) = self.flights.pop_front() {
                self.land(oldest)?;
            }
            return self.decode_step();
        }
        if decoding.is_empty() {
            return Ok(());
        }
        let rows: Vec<(usize, u32)> = decoding.iter().map(|d| (d.slot, d.token)).collect();
        let logits = self.llm.decoder().step(&rows, &mut self.kv)?;
        for &(slot, token) in &rows {
            if let Some(s) = self.slots.get_mut(slot) {
                s.tokens.push(token);
            }
        }
        self.shared.steps.fetch_add(1, Ordering::SeqCst);
        if decoding.iter().all(|d| d.pipelined) {
            let rows = decoding.iter().map(|d| (d.id, d.slot)).collect();
            let flight = Flight::start(rows, self.argmax(&logits)?)?;
            self.flights.push_back(flight);
            return Ok(());
        }
        let argmax = if decoding.iter().any(|d| d.greedy) { self.argmax(&logits)?.read()? } else { Vec::new() };
        for (row, d) in decoding.iter().enumerate() {
            let greedy = argmax.get(row).copied().filter(|_| d.greedy);
            let Some(at) = self.running.iter().position(|r| r.id == d.id) else { continue };
            let (token, logprobs) = self.pick(at, &logits.narrow(row, 1)?, greedy)?;
            if !self.accept(at, token, logprobs) {
                self.finish(at);
            }
        }
        Ok(())
    }

    /// The argmax op of `logits` (a step's, one tensor per row count, or a prompt's), built on
    /// first use.
    fn argmax(&mut self, logits: &Tensor) -> Result<&Argmax> {
        let at = match self.argmax.iter().position(|a| a.serves(logits)) {
            Some(at) => at,
            None => {
                self.argmax.push(Argmax::new(logits)?);
                self.argmax.len() - 1
            }
        };
        self.argmax.get(at).ok_or_else(|| Error::InvalidInput("no argmax op".into()))
    }

    /// The sequences past their prompt, in `running` order, with the token each feeds next.
    fn decoding(&self) -> Vec<Decoding> {
        self.running
            .iter()
            .filter(|r| r.is_decoding())
            .filter_map(|r| {
                let greedy = r.sampler.is_greedy();
                r.generated.last().map(|&token| Decoding {
                    id: r.id,
                    slot: r.slot,
                    token,
                    greedy,
                    pipelined: greedy && r.request.logprobs.is_none(),
                })
            })
            .collect()
    }

    /// Reads a pipelined step's tokens and hands them to their sequences; then every slot no
    /// running sequence holds forgets positions beyond its tokens (those computed for a
    /// sequence that ended or was cancelled while later steps were in flight). A running
    /// sequence's positions beyond its tokens are the steps still in flight.
    fn land(&mut self, flight: Flight) -> Result<()> {
        let tokens = argmax_of_bytes(&self.wait_for(flight.read)?);
        if tokens.len() != flight.rows.len() {
            return Err(Error::InvalidInput("the token read-back is short".into()));
        }
        for ((id, slot), (token, best)) in flight.rows.into_iter().zip(tokens) {
            let Some(at) = self.running.iter().position(|r| r.id == id) else { continue };
            if !best.is_finite() {
                return Err(Error::NotFinite("the logits are NaN or infinite (broken or overflowing weights)".into()));
            }
            let keep = self.accept(at, token, None);
            // The token is the input of the next step in flight, if there is one.
            let in_flight = self.kv.len(slot);
            if let Some(s) = self.slots.get_mut(slot)
                && keep
                && in_flight > s.tokens.len()
            {
                s.tokens.push(token);
            }
            if !keep {
                self.finish(at);
            }
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if !self.running.iter().any(|r| r.slot == i) {
                self.kv.truncate(i, slot.tokens.len());
            }
        }
        Ok(())
    }

    /// Sequence `at`'s next token — `greedy` when given (with its logit), else sampled from
    /// `logits` (`[1, vocab]`) — and its log-probabilities when the request wants them.
    fn pick(&mut self, at: usize, logits: &Tensor, greedy: Option<(u32, f32)>) -> Result<(u32, Option<StepLogprobs>)> {
        let Some(r) = self.running.get_mut(at) else {
            return Err(Error::InvalidInput("no such sequence".into()));
        };
        let token = match greedy {
            Some((token, best)) if best.is_finite() => token,
            Some(_) => {
                return Err(Error::NotFinite("the logits are NaN or infinite (broken or overflowing weights)".into()));
            }
            None => {
                let history: Vec<u32> = r.request.prompt.iter().chain(&r.generated).copied().collect();
                r.sampler.sample(logits, &history)?
            }
        };
        let logprobs = match r.request.logprobs {
            Some(n) => Some(logprobs_of(logits, token, n)?),
            None => None,
        };
        Ok((token, logprobs))
    }

    /// Hands `token` to sequence `at` and sends it; `false` when the sequence is done (an end
    /// token, which is not sent, or its last allowed token): the caller finishes it.
    fn accept(&mut self, at: usize, token: u32, logprobs: Option<StepLogprobs>) -> bool {
        let Some(r) = self.running.get_mut(at) else { return false };
        if self.llm.vocab().end_tokens().contains(&token) {
            return false;
        }
        r.generated.push(token);
        self.shared.generated_tokens.fetch_add(1, Ordering::SeqCst);
        let text = r.stream.push(self.llm.vocab(), token);
        // A receiver gone is noticed before the next step.
        let _ = r.events.send(Event::Token { id: token, text, logprobs });
        r.generated.len() < r.budget
    }

    /// Ends sequence `at`: the reason, the usage, the text held back; its slot keeps its tokens.
    fn finish(&mut self, at: usize) {
        if at >= self.running.len() {
            return;
        }
        let mut r = self.running.remove(at);
        let reason = if r.generated.len() >= r.budget { FinishReason::Length } else { FinishReason::Stop };
        let usage = Usage {
            prompt_tokens: r.request.prompt.len(),
            completion_tokens: r.generated.len(),
            cached_tokens: r.cached,
        };
        let _ = r.events.send(Event::Done { reason, usage, text: r.stream.finish() });
    }

    /// Fails every running request (the device broke or the model's numbers did); their
    /// slots are forgotten, queued requests go on.
    fn fail_all(&mut self, error: &Error) {
        self.flights.clear();
        for r in self.running.drain(..) {
            let _ = r.events.send(Event::Failed(error.to_string()));
            self.kv.truncate(r.slot, 0);
            if let Some(slot) = self.slots.get_mut(r.slot) {
                slot.tokens.clear();
            }
        }
        // A dropped pipelined step may have advanced other slots.
        for (i, slot) in self.slots.iter().enumerate() {
            self.kv.truncate(i, slot.tokens.len());
        }
    }

    fn publish(&self) {
        self.shared.active.store(self.running.len(), Ordering::SeqCst);
        let used = self.running.iter().map(|r| self.kv.len(r.slot)).sum();
        self.shared.kv_used.store(used, Ordering::SeqCst);
    }
}

/// A sequence in a decode step.
struct Decoding {
    id: u64,
    slot: usize,
    /// The token it feeds (its last generated one).
    token: u32,
    greedy: bool,
    /// Greedy without log-probabilities: its steps may be pipelined.
    pipelined: bool,
}

/// Prompt lengths the warm-up prefills: the one-row and few-row product kernels, then each
/// doubling of the rows an attention workgroup takes (its tile sizes), up to a prompt that
/// fills the register-blocked attention's tiles.
const WARM_PROMPTS: [usize; 9] = [1, 2, 3, 4, 8, 16, 32, 64, 128];

/// Most sequences a warm-up step decodes together: the GEMV multiplies up to 8 rows of x per
/// weight read (one pipeline per row count), more rows repeat the 8-row one.
const WARM_ROWS: usize = 8;

/// Runs what the scheduler will run with short prompts and 1 to [`WARM_ROWS`] sequences —
/// prefills of [`WARM_PROMPTS`] tokens (as far as a chunk and a slot hold), two prompts run
/// together, a step of each
/// row count with its argmax, a step fed by the GPU's ids, and where larger steps take the
/// tensor cores a step of up to 128 and one of `parallel` sequences — so that the GPU pipelines those
/// kernel configurations need are compiled now, not while a request waits (a first step of
/// eight sequences compiled its kernels in the middle of eight streams). Every slot is left
/// empty; returns the argmax ops of the steps' logits for the scheduler to keep.
fn warm_up(llm: &Llm, kv: &mut KvSlots, config: &EngineConfig) -> Result<Vec<Argmax>> {
    let decoder = llm.decoder();
    // Token 0 exists in every vocabulary; what it means does not matter here.
    for len in WARM_PROMPTS.into_iter().filter(|&n| n <= config.prefill_chunk && n < config.ctx_size) {
        decoder.prefill_slot(&vec![0; len], kv, 0, config.prefill_chunk)?;
        kv.truncate(0, 0);
    }
    // Prompts run together: a pass of more rows than any one prompt above (the GEMMs' larger
    // tiles) and the argmax of several prompts' logits.
    let len = (config.prefill_chunk / 2).min(128).min(config.ctx_size.saturating_sub(1));
    if kv.slots() >= 2 && decoder.prefills_together(len) {
        let ids = vec![0; len];
        let logits = decoder.prefill_slots(&[(0, &ids), (1, &ids)], kv, config.prefill_chunk)?;
        Argmax::new(&logits)?.read()?;
        kv.truncate(0, 0);
        kv.truncate(1, 0);
    }
    let mut argmax: Vec<Argmax> = Vec::new();
    // Slot 0 takes a position per step: the steps need that many.
    let rows = config.parallel.min(WARM_ROWS).min(config.ctx_size.saturating_sub(1));
    // Steps whose wide products take the tensor cores: their GEMM's two tiles (up to 128 rows
    // and beyond) and the separate norms.
    let mut counts: Vec<usize> = (1..=rows).collect();
    let most = config.parallel.min(config.ctx_size.saturating_sub(1));
    for m in [most.min(128), most] {
        if decoder.step_on_tensor_cores(m) && !counts.contains(&m) && counts.len() + 1 < config.ctx_size {
            counts.push(m);
        }
    }
    for m in counts {
        let logits = decoder.step(&(0..m).map(|slot| (slot, 0)).collect::<Vec<_>>(), kv)?;
        let op = Argmax::new(&logits)?;
        op.record()?;
        if m == 1 {
            decoder.step_on_gpu(&[0], &op.ids, kv)?;
        }
        argmax.push(op);
    }
    if let Some(op) = argmax.first() {
        op.read()?;
    }
    for slot in 0..kv.slots() {
        kv.truncate(slot, 0);
    }
    Ok(argmax)
}

/// Greedy prompts' first tokens, being read back: (request id, row of the logits) of each,
/// the logits the argmax read and the read.
struct First {
    rows: Vec<(u64, usize)>,
    logits: Tensor,
    read: PendingRead,
}

/// A row of a pipelined step: (request id, slot).
type Row = (u64, usize);

/// A recorded step whose argmax (ids and best logits, one per row) is being read back; the
/// ids stay on the GPU for the next step.
struct Flight {
    /// (request id, slot) of each row.
    rows: Vec<Row>,
    ids: Tensor,
    read: PendingRead,
}

impl Flight {
    /// Records `argmax` and starts reading it back. Its ids are overwritten by the next step's
    /// argmax: that step reads them first (queue order), and the read-back's copy is recorded
    /// here, before it.
    fn start(rows: Vec<Row>, argmax: &Argmax) -> Result<Flight> {
        Ok(Flight { rows, ids: argmax.ids.clone(), read: argmax.start()? })
    }
}

/// The argmax of one logits tensor (`[rows, vocab]`) with its outputs, built once and recorded
/// again each step: a step's logits live in one tensor per row count, so steady decoding
/// allocates nothing and builds no bind group per token.
struct Argmax {
    logits: Tensor,
    values: Tensor,
    ids: Tensor,
    op: TopK,
}

impl Argmax {
    fn new(logits: &Tensor) -> Result<Self> {
        let rt = logits.runtime();
        let rows = logits.dims().first().copied().unwrap_or(1);
        let values = Tensor::empty(rt, [rows, 1], DType::F32)?;
        let ids = Tensor::empty(rt, [rows, 1], DType::U32)?;
        let op = TopK::new(logits, 1, &values, &ids)?;
        Ok(Argmax { logits: logits.clone(), values, ids, op })
    }

    fn serves(&self, logits: &Tensor) -> bool {
        self.logits.buffer() == logits.buffer()
            && self.logits.byte_offset() == logits.byte_offset()
            && self.logits.shape() == logits.shape()
    }

    fn record(&self) -> Result<()> {
        Ok(self.logits.runtime().record(&self.op)?)
    }

    /// Records the argmax and starts reading back its values and ids.
    fn start(&self) -> Result<PendingRead> {
        self.record()?;
        Ok(self.logits.runtime().start_read(&[&self.values, &self.ids])?)
    }

    /// Records the argmax and reads it: (id, best logit) per row (NaN ranks lowest: a
    /// non-finite best logit means broken numbers).
    fn read(&self) -> Result<Vec<(u32, f32)>> {
        self.record()?;
        Ok(argmax_of_bytes(&self.logits.runtime().read_tensors(&[&self.values, &self.ids])?))
    }
}

/// (id, value) pairs from the read-back bytes of an argmax's values and ids.
fn argmax_of_bytes(bytes: &[Vec<u8>]) -> Vec<(u32, f32)> {
    let words = |k: usize| -> Vec<[u8; 4]> {
        bytes.get(k).map(|b| b.chunks_exact(4).filter_map(|c| c.try_into().ok()).collect()).unwrap_or_default()
    };
    let values = words(0).into_iter().map(f32::from_le_bytes);
    let ids = words(1).into_iter().map(u32::from_le_bytes);
    ids.zip(values).collect()
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The log-probability of `chosen` and the `n` most likely tokens, from a logits row read
/// back whole (f64 log-sum-exp).
fn logprobs_of(logits: &Tensor, chosen: u32, n: usize) -> Result<StepLogprobs> {
    let row = logits.to_vec_f32()?;
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let lse = max + row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln();
    let logit = |id: u32| row.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY);
    let lp = |id: u32| TokenLogprob { id, logprob: (f64::from(logit(id)) - lse) as f32 };
    let by_logit = |a: &u32, b: &u32| logit(*b).total_cmp(&logit(*a)).then(a.cmp(b));
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    let n = n.min(order.len());
    if n > 0 {
        order.select_nth_unstable_by(n - 1, by_logit);
    }
    order.truncate(n);
    order.sort_by(by_logit);
    Ok(StepLogprobs { chosen: lp(chosen), top: order.into_iter().map(lp).collect() })
}
