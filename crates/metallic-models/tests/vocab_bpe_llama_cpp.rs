//! The byte-level BPE tokenizer (`tokenizer.ggml.model` = `gpt2`) against llama.cpp's own
//! tokenizer test data: every `ggml-vocab-*.gguf` with `.gguf.inp` / `.gguf.out` cases in
//! llama.cpp's `models/` folder, as vendored in the llama-cpp-python 0.3.36 sdist. The data is
//! not redistributed here: `scripts/fetch-llama-vocab.sh` fetches it into
//! `~/.cache/metallic/llama-vocab` (or `$METALLIC_MODELS_PARENT/llama-vocab`); `LLAMA_VOCAB_DIR`
//! names another folder holding the same files. Without it the test fails, saying so.
//!
//! Eleven BPE vocabularies have cases (command-r, deepseek-coder, deepseek-llm, falcon, gpt-2,
//! llama-bpe, mpt, qwen2, qwen35, refact, starcoder): 510 cases, every one matching.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;

use metallic_models::gguf::GgufFile;
use metallic_models::vocab::Vocab;

/// The BPE vocabularies with cases in llama-cpp-python 0.3.36's llama.cpp tree.
const EXPECTED_FILES: usize = 11;

fn vocab_dir() -> PathBuf {
    let dir = match std::env::var_os("LLAMA_VOCAB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let parent = std::env::var_os("METALLIC_MODELS_PARENT").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/metallic")
            });
            parent.join("llama-vocab")
        }
    };
    assert!(
        dir.join("ggml-vocab-gpt-2.gguf.inp").is_file(),
        "llama.cpp's tokenizer test data is not in {}: run scripts/fetch-llama-vocab.sh (it downloads the \
         llama-cpp-python 0.3.36 sdist from PyPI and extracts models/ggml-vocab-* there), or set \
         LLAMA_VOCAB_DIR to a folder holding llama.cpp's models/ggml-vocab-*.gguf{{,.inp,.out}} files",
        dir.display()
    );
    dir
}

#[test]
fn bpe_vocabularies_match_llama_cpp_test_data() {
    let dir = vocab_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf") && p.with_extension("gguf.inp").is_file())
        .collect();
    paths.sort();
    let (mut files, mut cases, mut failures) = (0, 0, Vec::new());
    for path in paths {
        let file = GgufFile::open(&path).unwrap();
        if file.get_str("tokenizer.ggml.model").unwrap() != "gpt2" {
            continue;
        }
        let vocab = Vocab::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let inputs = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
        let outputs = std::fs::read_to_string(path.with_extension("gguf.out")).unwrap();
        let (texts, lines): (Vec<&str>, Vec<&str>) =
            (inputs.split("\n__ggml_vocab_test__\n").collect(), outputs.lines().collect());
        assert!(texts.len() >= lines.len(), "{}: {} cases, {} answers", path.display(), texts.len(), lines.len());
        // llama.cpp's test tokenizes with add_special = false, parse_special = false.
        for (text, ids) in texts.iter().zip(&lines) {
            let want: Vec<u32> = ids.split_whitespace().map(|x| x.parse().unwrap()).collect();
            let got = vocab.encode(text, false, false);
            if got != want {
                failures.push(format!("{}: {text:?}\n  got  {got:?}\n  want {want:?}", path.display()));
            }
            cases += 1;
        }
        files += 1;
    }
    eprintln!("{files} BPE vocabularies, {cases} cases, {} mismatches", failures.len());
    assert!(failures.is_empty(), "{} of {cases} cases differ:\n{}", failures.len(), failures.join("\n"));
    assert!(files >= EXPECTED_FILES, "only {files} BPE vocabularies with test data in {}", dir.display());
}

/// Decoding gives the text back (every byte has a token in these vocabularies), all at once
/// and streamed.
#[test]
fn bpe_vocabularies_decode_what_they_encode() {
    let dir = vocab_dir();
    for name in ["llama-bpe", "qwen2", "deepseek-llm", "command-r"] {
        let path = dir.join(format!("ggml-vocab-{name}.gguf"));
        let vocab = Vocab::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        let inputs = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
        for text in inputs.split("\n__ggml_vocab_test__\n") {
            let ids = vocab.encode(text, false, false);
            assert_eq!(vocab.decode(&ids), text, "{name}");
            let mut stream = metallic_models::vocab::StreamDecoder::new();
            let mut streamed: String = ids.iter().map(|&id| stream.push(&vocab, id)).collect();
            streamed.push_str(&stream.finish());
            assert_eq!(streamed, text, "{name}");
        }
    }
}

/// 100 kB in well under a second per vocabulary: mixed text (llama.cpp's cases, repeated) and
/// single runs that make one huge piece (letters, CJK, spaces, digits), through the
/// hand-written splitters and the regular-expression ones (deepseek-llm: six expressions).
#[test]
fn bpe_encodes_100_kb_quickly() {
    let dir = vocab_dir();
    let cases = std::fs::read_to_string(dir.join("ggml-vocab-llama-bpe.gguf.inp")).unwrap();
    let cases = cases.replace("\n__ggml_vocab_test__\n", " ");
    let mixed = cases.repeat(100_000 / cases.len() + 1);
    let texts = [mixed, "a".repeat(100_000), "\u{4e2d}".repeat(34_000), " ".repeat(100_000), "7".repeat(100_000)];
    for name in ["llama-bpe", "qwen2", "deepseek-llm", "falcon", "starcoder"] {
        let vocab = Vocab::from_gguf(&GgufFile::open(dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap()).unwrap();
        for text in &texts {
            let start = std::time::Instant::now();
            let ids = vocab.encode(text, false, false);
            let took = start.elapsed();
            let head: String = text.chars().take(8).collect();
            eprintln!("{name}: {} bytes ({head:?}...) -> {} tokens in {took:?}", text.len(), ids.len());
            assert!(took.as_secs_f64() < 1.0, "{name}: {} bytes ({head:?}...) took {took:?}", text.len());
        }
    }
}
