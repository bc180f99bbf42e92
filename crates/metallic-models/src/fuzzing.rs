//! The bodies of the fuzz targets (`fuzz/`), here so that the normal test suite replays every
//! seed and every input a fuzzer ever crashed on (`tests/fuzz_inputs.rs`) through exactly the
//! code the fuzzers run. Each takes arbitrary bytes and returns `Err` only for a broken
//! invariant (the fuzz target then panics, which libFuzzer reports); a panic inside is a bug.

use std::path::Path;

use crate::bert::BertConfig;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::decoder::DecoderConfig;
use crate::gguf::GgufFile;
use crate::vocab::{StreamDecoder, Vocab};
use crate::weights::SafetensorsFile;

/// A broken invariant, described.
pub type Finding = Result<(), String>;

fn check(ok: bool, what: impl FnOnce() -> String) -> Finding {
    if ok { Ok(()) } else { Err(what()) }
}

/// The GGUF reader on `data`, then everything built from a file it accepts.
pub fn gguf(data: &[u8]) -> Finding {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else { return Ok(()) };
    for (key, value) in file.metadata() {
        std::hint::black_box((key.len(), value.type_name(), value.as_integer()));
    }
    for tensor in file.tensors() {
        let bytes = file.tensor_data(tensor);
        check(bytes.len() == tensor.size_bytes(), || format!("{}: data length {}", tensor.name(), bytes.len()))?;
        std::hint::black_box((tensor.dims(), tensor.elements(), tensor.shape()));
    }
    let _ = DecoderConfig::from_gguf(&file);
    if let Ok(vocab) = Vocab::from_gguf(&file) {
        let ids = vocab.encode("Hello <start_of_turn>user\n w\u{f6}rld \u{4f60}\u{597d} \u{1f389}", true, true);
        std::hint::black_box(vocab.decode(&ids));
    }
    if let Ok(Some((template, _))) = ChatTemplate::from_gguf(&file) {
        let _ = template.render(&[ChatMessage::new("user", "hi")], "<bos>", "<eos>", true);
    }
    Ok(())
}

/// `vocab` on `data`: the first byte picks the mode. Even: the rest as text, encoded with BOS
/// (bit 1) and special-token parsing (bit 2); without either it must decode back to itself
/// (with U+2581, SentencePiece's space mark, read as a space).
/// Odd: the rest as little-endian u32 ids (some past the vocabulary), decoded at once and
/// streamed, which must agree.
pub fn tokenizer(vocab: &Vocab, data: &[u8]) -> Finding {
    let Some((&mode, rest)) = data.split_first() else { return Ok(()) };
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        let ids = vocab.encode(&text, mode & 2 != 0, mode & 4 != 0);
        check(ids.iter().all(|&id| (id as usize) < vocab.len()), || format!("an id outside the vocabulary: {ids:?}"))?;
        if mode & 6 == 0 {
            // SentencePiece writes spaces as U+2581 and decodes U+2581 as a space, so a literal
            // U+2581 comes back as a space (llama.cpp's round trip does the same).
            let back = vocab.decode(&ids);
            let want = text.replace('\u{2581}', " ");
            check(back == want, || format!("decode(encode({text:?})) is {back:?}"))?;
        }
    } else {
        let bound = u32::try_from(vocab.len()).unwrap_or(u32::MAX).saturating_add(16);
        let ids: Vec<u32> =
            rest.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()) % bound).collect();
        let whole = vocab.decode(&ids);
        let mut stream = StreamDecoder::new();
        let mut streamed: String = ids.iter().map(|&id| stream.push(vocab, id)).collect();
        streamed.push_str(&stream.finish());
        check(streamed == whole, || format!("streamed decoding {streamed:?} differs from {whole:?}"))?;
    }
    Ok(())
}

/// A template (the bytes before the first NUL) and messages (the rest, split at NULs)
/// rendered as Jinja, and the messages through the Gemma fallback: text or an error, within
/// the template fuel.
pub fn chat_template(data: &[u8]) -> Finding {
    let mut parts = data.split(|&b| b == 0);
    let template = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let messages: Vec<ChatMessage> = parts
        .take(8)
        .enumerate()
        .map(|(i, p)| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, &String::from_utf8_lossy(p)))
        .collect();
    let _ = ChatTemplate::Jinja(template).render(&messages, "<bos>", "<eos>", true);
    let _ = ChatTemplate::Gemma.render(&messages, "<bos>", "<eos>", true);
    Ok(())
}

/// A `config.json` (the bytes before the first NUL) and a safetensors image (the rest), every
/// tensor it accepts read as f32.
pub fn safetensors(data: &[u8]) -> Finding {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (json, rest) = data.split_at(split);
    let _ = BertConfig::from_json(&String::from_utf8_lossy(json), Path::new("config.json"));
    let Ok(file) = SafetensorsFile::from_bytes(rest.get(1..).unwrap_or_default().to_vec()) else { return Ok(()) };
    for name in file.names() {
        let Ok(shape) = file.shape(&name).map(<[usize]>::to_vec) else { continue };
        if let Ok(values) = file.read_f32(&name, &shape) {
            let want: usize = shape.iter().product();
            check(values.len() == want, || format!("{name}: {} values for shape {shape:?}", values.len()))?;
        }
    }
    Ok(())
}
