//! Gemma 3 270M (Q4_K_M GGUF) against llama.cpp (fixtures made by its server,
//! make_fixtures.py) and against an exact float64 NumPy forward pass (exact_reference.py):
//! tokenization identical to llama.cpp; the first greedy token identical to llama.cpp's on
//! every prompt; first-token probabilities within 0.005 of the exact computation (llama.cpp's
//! own CPU arithmetic — 8-bit activations, f16 cache — is up to 0.13 away from it on some
//! prompts, so its figures are the wrong yardstick at 0.02); greedy continuations identical to
//! llama.cpp's up to the first step where its two best tokens are within 0.05.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use metallic::Runtime;
use metallic_models::decoder::Decoder;
use metallic_models::gguf::GgufFile;
use metallic_models::vocab::Vocab;
use serde::Deserialize;

fn model_path() -> PathBuf {
    let path = match std::env::var_os("METALLIC_GEMMA") {
        Some(p) => PathBuf::from(p),
        None => {
            let root = std::env::var_os("METALLIC_MODELS").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/metallic/models")
            });
            root.join("gemma3-270m-q4_k_m.gguf")
        }
    };
    assert!(path.exists(), "{} not found: run ./scripts/fetch-gemma.sh (or set METALLIC_GEMMA)", path.display());
    path
}

struct Model {
    vocab: Vocab,
    decoder: Decoder,
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let file = GgufFile::open(model_path()).unwrap();
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

#[test]
fn greedy_continuations_match_llama_cpp_up_to_near_ties() {
    let c: Completions = fixture("completions.json");
    let m = model();
    // Decoding is slow on a CPU Vulkan adapter: three prompts.
    for case in c.completions.iter().filter(|c| ["capital", "python_def", "counting"].contains(&c.name.as_str())) {
        // Compare until llama.cpp's two best tokens are within 0.05 (where rounding decides).
        let firm = case
            .steps_top_probs
            .iter()
            .take_while(|p| p.first().zip(p.get(1)).is_none_or(|(a, b)| a - b >= 0.05))
            .count()
            .min(case.tokens.len());
        assert!(firm >= 4, "{}: too few firm steps ({firm}) to test anything", case.name);
        let mut cache = m.decoder.new_cache(case.prompt_ids.len() + firm).unwrap();
        let mut logits = m.decoder.forward(&case.prompt_ids, &mut cache).unwrap();
        let mut got = Vec::with_capacity(firm);
        for i in 0..firm {
            let next = logits.argmax().unwrap().to_vec::<u32>().unwrap()[0];
            got.push(next);
            if i + 1 < firm {
                logits = m.decoder.forward(&[next], &mut cache).unwrap();
            }
        }
        assert_eq!(got, case.tokens[..firm], "{}: the first {firm} greedy tokens", case.name);
    }
}
