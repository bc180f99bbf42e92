//! Reliability of the model layer: the handles are `Send + Sync`, generation is bit-identical
//! run to run (greedy and seeded sampling) and from two threads at once on one `Llm`, and every
//! variant of `metallic_models::Error` is produced with the message a user sees checked.
//!
//! Where each `metallic_models::Error` variant is produced (file: test):
//!
//! | variant | produced by |
//! |---|---|
//! | `Io` | reliability.rs: `loading_errors_name_the_file_and_the_field`; embedder_errors.rs: `a_missing_weights_file_is_an_io_error_naming_it`; gguf.rs |
//! | `Format` | reliability.rs: `loading_errors_name_the_file_and_the_field`; model_checks.rs: `configuration_values_are_checked_at_load_naming_the_key`; gguf.rs (every malformed header), embedder_errors.rs |
//! | `Weight` | reliability.rs: `loading_errors_name_the_file_and_the_field`; embedder_errors.rs: `a_wrong_tensor_shape_names_the_tensor_and_both_shapes` |
//! | `Unsupported` | reliability.rs: `loading_errors_name_the_file_and_the_field`; embedder_errors.rs: `an_unknown_architecture_is_unsupported` |
//! | `Tokenizer` | reliability.rs: `tokenizer_errors_name_the_counts`; embedder_errors.rs: `a_tokenizer_larger_than_the_vocabulary_is_caught`; vocab.rs |
//! | `InvalidInput` | reliability.rs: `bad_requests_are_invalid_input`; embedder_errors.rs: `a_zero_batch_size_is_invalid`; gemma3.rs |
//! | `NotFinite` | model_checks.rs: `nan_logits_stop_generation_naming_the_step` |
//! | `Engine` | reliability.rs: `engine_errors_pass_through_with_their_text` |
//!
//! The Gemma model is loaded once and shared; the file runs about 30 decode steps in all
//! (lavapipe: 1-2 s each in debug builds).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use common::TempDir;
use common::synthetic::Value;
use metallic::{Runtime, Tensor};
use metallic_models::decoder::Decoder;
use metallic_models::sampling::{Sampler, SamplingOptions};
use metallic_models::vocab::{Vocab, VocabParts};
use metallic_models::{Embedder, Error, GgufFile, Llm};

#[test]
fn engine_and_model_handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<metallic::Context>();
    assert_send_sync::<metallic::Runtime>();
    assert_send_sync::<metallic::Tensor>();
    assert_send_sync::<Llm>();
    assert_send_sync::<Embedder>();
    assert_send_sync::<Decoder>();
}

// ---------------------------------------------------------------------------------------------
// Generation: the same tokens every time.
// ---------------------------------------------------------------------------------------------

/// The model, loaded once for every test of this file.
fn llm() -> &'static Llm {
    static LLM: OnceLock<Llm> = OnceLock::new();
    LLM.get_or_init(|| Llm::load(common::gemma_path()).unwrap())
}

const PROMPT: &str = "The capital of France is";
/// Tokens per generation: 6 generations of 5 make the file's 30 decode steps.
const TOKENS: usize = 5;

fn seeded() -> SamplingOptions {
    SamplingOptions { temperature: 0.8, seed: 7, ..SamplingOptions::default() }
}

/// Held by every test that generates, so that a "serial" run has the device to itself (the
/// test harness runs tests in parallel) and the two-thread test runs exactly two at once.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Generates `TOKENS` tokens after the prompt; returns the tokens and the streamed text.
fn generate(options: SamplingOptions) -> (Vec<u32>, String) {
    let llm = llm();
    let mut streamed = String::new();
    let prompt = llm.tokenize(PROMPT, true);
    let generation = llm.generate(&prompt, TOKENS, options, |piece| streamed.push_str(piece)).unwrap();
    assert_eq!(generation.text, streamed, "the streamed pieces make up the text");
    (generation.tokens, streamed)
}

/// The first greedy run (call with [`exclusive`] held).
fn greedy_reference() -> &'static (Vec<u32>, String) {
    static FIRST: OnceLock<(Vec<u32>, String)> = OnceLock::new();
    FIRST.get_or_init(|| generate(SamplingOptions::greedy()))
}

/// The first seeded sampled run (call with [`exclusive`] held).
fn sampled_reference() -> &'static (Vec<u32>, String) {
    static FIRST: OnceLock<(Vec<u32>, String)> = OnceLock::new();
    FIRST.get_or_init(|| generate(seeded()))
}

#[test]
fn greedy_generation_is_identical_run_to_run() {
    let _one = exclusive();
    let first = greedy_reference();
    // llama.cpp's greedy continuation of this prompt on this file (tests/fixtures/gemma3/
    // completions.json, "capital"): " the capital of the country of France. ..."
    assert_eq!(first.0, [506, 5279, 529, 506, 2891][..TOKENS], "{first:?}");
    assert_eq!(&generate(SamplingOptions::greedy()), first);
}

#[test]
fn seeded_sampling_is_identical_run_to_run() {
    let _one = exclusive();
    let first = sampled_reference();
    assert_eq!(first.0.len(), TOKENS, "{first:?}");
    // Seed 7 draws away from the argmax within these tokens: the sampler really sampled.
    assert_ne!(first.0, greedy_reference().0, "seed 7 gave the greedy tokens: {first:?}");
    assert_eq!(&generate(seeded()), first);
}

#[test]
fn two_threads_on_one_llm_generate_what_one_thread_does() {
    let _two = exclusive();
    let (greedy, sampled) = (greedy_reference(), sampled_reference());
    // Both at once on the same `Llm` (one runtime, one implicit command buffer): one greedy
    // (pipelined on the GPU), one sampled (reads candidates back every step). A watchdog
    // turns a deadlock into a failure (both together take under a minute on lavapipe).
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let both = std::thread::scope(|s| {
            let a = s.spawn(|| generate(SamplingOptions::greedy()));
            let b = s.spawn(|| generate(seeded()));
            (a.join(), b.join())
        });
        let _ = done.send(both);
    });
    let (a, b) = match result.recv_timeout(std::time::Duration::from_secs(600)) {
        Ok((Ok(a), Ok(b))) => (a, b),
        Ok(_) => panic!("a generating thread panicked"),
        Err(_) => panic!("two threads generating on one Llm did not finish in 10 minutes: deadlock?"),
    };
    assert_eq!(&a, greedy, "greedy generation beside another thread");
    assert_eq!(&b, sampled, "seeded sampling beside another thread");
}

// ---------------------------------------------------------------------------------------------
// Every `Error` variant, with its message.
// ---------------------------------------------------------------------------------------------

/// A GGUF file of `metadata` and zero-filled f32 `tensors` (name, dims innermost first).
fn gguf(metadata: &[(&str, Value)], tensors: &[(&str, &[u64])]) -> Vec<u8> {
    let tensors: Vec<(&str, &[u64], &[f32])> = tensors.iter().map(|&(name, dims)| (name, dims, &[][..])).collect();
    common::synthetic::gguf(metadata, &tensors)
}

/// Gemma 3 metadata for a tiny model (`arch` as the architecture).
fn gemma_metadata(arch: &str) -> Vec<(&'static str, Value<'_>)> {
    vec![
        ("general.architecture", Value::Str(arch)),
        ("gemma3.embedding_length", Value::U32(8)),
        ("gemma3.block_count", Value::U32(1)),
        ("gemma3.attention.head_count", Value::U32(2)),
        ("gemma3.attention.head_count_kv", Value::U32(1)),
        ("gemma3.attention.key_length", Value::U32(4)),
        ("gemma3.feed_forward_length", Value::U32(16)),
        ("gemma3.context_length", Value::U32(64)),
        ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("gemma3.attention.sliding_window", Value::U32(16)),
    ]
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load_decoder(path: &Path) -> Error {
    let file = GgufFile::open(path).unwrap();
    Decoder::load(&file, &Runtime::new().unwrap()).unwrap_err()
}

#[test]
fn loading_errors_name_the_file_and_the_field() {
    let dir = TempDir::new("reliability");

    // Io: the path and the operating system's words.
    let missing = dir.path().join("missing.gguf");
    let err = Llm::load(&missing).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if *path == missing), "{err:?}");
    assert_eq!(err.to_string(), format!("{}: No such file or directory (os error 2)", missing.display()));

    // Format: not GGUF at all.
    let text = write(&dir, "text.gguf", b"this is not a model file at all");
    let err = Llm::load(&text).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("{}: not a GGUF file", text.display())), "{err}");

    // Format: a dimension out of range names the key and the value.
    let mut metadata = gemma_metadata("gemma3");
    metadata[2] = ("gemma3.block_count", Value::U32(5000));
    let absurd = write(&dir, "absurd.gguf", &gguf(&metadata, &[("token_embd.weight", &[8, 32])]));
    let err = load_decoder(&absurd);
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("{}: `gemma3.block_count` is 5000; expected 1 to 1024", absurd.display()));

    // Unsupported: an architecture this crate does not implement.
    let gpt2 = write(&dir, "gpt2.gguf", &gguf(&gemma_metadata("gpt2"), &[("token_embd.weight", &[8, 32])]));
    let err = load_decoder(&gpt2);
    assert!(matches!(err, Error::Unsupported { what: "architecture", .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: unsupported architecture `gpt2` (supported: gemma3, llama, qwen2, qwen3, phi3)", gpt2.display())
    );

    // Weight: the embedding table alone; the first tensor loaded is named missing.
    let partial = write(&dir, "partial.gguf", &gguf(&gemma_metadata("gemma3"), &[("token_embd.weight", &[8, 32])]));
    let err = load_decoder(&partial);
    assert!(matches!(&err, Error::Weight { name, .. } if name == "blk.0.attn_norm.weight"), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: tensor `blk.0.attn_norm.weight`: missing from the file", partial.display())
    );
    // Weight: a wrong shape names the tensor and both shapes.
    let tensors: &[(&str, &[u64])] = &[("token_embd.weight", &[8, 32]), ("blk.0.attn_norm.weight", &[7])];
    let bad = write(&dir, "bad-shape.gguf", &gguf(&gemma_metadata("gemma3"), tensors));
    let err = load_decoder(&bad);
    assert!(matches!(&err, Error::Weight { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: tensor `blk.0.attn_norm.weight`: dims [7] (innermost first), expected [8]", bad.display())
    );
}

#[test]
fn tokenizer_errors_name_the_counts() {
    let parts = VocabParts { tokens: vec!["a".into()], scores: vec![0.0, 1.0], ..VocabParts::default() };
    let err = Vocab::new(parts).unwrap_err();
    assert!(matches!(err, Error::Tokenizer(_)), "{err:?}");
    assert_eq!(err.to_string(), "tokenizer: 2 scores for 1 tokens");
    let parts = VocabParts { tokens: vec!["a".into(), "b".into()], eos: Some(9), ..VocabParts::default() };
    assert_eq!(Vocab::new(parts).unwrap_err().to_string(), "tokenizer: eos token id 9 outside the vocabulary of 2");
}

#[test]
fn bad_requests_are_invalid_input() {
    let llm = llm();
    // Refused before any decode step: no need for `exclusive`.
    let err = llm.generate(&[], 4, SamplingOptions::greedy(), |_| {}).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert_eq!(err.to_string(), "invalid input: the prompt has no tokens (is --no-bos set on an empty prompt?)");

    let options = SamplingOptions { temperature: f32::NAN, ..SamplingOptions::default() };
    let err = llm.generate(&llm.tokenize(PROMPT, true), 4, options, |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "invalid input: temperature must be finite and >= 0, got NaN");
    let options = SamplingOptions { top_p: 1.5, ..SamplingOptions::default() };
    assert_eq!(Sampler::new(options).unwrap_err().to_string(), "invalid input: top-p must be in [0, 1], got 1.5");

    // A token id beyond the vocabulary: refused before the GPU would read past the table.
    let vocab = llm.decoder().config().vocab;
    let err = llm.generate(&[2, u32::MAX], 1, SamplingOptions::greedy(), |_| {}).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains(&format!("outside the vocabulary of {vocab}")), "{err}");
}

#[test]
fn engine_errors_pass_through_with_their_text() {
    let rt = Runtime::new().unwrap();
    // Logits of token ids (u32) rather than floats: the GPU top-k refuses them.
    let logits = Tensor::from_slice(&rt, [1, 4], &[1u32, 2, 3, 4]).unwrap();
    let err = Sampler::new(SamplingOptions::greedy()).unwrap().sample(&logits, &[]).unwrap_err();
    match &err {
        Error::Engine(inner) => {
            // Transparent: the engine's message, unchanged.
            assert_eq!(err.to_string(), inner.to_string());
            assert!(matches!(inner, metallic::Error::DTypeMismatch { op: "top_k", .. }), "{inner:?}");
            assert_eq!(err.to_string(), "dtype mismatch in top_k: expected f32, got u32");
        }
        other => panic!("expected Error::Engine, got {other:?}"),
    }
}
