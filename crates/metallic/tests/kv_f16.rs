//! f16 key/value caches under f32 queries (the decoders' default KV cache): every attention
//! kernel that reads a cache — the fused kernels (rows and tiled), split-K and the slotted
//! batched step — against the f64 reference on the f16-rounded keys and values (the arithmetic
//! stays f32, so f32 tolerances hold), `QkvRope` storing into f16 caches, and the mixes that
//! are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::attention::*;
use common::*;
use metallic::kernels::rope::{QkvRope, RopeOptions};
use metallic::kernels::sdpa::{
    FlashAttention, FlashKernel, SdpaImpl, SdpaOptions, SlotAttention, SplitKAttention, attention,
};
use metallic::{DType, Runtime, Tensor};

/// Whether `rt` runs f16 shaders; where it does not, an f16 cache is refused as unsupported
/// when recorded (and the decoders keep f32 caches).
fn has_f16(rt: &Runtime) -> bool {
    if rt.context().caps().shader_f16() {
        return true;
    }
    let case = mha(1, 1, 1, 4, 8);
    let x = mixed_inputs(rt, &case, &mut Rng::new(1));
    let out = Tensor::zeros(rt, case.out_shape(), DType::F32).unwrap();
    let err = rt.record(&SplitKAttention::new(&x.q, &x.k, &x.v, &out, case.options(None)).unwrap()).unwrap_err();
    assert!(matches!(err, metallic::Error::Unsupported { .. }), "{err}");
    false
}

/// f32 queries, f16 keys and values; the reference sees the rounded values.
fn mixed_inputs(rt: &Runtime, case: &Case, rng: &mut Rng) -> Inputs {
    let (q, qv) = upload(rt, &case.q_shape(), DType::F32, &rng.vec(numel(&case.q_shape()), -1.0, 1.0));
    let (k, kv) = upload(rt, &case.k_shape(), DType::F16, &rng.vec(numel(&case.k_shape()), -1.0, 1.0));
    let (v, vv) = upload(rt, &case.v_shape(), DType::F16, &rng.vec(numel(&case.v_shape()), -1.0, 1.0));
    Inputs { q, k, v, qv, kv, vv }
}

const CASES: &[Case] = &[
    mha(1, 2, 1, 1, 8),
    mha(1, 14, 1, 300, 64).kv(2).causal(None),
    mha(2, 4, 3, 2049, 16).kv(2).causal(Some(150)),
    mha(1, 8, 64, 64, 64).kv(2).causal(None),
    mha(1, 8, 64, 80, 32).kv(2).causal(Some(16)),
    mha(1, 4, 70, 90, 128).kv(1).causal(None).window(40),
    mha(1, 2, 5, 33, 24).dv(40),
    mha(2, 3, 7, 65, 7).dv(13),
];

#[test]
fn every_cache_reading_kernel_matches_f64_on_f16_caches() {
    let rt = runtime();
    if !has_f16(&rt) {
        return;
    }
    let mut rng = Rng::new(16);
    for case in CASES {
        let x = mixed_inputs(&rt, case, &mut rng);
        let want = reference(case, &x.qv, &x.kv, &x.vv, None);
        let mut paths: Vec<(String, Vec<f32>)> = Vec::new();
        for kernel in [FlashKernel::Rows, FlashKernel::Tiled] {
            let out = poisoned(&rt, &case.out_shape(), DType::F32);
            let op = FlashAttention::new(&x.q, &x.k, &x.v, &out, case.options(None)).unwrap();
            match op.with_kernel(kernel) {
                Ok(op) => {
                    rt.record(&op).unwrap();
                    paths.push((format!("{kernel:?}"), out.to_vec_f32().unwrap()));
                }
                // The tiled kernel's head-dimension bound, or an adapter short of its memory.
                Err(metallic::Error::InvalidShape { .. }) => {
                    assert!(case.d.max(case.dv) > FlashAttention::TILED_MAX_HEAD_DIM, "{case:?}");
                }
                Err(err) => assert!(matches!(err, metallic::Error::Unsupported { .. }), "{case:?}: {err}"),
            }
        }
        // Split-K takes decoding shapes: at most MAX_ROWS query rows per K/V head.
        if case.heads / case.kv_heads * case.seq_q <= SplitKAttention::MAX_ROWS {
            let out = poisoned(&rt, &case.out_shape(), DType::F32);
            rt.record(&SplitKAttention::new(&x.q, &x.k, &x.v, &out, case.options(None)).unwrap()).unwrap();
            paths.push(("split-K".into(), out.to_vec_f32().unwrap()));
        }
        assert!(paths.len() >= 2 || case.seq_q > 1, "{case:?}: {} paths", paths.len());
        eprintln!("{case:?}: {:?}", paths.iter().map(|(p, _)| p).collect::<Vec<_>>());
        for (path, got) in &paths {
            check(got, &want, tol(DType::F32), &format!("{case:?} {path}"));
        }
    }
}

/// A cache bound whole with only its first positions read (`keys`), as the decoders bind it.
#[test]
fn a_prefix_of_an_f16_cache_is_attended_to() {
    let rt = runtime();
    if !has_f16(&rt) {
        return;
    }
    let case = mha(1, 14, 1, 37, 64).kv(2).causal(None);
    let capacity = 96;
    let mut rng = Rng::new(3);
    let x = mixed_inputs(&rt, &case, &mut rng);
    let grow = |values: &[f64]| {
        let mut all = vec![f64::NAN; case.kv_heads * capacity * case.d];
        for h in 0..case.kv_heads {
            let rows = &values[h * case.seq_k * case.d..(h + 1) * case.seq_k * case.d];
            all[h * capacity * case.d..][..rows.len()].copy_from_slice(rows);
        }
        upload(&rt, &[1, case.kv_heads, capacity, case.d], DType::F16, &all).0
    };
    let (k, v) = (grow(&x.kv), grow(&x.vv));
    let options = SdpaOptions { keys: Some(case.seq_k), ..case.options(None) };
    let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
    for path in [SdpaImpl::SplitK, SdpaImpl::Fused, SdpaImpl::Auto] {
        let out = poisoned(&rt, &case.out_shape(), DType::F32);
        rt.record(attention(&x.q, &k, &v, &out, options.clone(), path).unwrap().1.as_ref()).unwrap();
        check(&out.to_vec_f32().unwrap(), &want, tol(DType::F32), &format!("{path:?}"));
    }
}

#[test]
fn mixes_other_than_f16_caches_under_f32_queries_are_refused() {
    let rt = runtime();
    if !has_f16(&rt) {
        return;
    }
    let case = mha(1, 2, 1, 8, 16);
    let mut rng = Rng::new(4);
    let x = mixed_inputs(&rt, &case, &mut rng);
    let out = Tensor::zeros(&rt, case.out_shape(), DType::F32).unwrap();
    // The composite path multiplies through GEMMs of one dtype: refused with a reason.
    let err = attention(&x.q, &x.k, &x.v, &out, case.options(None), SdpaImpl::Composite).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("composite"), "{err}");
    // f16 keys with f32 values, f32 caches under f16 queries, an f16 output of f32 queries.
    let (k32, _) = upload(&rt, &case.k_shape(), DType::F32, &x.kv);
    let (q16, _) = upload(&rt, &case.q_shape(), DType::F16, &x.qv);
    let out16 = Tensor::zeros(&rt, case.out_shape(), DType::F16).unwrap();
    for (q, k, v, out) in [(&x.q, &x.k, &k32, &out), (&q16, &k32, &k32, &out16), (&x.q, &x.k, &x.v, &out16)] {
        let err = SplitKAttention::new(q, k, v, out, case.options(None)).unwrap_err();
        assert!(matches!(err, metallic::Error::DTypeMismatch { .. }), "{err}");
        assert!(FlashAttention::new(q, k, v, out, case.options(None)).is_err());
    }
}

/// The slotted batched step over f16 caches is bit-identical to one-sequence split-K calls over
/// each slot's prefix, and close to f64 on the rounded values.
#[test]
fn slot_attention_over_f16_caches_matches_the_one_sequence_call() {
    let rt = runtime();
    if !has_f16(&rt) {
        return;
    }
    let (heads, kv_heads, d, slots, cap) = (6, 2, 32, 3, 400);
    let rows: [(usize, usize); 3] = [(2, 350), (0, 9), (1, 0)];
    let m = rows.len();
    let mut rng = Rng::new(6);
    let (q, _) = upload(&rt, &[m, heads, d], DType::F32, &rng.vec(m * heads * d, -1.0, 1.0));
    let (k, _) = upload(&rt, &[slots, kv_heads, cap, d], DType::F16, &rng.vec(slots * kv_heads * cap * d, -1.0, 1.0));
    let (v, _) = upload(&rt, &[slots, kv_heads, cap, d], DType::F16, &rng.vec(slots * kv_heads * cap * d, -1.0, 1.0));
    let table: Vec<u32> = rows.iter().flat_map(|&(s, p)| [s as u32, p as u32]).collect();
    let table = Tensor::from_slice(&rt, [m, 2], &table).unwrap();
    let scale = 0.2f32;
    let out = poisoned(&rt, &[m, heads, d], DType::F32);
    let len = SlotAttention::scratch_len(rt.context(), m, heads, kv_heads, d).unwrap();
    let scratch = Tensor::empty(&rt, [len], DType::F32).unwrap();
    let keys: Vec<usize> = rows.iter().map(|&(_, p)| p + 1).collect();
    rt.record(&SlotAttention::new(&q, &k, &v, &out, &table, &keys, scale, None, &scratch).unwrap()).unwrap();
    let got = out.to_vec::<f32>().unwrap();
    for (b, &(slot, pos)) in rows.iter().enumerate() {
        let q1 = q.narrow(b, 1).unwrap().reshape([1, heads, 1, d]).unwrap();
        let one = Tensor::zeros(&rt, [1, heads, 1, d], DType::F32).unwrap();
        let options = SdpaOptions { scale: Some(scale), causal: true, keys: Some(pos + 1), ..Default::default() };
        let (k1, v1) = (k.narrow(slot, 1).unwrap(), v.narrow(slot, 1).unwrap());
        rt.record(&SplitKAttention::new(&q1, &k1, &v1, &one, options).unwrap()).unwrap();
        let one = one.to_vec::<f32>().unwrap();
        let row = &got[b * heads * d..][..heads * d];
        assert!(row.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "row {b}: bits");
    }
    // An f32 output of f32 queries is required; f16 caches under f16 queries are plain f16.
    let k32 = Tensor::zeros(&rt, [slots, kv_heads, cap, d], DType::F32).unwrap();
    assert!(SlotAttention::new(&q, &k, &k32, &out, &table, &keys, scale, None, &scratch).is_err());
}

/// `QkvRope` into f16 caches stores each key and value rounded once from what it stores into
/// f32 caches (within one f16 step of it), and writes the same queries.
#[test]
fn qkv_rope_rounds_keys_and_values_into_f16_caches() {
    let rt = runtime();
    if !has_f16(&rt) {
        return;
    }
    let (seq, n_q, n_kv, hd, cap, start) = (3, 4, 2, 64, 10, 5);
    let mut rng = Rng::new(8);
    let heads = n_q + 2 * n_kv;
    let (x, _) = upload(&rt, &[seq, heads * hd], DType::F32, &rng.vec(seq * heads * hd, -3.0, 3.0));
    let (w, _) = upload(&rt, &[hd], DType::F32, &rng.vec(hd, 0.5, 1.5));
    let options = RopeOptions { base: 10_000.0, position_offset: start, ..Default::default() };
    let run = |dtype: DType| {
        let q = poisoned(&rt, &[n_q, seq, hd], DType::F32);
        let k = Tensor::zeros(&rt, [n_kv, cap, hd], dtype).unwrap();
        let v = Tensor::zeros(&rt, [n_kv, cap, hd], dtype).unwrap();
        rt.record(&QkvRope::new(&x, &q, &k, &v, options).unwrap().with_norms(&w, &w, 1e-6).unwrap()).unwrap();
        (q.to_vec::<f32>().unwrap(), k.to_vec_f32().unwrap(), v.to_vec_f32().unwrap())
    };
    let (q32, k32, v32) = run(DType::F32);
    let (q16, k16, v16) = run(DType::F16);
    assert!(q32.iter().zip(&q16).all(|(a, b)| a.to_bits() == b.to_bits()), "queries");
    for (name, wide, narrow) in [("k", &k32, &k16), ("v", &v32, &v16)] {
        for (i, (&a, &b)) in wide.iter().zip(narrow).enumerate() {
            // One f16 step at a's magnitude (2^-10 relative; subnormals below 2^-14).
            let step = (f64::from(a).abs() * 2f64.powi(-10)).max(2f64.powi(-24));
            assert!((f64::from(a) - f64::from(b)).abs() <= step, "{name}[{i}]: {b} from {a}");
        }
        assert!(narrow.iter().any(|&b| b != 0.0), "{name}: nothing stored");
    }
    // f32 caches under an f16 x are refused.
    let (x16, _) = upload(&rt, &[seq, heads * hd], DType::F16, &rng.vec(seq * heads * hd, -3.0, 3.0));
    let q16 = Tensor::zeros(&rt, [n_q, seq, hd], DType::F16).unwrap();
    let k = Tensor::zeros(&rt, [n_kv, cap, hd], DType::F32).unwrap();
    assert!(QkvRope::new(&x16, &q16, &k, &k, options).is_err());
}
