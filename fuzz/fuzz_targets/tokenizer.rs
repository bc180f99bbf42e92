//! The GGUF tokenizer (Gemma 3's 262k-token vocabulary, read from the model file once) on
//! arbitrary text and arbitrary id sequences. Text without special-token parsing must decode
//! back to itself (the vocabulary has byte fallback and no normalisation); streaming decode
//! must give the same text as decoding at once.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metallic_models::gguf::GgufFile;
use metallic_models::vocab::{StreamDecoder, Vocab};

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
    let vocab = vocab();
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        let ids = vocab.encode(&text, mode & 2 != 0, mode & 4 != 0);
        assert!(ids.iter().all(|&id| (id as usize) < vocab.len()), "an id outside the vocabulary");
        if mode & 6 == 0 {
            assert_eq!(vocab.decode(&ids), text, "decode(encode(text)) is not the text");
        }
    } else {
        // Ids, in range or not.
        let ids: Vec<u32> =
            rest.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % (vocab.len() as u32 + 16)).collect();
        let whole = vocab.decode(&ids);
        let mut stream = StreamDecoder::new();
        let mut streamed: String = ids.iter().map(|&id| stream.push(vocab, id)).collect();
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, whole, "streamed decoding differs from decoding at once");
    }
});
