//! Every fuzz seed (`fuzz/seeds/<target>/`) and every input a fuzzer found a bug with
//! (`tests/fuzz_regressions/<target>/`) through the fuzz targets' own code
//! (`metallic_models::fuzzing`): what the fuzzers found stays fixed, in the normal suite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};

use metallic_models::fuzzing::{self, Finding};
use metallic_models::gguf::GgufFile;
use metallic_models::vocab::Vocab;

/// The inputs of `target`: seeds and regressions, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = [manifest.join("../../fuzz/seeds").join(target), manifest.join("tests/fuzz_regressions").join(target)];
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: impl Fn(&[u8]) -> Finding) {
    let files = inputs(target);
    assert!(files.len() >= 4, "{target}: only {} inputs (is fuzz/seeds there?)", files.len());
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if let Err(finding) = run(&data) {
            panic!("{}: {finding}", path.display());
        }
    }
}

#[test]
fn gguf_inputs() {
    replay("gguf", fuzzing::gguf);
}

#[test]
fn chat_template_inputs() {
    replay("chat_template", fuzzing::chat_template);
}

#[test]
fn special_tokens_inputs() {
    replay("special_tokens", fuzzing::special_tokens);
}

#[test]
fn safetensors_inputs() {
    replay("safetensors", fuzzing::safetensors);
}

#[test]
fn tokenizer_inputs() {
    let path = common::gemma_path();
    let vocab = Vocab::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    replay("tokenizer", |data| fuzzing::tokenizer(&vocab, data));
}
