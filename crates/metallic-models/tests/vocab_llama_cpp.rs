//! The SentencePiece tokenizer against llama.cpp's own tokenizer test data: every
//! `ggml-vocab-*.gguf` whose `tokenizer.ggml.model` is `llama` with `.gguf.inp` / `.gguf.out`
//! cases, from llama.cpp's `models/` folder as vendored in the llama-cpp-python 0.3.36 sdist.
//! `scripts/fetch-llama-vocab.sh` fetches it (see `tests/vocab_bpe_llama_cpp.rs`, which checks
//! the BPE vocabularies of the same folder); without it the test fails, saying so. On
//! ggml-vocab-llama-spm.gguf all 46 cases match.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

use metallic_models::gguf::GgufFile;
use metallic_models::vocab::Vocab;

fn vocab_dir() -> PathBuf {
    let dir = match std::env::var_os("LLAMA_VOCAB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("METALLIC_MODELS_PARENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/metallic")
            })
            .join("llama-vocab"),
    };
    assert!(
        dir.join("ggml-vocab-llama-spm.gguf.inp").is_file(),
        "llama.cpp's tokenizer test data is not in {}: run scripts/fetch-llama-vocab.sh, or set LLAMA_VOCAB_DIR",
        dir.display()
    );
    dir
}

#[test]
fn sentencepiece_vocabularies_match_llama_cpp_test_data() {
    let mut checked = 0;
    for entry in std::fs::read_dir(vocab_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "gguf") || !path.with_extension("gguf.inp").exists() {
            continue;
        }
        let file = GgufFile::open(&path).unwrap();
        if file.get_str("tokenizer.ggml.model").unwrap() != "llama" {
            continue;
        }
        let vocab = Vocab::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let inputs = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
        let outputs = std::fs::read_to_string(path.with_extension("gguf.out")).unwrap();
        // llama.cpp's test tokenizes with add_special = false, parse_special = false.
        for (text, ids) in inputs.split("\n__ggml_vocab_test__\n").zip(outputs.lines()) {
            let want: Vec<u32> = ids.split_whitespace().map(|x| x.parse().unwrap()).collect();
            assert_eq!(vocab.encode(text, false, false), want, "{}: {text:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 46, "only {checked} SentencePiece cases found");
}
