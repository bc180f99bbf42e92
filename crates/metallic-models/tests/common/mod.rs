//! Shared by the model tests: where the real model lives, the sentence-transformers
//! reference, and throw-away model directories.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod synthetic;

/// The models directory: `METALLIC_MODELS`, else `~/.cache/metallic/models`.
fn models_root() -> PathBuf {
    std::env::var_os("METALLIC_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/metallic/models"))
}

/// Gemma 3 270M Q4_K_M, fetched by `scripts/fetch-gemma.sh` (which `scripts/test.sh` runs), or
/// `METALLIC_GEMMA`.
pub fn gemma_path() -> PathBuf {
    let path = std::env::var_os("METALLIC_GEMMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| models_root().join("gemma3-270m-q4_k_m.gguf"));
    assert!(path.exists(), "{} not found: run ./scripts/fetch-gemma.sh (or set METALLIC_GEMMA)", path.display());
    path
}

/// The greedy choice as llama.cpp's fixtures made it (`ignore_eos`: end-of-generation tokens
/// biased to -inf): the best candidate that is not an end token.
pub fn greedy_ignoring_eos(candidates: &[u32], end_tokens: &[u32]) -> u32 {
    candidates.iter().copied().find(|id| !end_tokens.contains(id)).unwrap_or(u32::MAX)
}

/// A GGUF file in the models directory, fetched by `script` (which `scripts/test.sh` runs).
pub fn model_file(name: &str, script: &str) -> PathBuf {
    let path = models_root().join(name);
    assert!(path.exists(), "{} not found: run ./scripts/{script}", path.display());
    path
}

/// all-MiniLM-L6-v2, fetched by `scripts/fetch-model.sh` (which `scripts/test.sh` runs).
pub fn minilm_dir() -> PathBuf {
    let dir = match std::env::var_os("METALLIC_MINILM") {
        Some(dir) => PathBuf::from(dir),
        None => models_root().join("all-MiniLM-L6-v2"),
    };
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 not found at {}: run ./scripts/fetch-model.sh (or set METALLIC_MINILM)",
        dir.display()
    );
    dir
}

#[derive(Deserialize)]
pub struct Reference {
    pub max_seq_length: usize,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub text: String,
    pub ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

/// Token ids and embeddings computed by sentence-transformers itself (see make_reference.py).
pub fn reference() -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("metallic-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
