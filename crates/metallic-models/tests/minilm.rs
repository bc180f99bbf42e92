//! all-MiniLM-L6-v2 against sentence-transformers: the same token ids, the same embeddings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::sync::OnceLock;

use common::{cosine, minilm_dir, reference};
use metallic::DType;
use metallic_models::{Embedder, EmbedderOptions, Pooling};

fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        Embedder::load_with(minilm_dir(), EmbedderOptions { batch_size: 4, ..EmbedderOptions::default() }).unwrap()
    })
}

#[test]
fn reads_the_pipeline_from_modules_json() {
    let e = embedder();
    assert_eq!(e.dim(), 384);
    assert_eq!(e.max_seq_length(), reference().max_seq_length);
    assert_eq!(e.pooling(), Pooling::Mean);
    assert!(e.normalizes());
}

#[test]
fn token_ids_match_sentence_transformers() {
    for case in reference().cases {
        assert_eq!(embedder().tokenize(&case.text).unwrap(), case.ids, "case {}", case.name);
    }
}

#[test]
fn embeddings_match_sentence_transformers() {
    let reference = reference();
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).collect();
    // Batches of 4 sorted by length: the long (truncated) text is padded against others.
    let got = embedder().embed(&texts).unwrap();
    assert_eq!(got.len(), texts.len());
    let (mut min_cos, mut max_diff) = (1.0f64, 0.0f32);
    for (case, e) in reference.cases.iter().zip(&got) {
        let cos = cosine(e, &case.embedding);
        let norm: f64 = e.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        assert!(cos >= 0.9999, "case {}: cosine {cos}", case.name);
        assert!((norm - 1.0).abs() < 1e-5, "case {}: norm {norm}", case.name);
        let worst = e.iter().zip(&case.embedding).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "case {}: max |difference| {worst}", case.name);
        (min_cos, max_diff) = (min_cos.min(cos), max_diff.max(worst));
    }
    eprintln!("f32: lowest cosine {min_cos:.9}, largest |difference| {max_diff:.2e}");
}

#[test]
fn batch_composition_changes_nothing_but_rounding() {
    let reference = reference();
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).take(6).collect();
    let together = embedder().embed(&texts).unwrap();
    for (text, batched) in texts.iter().zip(&together) {
        let alone = embedder().embed(&[text]).unwrap().remove(0);
        let worst = alone.iter().zip(batched).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{text:?}: batched vs alone differ by {worst}");
    }
}

#[test]
fn no_texts_give_no_embeddings() {
    assert!(embedder().embed(&[]).unwrap().is_empty());
}

#[test]
fn f16_embeddings_stay_close() {
    let reference = reference();
    let f16 =
        Embedder::load_with(minilm_dir(), EmbedderOptions { dtype: DType::F16, ..EmbedderOptions::default() }).unwrap();
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).take(5).collect();
    let mut min_cos = 1.0f64;
    for (case, e) in reference.cases.iter().zip(f16.embed(&texts).unwrap()) {
        let cos = cosine(&e, &case.embedding);
        assert!(cos >= 0.999, "case {}: f16 cosine {cos}", case.name);
        min_cos = min_cos.min(cos);
    }
    eprintln!("f16: lowest cosine {min_cos:.6}");
}

#[test]
fn an_embedder_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let e = embedder();
    shareable(e);
    let texts = ["one thread", "another thread"];
    let alone = e.embed(&texts).unwrap();
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| e.embed(&texts).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for got in together {
        assert_eq!(got, alone, "the same texts gave different embeddings on another thread");
    }
}
