//! Gemma 3 270M (Q4_K_M GGUF) against llama.cpp (fixtures made by its server,
//! make_fixtures.py) and against an exact float64 NumPy forward pass (exact_reference.py):
//! tokenization identical to llama.cpp; the first greedy token identical to llama.cpp's on
//! every prompt; first-token probabilities within 0.005 of the exact computation (llama.cpp's
//! own CPU arithmetic — 8-bit activations, f16 cache — is up to 0.13 away from it on some
//! prompts, so its figures are the wrong yardstick at 0.02); greedy continuations identical to
//! llama.cpp's up to the first step where its two best tokens are within 0.05.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::sync::OnceLock;

use metallic::Runtime;
use metallic_models::decoder::Decoder;
use metallic_models::gguf::GgufFile;
use metallic_models::vocab::Vocab;
use serde::Deserialize;

struct Model {
    vocab: Vocab,
    decoder: Decoder,
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let file = GgufFile::open(common::gemma_path()).unwrap();
        let rt = Runtime::new().unwrap();
        Model { vocab: Vocab::from_gguf(&file).unwrap(), decoder: Decoder::load(&file, &rt).unwrap() }
    })
}

fn fixture<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[derive(Deserialize)]
struct Tokenize {
    texts: Vec<TextCase>,
    detokenize: Vec<Detokenize>,
}

#[derive(Deserialize)]
struct TextCase {
    name: String,
    text: String,
    ids_with_bos: Vec<u32>,
    ids_no_bos: Vec<u32>,
}

#[derive(Deserialize)]
struct Detokenize {
    name: String,
    ids: Vec<u32>,
    text: String,
}

#[derive(Deserialize)]
struct Completions {
    completions: Vec<Completion>,
}

#[derive(Deserialize)]
struct Completion {
    name: String,
    prompt: String,
    prompt_ids: Vec<u32>,
    tokens: Vec<u32>,
    first_token_top: Vec<Candidate>,
    steps_top_probs: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Candidate {
    id: u32,
    prob: f64,
}

#[derive(Deserialize)]
struct Exact {
    cases: Vec<ExactCase>,
}

#[derive(Deserialize)]
struct ExactCase {
    name: String,
    llama_top5: Vec<Candidate>,
}

#[test]
fn tokenization_matches_llama_cpp() {
    let t: Tokenize = fixture("tokenize.json");
    let vocab = &model().vocab;
    for case in &t.texts {
        assert_eq!(vocab.encode(&case.text, true, true), case.ids_with_bos, "{} (with BOS)", case.name);
        assert_eq!(vocab.encode(&case.text, false, true), case.ids_no_bos, "{} (no BOS)", case.name);
    }
    for case in &t.detokenize {
        let bytes: Vec<u8> = case.ids.iter().flat_map(|&id| vocab.piece(id, true)).collect();
        assert_eq!(String::from_utf8_lossy(&bytes), case.text, "{}", case.name);
    }
}

#[test]
fn first_tokens_match_llama_cpp_and_probabilities_the_exact_computation() {
    let c: Completions = fixture("completions.json");
    let exact: Exact = fixture("exact_reference.json");
    let m = model();
    let (mut worst_exact, mut worst_llama): (f64, f64) = (0.0, 0.0);
    for (case, reference) in c.completions.iter().zip(&exact.cases) {
        assert_eq!(case.name, reference.name);
        assert_eq!(m.vocab.encode(&case.prompt, true, true), case.prompt_ids, "{}: prompt ids", case.name);
        let mut cache = m.decoder.new_cache(case.prompt_ids.len()).unwrap();
        let logits = m.decoder.forward(&case.prompt_ids, &mut cache).unwrap();
        let first = logits.argmax().unwrap().to_vec::<u32>().unwrap()[0];
        assert_eq!(first, case.tokens[0], "{}: first greedy token", case.name);
        let probs = logits.softmax().unwrap().to_vec_f32().unwrap();
        for (exact, llama) in reference.llama_top5.iter().zip(&case.first_token_top) {
            let ours = f64::from(probs[exact.id as usize]);
            let diff = (ours - exact.prob).abs();
            assert!(diff <= 0.005, "{}: token {} probability {ours} vs exact {}", case.name, exact.id, exact.prob);
            worst_exact = worst_exact.max(diff);
            worst_llama = worst_llama.max((ours - llama.prob).abs());
        }
    }
    eprintln!(
        "top-5 probabilities: largest difference {worst_exact:.5} from the exact computation, {worst_llama:.4} from llama.cpp"
    );
}

/// The first step where llama.cpp's two best tokens are within `margin` of each other, if any.
fn first_near_tie(case: &Completion, margin: f64) -> Option<usize> {
    case.steps_top_probs.iter().position(|p| p.first().zip(p.get(1)).is_some_and(|(a, b)| a - b < margin))
}

#[derive(Deserialize)]
struct ExactContinuations {
    cases: Vec<ExactContinuation>,
}

#[derive(Deserialize)]
struct ExactContinuation {
    name: String,
    steps: Vec<ExactStep>,
}

#[derive(Deserialize)]
struct ExactStep {
    argmax: u32,
    top2: [f64; 2],
}

/// Every prompt's 32-token greedy continuation, checked in one pass per prompt: the prompt and
/// llama.cpp's continuation go in together, and each position's choice (the argmax, end tokens
/// excluded as llama.cpp's `ignore_eos` does) is compared with llama.cpp's next token — they
/// agree at every step exactly when greedy decoding with our arithmetic reproduces the
/// continuation. Where a choice differs, the exact float64 computation along the same tokens
/// (exact_continuations.json) must pick ours, or be a near-tie itself (top two within 0.01):
/// llama.cpp's own arithmetic (8-bit activations in its quantized matmuls, f16 KV cache) moves
/// probabilities by up to 0.13 and flips such close calls. At least two thirds of the prompts
/// must match llama.cpp throughout.
#[test]
fn greedy_continuations_match_llama_cpp_or_the_exact_computation() {
    let c: Completions = fixture("completions.json");
    let exact: ExactContinuations = fixture("exact_continuations.json");
    let m = model();
    let ends = m.vocab.end_tokens();
    let mut identical = 0;
    let mut report = Vec::new();
    for case in &c.completions {
        let exact = exact.cases.iter().find(|e| e.name == case.name).expect("an exact reference per prompt");
        let n = case.tokens.len();
        let mut ids = case.prompt_ids.clone();
        ids.extend(&case.tokens[..n - 1]);
        let mut cache = m.decoder.new_cache(ids.len()).unwrap();
        let rows = m.decoder.forward_last(&ids, n, &mut cache).unwrap();
        let (_, top) = rows.top_k(1 + ends.len()).unwrap();
        let top = top.to_vec::<u32>().unwrap();
        let chosen: Vec<u32> = top.chunks(1 + ends.len()).map(|c| common::greedy_ignoring_eos(c, ends)).collect();
        let Some(step) = chosen.iter().zip(&case.tokens).position(|(a, b)| a != b) else {
            identical += 1;
            continue;
        };
        let e = &exact.steps[step];
        let margin = e.top2[0] - e.top2[1];
        report.push(format!(
            "{} step {step}: ours {} llama.cpp {} exact argmax {} (exact top-2 margin {margin:.4})",
            case.name, chosen[step], case.tokens[step], e.argmax
        ));
        assert!(
            e.argmax == chosen[step] || margin < 0.01,
            "{}: at step {step} we choose {}, llama.cpp {}, the exact computation {} (margin {margin})",
            case.name,
            chosen[step],
            case.tokens[step],
            e.argmax
        );
    }
    let total = c.completions.len();
    eprintln!("greedy continuations: {identical} of {total} identical to llama.cpp; the others: {report:#?}");
    assert!(identical * 3 >= total * 2, "{identical} of {total} continuations identical: {report:#?}");
}

/// Decoding step by step (the KV-cached path, with llama.cpp's `ignore_eos`) gives llama.cpp's
/// greedy tokens up to the first near-tie in its probabilities: three prompts on a CPU Vulkan
/// adapter, where a step takes seconds; every prompt with `METALLIC_FULL_DECODE=1` (a GPU run),
/// reporting where decoding departs from llama.cpp.
#[test]
fn greedy_decoding_matches_llama_cpp_up_to_near_ties() {
    let c: Completions = fixture("completions.json");
    let m = model();
    let ends = m.vocab.end_tokens();
    let full = std::env::var_os("METALLIC_FULL_DECODE").is_some();
    let mut identical = 0;
    let cases: Vec<&Completion> = c
        .completions
        .iter()
        .filter(|c| full || ["capital", "python_def", "counting"].contains(&c.name.as_str()))
        .collect();
    for case in &cases {
        // Compare until llama.cpp's two best tokens are within 0.05 (where rounding decides).
        let firm = first_near_tie(case, 0.05).unwrap_or(case.tokens.len()).min(case.tokens.len());
        let steps = if full { case.tokens.len() } else { firm };
        assert!(full || firm >= 4, "{}: too few firm steps ({firm}) to test anything", case.name);
        let mut cache = m.decoder.new_cache(case.prompt_ids.len() + steps).unwrap();
        let mut logits = m.decoder.forward(&case.prompt_ids, &mut cache).unwrap();
        let mut got = Vec::with_capacity(steps);
        for i in 0..steps {
            let (_, top) = logits.top_k(1 + ends.len()).unwrap();
            let next = common::greedy_ignoring_eos(&top.to_vec::<u32>().unwrap(), ends);
            got.push(next);
            if i + 1 < steps {
                logits = m.decoder.forward(&[next], &mut cache).unwrap();
            }
        }
        assert_eq!(got[..firm], case.tokens[..firm], "{}: the first {firm} greedy tokens", case.name);
        match got.iter().zip(&case.tokens).position(|(a, b)| a != b) {
            None => identical += 1,
            Some(step) => {
                let p = &case.steps_top_probs[step];
                eprintln!(
                    "{}: decoding departs at step {step} (llama.cpp's top two: {:.3}, {:.3})",
                    case.name, p[0], p[1]
                );
            }
        }
    }
    eprintln!("step-by-step greedy decoding: {identical} of {} prompts identical to llama.cpp", cases.len());
}

/// A model that cannot fit in what the runtime may allocate fails before uploading anything,
/// and says how much it needs.
#[test]
fn a_model_larger_than_the_pool_fails_before_uploading() {
    let ctx = metallic::Context::new().unwrap();
    let pool = metallic::MemoryPool::new(&ctx, metallic::PoolConfig { limit_bytes: 64 << 20, ..Default::default() });
    let rt = Runtime::from_parts(metallic::ResourceCache::new(&ctx), pool.clone()).unwrap();
    let file = GgufFile::open(common::gemma_path()).unwrap();
    let err = Decoder::load(&file, &rt).unwrap_err().to_string();
    assert!(err.contains("the weights need 2") && err.contains("limit 64 MiB"), "{err}");
    assert_eq!(pool.stats().used_bytes, 0, "nothing uploaded");
}
