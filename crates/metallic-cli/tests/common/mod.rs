//! Shared by the CLI tests: where the Gemma model lives.
#![allow(dead_code, clippy::expect_used)]

use std::path::PathBuf;

/// Gemma 3 270M Q4_K_M, fetched by `scripts/fetch-gemma.sh` (which `scripts/test.sh` runs), or
/// `METALLIC_GEMMA` / `METALLIC_MODELS`.
pub fn gemma() -> PathBuf {
    let root = std::env::var_os("METALLIC_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/metallic/models")
    });
    let path =
        std::env::var_os("METALLIC_GEMMA").map(PathBuf::from).unwrap_or_else(|| root.join("gemma3-270m-q4_k_m.gguf"));
    assert!(path.exists(), "run ./scripts/fetch-gemma.sh first ({} missing)", path.display());
    path
}
