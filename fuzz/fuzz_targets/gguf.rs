//! The GGUF reader on arbitrary bytes, then everything built from a file it accepts: metadata
//! and tensor views, the decoder configuration, the vocabulary (and a short encode / decode),
//! the chat template.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metallic_models::chat::{ChatMessage, ChatTemplate};
use metallic_models::decoder::DecoderConfig;
use metallic_models::gguf::GgufFile;
use metallic_models::vocab::Vocab;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else { return };
    for (key, value) in file.metadata() {
        std::hint::black_box((key.len(), value.type_name(), value.as_integer()));
    }
    for tensor in file.tensors() {
        let bytes = file.tensor_data(tensor);
        assert_eq!(bytes.len(), tensor.size_bytes(), "{}: data length", tensor.name());
        std::hint::black_box((tensor.dims(), tensor.elements(), tensor.shape()));
    }
    let _ = DecoderConfig::from_gguf(&file);
    if let Ok(vocab) = Vocab::from_gguf(&file) {
        let ids = vocab.encode("Hello <start_of_turn>user\n wörld 你好 🎉", true, true);
        std::hint::black_box(vocab.decode(&ids));
    }
    if let Ok(Some((template, _))) = ChatTemplate::from_gguf(&file) {
        let _ = template.render(&[ChatMessage::new("user", "hi")], "<bos>", "<eos>", true);
    }
});
