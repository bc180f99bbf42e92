//! The bodies of the fuzz targets (`fuzz/`), here so that the normal test suite replays every
//! seed and every input a fuzzer ever crashed on (`tests/fuzz_inputs.rs`) through exactly the
//! code the fuzzers run. Each takes arbitrary bytes and returns `Err` only for a broken
//! invariant (the fuzz target then panics, which libFuzzer reports); a panic inside is a bug.

use std::path::Path;

use crate::bert::BertConfig;
use crate::chat::{ChatMessage, ChatTemplate, output_limit};
use crate::decoder::DecoderConfig;
use crate::gguf::GgufFile;
use crate::vocab::{StreamDecoder, TokenKind, Vocab, VocabParts};
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
/// the template fuel, and text no longer than `chat::output_limit` (the fuzzer's malloc and
/// RSS limits catch what is allocated on the way).
pub fn chat_template(data: &[u8]) -> Finding {
    let mut parts = data.split(|&b| b == 0);
    let template = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let messages: Vec<ChatMessage> = parts
        .take(8)
        .enumerate()
        .map(|(i, p)| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, &String::from_utf8_lossy(p)))
        .collect();
    let limit = output_limit(&messages);
    if let Ok(text) = ChatTemplate::Jinja(template).render(&messages, "<bos>", "<eos>", true) {
        check(text.len() <= limit, || format!("{} bytes rendered, over the limit of {limit}", text.len()))?;
    }
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

/// llama.cpp's special-token partition as this crate had it before the automaton: one special
/// token at a time, longest first (a stable sort, so lower ids first among equal lengths), each
/// split out of the text pieces left at every occurrence, left to right. The text pieces are
/// then encoded on their own (they hold no special string any more).
pub fn reference_encode(v: &Vocab, text: &str, parse_special: bool) -> Vec<u32> {
    enum Piece<'t> {
        Text(&'t str),
        Token(u32),
    }
    let mut specials: Vec<u32> = (0..v.len() as u32)
        .filter(|&id| match v.kind(id) {
            Some(TokenKind::UserDefined) => true,
            Some(TokenKind::Control | TokenKind::Unknown) => parse_special,
            _ => false,
        })
        .filter(|&id| !v.text(id).unwrap_or_default().is_empty())
        .collect();
    specials.sort_by_key(|&id| std::cmp::Reverse(v.text(id).unwrap_or_default().len()));
    let mut pieces = if text.is_empty() { Vec::new() } else { vec![Piece::Text(text)] };
    for id in specials {
        let needle = v.text(id).unwrap_or_default();
        let mut next = Vec::new();
        for piece in pieces {
            let Piece::Text(mut rest) = piece else {
                next.push(piece);
                continue;
            };
            while let Some(at) = rest.find(needle) {
                if at > 0 {
                    next.push(Piece::Text(&rest[..at]));
                }
                next.push(Piece::Token(id));
                rest = &rest[at + needle.len()..];
            }
            if !rest.is_empty() {
                next.push(Piece::Text(rest));
            }
        }
        pieces = next;
    }
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Token(id) => out.push(id),
            Piece::Text(t) => out.extend(v.encode(t, false, false)),
        }
    }
    out
}

/// Characters texts and special tokens are made of in [`special_tokens`]: few, so special
/// strings overlap and occur often.
const ALPHABET: [&str; 7] = ["a", "b", "<", ">", "\u{e9}", " ", "\u{2581}"];

/// A vocabulary the input describes, then a text through it, with and without special-token
/// parsing: the ids must be the one-at-a-time reference's ([`reference_encode`]) and inside the
/// vocabulary. Byte 0: flags (bit 0: the 256 byte tokens; bit 1: a space prefix); byte 1: the
/// number of special tokens (up to 15), each a kind byte (unknown, control or user-defined), a
/// length byte (1 to 6) and that many characters; byte 2: `2^(b % 13)` generated control tokens
/// `<ctlN>` on top; the rest is the text, one character per byte.
pub fn special_tokens(data: &[u8]) -> Finding {
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let (flags, count) = (next(), next() % 16);
    let char_of = |b: u8| ALPHABET.get(usize::from(b) % ALPHABET.len()).copied().unwrap_or("a");
    let mut entries: Vec<(String, f32, i32)> =
        vec![("<unk>".into(), 0.0, 2), ("<s>".into(), 0.0, 3), ("</s>".into(), 0.0, 3)];
    if flags & 1 != 0 {
        entries.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    }
    for (i, word) in ["a", "b", "<", ">", "\u{e9}", "\u{2581}", "\u{2581}a", "ab"].into_iter().enumerate() {
        entries.push((word.into(), -(i as f32), 1));
    }
    for _ in 0..count {
        let kind = 2 + i32::from(next() % 3);
        let len = 1 + usize::from(next()) % 6;
        let text: String = (0..len).map(|_| char_of(next())).collect();
        entries.push((text, 0.0, kind));
    }
    let generated = 1usize << (next() % 13);
    entries.extend((0..generated).map(|n| (format!("<ctl{n}>"), 0.0, 3)));
    let text: String = bytes.map(char_of).collect();
    let vocab = Vocab::new(VocabParts {
        tokens: entries.iter().map(|e| e.0.clone()).collect(),
        scores: entries.iter().map(|e| e.1).collect(),
        types: entries.iter().map(|e| e.2).collect(),
        bos: Some(1),
        eos: Some(2),
        unknown: Some(0),
        padding: None,
        add_bos: false,
        add_eos: false,
        add_space_prefix: flags & 2 != 0,
    })
    .map_err(|e| format!("a valid vocabulary was refused: {e}"))?;
    for parse_special in [false, true] {
        let ids = vocab.encode(&text, false, parse_special);
        check(ids.iter().all(|&id| (id as usize) < vocab.len()), || format!("an id outside the vocabulary: {ids:?}"))?;
        let want = reference_encode(&vocab, &text, parse_special);
        check(ids == want, || format!("{text:?} (parse_special {parse_special}): {ids:?}, reference {want:?}"))?;
    }
    Ok(())
}
