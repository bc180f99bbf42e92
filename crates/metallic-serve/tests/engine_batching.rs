//! The scheduler on SmolLM2 135M (software Vulkan in CI): greedy requests give `Llm::generate`'s
//! tokens alone and batched with others, seeded sampling is reproducible per request, a
//! dropped receiver frees its slot, the queue bound holds, and a repeated prompt reuses its
//! cached prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metallic_models::Llm;
use metallic_models::sampling::SamplingOptions;
use metallic_serve::engine::{Engine, EngineConfig, Event, FinishReason, GenerationRequest, SubmitError};
use tokio::sync::mpsc::UnboundedReceiver;

fn model_path() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let path = home.join(".cache/metallic/models/smollm2-135m-instruct-q4_1.gguf");
    assert!(path.exists(), "{} is missing: run ./scripts/fetch-smollm2.sh", path.display());
    path
}

fn llm() -> Arc<Llm> {
    static LLM: OnceLock<Arc<Llm>> = OnceLock::new();
    LLM.get_or_init(|| Arc::new(Llm::load(model_path()).unwrap())).clone()
}

fn engine(parallel: usize, max_queue: usize) -> Engine {
    let config =
        EngineConfig { parallel, ctx_size: 256, max_queue, prefill_chunk: 512, warm_up: false, pipeline_depth: 1 };
    Engine::start(llm(), config).unwrap()
}

fn request(prompt: &str, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: llm().tokenize(prompt, true),
        max_tokens,
        sampling: SamplingOptions::greedy(),
        logprobs: None,
        cache_prompt: false,
    }
}

/// Every event of a request: its tokens, the text, and how it ended.
struct Outcome {
    tokens: Vec<u32>,
    text: String,
    reason: FinishReason,
    cached: usize,
}

fn collect(mut rx: UnboundedReceiver<Event>) -> Outcome {
    let (mut tokens, mut text) = (Vec::new(), String::new());
    loop {
        match rx.blocking_recv().expect("the engine ended the stream without Done") {
            Event::Token { id, text: piece, .. } => {
                tokens.push(id);
                text.push_str(&piece);
            }
            Event::Done { reason, usage, text: tail } => {
                text.push_str(&tail);
                assert_eq!(usage.completion_tokens, tokens.len());
                return Outcome { tokens, text, reason, cached: usage.cached_tokens };
            }
            Event::Failed(e) => panic!("generation failed: {e}"),
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const PROMPTS: [&str; 5] = [
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 4,",
    "Once upon a time, in a small village by the sea, there lived",
    "Water boils at",
];

/// Tokens generated for each of [`PROMPTS`].
const LENGTHS: [usize; 5] = [6, 3, 8, 5, 7];

/// `Llm::generate`'s greedy tokens for each of [`PROMPTS`], [`LENGTHS`] of them.
fn solo_greedy() -> Vec<Vec<u32>> {
    let llm = llm();
    PROMPTS
        .iter()
        .zip(LENGTHS)
        .map(|(p, n)| llm.generate(&llm.tokenize(p, true), n, SamplingOptions::greedy(), |_| {}).unwrap().tokens)
        .collect()
}

#[test]
fn greedy_requests_give_generates_tokens_alone_and_batched() {
    let llm = llm();
    let solo = solo_greedy();
    // One at a time through an engine that warmed up first (its prefills and steps leave
    // nothing behind: the same tokens, no token counted).
    let config = EngineConfig {
        parallel: 4,
        ctx_size: 256,
        max_queue: 16,
        prefill_chunk: 512,
        warm_up: true,
        pipeline_depth: 1,
    };
    let e = Engine::start(llm.clone(), config).unwrap();
    for ((p, n), want) in PROMPTS.iter().zip(LENGTHS).zip(&solo) {
        assert_eq!(&collect(e.submit(request(p, n)).unwrap()).tokens, want, "{p}: alone");
    }
    // All at once: four slots, five requests (one waits), sequences joining and leaving the batch.
    let receivers: Vec<_> = PROMPTS.iter().zip(LENGTHS).map(|(p, n)| e.submit(request(p, n)).unwrap()).collect();
    for ((rx, want), p) in receivers.into_iter().zip(&solo).zip(PROMPTS) {
        let got = collect(rx);
        assert_eq!(&got.tokens, want, "{p}: batched");
        assert_eq!(got.text, llm.vocab().decode(want), "{p}: text");
    }
    // The gauges are published after each step, just after the last events are sent.
    wait_until("every slot is free", || {
        let s = e.stats();
        (s.active, s.queued, s.kv_used) == (0, 0, 0)
    });
    let stats = e.stats();
    let total: usize = solo.iter().map(Vec::len).sum();
    assert!(stats.steps > 0);
    assert_eq!(stats.generated_tokens, 2 * total as u64);
}

#[test]
fn seeded_sampling_is_reproducible_per_request_whatever_runs_beside_it() {
    let e = engine(3, 16);
    let sampled = |seed| GenerationRequest {
        sampling: SamplingOptions { temperature: 1.0, seed, ..SamplingOptions::default() },
        ..request("Tell me a story about", 8)
    };
    let alone = collect(e.submit(sampled(11)).unwrap()).tokens;
    let beside = [e.submit(request(PROMPTS[1], 8)).unwrap(), e.submit(sampled(12)).unwrap()];
    let again = collect(e.submit(sampled(11)).unwrap()).tokens;
    for rx in beside {
        collect(rx);
    }
    assert_eq!(alone, again);
}

#[test]
fn a_dropped_receiver_frees_its_slot_and_the_queue_is_bounded() {
    let e = engine(1, 1);
    let long = e.submit(request(PROMPTS[3], 200)).unwrap();
    let mut long = long;
    // Wait for the first token: the request holds the only slot.
    assert!(matches!(long.blocking_recv(), Some(Event::Token { .. })));
    let waiting = e.submit(request(PROMPTS[0], 2)).unwrap();
    wait_until("the second request is queued", || e.stats().queued == 1);
    assert_eq!(e.submit(request(PROMPTS[1], 2)).unwrap_err(), SubmitError::QueueFull { limit: 1 });
    drop(long);
    // The waiting request gets the slot and completes.
    let got = collect(waiting);
    assert_eq!(got.tokens.len(), 2);
    assert_eq!(got.reason, FinishReason::Length);
    wait_until("every slot is free", || e.stats().active == 0 && e.stats().kv_used == 0);
}

#[test]
fn a_repeated_prompt_reuses_its_cached_prefix() {
    let e = engine(2, 16);
    let cached = |max_tokens| GenerationRequest { cache_prompt: true, ..request(PROMPTS[3], max_tokens) };
    let first = collect(e.submit(cached(4)).unwrap());
    let second = collect(e.submit(cached(4)).unwrap());
    let n = llm().tokenize(PROMPTS[3], true).len();
    assert_eq!((first.cached, second.cached), (0, n - 1));
    assert_eq!(first.tokens, second.tokens);
    let stats = e.stats();
    assert_eq!(stats.prefix_hits, 1);
    assert_eq!(stats.cached_tokens, (n - 1) as u64);
}

#[test]
fn requests_that_cannot_run_are_refused() {
    let e = engine(1, 4);
    let invalid = |r| matches!(e.submit(r), Err(SubmitError::Invalid(_)));
    assert!(invalid(GenerationRequest { prompt: Vec::new(), ..request("x", 1) }));
    assert!(invalid(GenerationRequest { prompt: vec![1; 256], ..request("x", 1) }));
    assert!(invalid(GenerationRequest { prompt: vec![u32::MAX], ..request("x", 1) }));
    assert!(invalid(request("x", 0)));
    assert!(invalid(GenerationRequest { logprobs: Some(21), ..request("x", 1) }));
    let hot = SamplingOptions { temperature: f32::NAN, ..SamplingOptions::default() };
    assert!(invalid(GenerationRequest { sampling: hot, ..request("x", 1) }));
    // The context ends the generation: 250 prompt tokens leave 6 positions.
    let near_full = GenerationRequest { prompt: vec![1; 250], ..request("x", 100) };
    let got = collect(e.submit(near_full).unwrap());
    assert_eq!((got.tokens.len(), got.reason), (6, FinishReason::Length));
}

#[test]
fn a_system_prompt_running_in_another_slot_is_copied_not_computed() {
    let e = engine(2, 16);
    let system = "You are a helpful assistant who answers every question about geography briefly. ";
    let first = format!("{system}Question: what is the capital of Italy? Answer:");
    let second = format!("{system}Question: what is the longest river? Answer:");
    let shared = common_prefix_len(&llm().tokenize(&first, true), &llm().tokenize(&second, true));
    assert!(shared > 10, "the prompts share {shared} tokens");
    let solo = collect(e.submit(request(&second, 4)).unwrap()).tokens;
    // A fresh engine: the first request holds slot 0 while the second arrives.
    let e = engine(2, 16);
    let mut running = e.submit(GenerationRequest { cache_prompt: true, ..request(&first, 50) }).unwrap();
    assert!(matches!(running.blocking_recv(), Some(Event::Token { .. })));
    let got = collect(e.submit(GenerationRequest { cache_prompt: true, ..request(&second, 4) }).unwrap());
    assert_eq!(got.cached, shared);
    assert_eq!(got.tokens, solo);
    assert_eq!(e.stats().prefix_hits, 1);
}

fn common_prefix_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Prompts that arrive together while another stream decodes run in one pass (their products
/// once over all their rows) and still give exactly the tokens each gives alone: greedy ones
/// `Llm::generate`'s, a greedy one with log-probabilities the same tokens, a seeded sampled
/// one its own run alone.
#[test]
fn prompts_arriving_together_run_in_one_pass_and_give_their_solo_tokens() {
    let llm = llm();
    let prompts = [
        "The history of the printing press begins with movable type in East Asia, and in Europe it changed how books, pamphlets and newspapers were made, sold and read by ordinary people in",
        "A recipe for bread needs flour, water, salt and yeast; mix them, knead the dough for ten minutes, let it rise for an hour in a warm place, shape the loaf and then bake it at",
        "The planets of the solar system, in order from the sun, are Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune, and the largest of them by far is",
        "To sort a list of numbers in Python you can call the built-in sorted function, which returns a new list, or the sort method of the list itself, which sorts it in place and returns",
    ];
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| llm.tokenize(p, true)).collect();
    for p in &ids {
        assert!(llm.decoder().prefills_together(p.len()), "a prompt of {} tokens runs alone", p.len());
    }
    let n = 5;
    let solo: Vec<Vec<u32>> =
        ids.iter().map(|p| llm.generate(p, n, SamplingOptions::greedy(), |_| {}).unwrap().tokens).collect();
    let seeded = GenerationRequest {
        sampling: SamplingOptions { temperature: 0.9, seed: 5, ..SamplingOptions::default() },
        ..request(prompts[3], n)
    };
    let e = engine(5, 16);
    let alone = collect(e.submit(seeded.clone()).unwrap()).tokens;
    // A stream decoding (one step at a time) while the four arrive between two of its steps.
    let mut busy = e.submit(request(PROMPTS[3], 200)).unwrap();
    assert!(matches!(busy.blocking_recv(), Some(Event::Token { .. })));
    let before = e.stats().prompts_together;
    let with_logprobs = GenerationRequest { logprobs: Some(2), ..request(prompts[2], n) };
    let receivers = [
        e.submit(request(prompts[0], n)).unwrap(),
        e.submit(request(prompts[1], n)).unwrap(),
        e.submit(with_logprobs).unwrap(),
        e.submit(seeded).unwrap(),
    ];
    let got: Vec<Vec<u32>> = receivers.into_iter().map(|rx| collect(rx).tokens).collect();
    drop(busy);
    assert!(e.stats().prompts_together - before >= 2, "the prompts ran one by one");
    for (i, want) in solo.iter().enumerate().take(3) {
        assert_eq!(&got[i], want, "prompt {i}: tokens differ from its solo run");
    }
    assert_eq!(got[3], alone, "the seeded request differs from its run alone");
    wait_until("every slot is free", || e.stats().active == 0);
}

/// Two pipelined steps in flight: the same tokens as `Llm::generate` for requests
/// that end at different steps (positions computed in vain are forgotten), a request that
/// runs to the end of its context (no step past the slot), every slot free afterwards; depths
/// outside 1 to 4 are refused.
#[test]
fn deeper_pipelines_give_the_same_tokens() {
    let llm = llm();
    let solo = solo_greedy();
    let config = |pipeline_depth| EngineConfig {
        parallel: 4,
        ctx_size: 256,
        max_queue: 16,
        prefill_chunk: 512,
        warm_up: false,
        pipeline_depth,
    };
    for depth in [2] {
        let e = Engine::start(llm.clone(), config(depth)).unwrap();
        let receivers: Vec<_> = PROMPTS.iter().zip(LENGTHS).map(|(p, n)| e.submit(request(p, n)).unwrap()).collect();
        for ((rx, want), p) in receivers.into_iter().zip(&solo).zip(PROMPTS) {
            assert_eq!(&collect(rx).tokens, want, "{p}: depth {depth}");
        }
        // 250 prompt tokens leave 6 positions: the context ends the generation.
        let near_full = GenerationRequest { prompt: vec![1; 250], ..request("x", 100) };
        let got = collect(e.submit(near_full).unwrap());
        assert_eq!((got.tokens.len(), got.reason), (6, FinishReason::Length), "depth {depth}");
        wait_until("every slot is free", || {
            let s = e.stats();
            (s.active, s.kv_used) == (0, 0)
        });
    }
    for depth in [0, 5] {
        assert!(Engine::start(llm.clone(), config(depth)).is_err(), "depth {depth}");
    }
}
