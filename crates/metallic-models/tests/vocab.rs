//! The SentencePiece tokenizer on small hand-made vocabularies whose answers can be worked out
//! by hand (the llama.cpp fixtures check it on a real vocabulary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

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
    // A character with no byte tokens at all is dropped, as llama.cpp does.
    assert_eq!(v.encode("a\u{4e2d}", false, false), [7]);
}

#[test]
fn control_tokens_parse_only_when_asked_user_defined_always() {
    let v = vocab(WORDS, false);
    assert_eq!(v.encode("a<start>b", false, true), [7, 13, 8]);
    // Not parsed: the characters are text (only 'a' of them is in this vocabulary).
    assert_eq!(v.encode("<start>", false, false), [7]);
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
    assert_eq!(v.encode("a</s>", false, false), [6]);
    assert_eq!(v.piece(end_s, false), b"");
    let mut ends = v.end_tokens().to_vec();
    ends.sort_unstable();
    assert_eq!(ends, [2, end_s, end_turn]);
}
