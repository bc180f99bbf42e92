//! The sampler: greedy and penalties exact, filters keep what they should, draws follow the
//! probabilities, seeds reproduce, and the GPU top-k path agrees with reading every logit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use metallic::{Runtime, Tensor};
use metallic_models::sampling::{Sampler, SamplingOptions};

fn rt() -> Runtime {
    Runtime::new().unwrap()
}

fn logits_of(probs: &[f64]) -> Vec<(u32, f32)> {
    (0u32..).zip(probs.iter().map(|p| p.ln() as f32)).collect()
}

fn counts(options: SamplingOptions, probs: &[f64], draws: usize) -> Vec<f64> {
    let mut s = Sampler::new(options).unwrap();
    let mut c = vec![0.0; probs.len()];
    for _ in 0..draws {
        let id = s.choose(&mut logits_of(probs), &[]);
        c[id as usize] += 1.0 / draws as f64;
    }
    c
}

fn open() -> SamplingOptions {
    SamplingOptions { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..SamplingOptions::default() }
}

#[test]
fn draws_follow_the_probabilities() {
    let probs = [0.6, 0.3, 0.1];
    let c = counts(open(), &probs, 20_000);
    for (got, want) in c.iter().zip(probs) {
        assert!((got - want).abs() < 0.015, "frequencies {c:?} vs {probs:?}");
    }
    // Temperature 0.5 squares the odds: 0.6² : 0.3² : 0.1² = 0.783 : 0.196 : 0.022.
    let c = counts(SamplingOptions { temperature: 0.5, ..open() }, &probs, 20_000);
    assert!((c[0] - 0.783).abs() < 0.015 && (c[2] - 0.022).abs() < 0.01, "{c:?}");
}

#[test]
fn filters_keep_what_they_should() {
    let probs = [0.5, 0.3, 0.15, 0.05];
    let c = counts(SamplingOptions { top_k: 2, ..open() }, &probs, 5000);
    assert!(c[2] == 0.0 && c[3] == 0.0 && c[0] > 0.55, "top-k 2: {c:?}");
    let c = counts(SamplingOptions { top_p: 0.75, ..open() }, &probs, 5000);
    assert!(c[2] == 0.0 && c[3] == 0.0, "top-p 0.75 keeps 0.5 + 0.3: {c:?}");
    let c = counts(SamplingOptions { top_p: 0.85, ..open() }, &probs, 5000);
    assert!(c[2] > 0.0 && c[3] == 0.0, "top-p 0.85 keeps three: {c:?}");
    let c = counts(SamplingOptions { min_p: 0.5, ..open() }, &probs, 5000);
    assert!(c[1] > 0.0 && c[2] == 0.0, "min-p 0.5 keeps p >= 0.25: {c:?}");
    let c = counts(SamplingOptions { top_k: 1, ..open() }, &probs, 500);
    assert!((c[0] - 1.0).abs() < 1e-9 && c[1] == 0.0, "top-k 1: {c:?}");
}

#[test]
fn greedy_and_the_repetition_penalty_are_exact() {
    let mut s = Sampler::new(SamplingOptions::greedy()).unwrap();
    assert_eq!(s.choose(&mut vec![(0, 1.0), (1, 3.0), (2, 3.0)], &[]), 1);
    let mut s = Sampler::new(SamplingOptions { repeat_penalty: 2.0, ..SamplingOptions::greedy() }).unwrap();
    // 3.0 / 2 = 1.5 < 2.0; a negative logit is multiplied: -1 * 2 = -2 < -1.5.
    assert_eq!(s.choose(&mut vec![(0, 3.0), (1, 2.0)], &[0]), 1);
    assert_eq!(s.choose(&mut vec![(0, -1.0), (1, -1.5)], &[0]), 1);
}

#[test]
fn presence_and_frequency_penalties_subtract_per_token_and_per_occurrence() {
    let greedy = SamplingOptions::greedy();
    // Token 0 occurred twice, token 1 once: presence 0.7 takes 3.0 to 2.3 and 2.8 to 2.1.
    let mut s = Sampler::new(SamplingOptions { presence_penalty: 0.7, ..greedy }).unwrap();
    assert!(!s.is_greedy());
    assert_eq!(s.choose(&mut vec![(0, 3.0), (1, 2.8), (2, 2.4)], &[0, 0, 1]), 2);
    // Frequency 0.3: token 0 loses 0.6 (2.4), token 1 0.3 (2.5): token 1 wins.
    let mut s = Sampler::new(SamplingOptions { frequency_penalty: 0.3, ..greedy }).unwrap();
    assert_eq!(s.choose(&mut vec![(0, 3.0), (1, 2.8), (2, 2.4)], &[0, 0, 1]), 1);
    // A negative presence penalty favours what was seen.
    let mut s = Sampler::new(SamplingOptions { presence_penalty: -1.0, ..greedy }).unwrap();
    assert_eq!(s.choose(&mut vec![(0, 3.0), (1, 2.8)], &[1]), 1);
    for bad in [2.5, -2.1, f32::NAN] {
        assert!(Sampler::new(SamplingOptions { presence_penalty: bad, ..greedy }).is_err());
        assert!(Sampler::new(SamplingOptions { frequency_penalty: bad, ..greedy }).is_err());
    }
}

#[test]
fn seeds_reproduce() {
    let probs = [0.25; 4];
    let run = |seed| {
        let mut s = Sampler::new(SamplingOptions { seed, ..open() }).unwrap();
        (0..64).map(|_| s.choose(&mut logits_of(&probs), &[])).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn the_gpu_path_agrees_with_reading_every_logit() {
    let rt = rt();
    let vocab = 5000;
    // A steep distribution: the top few tokens hold nearly all the mass.
    let logits: Vec<f32> = (0..vocab).map(|i| ((i * 7919) % vocab) as f32 / 250.0).collect();
    let t = Tensor::from_slice(&rt, [1, vocab], &logits).unwrap();
    let history: Vec<u32> = vec![4999, 4998, 17];
    for options in [
        SamplingOptions { repeat_penalty: 1.3, ..SamplingOptions::greedy() },
        SamplingOptions { top_k: 40, top_p: 0.9, repeat_penalty: 1.3, seed: 9, ..SamplingOptions::default() },
    ] {
        let mut gpu = Sampler::new(options).unwrap();
        let mut cpu = Sampler::new(options).unwrap();
        let mut penalized = history.clone();
        penalized.sort_unstable();
        for _ in 0..20 {
            let a = gpu.sample(&t, &history).unwrap();
            let mut all: Vec<(u32, f32)> = (0u32..).zip(logits.iter().copied()).collect();
            let b = cpu.choose(&mut all, &penalized);
            assert_eq!(a, b, "{options:?}");
        }
    }
}

#[test]
fn bad_options_are_errors() {
    for o in [
        SamplingOptions { temperature: -1.0, ..SamplingOptions::default() },
        SamplingOptions { top_p: 1.5, ..SamplingOptions::default() },
        SamplingOptions { min_p: f32::NAN, ..SamplingOptions::default() },
        SamplingOptions { repeat_penalty: 0.0, ..SamplingOptions::default() },
    ] {
        assert!(Sampler::new(o).is_err(), "{o:?}");
    }
}
