//! Gemma 3's tokenizer (read from the model file once) on arbitrary text and ids
//! (`metallic_models::fuzzing::tokenizer`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metallic_models::gguf::GgufFile;
use metallic_models::vocab::Vocab;

fn vocab() -> &'static Vocab {
    static VOCAB: OnceLock<Vocab> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let path = std::env::var_os("METALLIC_GEMMA").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/metallic/models/gemma3-270m-q4_k_m.gguf")
        });
        let file = GgufFile::open(&path)
            .unwrap_or_else(|e| panic!("{e}: run ./scripts/fetch-gemma.sh (or set METALLIC_GEMMA)"));
        Vocab::from_gguf(&file).unwrap_or_else(|e| panic!("{e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = metallic_models::fuzzing::tokenizer(vocab(), data) {
        panic!("{finding}");
    }
});
