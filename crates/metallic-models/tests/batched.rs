//! Batched decoding ([`Decoder::step`] over [`KvSlots`]): every sequence's logits are
//! bit-identical to a one-token [`Decoder::forward`] on its own [`KvCache`], whatever else is
//! in the batch and in which order — on every architecture path (the synthetic files of
//! `tests/fixtures/synthetic`, a tiny Gemma 3 with a sliding window shorter than the
//! sequences, and SmolLM2 135M's quantized weights).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;

use common::synthetic::TinyGemma;
use metallic::Runtime;
use metallic_models::GgufFile;
use metallic_models::decoder::{Decoder, KvSlots, PREFILL_CHUNK};

/// Prompts of different lengths (ids below 40: every test vocabulary has them).
const PROMPTS: [&[u32]; 3] = [&[1, 5, 9, 13, 17, 21, 25], &[1, 30], &[1, 7, 7, 7, 2, 33, 12, 19, 4, 8, 15, 16, 23]];
/// Tokens fed after each prompt, one per step.
const FED: [u32; 4] = [3, 11, 29, 6];

/// Each prompt alone: the logits of each fed token's step.
fn solo(decoder: &Decoder, prompt: &[u32], capacity: usize) -> Vec<Vec<f32>> {
    let mut cache = decoder.new_cache(capacity).unwrap();
    decoder.forward(prompt, &mut cache).unwrap().to_vec::<f32>().unwrap();
    FED.iter().map(|&t| decoder.forward(&[t], &mut cache).unwrap().to_vec::<f32>().unwrap()).collect()
}

/// The three prompts in slots 3, 0 and 2 of four, then steps of all three (in a shuffled
/// order), of two, and of one, until each has taken every fed token.
fn batched(decoder: &Decoder, capacity: usize) -> Vec<Vec<Vec<f32>>> {
    let slots = [3usize, 0, 2];
    let mut kv: KvSlots = decoder.new_slots(4, capacity).unwrap();
    for (&slot, prompt) in slots.iter().zip(PROMPTS) {
        decoder.prefill_slot(prompt, &mut kv, slot, PREFILL_CHUNK).unwrap().to_vec::<f32>().unwrap();
    }
    let mut out = vec![Vec::new(); 3];
    let mut fed = [0usize; 3];
    // Which sequences each step runs, in row order.
    let plan: [&[usize]; 6] = [&[2, 0, 1], &[1, 2], &[0], &[2, 1, 0], &[0, 1], &[2]];
    for rows in plan {
        let batch: Vec<(usize, u32)> = rows.iter().map(|&s| (slots[s], FED[fed[s]])).collect();
        let logits = decoder.step(&batch, &mut kv).unwrap().to_vec::<f32>().unwrap();
        let vocab = logits.len() / rows.len();
        for (i, &s) in rows.iter().enumerate() {
            out[s].push(logits[i * vocab..(i + 1) * vocab].to_vec());
            fed[s] += 1;
        }
    }
    assert_eq!(fed, [FED.len(); 3], "the plan feeds every token");
    for (&slot, prompt) in slots.iter().zip(PROMPTS) {
        assert_eq!(kv.len(slot), prompt.len() + FED.len());
    }
    out
}

fn check(name: &str, decoder: &Decoder) {
    // Solo caches sized differently from the slots: the capacity must not matter either.
    let got = batched(decoder, 64);
    for (s, prompt) in PROMPTS.iter().enumerate() {
        let want = solo(decoder, prompt, prompt.len() + FED.len());
        for (step, (g, w)) in got[s].iter().zip(&want).enumerate() {
            let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && g.len() == w.len(), "{name}: prompt {s} step {step}: batched logits differ from solo");
        }
    }
}

fn load(path: &Path) -> Decoder {
    Decoder::load(&GgufFile::open(path).unwrap(), &Runtime::new().unwrap()).unwrap()
}

#[test]
fn batched_steps_equal_solo_steps_on_every_architecture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    for name in ["llama3", "llama_linear", "qwen2", "qwen3", "phi3", "phi3_longrope"] {
        check(name, &load(&dir.join(format!("{name}.gguf"))));
    }
}

/// Every slot's prompts run in one set of row buffers: after a first burst, prompts of other
/// lengths (up to the rows the buffers grew to) build no bind groups — a server's next prompts
/// rebind what the earlier ones bound — and give the logits a fresh cache gives.
#[test]
fn prompts_reuse_one_set_of_row_buffers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    // Fused and split projections, q/k norms, biases, LongRoPE.
    for name in ["llama3", "qwen2", "qwen3", "phi3_longrope"] {
        let rt = Runtime::new().unwrap();
        let decoder = Decoder::load(&GgufFile::open(dir.join(format!("{name}.gguf"))).unwrap(), &rt).unwrap();
        let prompt = |len: usize, salt: u32| -> Vec<u32> { (0..len as u32).map(|i| 1 + (i * 7 + salt) % 30).collect() };
        let second = [3usize, 11, 16, 7];
        let want: Vec<Vec<f32>> = second
            .iter()
            .zip(0..)
            .map(|(&len, salt)| {
                let mut cache = decoder.new_cache(64).unwrap();
                decoder.forward(&prompt(len, salt), &mut cache).unwrap().to_vec::<f32>().unwrap()
            })
            .collect();
        let mut kv = decoder.new_slots(4, 64).unwrap();
        for (slot, len) in [13usize, 2, 9, 5].into_iter().enumerate() {
            decoder.prefill_slot(&prompt(len, 99), &mut kv, slot, PREFILL_CHUNK).unwrap().to_vec::<f32>().unwrap();
        }
        let before = rt.cache().stats().bind_group_misses;
        for (slot, (&len, salt)) in second.iter().zip(0..).enumerate() {
            kv.truncate(slot, 0);
            let got = decoder.prefill_slot(&prompt(len, salt), &mut kv, slot, PREFILL_CHUNK).unwrap();
            let got = got.to_vec::<f32>().unwrap();
            let same = got.iter().zip(&want[slot]).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same && got.len() == want[slot].len(),
                "{name}, prompt of {len}: logits differ from a fresh cache's"
            );
            assert_eq!(kv.len(slot), len);
        }
        let built = rt.cache().stats().bind_group_misses - before;
        assert_eq!(built, 0, "{name}: the second burst of prompts built {built} bind groups");
        // Prompts whose cached prefix leaves one token run in one set of one-token
        // activations: their logits are one tensor (a server keeps an argmax op per logits
        // tensor it sees).
        let mut one = |slot: usize| {
            kv.truncate(slot, 3);
            decoder.prefill_slot(&[5], &mut kv, slot, PREFILL_CHUNK).unwrap()
        };
        let (a, b) = (one(0), one(1));
        assert!(a.buffer() == b.buffer() && a.byte_offset() == b.byte_offset(), "{name}: one-token prompts' logits");
    }
}

#[test]
fn batched_steps_equal_solo_steps_with_a_sliding_window() {
    let dir = common::TempDir::new("batched");
    check("tiny gemma3", &tiny_gemma(&dir, 2, 7));
}

/// A tiny Gemma 3 of `layers` layers with a sliding window of 5 (every sequence here outgrows
/// it, so local layers skip keys), written under `dir`.
fn tiny_gemma(dir: &common::TempDir, layers: usize, seed: u64) -> Decoder {
    let tiny = TinyGemma {
        layers,
        n_embd: 32,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        n_ff: 64,
        vocab: 40,
        window: 5,
        context: 128,
    };
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, tiny.weights(seed).gguf()).unwrap();
    load(&path)
}

#[test]
fn batched_steps_equal_solo_steps_on_smollm2() {
    let path = common::model_file("smollm2-135m-instruct-q4_1.gguf", "fetch-smollm2.sh");
    check("smollm2", &load(&path));
}

/// Decode steps with each block's norms read through by its first products and its residual
/// adds made by its last ones (the default where a model has no post-norms) against the
/// separate norm kernels: the same logits up to f32 rounding (the norm's scale is applied to
/// each product's sums rather than to x, and its sum of squares summed in another order);
/// batched still bit-identical to solo either way.
#[test]
fn fused_norms_agree_with_the_separate_kernels() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    let mut paths: Vec<(String, std::path::PathBuf)> = ["llama3", "qwen2", "qwen3", "phi3"]
        .iter()
        .map(|name| (name.to_string(), dir.join(format!("{name}.gguf"))))
        .collect();
    paths.push(("smollm2".into(), common::model_file("smollm2-135m-instruct-q4_1.gguf", "fetch-smollm2.sh")));
    for (name, path) in paths {
        let mut decoder = load(&path);
        assert!(decoder.fused_norms(), "{name}: no post-norms, so the steps fuse them");
        let fused: Vec<_> = PROMPTS.iter().map(|p| solo(&decoder, p, p.len() + FED.len())).collect();
        decoder.set_fused_norms(false);
        assert!(!decoder.fused_norms());
        check(&format!("{name}, separate norms"), &decoder);
        for (s, prompt) in PROMPTS.iter().enumerate() {
            let separate = solo(&decoder, prompt, prompt.len() + FED.len());
            for (step, (a, b)) in fused[s].iter().zip(&separate).enumerate() {
                let top = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                // SmolLM2's 30 layers amplify the rounding of one norm's sum of squares (summed
                // in another order) to ~4e-4 of the largest logit on these prompts.
                let tol = if name == "smollm2" { 1e-3 } else { 1e-4 };
                assert!(
                    worst <= tol * top.max(1.0),
                    "{name}: prompt {s} step {step}: {worst} apart (logits up to {top})"
                );
            }
        }
    }
    // Gemma 3's post-norms come before its residual adds: nothing to fuse.
    let mut gemma = tiny_gemma(&common::TempDir::new("fused"), 1, 3);
    gemma.set_fused_norms(true);
    assert!(!gemma.fused_norms());
}

#[test]
fn bad_steps_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    let decoder = load(&dir.join("qwen2.gguf"));
    let mut kv = decoder.new_slots(2, 3).unwrap();
    let err = |r: metallic_models::Result<metallic::Tensor>| r.unwrap_err().to_string();
    assert!(err(decoder.step(&[], &mut kv)).contains("no sequences"));
    assert!(err(decoder.step(&[(2, 1)], &mut kv)).contains("slot 2 of 2"));
    assert!(err(decoder.step(&[(0, 1), (0, 2)], &mut kv)).contains("twice"));
    assert!(err(decoder.step(&[(0, 1_000_000)], &mut kv)).contains("outside the vocabulary"));
    decoder.prefill_slot(&[1, 2, 3], &mut kv, 1, PREFILL_CHUNK).unwrap();
    assert!(err(decoder.step(&[(1, 1)], &mut kv)).contains("full"));
    assert!(decoder.new_slots(0, 4).is_err() && decoder.new_slots(1, 0).is_err());
    // A failed step changes no length.
    assert_eq!((kv.len(0), kv.len(1)), (0, 3));
}

#[test]
fn a_copied_prefix_continues_as_the_original() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    let decoder = load(&dir.join("qwen3.gguf"));
    let mut kv = decoder.new_slots(3, 32).unwrap();
    decoder.prefill_slot(PROMPTS[2], &mut kv, 0, PREFILL_CHUNK).unwrap();
    // Slot 2 gets the first 6 positions; both then run the same tokens.
    decoder.copy_prefix(&mut kv, 0, 2, 6).unwrap();
    assert_eq!(kv.len(2), 6);
    let rest = &PROMPTS[2][6..];
    kv.truncate(0, 6);
    for &t in rest {
        let logits = decoder.step(&[(0, t), (2, t)], &mut kv).unwrap().to_vec::<f32>().unwrap();
        let (a, b) = logits.split_at(logits.len() / 2);
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "a copied prefix diverges");
    }
    // More positions than the source holds, a slot onto itself, a slot that does not exist.
    assert!(decoder.copy_prefix(&mut kv, 1, 0, 1).is_err());
    assert!(decoder.copy_prefix(&mut kv, 0, 0, 1).is_err());
    assert!(decoder.copy_prefix(&mut kv, 0, 3, 1).is_err());
}

#[test]
fn a_step_fed_from_the_gpu_equals_one_fed_from_the_host() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    let decoder = load(&dir.join("llama3.gguf"));
    let (mut host, mut gpu) = (decoder.new_slots(2, 32).unwrap(), decoder.new_slots(2, 32).unwrap());
    for kv in [&mut host, &mut gpu] {
        decoder.prefill_slot(PROMPTS[0], kv, 0, PREFILL_CHUNK).unwrap();
        decoder.prefill_slot(PROMPTS[1], kv, 1, PREFILL_CHUNK).unwrap();
    }
    let first = decoder.step(&[(1, 4), (0, 9)], &mut host).unwrap();
    decoder.step(&[(1, 4), (0, 9)], &mut gpu).unwrap();
    // The next tokens: the argmax of each row, on the GPU for one, read back for the other.
    let (_, ids) = first.top_k(1).unwrap();
    let next: Vec<u32> = ids.to_vec::<u32>().unwrap();
    let a = decoder.step(&[(1, next[0]), (0, next[1])], &mut host).unwrap().to_vec::<f32>().unwrap();
    let b = decoder.step_on_gpu(&[1, 0], &ids, &mut gpu).unwrap().to_vec::<f32>().unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "GPU-fed step differs");
    assert_eq!((gpu.len(0), gpu.len(1)), (PROMPTS[0].len() + 2, PROMPTS[1].len() + 2));
    assert!(decoder.step_on_gpu(&[0], &ids, &mut gpu).is_err(), "two ids for one slot");
}

/// Twelve sequences (more than `EXACT_STEP_ROWS`) of SmolLM2 135M stepped together: with exact
/// batches, bit-identical to solo steps; by default, where the wide products take the tensor
/// cores, within f16 rounding of them (the same greedy token unless the solo step's two best
/// logits are nearly tied); where there are none (CPU adapters, adapters without cooperative
/// matrices) the default is the exact step.
#[test]
fn steps_of_more_than_eight_sequences() {
    use metallic_models::decoder::EXACT_STEP_ROWS;
    const N: usize = 12;
    const STEPS: usize = 3;
    let path = common::model_file("smollm2-135m-instruct-q4_1.gguf", "fetch-smollm2.sh");
    let mut decoder = load(&path);
    const { assert!(N > EXACT_STEP_ROWS) };
    // Prompts of 2 to 7 tokens, all different; each sequence then takes 3 fed tokens.
    let prompt = |i: usize| -> Vec<u32> { (0..2 + i % 6).map(|j| (1 + 37 * i + 101 * j) as u32 % 2000 + 5).collect() };
    let fed = |i: usize, step: usize| (300 + 17 * i + 41 * step) as u32;
    let solo: Vec<Vec<Vec<f32>>> = (0..N)
        .map(|i| {
            let p = prompt(i);
            let mut cache = decoder.new_cache(p.len() + STEPS).unwrap();
            decoder.forward(&p, &mut cache).unwrap().to_vec::<f32>().unwrap();
            (0..STEPS).map(|s| decoder.forward(&[fed(i, s)], &mut cache).unwrap().to_vec::<f32>().unwrap()).collect()
        })
        .collect();
    let batched = |decoder: &Decoder| -> Vec<Vec<Vec<f32>>> {
        let mut kv = decoder.new_slots(N, 16).unwrap();
        for i in 0..N {
            decoder.prefill_slot(&prompt(i), &mut kv, i, PREFILL_CHUNK).unwrap();
        }
        let mut out = vec![Vec::new(); N];
        for s in 0..STEPS {
            let rows: Vec<(usize, u32)> = (0..N).map(|i| (i, fed(i, s))).collect();
            let logits = decoder.step(&rows, &mut kv).unwrap().to_vec::<f32>().unwrap();
            for (i, row) in logits.chunks_exact(logits.len() / N).enumerate() {
                out[i].push(row.to_vec());
            }
        }
        out
    };
    let bitwise = |got: &[Vec<Vec<f32>>], what: &str| {
        for (i, (g, w)) in got.iter().zip(&solo).enumerate() {
            for (s, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: sequence {i} step {s}");
            }
        }
    };
    decoder.set_exact_batches(true);
    assert!(!decoder.step_on_tensor_cores(N));
    bitwise(&batched(&decoder), "exact batches");
    decoder.set_exact_batches(false);
    if !decoder.step_on_tensor_cores(N) {
        // No cooperative matrices (a CPU adapter, most non-NVIDIA ones): the default step is
        // the exact one just checked.
        return;
    }
    let argmax = |v: &[f32]| v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b });
    let (mut worst, mut flips) = (0f32, 0);
    for (i, (g, w)) in batched(&decoder).iter().zip(&solo).enumerate() {
        for (s, (a, b)) in g.iter().zip(w).enumerate() {
            let top = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let apart = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            worst = worst.max(apart / top.max(1.0));
            let (best, value) = argmax(b);
            let runner_up = b.iter().enumerate().filter(|&(j, _)| j != best).fold(f32::MIN, |m, (_, &x)| m.max(x));
            if argmax(a).0 != best {
                flips += 1;
                assert!(
                    value - runner_up <= 2.0 * apart,
                    "sequence {i} step {s}: greedy token changed, margin {}",
                    value - runner_up
                );
            }
            // f16 rounding of each product's x and weights, through 30 layers.
            assert!(
                apart <= TENSOR_CORE_TOL * top.max(1.0),
                "sequence {i} step {s}: {apart} apart (logits up to {top})"
            );
        }
    }
    eprintln!("tensor-core steps: logits at most {worst:e} of the largest apart from solo; {flips} greedy flips");
}

/// How far (relative to the largest logit) a tensor-core step of SmolLM2 may stray from solo:
/// 3.0e-4 measured on an H200 (session 17), no greedy token changed.
const TENSOR_CORE_TOL: f32 = 2e-3;

/// Prompts run together in one pass ([`Decoder::prefill_slots`]) of lengths that
/// [`Decoder::prefills_together`] admits — one after a cached prefix of its slot — give the
/// logits and the cached keys and values (checked through a decode step after) that each
/// gives alone, bit for bit: on the architecture paths of the synthetic files (q/k norms,
/// biases, split projections, LongRoPE) and a Gemma 3 whose sliding window is shorter than
/// the prompts.
#[test]
fn prompts_run_together_equal_each_alone() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    let gemma_dir = common::TempDir::new("together");
    let mut decoders: Vec<(String, Decoder)> = ["llama3", "qwen2", "qwen3", "phi3_longrope"]
        .iter()
        .map(|name| (name.to_string(), load(&dir.join(format!("{name}.gguf")))))
        .collect();
    decoders.push(("tiny gemma3".into(), tiny_gemma(&gemma_dir, 2, 5)));
    for (name, decoder) in &decoders {
        assert!(!decoder.prefills_together(1), "{name}: one token takes the step's kernels");
        // The shortest chunk that runs with others as alone (4 rows on GPUs, 32 on CPUs).
        let min = (2..=64).find(|&n| decoder.prefills_together(n)).unwrap();
        assert!(!decoder.prefills_together(min - 1) && decoder.prefills_together(min + 40), "{name}");
        let prompt = |len: usize, salt: u32| -> Vec<u32> { (0..len as u32).map(|i| 1 + (i * 5 + salt) % 37).collect() };
        let prefix = prompt(6, 8);
        // (slot, tokens): slot 2 continues after `prefix`.
        let parts = [(3usize, prompt(min, 1)), (0, prompt(min + 9, 2)), (2, prompt(min + 3, 3))];
        let fed = [4u32, 17, 29];
        let capacity = 2 * min + 32;
        // Alone: each in a cache of its own, then one step of its fed token.
        let alone: Vec<(Vec<f32>, Vec<f32>)> = parts
            .iter()
            .zip(fed)
            .map(|((slot, ids), t)| {
                let mut cache = decoder.new_cache(capacity).unwrap();
                if *slot == 2 {
                    decoder.forward(&prefix, &mut cache).unwrap();
                }
                let first = decoder.forward(ids, &mut cache).unwrap().to_vec::<f32>().unwrap();
                (first, decoder.forward(&[t], &mut cache).unwrap().to_vec::<f32>().unwrap())
            })
            .collect();
        let mut kv = decoder.new_slots(4, capacity).unwrap();
        decoder.prefill_slot(&prefix, &mut kv, 2, PREFILL_CHUNK).unwrap();
        let together: Vec<(usize, &[u32])> = parts.iter().map(|(slot, ids)| (*slot, ids.as_slice())).collect();
        let firsts = decoder.prefill_slots(&together, &mut kv, PREFILL_CHUNK).unwrap();
        assert_eq!(firsts.dims(), [3, decoder.config().vocab]);
        let firsts = firsts.to_vec::<f32>().unwrap();
        for ((slot, ids), len) in parts.iter().zip([0, 0, prefix.len()]) {
            assert_eq!(kv.len(*slot), len + ids.len(), "{name}: slot {slot}'s length");
        }
        let rows: Vec<(usize, u32)> = parts.iter().zip(fed).map(|((slot, _), t)| (*slot, t)).collect();
        let steps = decoder.step(&rows, &mut kv).unwrap().to_vec::<f32>().unwrap();
        let vocab = decoder.config().vocab;
        let same =
            |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        for (i, (first, step)) in alone.iter().enumerate() {
            assert!(same(&firsts[i * vocab..(i + 1) * vocab], first), "{name}: prompt {i}'s logits differ");
            assert!(same(&steps[i * vocab..(i + 1) * vocab], step), "{name}: prompt {i}'s next step differs");
        }
    }
}

#[test]
fn bad_prompt_passes_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    let mut decoder = load(&dir.join("qwen2.gguf"));
    // The experimental split of K sums in an order that follows the pass's rows.
    assert!(decoder.prefills_together(100));
    decoder.set_coop_split_k(true);
    assert!(!decoder.prefills_together(100));
    decoder.set_coop_split_k(false);
    let mut kv = decoder.new_slots(2, 8).unwrap();
    let err = |r: metallic_models::Result<metallic::Tensor>| r.unwrap_err().to_string();
    let ids: &[u32] = &[1, 2, 3];
    assert!(err(decoder.prefill_slots(&[], &mut kv, PREFILL_CHUNK)).contains("no prompts"));
    assert!(err(decoder.prefill_slots(&[(0, ids)], &mut kv, 0)).contains("chunk of 0"));
    assert!(err(decoder.prefill_slots(&[(2, ids)], &mut kv, PREFILL_CHUNK)).contains("slot 2 of 2"));
    assert!(err(decoder.prefill_slots(&[(0, ids), (0, ids)], &mut kv, PREFILL_CHUNK)).contains("twice"));
    assert!(err(decoder.prefill_slots(&[(0, ids), (1, &[])], &mut kv, PREFILL_CHUNK)).contains("no tokens"));
    assert!(
        err(decoder.prefill_slots(&[(1, &[1_000_000])], &mut kv, PREFILL_CHUNK)).contains("outside the vocabulary")
    );
    assert!(err(decoder.prefill_slots(&[(0, ids), (1, &[1; 9])], &mut kv, PREFILL_CHUNK)).contains("exceed"));
    // A refused pass changes no length.
    assert_eq!((kv.len(0), kv.len(1)), (0, 0));
    decoder.prefill_slots(&[(1, ids), (0, &ids[..1])], &mut kv, PREFILL_CHUNK).unwrap();
    assert_eq!((kv.len(0), kv.len(1)), (1, 3));
}
