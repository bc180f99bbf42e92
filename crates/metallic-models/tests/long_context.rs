//! Long prompts: the decoder pre-fills in chunks, each chunk's queries attending to the cache so
//! far with the causal rule and sliding windows applied inside the attention kernels — no mask
//! is built, so memory stays linear in the prompt. Checked on a tiny Gemma 3 with random weights
//! (several K/V heads, a window shorter than the prompt) against an exact float64 forward pass,
//! for every chunking and for token-by-token decoding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::synthetic::{TinyGemma, TinyWeights};
use metallic::{DType, Runtime};
use metallic_models::GgufFile;
use metallic_models::decoder::{Decoder, PREFILL_CHUNK};

const TINY: TinyGemma = TinyGemma {
    layers: 6,
    n_embd: 32,
    heads: 4,
    kv_heads: 2,
    head_dim: 16,
    n_ff: 64,
    vocab: 97,
    window: 11,
    context: 8192,
};

fn load(weights: &TinyWeights, rt: &Runtime) -> Decoder {
    let file = GgufFile::from_bytes(weights.gguf()).unwrap();
    Decoder::load(&file, rt).unwrap()
}

fn prompt(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) % TINY.vocab as u32).collect()
}

/// Largest |got − want| over the rows, relative to the largest |want| (logits are O(10)).
fn worst_error(got: &[f32], want: &[Vec<f64>]) -> f64 {
    let scale = want.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let flat: Vec<f64> = want.iter().flatten().copied().collect();
    assert_eq!(got.len(), flat.len());
    got.iter().zip(&flat).map(|(&g, w)| (f64::from(g) - w).abs()).fold(0.0, f64::max) / scale
}

/// With an f32 KV cache the logits are those of the exact computation to f32 rounding; the
/// default f16 cache rounds every key and value once (a relative error of at most 2^-11 each),
/// which moves these logits by ~1e-4 of their scale: bounded here at 1e-3, far below what a
/// wrong key range or a misplaced chunk gives (O(1)).
#[test]
fn chunked_prefill_matches_the_exact_computation_for_every_chunking() {
    let rt = Runtime::new().unwrap();
    check_chunkings(&rt, DType::F32, 1e-5);
    if rt.context().caps().shader_f16() {
        check_chunkings(&rt, DType::F16, 1e-3);
    }
}

fn check_chunkings(rt: &Runtime, cache_dtype: DType, tolerance: f64) {
    let weights = TINY.weights(1);
    let mut decoder = load(&weights, rt);
    decoder.set_cache_dtype(cache_dtype).unwrap();
    let ids = prompt(70, 3);
    // The last 40 positions: windows of 11 keys cut into every chunk boundary below.
    let rows: Vec<usize> = (30..70).collect();
    let exact = weights.exact_logits(&ids, &rows);
    for chunk in [1, 5, 16, 64, 70, PREFILL_CHUNK] {
        let mut cache = decoder.new_cache(ids.len()).unwrap();
        let mut reported = Vec::new();
        let logits = decoder
            .prefill(&ids, &mut cache, rows.len(), chunk, &mut |done, total| reported.push((done, total)))
            .unwrap();
        assert_eq!(logits.dims(), &[rows.len(), TINY.vocab]);
        assert_eq!(cache.len(), ids.len());
        let got = logits.to_vec::<f32>().unwrap();
        let err = worst_error(&got, &exact);
        eprintln!("{cache_dtype} cache, chunk {chunk}: largest error {err:e}");
        assert!(
            err < tolerance,
            "{cache_dtype} cache, chunk {chunk}: logits differ from the exact computation by {err:e} (relative)"
        );
        // Progress after every chunk but the last.
        let want: Vec<(usize, usize)> = (1..ids.len().div_ceil(chunk)).map(|i| (i * chunk, ids.len())).collect();
        assert_eq!(reported, want, "chunk {chunk}");
    }
    // Token-by-token decoding (one query against the window of the cache, split-K) agrees too.
    let mut cache = decoder.new_cache(ids.len()).unwrap();
    let mut got = Vec::new();
    for (pos, &id) in ids.iter().enumerate() {
        let logits = decoder.forward(&[id], &mut cache).unwrap();
        if pos >= rows[0] {
            got.extend(logits.to_vec::<f32>().unwrap());
        }
    }
    let err = worst_error(&got, &exact);
    eprintln!("{cache_dtype} cache, token by token: largest error {err:e}");
    assert!(
        err < tolerance,
        "{cache_dtype} cache, token by token: logits differ from the exact computation by {err:e}"
    );
}

#[test]
fn a_long_prompt_needs_memory_linear_in_its_length() {
    // 6,000 tokens: the dense attention mask this once took (6,000 × 6,001 f32, 137 MiB) is
    // past one storage binding on lavapipe (128 MiB), so this prompt failed there.
    let n = 6_000;
    let weights = TINY.weights(2);
    let rt = Runtime::new().unwrap();
    let decoder = load(&weights, &rt);
    let ids = prompt(n, 5);
    let mut last = Vec::new();
    for chunk in [PREFILL_CHUNK, 1_999] {
        let mut cache = decoder.new_cache(n + 1).unwrap();
        let before = rt.pool().stats().used_bytes;
        let logits = decoder.prefill(&ids, &mut cache, 1, chunk, &mut |_, _| {}).unwrap();
        let values = logits.to_vec::<f32>().unwrap();
        let extra = rt.pool().stats().peak_used_bytes.saturating_sub(before);
        eprintln!("chunk {chunk}: {:.1} MiB beyond the weights and the cache", extra as f64 / f64::from(1u32 << 20));
        // A chunk's activations and its keys/values gathered per head: ~1.5 MiB at 512.
        assert!(extra < 16 << 20, "chunk {chunk}: {extra} bytes beyond the weights and the KV cache");
        assert!(values.iter().all(|v| v.is_finite()));
        last.push(values);
    }
    let scale = last[0].iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = last[0].iter().zip(&last[1]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff <= 1e-5 * scale, "chunkings disagree by {diff} (largest logit {scale})");
}

#[test]
fn prefill_arguments_are_checked() {
    let weights = TINY.weights(3);
    let rt = Runtime::new().unwrap();
    let decoder = load(&weights, &rt);
    let mut cache = decoder.new_cache(8).unwrap();
    let mut none = |_: usize, _: usize| {};
    for (ids, rows, chunk, what) in [
        (&[1u32, 2][..], 1, 0, "chunk of 0"),
        (&[1, 2], 3, 4, "3 rows asked of 2"),
        (&[], 1, 4, "no tokens"),
        (&[1; 9], 1, 4, "9 positions exceed the context of 8"),
        (&[1, 200], 1, 4, "token id 200 outside the vocabulary of 97"),
    ] {
        let err = decoder.prefill(ids, &mut cache, rows, chunk, &mut none).unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    }
    assert!(cache.is_empty(), "a refused prefill leaves the cache as it was");
}
