//! The SentencePiece tokenizer on small hand-made vocabularies whose answers can be worked out
//! by hand (the llama.cpp fixtures check it on a real vocabulary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use metallic_models::fuzzing::reference_encode;
use metallic_models::gguf::GgufFile;
use metallic_models::vocab::{StreamDecoder, Vocab, VocabParts};

/// (text, score, type) → a vocabulary with BOS 1, EOS 2, unknown 0 and byte tokens for 'x'
/// and the bytes of 'é'.
fn vocab(extra: &[(&str, f32, i32)], add_space_prefix: bool) -> Vocab {
    let mut entries: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<bos>".into(), 0.0, 3),
        ("<eos>".into(), 0.0, 3),
        ("<0x78>".into(), 0.0, 6),
        ("<0xC3>".into(), 0.0, 6),
        ("<0xA9>".into(), 0.0, 6),
    ];
    entries.extend(extra.iter().map(|(t, s, k)| (t.to_string(), *s, *k)));
    Vocab::new(VocabParts {
        tokens: entries.iter().map(|e| e.0.clone()).collect(),
        scores: entries.iter().map(|e| e.1).collect(),
        types: entries.iter().map(|e| e.2).collect(),
        bos: Some(1),
        eos: Some(2),
        unknown: Some(0),
        padding: None,
        add_bos: true,
        add_eos: false,
        add_space_prefix,
    })
    .unwrap()
}

const WORDS: &[(&str, f32, i32)] = &[
    ("\u{2581}", -1.0, 1),  // 6
    ("a", -2.0, 1),         // 7
    ("b", -2.0, 1),         // 8
    ("c", -2.0, 1),         // 9
    ("ab", -3.0, 1),        // 10
    ("bc", -1.5, 1),        // 11: scores higher than "ab": "abc" → a + bc
    ("\u{2581}a", -0.5, 1), // 12
    ("<start>", 0.0, 3),    // 13: control
    ("<user>", 0.0, 4),     // 14: user-defined
];

#[test]
fn the_best_scoring_pair_merges_first() {
    let v = vocab(WORDS, false);
    assert_eq!(v.encode("abc", false, false), [7, 11]);
    assert_eq!(v.encode("ab", false, false), [10]);
    assert_eq!(v.encode("ab", true, false), [1, 10]);
}

#[test]
fn spaces_become_the_meta_symbol_and_the_prefix_is_optional() {
    let v = vocab(WORDS, true);
    assert_eq!(v.encode("a", false, false), [12]);
    assert_eq!(v.encode("a a", false, false), [12, 12]);
    let v = vocab(WORDS, false);
    assert_eq!(v.encode("a a", false, false), [7, 12]);
}

#[test]
fn characters_outside_the_vocabulary_fall_back_to_bytes() {
    let v = vocab(WORDS, false);
    assert_eq!(v.encode("xé", false, false), [3, 4, 5]);
    // A character some of whose bytes have no token is the unknown token.
    assert_eq!(v.encode("a\u{4e2d}", false, false), [7, 0]);
}

#[test]
fn control_tokens_parse_only_when_asked_user_defined_always() {
    let v = vocab(WORDS, false);
    assert_eq!(v.encode("a<start>b", false, true), [7, 13, 8]);
    // Not parsed: the characters are text (only 'a' of them is in this vocabulary; each run
    // of the others is one unknown token).
    assert_eq!(v.encode("<start>", false, false), [0, 7, 0]);
    assert_eq!(v.encode("a<user>b", false, false), [7, 14, 8]);
    // The space prefix follows a special token.
    let v = vocab(WORDS, true);
    assert_eq!(v.encode("<start>a", false, true), [13, 12]);
}

#[test]
fn pieces_and_decoding() {
    let v = vocab(WORDS, true);
    assert_eq!(v.piece(12, false), b" a");
    assert_eq!(v.piece(13, false), b"");
    assert_eq!(v.piece(13, true), b"<start>");
    assert_eq!(v.piece(4, false), [0xC3]);
    assert_eq!(v.decode(&[1, 12, 12, 4, 5]), " a aé");
}

#[test]
fn streaming_never_splits_a_character() {
    let v = vocab(WORDS, true);
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(&v, 12), " a");
    assert_eq!(d.push(&v, 4), "");
    assert_eq!(d.push(&v, 5), "é");
    assert_eq!(d.push(&v, 4), "");
    assert_eq!(d.finish(), "\u{FFFD}");
}

#[test]
fn inconsistent_parts_are_errors() {
    let parts = VocabParts { tokens: vec!["a".into()], scores: vec![0.0, 1.0], ..VocabParts::default() };
    assert!(Vocab::new(parts).unwrap_err().to_string().contains("2 scores for 1 tokens"));
    let parts = VocabParts { tokens: vec!["a".into()], bos: Some(5), ..VocabParts::default() };
    assert!(Vocab::new(parts).unwrap_err().to_string().contains("bos token id 5 outside the vocabulary of 1"));
    assert!(Vocab::new(VocabParts::default()).is_err());
}

#[test]
fn end_of_generation_tokens_count_as_control_tokens() {
    // `</s>` marked user-defined (type 4), as in Gemma 3's GGUF: llama.cpp treats it as a
    // control token — parsed only with special tokens on, printed only when asked, and an end
    // of generation.
    let v = vocab(&[("a", -1.0, 1), ("</s>", 0.0, 4), ("<end_of_turn>", 0.0, 3)], false);
    let (end_s, end_turn) = (v.id("</s>").unwrap(), v.id("<end_of_turn>").unwrap());
    assert_eq!(v.encode("a</s>", false, true), [6, end_s]);
    assert_eq!(v.encode("a</s>", false, false), [6, 0]);
    assert_eq!(v.piece(end_s, false), b"");
    let mut ends = v.end_tokens().to_vec();
    ends.sort_unstable();
    assert_eq!(ends, [2, end_s, end_turn]);
}

/// A small deterministic pseudo-random generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn string(&mut self, alphabet: &[&str], len: usize) -> String {
        (0..len).map(|_| alphabet[self.below(alphabet.len())]).collect()
    }
}

#[test]
fn special_tokens_split_as_the_one_at_a_time_reference_does() {
    // The longest special string wins even when a shorter one starts further left (so this is
    // not leftmost-longest matching), and among equal lengths the lower id goes first.
    let v = vocab(&[("a", -1.0, 1), ("d", -1.0, 1), ("ab", 0.0, 4), ("bcd", 0.0, 4), ("ba", 0.0, 4)], false);
    let (ab, bcd, ba) = (v.id("ab").unwrap(), v.id("bcd").unwrap(), v.id("ba").unwrap());
    assert_eq!(v.encode("abcd", false, false), [6, bcd]);
    assert_eq!(v.encode("aba", false, false), [ab, 6]);
    assert_eq!(v.encode("bab", false, false), [0, ab]);
    assert_eq!(v.encode("bba", false, false), [0, ba]);

    let alphabet = ["a", "b", "<", ">", "\u{e9}", " "];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compared = 0;
    for _ in 0..300 {
        let mut extra: Vec<(String, f32, i32)> = ["a", "b", "<", ">", "\u{e9}", "\u{2581}", "\u{2581}a", "ab"]
            .iter()
            .map(|t| (t.to_string(), -(rng.below(10) as f32), 1))
            .collect();
        for _ in 0..rng.below(12) {
            let len = 1 + rng.below(5);
            let kind = [2, 3, 4][rng.below(3)];
            extra.push((rng.string(&alphabet[..5], len), 0.0, kind));
        }
        let extra: Vec<(&str, f32, i32)> = extra.iter().map(|(t, s, k)| (t.as_str(), *s, *k)).collect();
        let v = vocab(&extra, rng.below(2) == 0);
        for _ in 0..20 {
            let len = rng.below(40);
            let text = rng.string(&alphabet, len);
            for parse_special in [false, true] {
                let want = reference_encode(&v, &text, parse_special);
                assert_eq!(v.encode(&text, false, parse_special), want, "{text:?} with {extra:?}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 12_000);
}

/// A vocabulary of `n` tokens: unknown, BOS, EOS, the 256 byte tokens, a few words, then
/// control tokens `<ctl…>` and every 1000th one user-defined.
fn many_specials(n: usize) -> Vocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    types.extend(std::iter::repeat_n(6, 256));
    for word in ["\u{2581}", "h", "i", "\u{2581}h", "hi", "\u{2581}hi", "\u{2581}there", "<ctl"] {
        tokens.push(word.into());
        types.push(1);
    }
    while tokens.len() < n {
        let id = tokens.len();
        tokens.push(format!("<ctl{id}>"));
        types.push(if id.is_multiple_of(1000) { 4 } else { 3 });
    }
    Vocab::new(VocabParts {
        tokens,
        types,
        bos: Some(1),
        eos: Some(2),
        unknown: Some(0),
        add_space_prefix: true,
        ..VocabParts::default()
    })
    .unwrap()
}

#[test]
fn a_million_special_tokens_tokenize_a_long_text_quickly() {
    let v = many_specials(1 << 20);
    let text: String =
        "hi there <ctl77777> <ctl5000> \u{4e2d} <ctl1048575><ctl".chars().cycle().take(100_000).collect();
    for parse_special in [true, false] {
        let start = std::time::Instant::now();
        let ids = v.encode(&text, true, parse_special);
        let took = start.elapsed();
        // About 0.05 s on a 2-core machine (the one-token-at-a-time loop took 37 s).
        assert!(took.as_secs_f64() < 2.0, "{} ids in {took:?}", ids.len());
        let count = |id| ids.iter().filter(|&&x| x == id).count();
        let (ctl77777, ctl5000) = (v.id("<ctl77777>").unwrap(), v.id("<ctl5000>").unwrap());
        let reps = text.matches("<ctl77777>").count();
        assert_eq!(count(ctl77777), if parse_special { reps } else { 0 });
        assert_eq!(count(ctl5000), reps, "user-defined tokens match either way");
        // Identical to the reference on a prefix (the reference needs about 0.5 s per 1000 bytes).
        let prefix: String = text.chars().take(300).collect();
        assert_eq!(v.encode(&prefix, false, parse_special), reference_encode(&v, &prefix, parse_special));
    }
}

#[test]
fn nested_special_tokens_tokenize_quickly_and_as_the_reference_does() {
    // a, aa, aaa, ... and b, ab, aab, ...: many special strings end at every position.
    let mut extra: Vec<(String, f32, i32)> = vec![("a".into(), 0.0, 1), ("b".into(), 0.0, 1)];
    for k in 1..=400 {
        extra.push(("a".repeat(k), 0.0, if k % 2 == 0 { 3 } else { 4 }));
        extra.push((format!("{}b", "a".repeat(k - 1)), 0.0, if k % 3 == 0 { 3 } else { 4 }));
    }
    let extra: Vec<(&str, f32, i32)> = extra.iter().map(|(t, s, k)| (t.as_str(), *s, *k)).collect();
    let v = vocab(&extra, false);
    let mut rng = Rng(7);
    for _ in 0..20 {
        let len = rng.below(1500);
        let text: String = (0..len).map(|_| if rng.below(50) == 0 { 'b' } else { 'a' }).collect();
        for parse_special in [false, true] {
            assert_eq!(v.encode(&text, false, parse_special), reference_encode(&v, &text, parse_special));
        }
    }
    let text: String = (0..100_000).map(|i| if i % 997 == 0 { 'b' } else { 'a' }).collect();
    let start = std::time::Instant::now();
    let ids = v.encode(&text, false, true);
    assert!(start.elapsed().as_secs_f64() < 2.0, "{} ids in {:?}", ids.len(), start.elapsed());
}

#[test]
fn characters_without_any_token_become_the_unknown_token() {
    // No byte tokens: what cannot be written as tokens is the unknown token (a run of such
    // characters, one), never dropped.
    let tokens = ["<unk>", "<s>", "</s>", "\u{2581}", "h", "e", "he", "\u{2581}he"];
    let v = Vocab::new(VocabParts {
        tokens: tokens.iter().map(|t| t.to_string()).collect(),
        types: vec![2, 3, 3, 1, 1, 1, 1, 1],
        bos: Some(1),
        eos: Some(2),
        unknown: Some(0),
        add_space_prefix: true,
        ..VocabParts::default()
    })
    .unwrap();
    let ids = v.encode("hello the world", false, false);
    assert_eq!(ids, [7, 0, 3, 0, 6, 3, 0]);
    assert_eq!(v.decode(&ids), " he\u{2585} \u{2585}he \u{2585}");
    assert_eq!(v.unknown(), Some(0));
}

#[test]
fn a_vocabulary_without_an_unknown_token_must_have_every_byte() {
    let parts = |tokens: Vec<String>| VocabParts { tokens, unknown: None, ..VocabParts::default() };
    let err = Vocab::new(parts(vec!["a".into(), "b".into()])).unwrap_err().to_string();
    assert!(err.contains("no unknown token and no token for byte 0x00"), "{err}");
    let mut tokens: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
    tokens.retain(|t| t != "<0xE9>");
    let err = Vocab::new(parts(tokens.clone())).unwrap_err().to_string();
    assert!(err.contains("byte 0xE9"), "{err}");
    // Bytes that never occur in UTF-8 need no token.
    tokens.push("<0xE9>".into());
    tokens.retain(|t| t != "<0xC0>" && t != "<0xFF>");
    let v = Vocab::new(parts(tokens)).unwrap();
    assert_eq!(v.encode("\u{e9}", false, false).len(), 2);
}

/// A GGUF image holding only a SentencePiece vocabulary of `tokens` (raw bytes) and `types`.
fn vocabulary_gguf(tokens: &[&[u8]], types: &[i32]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s);
    }
    let (string_type, array_type, i32_type) = (8u32, 9u32, 5u32);
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes()); // tensors
    out.extend(3u64.to_le_bytes()); // metadata entries
    string(&mut out, b"tokenizer.ggml.model");
    out.extend(string_type.to_le_bytes());
    string(&mut out, b"llama");
    string(&mut out, b"tokenizer.ggml.tokens");
    out.extend(array_type.to_le_bytes());
    out.extend(string_type.to_le_bytes());
    out.extend((tokens.len() as u64).to_le_bytes());
    for token in tokens {
        string(&mut out, token);
    }
    string(&mut out, b"tokenizer.ggml.token_type");
    out.extend(array_type.to_le_bytes());
    out.extend(i32_type.to_le_bytes());
    out.extend((types.len() as u64).to_le_bytes());
    for t in types {
        out.extend(t.to_le_bytes());
    }
    out
}

#[test]
fn tokens_that_are_not_utf8_load_and_decode_as_their_bytes() {
    let tokens: [&[u8]; 10] = [
        b"<unk>",
        b"<s>",
        b"</s>",
        "\u{2581}".as_bytes(),
        b"\xE4\xB8", // the first two bytes of U+4E2D
        b"\xAD",     // and its last
        b"\xC3",     // one-byte tokens stand for their byte (no <0xC3> here)
        b"\xA9",
        b"<c\xFF>", // a control token that is not UTF-8
        "\u{fffd}".as_bytes(),
    ];
    let file = GgufFile::from_bytes(vocabulary_gguf(&tokens, &[2, 3, 3, 1, 1, 1, 1, 1, 3, 1])).unwrap();
    let v = Vocab::from_gguf(&file).unwrap();
    assert_eq!(v.len(), 10);
    assert_eq!(v.text(4), Some("\u{fffd}"));
    assert_eq!(v.text(8), Some("<c\u{fffd}>"));
    // Decoding gives the stored bytes, so two halves of a character join up.
    assert_eq!(v.decode(&[4, 5]), "\u{4e2d}");
    assert_eq!(v.piece(8, true), b"<c\xFF>");
    let mut stream = StreamDecoder::new();
    assert_eq!(stream.push(&v, 4), "");
    assert_eq!(stream.push(&v, 5), "\u{4e2d}");
    // Such tokens never match text, but a one-byte one stands for its byte.
    assert_eq!(v.encode("\u{e9}", false, false), [3, 6, 7]);
    assert_eq!(v.encode("\u{fffd}<c\u{fffd}>", false, true), [3, 9, 0, 9, 0]);
    assert_eq!(v.id("\u{fffd}"), Some(9));
}

// ---------------------------------------------------------------------------------------------
// Byte-level BPE (`tokenizer.ggml.model` = `gpt2`).
// ---------------------------------------------------------------------------------------------

/// A metadata value for [`gguf`].
enum Meta<'a> {
    Str(&'a str),
    Strs(Vec<&'a [u8]>),
    I32s(Vec<i32>),
    U32(u32),
    Bool(bool),
}

/// A GGUF file with no tensors and the metadata `entries`.
fn gguf(entries: &[(&str, Meta)]) -> GgufFile {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s);
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend((entries.len() as u64).to_le_bytes());
    for (key, value) in entries {
        string(&mut out, key.as_bytes());
        match value {
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s.as_bytes());
            }
            Meta::Strs(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    string(&mut out, item);
                }
            }
            Meta::I32s(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    out.extend(item.to_le_bytes());
                }
            }
            Meta::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*v));
            }
        }
    }
    GgufFile::from_bytes(out).unwrap()
}

/// GPT-2's stand-in character for byte `b` (printable Latin-1 as is, the rest from U+0100).
fn byte_char(b: u8) -> char {
    let others: Vec<u8> = (0..=255u8).filter(|b| !matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)).collect();
    match others.iter().position(|&o| o == b) {
        Some(n) => char::from_u32(0x100 + n as u32).unwrap(),
        None => char::from(b),
    }
}

/// A byte-level BPE vocabulary: the 256 byte tokens (ids 0 to 255, in byte order), then
/// `extra` (text, type), with `merges` and the pre-tokenizer `pre`, and `keys` on top.
fn bpe_vocab(pre: Option<&str>, extra: &[(&str, i32)], merges: &[&str], keys: Vec<(&str, Meta)>) -> Vocab {
    let mut texts: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    texts.extend(extra.iter().map(|(t, _)| t.to_string()));
    let mut types = vec![1; 256];
    types.extend(extra.iter().map(|&(_, k)| k));
    let mut entries = vec![
        ("tokenizer.ggml.model", Meta::Str("gpt2")),
        ("tokenizer.ggml.tokens", Meta::Strs(texts.iter().map(|t| t.as_bytes()).collect())),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.merges", Meta::Strs(merges.iter().map(|m| m.as_bytes()).collect())),
    ];
    if let Some(pre) = pre {
        entries.push(("tokenizer.ggml.pre", Meta::Str(pre)));
    }
    entries.extend(keys);
    Vocab::from_gguf(&gguf(&entries)).unwrap()
}

const BPE_WORDS: &[(&str, i32)] = &[
    ("he", 1),           // 256
    ("ll", 1),           // 257
    ("hell", 1),         // 258
    ("hello", 1),        // 259
    ("\u{120}w", 1),     // 260: " w"
    ("<|eot_id|>", 3),   // 261: control
    ("<tool>", 4),       // 262: user-defined
    ("<|im_end|>", 1),   // 263: normal, but an end-of-generation text
    ("\u{c3}\u{a9}", 1), // 264: "é"
];
const BPE_MERGES: &[&str] = &["h e", "l l", "he ll", "hell o", "\u{120} w", "\u{c3} \u{a9}"];

#[test]
fn bpe_merges_by_rank_and_falls_back_to_byte_tokens() {
    let v = bpe_vocab(Some("gpt-2"), BPE_WORDS, BPE_MERGES, vec![]);
    assert_eq!(v.pre_tokenizer(), Some("gpt-2"));
    assert_eq!(v.encode("hello", false, false), [259]);
    assert_eq!(v.encode("hello world", false, false), [259, 260, b'o' as u32, b'r' as u32, b'l' as u32, b'd' as u32]);
    // "é" merges; "中" has no merges: its three bytes' tokens.
    assert_eq!(v.encode("\u{e9}\u{4e2d}", false, false), [264, 0xE4, 0xB8, 0xAD]);
    assert_eq!(v.decode(&v.encode("hello w\u{e9}rld \u{4e2d}!\n", false, false)), "hello w\u{e9}rld \u{4e2d}!\n");
}

#[test]
fn bpe_special_tokens_control_only_when_parsed_user_defined_always() {
    let v = bpe_vocab(Some("llama-bpe"), BPE_WORDS, BPE_MERGES, vec![]);
    assert_eq!(v.encode("hello<|eot_id|>", false, true), [259, 261]);
    let plain = v.encode("hello<|eot_id|>", false, false);
    assert_eq!(plain.first(), Some(&259));
    assert!(!plain.contains(&261));
    assert_eq!(v.encode("he<tool>ll", false, false), [256, 262, 257]);
    // An end-of-generation text marked normal becomes a control token, as in llama.cpp.
    assert_eq!(v.encode("<|im_end|>", false, true), [263]);
    assert!(!v.encode("<|im_end|>", false, false).contains(&263));
}

#[test]
fn bpe_pieces_undo_the_byte_encoding() {
    let v = bpe_vocab(Some("gpt-2"), BPE_WORDS, BPE_MERGES, vec![]);
    assert_eq!(v.piece(260, false), b" w");
    assert_eq!(v.piece(264, false), "\u{e9}".as_bytes());
    assert_eq!(v.piece(0xC3, false), [0xC3]);
    assert_eq!(v.piece(261, false), b"");
    assert_eq!(v.piece(261, true), b"<|eot_id|>");
    assert_eq!(v.piece(262, false), b"<tool>");
    assert_eq!(v.decode(&[259, 261, 260]), "hello w");
}

#[test]
fn bpe_streaming_never_splits_a_character() {
    let v = bpe_vocab(Some("gpt-2"), BPE_WORDS, BPE_MERGES, vec![]);
    let text = "h\u{e9}llo \u{4e2d}\u{6587} \u{1f389}!";
    let ids = v.encode(text, false, false);
    let mut d = StreamDecoder::new();
    let mut out = String::new();
    for &id in &ids {
        let part = d.push(&v, id);
        assert!(!part.contains('\u{fffd}'), "{part:?}");
        out.push_str(&part);
    }
    out.push_str(&d.finish());
    assert_eq!(out, text);
    // The emoji's four byte tokens: nothing comes out until the last.
    let mut d = StreamDecoder::new();
    let parts: Vec<String> = [0xF0, 0x9F, 0x8E, 0x89].iter().map(|&b| d.push(&v, b)).collect();
    assert_eq!(parts, ["", "", "", "\u{1f389}"]);
}

#[test]
fn bpe_bos_follows_llama_cpps_defaults() {
    // gpt-2: no BOS added unless the file asks; BOS and EOS default to token 11.
    let v = bpe_vocab(Some("gpt-2"), BPE_WORDS, BPE_MERGES, vec![]);
    assert_eq!((v.bos(), v.eos()), (Some(11), Some(11)));
    assert_eq!(v.encode("he", true, false), [256]);
    // llama-bpe adds BOS by default; the metadata decides when present.
    let keys =
        || vec![("tokenizer.ggml.bos_token_id", Meta::U32(261)), ("tokenizer.ggml.eos_token_id", Meta::U32(263))];
    let v = bpe_vocab(Some("llama-bpe"), BPE_WORDS, BPE_MERGES, keys());
    assert_eq!(v.encode("he", true, false), [261, 256]);
    let mut no_bos = keys();
    no_bos.push(("tokenizer.ggml.add_bos_token", Meta::Bool(false)));
    assert_eq!(bpe_vocab(Some("llama-bpe"), BPE_WORDS, BPE_MERGES, no_bos).encode("he", true, false), [256]);
    let mut with_eos = keys();
    with_eos.push(("tokenizer.ggml.add_eos_token", Meta::Bool(true)));
    assert_eq!(bpe_vocab(Some("gpt-2"), BPE_WORDS, BPE_MERGES, with_eos).encode("he", true, false), [256, 263]);
    // An id past the vocabulary keeps the default.
    let v = bpe_vocab(Some("gpt-2"), BPE_WORDS, BPE_MERGES, vec![("tokenizer.ggml.bos_token_id", Meta::U32(99_999))]);
    assert_eq!(v.bos(), Some(11));
    // No `pre` key: llama.cpp's default pre-tokenizer.
    assert_eq!(bpe_vocab(None, BPE_WORDS, BPE_MERGES, vec![]).pre_tokenizer(), Some("default"));
}

#[test]
fn bpe_end_tokens_are_llama_cpps() {
    let extra = [("<|fim_pad|>", 1), ("<|end|>", 3), ("<|return|>", 3), ("<|call|>", 3), ("<|start|>", 3)];
    let words: Vec<(&str, i32)> = BPE_WORDS.iter().copied().chain(extra).collect();
    let v = bpe_vocab(Some("gpt-4o"), &words, BPE_MERGES, vec![("tokenizer.ggml.eos_token_id", Meta::U32(0))]);
    // EOS, <|eot_id|>, <|im_end|>, <|fim_pad|>, <|return|>, <|call|>; <|end|> is left out next
    // to <|return|> and <|call|> (gpt-oss), and becomes a user-defined token.
    assert_eq!(v.end_tokens(), [0, 261, 263, 265, 267, 268]);
    assert_eq!(v.piece(266, false), b"<|end|>");
    // gpt-oss's <|start|> is always printed.
    assert_eq!(v.piece(269, false), b"<|start|>");
}

#[test]
fn bpe_unknown_or_missing_pieces_are_errors_naming_them() {
    let entries = |pre: &'static str| {
        vec![
            ("tokenizer.ggml.model", Meta::Str("gpt2")),
            ("tokenizer.ggml.tokens", Meta::Strs(vec![b"a", b"b"])),
            ("tokenizer.ggml.merges", Meta::Strs(vec![b"a b"])),
            ("tokenizer.ggml.pre", Meta::Str(pre)),
        ]
    };
    let err = Vocab::from_gguf(&gguf(&entries("no-such-pre"))).unwrap_err().to_string();
    assert!(err.contains("no-such-pre") && err.contains("llama-bpe") && err.contains("qwen2"), "{err}");
    let err = Vocab::from_gguf(&gguf(&entries("kimi-k2"))).unwrap_err().to_string();
    assert!(err.contains("kimi-k2") && err.contains("not implemented"), "{err}");
    let mut no_merges = entries("gpt-2");
    no_merges.retain(|(k, _)| *k != "tokenizer.ggml.merges");
    let err = Vocab::from_gguf(&gguf(&no_merges)).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.merges"), "{err}");
    let wrong = [("tokenizer.ggml.model", Meta::Str("rwkv")), ("tokenizer.ggml.tokens", Meta::Strs(vec![b"a"]))];
    let err = Vocab::from_gguf(&gguf(&wrong)).unwrap_err().to_string();
    assert!(err.contains("rwkv") && err.contains("gpt2"), "{err}");
}

#[test]
fn bpe_odd_vocabularies_load_and_never_panic() {
    // Tokens and merges that are not UTF-8, empty ones, merges without a space or naming
    // strings that are no tokens, a vocabulary without byte tokens.
    let entries = [
        ("tokenizer.ggml.model", Meta::Str("gpt2")),
        ("tokenizer.ggml.pre", Meta::Str("qwen2")),
        ("tokenizer.ggml.tokens", Meta::Strs(vec![b"a", b"\xFF", b"", b"ab", "\u{120}".as_bytes(), b"\xC3"])),
        ("tokenizer.ggml.merges", Meta::Strs(vec![b"a b", b"ab", b"\xFF a", b"", b" ", b"x y", b"ab \xC3"])),
    ];
    let v = Vocab::from_gguf(&gguf(&entries)).unwrap();
    assert_eq!(v.text(2), Some("[EMPTY_2]"));
    for text in ["", "ab", "a b\u{e9}\u{ff}", "[EMPTY_2]", "\u{4e2d}\u{1f389}\n\t \r"] {
        let ids = v.encode(text, true, true);
        assert!(ids.iter().all(|&id| (id as usize) < v.len()));
        let _ = v.decode(&ids);
    }
    // "é" is C3 A9: C3's stand-in is no token, but a one-byte token holds the raw byte C3.
    assert_eq!(v.encode("\u{c3}", false, false), [5]);
    assert_eq!(v.encode("ab", false, false), [3]);
    for id in 0..v.len() as u32 + 3 {
        let _ = (v.piece(id, false), v.piece(id, true));
    }
}
