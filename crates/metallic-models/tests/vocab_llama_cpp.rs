//! Opt-in (`cargo test -- --ignored`): the SentencePiece tokenizer against llama.cpp's own
//! tokenizer test data (`models/ggml-vocab-*.gguf` with `.inp` / `.out` in a llama.cpp source
//! tree, e.g. the one vendored in the `llama-cpp-python` sdist), which is not redistributed
//! here. Set `LLAMA_CPP_DIR` to the tree. On ggml-vocab-llama-spm.gguf all 46 cases match.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use metallic_models::gguf::GgufFile;
use metallic_models::vocab::Vocab;

#[test]
#[ignore = "needs a llama.cpp source tree in LLAMA_CPP_DIR"]
fn sentencepiece_vocabularies_match_llama_cpp_test_data() {
    let root = std::env::var("LLAMA_CPP_DIR").expect("set LLAMA_CPP_DIR to a llama.cpp source tree");
    let models = std::path::Path::new(&root).join("models");
    let mut checked = 0;
    for entry in std::fs::read_dir(&models).unwrap() {
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
    assert!(checked > 0, "no SentencePiece vocabulary with test data under {}", models.display());
}
