//! Split-K ("flash-decoding") attention (and its one-pass kernel, which takes the cases of at
//! most 512 keys) against an f64 CPU reference and the fused kernel:
//! decoding shapes (few queries, long caches), grouped-query heads, the causal rule with default,
//! explicit and negative offsets, masks, 3-D inputs, f16, views at odd offsets, determinism,
//! the `Auto` selector and every error the path adds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::attention::*;
use common::*;
use metallic::kernels::sdpa::{
    SdpaImpl, SdpaOptions, SdpaProblem, SplitKAttention, attention, scaled_dot_product_attention,
    scaled_dot_product_attention_with,
};
use metallic::{DType, Error, Runtime, Tensor};

/// Records the split-K path into a NaN-poisoned output and returns it.
fn split_k(rt: &Runtime, case: &Case, x: &Inputs, mask: Option<Tensor>) -> Vec<f32> {
    let out = poisoned(rt, &case.out_shape(), x.q.dtype());
    rt.record(&SplitKAttention::new(&x.q, &x.k, &x.v, &out, case.options(mask)).unwrap()).unwrap();
    out.to_vec_f32().unwrap()
}

const CASES: &[Case] = &[
    // One query, caches of every length: one key, odd, one chunk, several chunks, a last chunk
    // of one key.
    mha(1, 1, 1, 1, 8),
    mha(2, 2, 1, 7, 16),
    mha(1, 2, 1, 64, 32),
    mha(2, 3, 2, 300, 16),
    mha(1, 2, 1, 2049, 64),
    // Grouped-query decoding: groups 2 and 7 (the 14-head, 2-KV-head shape), several queries.
    mha(1, 4, 3, 300, 32).kv(2),
    mha(1, 14, 1, 2049, 64).kv(2),
    mha(2, 14, 4, 300, 16).kv(2).causal(None),
    // Causal: default offset (each query sees its prefix of the cache), explicit offsets that
    // end mid-chunk and within the first chunk, and more queries than keys (a negative
    // default offset: the first queries see nothing and give 0).
    mha(1, 2, 4, 300, 16).causal(None),
    mha(1, 4, 3, 2049, 16).kv(2).causal(Some(150)),
    mha(2, 2, 2, 300, 8).causal(Some(3)),
    mha(1, 2, 4, 1, 16).causal(None),
    mha(1, 2, 3, 7, 16).causal(None).scale(0.3),
    // Chunks of several key tiles (16 (batch, K/V head) pairs: 128-key chunks).
    mha(2, 16, 1, 1500, 16).kv(8).causal(Some(1400)),
    // v's head dimension differs; odd and large head dimensions.
    mha(1, 2, 2, 300, 24).dv(40),
    mha(2, 1, 3, 65, 7).dv(13).causal(Some(40)),
    mha(1, 2, 1, 300, 128),
    mha(1, 1, 2, 200, 256).dv(200),
    // Sliding windows: chunks wholly before the window, a window inside one chunk, GQA.
    mha(1, 2, 4, 300, 16).window(50),
    mha(1, 4, 3, 2049, 16).kv(2).causal(Some(150)).window(40),
    mha(2, 16, 1, 1500, 16).kv(8).window(700),
    mha(1, 2, 1, 2049, 64).window(1),
];

#[test]
fn matches_reference_for_every_case_dtype_and_param_path() {
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        for dtype in float_dtypes(&rt) {
            let mut worst = 0.0f64;
            let mut rng = Rng::new(21);
            for case in CASES {
                let x = inputs(&rt, case, dtype, &mut rng, 1.0);
                let got = split_k(&rt, case, &x, None);
                let want = reference(case, &x.qv, &x.kv, &x.vv, None);
                worst = worst.max(check(&got, &want, tol(dtype), &format!("{case:?} {dtype} {mode:?}")));
            }
            eprintln!("{dtype} {mode:?}: largest error {worst:e}");
        }
    }
}

/// `keys`: only the first positions of a larger K/V buffer (a KV cache bound whole) are read,
/// by the split-K and the fused kernels alike — what the reference computes on those positions
/// alone, whatever the rest holds (NaN here).
#[test]
fn a_prefix_of_a_cache_is_attended_to() {
    let rt = runtime();
    let capacity = 96;
    let cases = [
        mha(1, 14, 1, 37, 64).kv(2).causal(None),
        mha(1, 4, 5, 70, 16).kv(2).causal(None).window(20),
        mha(1, 3, 2, 1, 32).kv(3).causal(None),
        mha(1, 9, 7, 96, 16).kv(3).causal(None),
    ];
    let mut rng = Rng::new(77);
    for case in cases {
        let x = inputs(&rt, &case, DType::F32, &mut rng, 1.0);
        // The cache: each K/V head's rows first, then NaN up to the capacity.
        let grow = |values: &[f64], dim: usize| {
            let mut all = vec![f64::NAN; case.kv_heads * capacity * dim];
            for h in 0..case.kv_heads {
                let rows = &values[h * case.seq_k * dim..(h + 1) * case.seq_k * dim];
                all[h * capacity * dim..h * capacity * dim + rows.len()].copy_from_slice(rows);
            }
            upload(&rt, &[1, case.kv_heads, capacity, dim], DType::F32, &all).0
        };
        let (k, v) = (grow(&x.kv, case.d), grow(&x.vv, case.dv));
        let options = SdpaOptions { keys: Some(case.seq_k), ..case.options(None) };
        let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
        for path in [SdpaImpl::SplitK, SdpaImpl::Fused, SdpaImpl::Auto] {
            let out = poisoned(&rt, &case.out_shape(), DType::F32);
            rt.record(attention(&x.q, &k, &v, &out, options.clone(), path).unwrap().1.as_ref()).unwrap();
            check(&out.to_vec_f32().unwrap(), &want, tol(DType::F32), &format!("{case:?} {path:?}"));
        }
        // The whole cache (keys = capacity) is a plain problem the composite path takes too.
        let out = poisoned(&rt, &case.out_shape(), DType::F32);
        let composite = attention(&x.q, &k, &v, &out, options, SdpaImpl::Composite).map(|_| ());
        match (case.window, case.seq_k < capacity) {
            (Some(_), _) => assert!(composite.unwrap_err().to_string().contains("window")),
            (None, true) => assert!(composite.unwrap_err().to_string().contains("keys")),
            (None, false) => composite.unwrap(),
        }
    }
    let x = inputs(&rt, &mha(1, 2, 1, 8, 16), DType::F32, &mut rng, 1.0);
    for keys in [0, 9] {
        let options = SdpaOptions { keys: Some(keys), ..SdpaOptions::default() };
        let err = SplitKAttention::new(&x.q, &x.k, &x.v, &x.q.empty_like().unwrap(), options).unwrap_err();
        assert!(err.to_string().contains("outside 1..=8"), "{err}");
    }
}

#[test]
fn rows_that_see_no_key_are_zero() {
    let rt = runtime();
    let mut rng = Rng::new(22);
    // Offset -3 (default, seq_q 4 > seq_k 1): queries 0..3 see nothing.
    let case = mha(1, 2, 4, 1, 16).causal(None);
    let x = inputs(&rt, &case, DType::F32, &mut rng, 1.0);
    let got = split_k(&rt, &case, &x, None);
    for h in 0..2 {
        assert!(got[h * 4 * 16..][..3 * 16].iter().all(|&g| g == 0.0), "head {h}: unseeing rows must be 0");
        assert!(got[(h * 4 + 3) * 16..][..16].iter().all(|&g| g != 0.0 && g.is_finite()));
    }
}

#[test]
fn additive_masks_broadcast() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut worst = 0.0f64;
        let mut rng = Rng::new(23);
        let case = mha(2, 4, 2, 300, 16).kv(2);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        // Key padding [B, 1, 1, K]: batch 0 sees 300 keys, batch 1 the first 170.
        let padding: Vec<f64> =
            (0..2 * 300).map(|e| if e >= 300 && e % 300 >= 170 { f64::NEG_INFINITY } else { 0.0 }).collect();
        // [Q, K]: random additive values, a few -inf, query 1 sees no key at all.
        let mut qk = rng.vec(2 * 300, -2.0, 2.0);
        for (e, m) in qk.iter_mut().enumerate() {
            if e / 300 == 1 || e % 5 == 0 {
                *m = f64::NEG_INFINITY;
            }
        }
        // [B, H, Q, K] with large negative (finite) values.
        let full = rng.vec(2 * 4 * 2 * 300, -3.0, 3.0).into_iter().map(|m| if m > 2.0 { -1e9 } else { m }).collect();
        let masked = [
            (vec![2usize, 1, 1, 300], padding, case),
            (vec![2, 300], qk.clone(), case),
            (vec![2, 300], qk, case.causal(Some(120))),
            (vec![2, 4, 2, 300], full, case.causal(None)),
            (vec![4, 1, 300], rng.vec(4 * 300, -1.0, 1.0), case),
        ];
        for (dims, values, case) in masked {
            let (mask, mv) = upload(&rt, &dims, dtype, &values);
            let got = split_k(&rt, &case, &x, Some(mask));
            let want = reference(&case, &x.qv, &x.kv, &x.vv, Some((&mv, mask_strides(&case, &dims))));
            worst = worst.max(check(&got, &want, tol(dtype), &format!("mask {dims:?} {case:?} {dtype}")));
            if dims == [2, 300] {
                for bh in 0..8 {
                    assert!(got[(bh * 2 + 1) * 16..][..16].iter().all(|&g| g == 0.0), "fully masked row");
                }
            }
        }
        eprintln!("masks {dtype}: largest error {worst:e}");
    }
}

#[test]
fn three_dimensional_inputs_are_one_head() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(24);
        for case in [
            Case { rank3: true, ..mha(2, 1, 1, 300, 32) },
            Case { rank3: true, ..mha(2, 1, 3, 257, 32).causal(None).dv(20) },
        ] {
            let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
            let got = split_k(&rt, &case, &x, None);
            let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
            check(&got, &want, tol(dtype), &format!("{case:?} {dtype}"));
        }
        // With a [B, Q, K] mask.
        let case = Case { rank3: true, ..mha(2, 1, 2, 300, 16) };
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        let (mask, mv) = upload(&rt, &[2, 2, 300], dtype, &rng.vec(1200, -1.0, 1.0));
        let got = split_k(&rt, &case, &x, Some(mask));
        let want = reference(&case, &x.qv, &x.kv, &x.vv, Some((&mv, mask_strides(&case, &[2, 2, 300]))));
        check(&got, &want, tol(dtype), &format!("3-D mask {dtype}"));
    }
}

#[test]
fn views_at_odd_offsets_touch_only_their_elements() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(25);
        let case = mha(2, 4, 2, 300, 12).kv(2).causal(None).dv(10);
        let (q, qv) = view_of(&rt, &case.q_shape(), dtype, 5, &rng.vec(numel(&case.q_shape()), -1.0, 1.0));
        let (k, kv) = view_of(&rt, &case.k_shape(), dtype, 3, &rng.vec(numel(&case.k_shape()), -1.0, 1.0));
        let (v, vv) = view_of(&rt, &case.v_shape(), dtype, 7, &rng.vec(numel(&case.v_shape()), -1.0, 1.0));
        let (mask, mv) = view_of(&rt, &[2, 300], dtype, 1, &rng.vec(600, -1.0, 1.0));
        let n = numel(&case.out_shape());
        let big = poisoned(&rt, &[n + 20], dtype);
        let out = big.narrow(9, n).unwrap().reshape(case.out_shape()).unwrap();
        rt.record(&SplitKAttention::new(&q, &k, &v, &out, case.options(Some(mask))).unwrap()).unwrap();
        let all = big.to_vec_f32().unwrap();
        assert!(all[..9].iter().chain(&all[9 + n..]).all(|x| x.is_nan()), "wrote outside the output view");
        let want = reference(&case, &qv, &kv, &vv, Some((&mv, mask_strides(&case, &[2, 300]))));
        check(&all[9..9 + n], &want, tol(dtype), &format!("views {dtype}"));
    }
}

#[test]
fn agrees_with_the_fused_kernel() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut worst = 0.0f64;
        let mut rng = Rng::new(26);
        for case in [mha(1, 14, 1, 2049, 64).kv(2), mha(2, 4, 3, 300, 32).kv(2).causal(None), mha(1, 2, 1, 7, 16)] {
            let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
            let got = split_k(&rt, &case, &x, None);
            let fused: Vec<f64> = flash(&rt, &case, &x, None).iter().map(|&f| f64::from(f)).collect();
            worst = worst.max(check(&got, &fused, tol(dtype), &format!("split-K vs fused {case:?} {dtype}")));
        }
        eprintln!("vs fused {dtype}: largest difference {worst:e}");
    }
}

#[test]
fn large_logits_stay_finite_and_correct() {
    let rt = runtime();
    let mut rng = Rng::new(27);
    let case = mha(1, 4, 2, 300, 16).kv(2).causal(None);
    let x = inputs(&rt, &case, DType::F32, &mut rng, 100.0);
    let got = split_k(&rt, &case, &x, None);
    assert!(got.iter().all(|g| g.is_finite()), "non-finite output");
    let worst = check(&got, &reference(&case, &x.qv, &x.kv, &x.vv, None), 1e-3, "large logits");
    eprintln!("large logits: largest error {worst:e}");
}

#[test]
fn runs_are_bit_identical() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(28);
        let case = mha(2, 14, 2, 700, 32).kv(2).causal(None);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        let a = split_k(&rt, &case, &x, None);
        let b = split_k(&rt, &case, &x, None);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn auto_chooses_split_k_for_decoding_and_fused_otherwise() {
    let rt = runtime();
    let mut rng = Rng::new(29);
    let problem = |case: &Case, x: &Inputs| {
        let out = Tensor::empty(&rt, case.out_shape(), DType::F32).unwrap();
        SdpaProblem::new(&x.q, &x.k, &x.v, &out, &case.options(None)).unwrap()
    };
    let decode = mha(1, 14, 1, 2049, 64).kv(2).causal(None);
    let x = inputs(&rt, &decode, DType::F32, &mut rng, 1.0);
    assert_eq!(SdpaImpl::Auto.resolve(&problem(&decode, &x), &x.q), SdpaImpl::SplitK);
    assert_eq!(SdpaImpl::Fused.resolve(&problem(&decode, &x), &x.q), SdpaImpl::Fused);
    // The tensor-level entry point records it: bit-identical to the split-K op.
    let auto = scaled_dot_product_attention(&x.q, &x.k, &x.v, decode.options(None)).unwrap().to_vec_f32().unwrap();
    let forced = scaled_dot_product_attention_with(&x.q, &x.k, &x.v, decode.options(None), SdpaImpl::SplitK)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_eq!(
        auto.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        split_k(&rt, &decode, &x, None).iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(auto, forced);
    check(&auto, &reference(&decode, &x.qv, &x.kv, &x.vv, None), 1e-4, "auto decode");
    // Prefill (rows per K/V head beyond the bound) and short caches stay fused.
    for case in [mha(1, 2, 65, 300, 16), mha(1, 14, 1, 255, 16).kv(2)] {
        let y = inputs(&rt, &case, DType::F32, &mut rng, 1.0);
        assert_eq!(SdpaImpl::Auto.resolve(&problem(&case, &y), &y.q), SdpaImpl::Fused, "{case:?}");
    }
}

#[test]
fn shapes_beyond_the_bounds_are_rejected() {
    let rt = runtime();
    let f = |dims: &[usize]| Tensor::zeros(&rt, dims, DType::F32).unwrap();
    let none = SdpaOptions::default();
    // 65 rows per K/V head (group 13 × 5 queries).
    let e = SplitKAttention::new(
        &f(&[1, 13, 5, 8]),
        &f(&[1, 1, 9, 8]),
        &f(&[1, 1, 9, 8]),
        &f(&[1, 13, 5, 8]),
        none.clone(),
    );
    assert!(matches!(e, Err(Error::InvalidShape { .. })), "{e:?}");
    // Head dimensions beyond 256.
    let e = SplitKAttention::new(
        &f(&[1, 1, 1, 320]),
        &f(&[1, 1, 9, 320]),
        &f(&[1, 1, 9, 8]),
        &f(&[1, 1, 1, 8]),
        none.clone(),
    );
    assert!(matches!(e, Err(Error::InvalidShape { .. })), "{e:?}");
    // 32 rows of head dimension 256: more accumulator elements than a workgroup holds.
    let e = SplitKAttention::new(
        &f(&[1, 32, 1, 8]),
        &f(&[1, 1, 9, 8]),
        &f(&[1, 1, 9, 256]),
        &f(&[1, 32, 1, 256]),
        none.clone(),
    );
    assert!(matches!(e, Err(Error::InvalidShape { .. })), "{e:?}");
    // Validation shared with the other paths: disagreeing shapes.
    let e =
        SplitKAttention::new(&f(&[1, 2, 1, 8]), &f(&[1, 2, 9, 16]), &f(&[1, 2, 9, 8]), &f(&[1, 2, 1, 8]), none.clone());
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");
    // Where 16 rows of head dimension 256 need more workgroup memory than the device has, the
    // op says so and Auto takes the fused kernel; either way the result is right.
    let mut rng = Rng::new(30);
    let case = mha(1, 16, 1, 300, 256).kv(1);
    let x = inputs(&rt, &case, DType::F32, &mut rng, 1.0);
    let out = poisoned(&rt, &case.out_shape(), DType::F32);
    let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
    match SplitKAttention::new(&x.q, &x.k, &x.v, &out, case.options(None)) {
        Ok(op) => {
            rt.record(&op).unwrap();
            check(&out.to_vec_f32().unwrap(), &want, 1e-4, "16 rows of 256");
        }
        Err(Error::Unsupported { .. }) => {
            let problem = SdpaProblem::new(&x.q, &x.k, &x.v, &out, &case.options(None)).unwrap();
            assert_eq!(SdpaImpl::Auto.resolve(&problem, &x.q), SdpaImpl::Fused);
            let got = scaled_dot_product_attention(&x.q, &x.k, &x.v, case.options(None)).unwrap();
            check(&got.to_vec_f32().unwrap(), &want, 1e-4, "16 rows of 256 via Auto");
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
}

/// Batched decoding over slotted caches: each row attends to its own slot's positions
/// `0..=pos` (the last `window` of them under a window), as the f64 reference computes, and
/// bit-identically to a one-sequence split-K call over that slot's prefix (causal).
#[test]
fn slot_attention_matches_f64_and_the_one_sequence_call_bit_for_bit() {
    use metallic::kernels::sdpa::SlotAttention;
    let rt = runtime();
    let (heads, kv_heads, d, slots, cap) = (6, 2, 32, 3, 700);
    // (slot, position): a long and a short sequence, one at the first position, slots shuffled.
    let rows: [(usize, usize); 3] = [(2, 600), (0, 9), (1, 0)];
    let m = rows.len();
    let mut rng = Rng::new(5);
    let qv = rng.vec(m * heads * d, -1.0, 1.0);
    let kvv = rng.vec(slots * kv_heads * cap * d, -1.0, 1.0);
    let vvv = rng.vec(slots * kv_heads * cap * d, -1.0, 1.0);
    let (q, _) = upload(&rt, &[m, heads, d], DType::F32, &qv);
    let (k, _) = upload(&rt, &[slots, kv_heads, cap, d], DType::F32, &kvv);
    let (v, _) = upload(&rt, &[slots, kv_heads, cap, d], DType::F32, &vvv);
    let table: Vec<u32> = rows.iter().flat_map(|&(s, p)| [s as u32, p as u32]).collect();
    let table = Tensor::from_slice(&rt, [m, 2], &table).unwrap();
    let scale = 0.2f32;
    for window in [None, Some(100), Some(1)] {
        let out = poisoned(&rt, &[m, heads, d], DType::F32);
        let len = SlotAttention::scratch_len(rt.context(), m, heads, kv_heads, d).unwrap();
        let scratch = Tensor::empty(&rt, [len], DType::F32).unwrap();
        let keys: Vec<usize> = rows.iter().map(|&(_, p)| p + 1).collect();
        rt.record(&SlotAttention::new(&q, &k, &v, &out, &table, &keys, scale, window, &scratch).unwrap()).unwrap();
        let got = out.to_vec::<f32>().unwrap();
        for (b, &(slot, pos)) in rows.iter().enumerate() {
            let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            for h in 0..heads {
                let kvh = h / (heads / kv_heads);
                let at = |key: usize| ((slot * kv_heads + kvh) * cap + key) * d;
                let qrow = &qv[(b * heads + h) * d..][..d];
                let scores: Vec<f64> = (first..=pos)
                    .map(|key| f64::from(scale) * (0..d).map(|i| qrow[i] * kvv[at(key) + i]).sum::<f64>())
                    .collect();
                let max = scores.iter().fold(f64::NEG_INFINITY, |a, &s| a.max(s));
                let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = w.iter().sum();
                for i in 0..d {
                    let want = (first..=pos).zip(&w).map(|(key, w)| w * vvv[at(key) + i]).sum::<f64>() / sum;
                    let g = f64::from(got[(b * heads + h) * d + i]);
                    assert!((g - want).abs() < 1e-5, "window {window:?} row {b} head {h}: {g} vs {want}");
                }
            }
            // The one-sequence call: q [1, heads, 1, d] over the slot's cache, first pos + 1 keys.
            let q1 = q.narrow(b, 1).unwrap().reshape([1, heads, 1, d]).unwrap();
            let k1 = k.narrow(slot, 1).unwrap();
            let v1 = v.narrow(slot, 1).unwrap();
            let one = Tensor::zeros(&rt, [1, heads, 1, d], DType::F32).unwrap();
            let options =
                SdpaOptions { scale: Some(scale), causal: true, window, keys: Some(pos + 1), ..Default::default() };
            rt.record(&SplitKAttention::new(&q1, &k1, &v1, &one, options).unwrap()).unwrap();
            let one = one.to_vec::<f32>().unwrap();
            let row = &got[b * heads * d..][..heads * d];
            assert!(row.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "window {window:?} row {b}: bits");
        }
    }
    // Wrong shapes, a wrong table, a scratch too small, a zero window.
    let out = Tensor::zeros(&rt, [m, heads, d], DType::F32).unwrap();
    let scratch = Tensor::empty(&rt, [1], DType::F32).unwrap();
    let keys: Vec<usize> = rows.iter().map(|&(_, p)| p + 1).collect();
    assert!(SlotAttention::new(&q, &k, &v, &out, &table, &keys, scale, None, &scratch).is_err());
    let len = SlotAttention::scratch_len(rt.context(), m, heads, kv_heads, d).unwrap();
    let scratch = Tensor::empty(&rt, [len], DType::F32).unwrap();
    assert!(SlotAttention::new(&q, &k, &v, &out, &table, &keys, scale, Some(0), &scratch).is_err());
    let short = Tensor::from_slice(&rt, [1, 2], &[0u32, 0]).unwrap();
    assert!(SlotAttention::new(&q, &k, &v, &out, &short, &keys, scale, None, &scratch).is_err());
    assert!(SlotAttention::new(&q, &k, &v, &out, &table, &[1, 1], scale, None, &scratch).is_err());
    assert!(SlotAttention::new(&q, &k, &v, &out, &table, &[1, cap + 1, 1], scale, None, &scratch).is_err());
    let flat = k.narrow(0, 1).unwrap().reshape([kv_heads, cap, d]).unwrap();
    assert!(SlotAttention::new(&q, &flat, &flat, &out, &table, &keys, scale, None, &scratch).is_err());
}
