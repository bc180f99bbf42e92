//! Model files that load but are wrong: configuration values that would only fail (or silently
//! mislead) later are refused at load naming the key, a tokenizer larger than the embedding table
//! is refused naming both sizes, and a model whose arithmetic yields NaN stops generating with an
//! error naming the step instead of printing token 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::TempDir;
use common::synthetic::{TinyGemma, TinyWeights, Value};
use metallic_models::sampling::SamplingOptions;
use metallic_models::{Error, GgufFile, Llm};

const TINY: TinyGemma =
    TinyGemma { layers: 1, n_embd: 8, heads: 2, kv_heads: 1, head_dim: 4, n_ff: 16, vocab: 40, window: 4, context: 64 };

/// `weights` as a file with `edit` applied to its metadata (the vocabulary is there to edit).
fn write(
    dir: &TempDir,
    name: &str,
    weights: &TinyWeights,
    edit: impl FnOnce(&mut Vec<(&str, Value)>),
) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        weights.gguf_with(|m| {
            m.extend(TinyWeights::vocabulary(TINY.vocab));
            edit(m);
        }),
    )
    .unwrap();
    path
}

/// A change to a file's metadata.
type Edit = Box<dyn FnOnce(&mut Vec<(&str, Value)>)>;

fn set<'a>(metadata: &mut [(&str, Value<'a>)], key: &str, value: Value<'a>) {
    metadata.iter_mut().find(|(k, _)| *k == key).unwrap().1 = value;
}

#[test]
fn configuration_values_are_checked_at_load_naming_the_key() {
    let dir = TempDir::new("model-checks");
    let weights = TINY.weights(4);
    // The tiny model loads and generates as it is.
    let good = write(&dir, "good.gguf", &weights, |_| {});
    let llm = Llm::load(&good).unwrap();
    assert_eq!(llm.generate(&[1, 5, 6], 2, SamplingOptions::greedy(), |_| {}).unwrap().prompt_tokens, [1, 5, 6]);
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("rope-string.gguf", Box::new(|m| set(m, "gemma3.rope.freq_base", Value::Str("1e6"))), "gemma3.rope.freq_base"),
        (
            "rope-nan.gguf",
            Box::new(|m| set(m, "gemma3.rope.freq_base", Value::F32(f32::NAN))),
            "`gemma3.rope.freq_base` is NaN",
        ),
        (
            "rope-one.gguf",
            Box::new(|m| set(m, "gemma3.rope.freq_base", Value::F32(0.5))),
            "`gemma3.rope.freq_base` is 0.5",
        ),
        (
            "window.gguf",
            Box::new(|m| set(m, "gemma3.attention.sliding_window", Value::U32(0))),
            "`gemma3.attention.sliding_window` is 0",
        ),
        ("context.gguf", Box::new(|m| set(m, "gemma3.context_length", Value::U32(0))), "`gemma3.context_length` is 0"),
        (
            "vocab.gguf",
            Box::new(|m| {
                m.retain(|(k, _)| !k.starts_with("tokenizer."));
                m.extend(TinyWeights::vocabulary(TINY.vocab + 1));
            }),
            "the tokenizer has 41 tokens but token_embd.weight only 40 rows",
        ),
    ];
    for (name, edit, what) in cases {
        let path = write(&dir, name, &weights, edit);
        let err = Llm::load(&path).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{name}: {err:?}");
        let text = err.to_string();
        assert!(text.starts_with(&path.display().to_string()) && text.contains(what), "{name}: {text}");
    }
}

#[test]
fn nan_logits_stop_generation_naming_the_step() {
    // A copy of Gemma 3 270M whose output norm holds a NaN: every logit is NaN.
    let dir = TempDir::new("model-checks-nan");
    let gemma = common::gemma_path();
    let offset = GgufFile::open(&gemma).unwrap().tensor("output_norm.weight").unwrap().file_offset();
    let mut bytes = std::fs::read(&gemma).unwrap();
    bytes[offset..offset + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let path = dir.path().join("nan.gguf");
    std::fs::write(&path, bytes).unwrap();
    let llm = Llm::load(&path).unwrap();
    let prompt = llm.tokenize("The capital of France is", true);
    let seeded = SamplingOptions { seed: 7, ..SamplingOptions::default() };
    for options in [SamplingOptions::greedy(), seeded] {
        let mut printed = String::new();
        let err = llm.generate(&prompt, 3, options, |piece| printed.push_str(piece)).unwrap_err();
        assert!(matches!(err, Error::NotFinite(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "non-finite values: generation step 0: the logits are NaN or infinite (broken or overflowing weights)"
        );
        assert!(printed.is_empty(), "{printed:?}");
    }
}
