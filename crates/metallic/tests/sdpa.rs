//! Scaled-dot-product attention (the fused flash kernel and the composite GEMM → softmax → GEMM
//! path) against an f64 CPU reference and each other: scores,
//! additive masks, the causal rule with offsets, grouped-query heads, 3-D inputs, f32 and f16,
//! views at odd offsets, properties and every error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::attention::*;
use common::*;
use metallic::kernels::sdpa::{
    CompositeAttention, FlashAttention, SdpaImpl, SdpaOptions, SdpaProblem, SdpaShape, scaled_dot_product_attention,
    scaled_dot_product_attention_with,
};
use metallic::{DType, Error, Runtime, Tensor};

const CASES: &[Case] = &[
    mha(1, 1, 1, 1, 8),
    mha(2, 3, 7, 13, 16),
    mha(2, 3, 7, 13, 16).causal(None).scale(0.3),
    mha(1, 4, 33, 33, 64).causal(None),
    // Decoding: one query against a cache of 37 keys, default offset (sees all) and explicit.
    mha(2, 2, 1, 37, 32).causal(None),
    mha(2, 2, 1, 37, 32).causal(Some(20)),
    // Prefill chunk against a longer cache, and more queries than keys (first rows see none).
    mha(1, 2, 5, 70, 24).causal(None),
    mha(1, 1, 9, 4, 8).causal(None),
    // Grouped-query attention.
    mha(1, 4, 5, 19, 16).kv(2).causal(None),
    mha(2, 6, 3, 11, 8).kv(1),
    mha(1, 8, 1, 45, 32).kv(2).causal(None),
    // v's head dimension differs; odd head dimensions.
    mha(1, 2, 6, 10, 24).dv(40),
    mha(2, 1, 13, 31, 7).dv(13).causal(Some(3)),
    // Several key tiles and row blocks (causal blocks that stop early; blocks spanning heads);
    // large head dimensions.
    mha(1, 1, 100, 100, 16).causal(None),
    mha(1, 6, 30, 41, 16).kv(2).causal(None),
    mha(1, 2, 40, 70, 128).causal(None),
    mha(1, 1, 3, 20, 256).dv(200),
    // Sliding windows: cutting keys inside and across tiles, a prefill chunk against a longer
    // cache, blocks spanning heads, only the key itself, a negative offset, wider than the keys.
    mha(1, 1, 100, 100, 16).window(7),
    mha(1, 2, 5, 70, 24).window(9),
    mha(1, 6, 30, 41, 16).kv(2).window(12),
    mha(1, 2, 40, 70, 128).window(33),
    mha(1, 4, 33, 33, 64).window(1),
    mha(1, 1, 9, 4, 8).window(3),
    mha(2, 3, 7, 13, 16).causal(Some(2)).window(1000),
];

#[test]
fn matches_reference_for_every_case_dtype_and_param_path() {
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        for dtype in float_dtypes(&rt) {
            let mut worst = 0.0f64;
            let mut rng = Rng::new(7);
            for case in CASES {
                let x = inputs(&rt, case, dtype, &mut rng, 1.0);
                let got = flash(&rt, case, &x, None);
                let want = reference(case, &x.qv, &x.kv, &x.vv, None);
                worst = worst.max(check(&got, &want, tol(dtype), &format!("{case:?} {dtype} {mode:?}")));
            }
            eprintln!("{dtype} {mode:?}: largest error {worst:e}");
        }
    }
}

#[test]
fn three_dimensional_inputs_are_one_head() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(8);
        for case in [
            Case { rank3: true, ..mha(2, 1, 9, 9, 32) },
            Case { rank3: true, ..mha(2, 1, 9, 12, 32).causal(None).dv(20) },
        ] {
            let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
            // Through the tensor-level entry point.
            let out = scaled_dot_product_attention(&x.q, &x.k, &x.v, case.options(None)).unwrap();
            assert_eq!(out.dims(), &case.out_shape()[..]);
            let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
            check(&out.to_vec_f32().unwrap(), &want, tol(dtype), &format!("{case:?} {dtype}"));
        }
    }
}

#[test]
fn additive_masks_broadcast() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut worst = 0.0f64;
        let mut rng = Rng::new(9);
        let case = mha(2, 3, 7, 13, 16);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        // Key padding [B, 1, 1, K]: batch 0 sees 13 keys, batch 1 the first 9.
        let padding: Vec<f64> =
            (0..2 * 13).map(|e| if e >= 13 && e % 13 >= 9 { f64::NEG_INFINITY } else { 0.0 }).collect();
        // [Q, K]: random additive values, a few -inf, query 4 sees no key at all.
        let mut qk = rng.vec(7 * 13, -2.0, 2.0);
        for (e, m) in qk.iter_mut().enumerate() {
            if e / 13 == 4 || e % 5 == 0 {
                *m = f64::NEG_INFINITY;
            }
        }
        // [B, H, Q, K] of large negative (finite) values: uniform attention where they meet.
        let full = rng.vec(2 * 3 * 7 * 13, -3.0, 3.0).into_iter().map(|m| if m > 2.0 { -1e9 } else { m }).collect();
        let masked = [
            (vec![2usize, 1, 1, 13], padding, case),
            (vec![7, 13], qk.clone(), case),
            (vec![7, 13], qk, case.causal(Some(2))),
            (vec![2, 3, 7, 13], full, case.causal(None)),
            (vec![3, 1, 13], rng.vec(3 * 13, -1.0, 1.0), case),
        ];
        for (dims, values, case) in masked {
            let (mask, mv) = upload(&rt, &dims, dtype, &values);
            let got = flash(&rt, &case, &x, Some(mask));
            let want = reference(&case, &x.qv, &x.kv, &x.vv, Some((&mv, mask_strides(&case, &dims))));
            worst = worst.max(check(&got, &want, tol(dtype), &format!("mask {dims:?} {case:?} {dtype}")));
            if dims == [7, 13] {
                // Query 4 sees no key: zeros, not NaN.
                for bh in 0..6 {
                    assert!(got[(bh * 7 + 4) * 16..][..16].iter().all(|&g| g == 0.0), "fully masked row");
                }
            }
        }
        // 3-D inputs with a [B, Q, K] mask.
        let case3 = Case { rank3: true, ..mha(2, 1, 5, 8, 16) };
        let x3 = inputs(&rt, &case3, dtype, &mut rng, 1.0);
        let (mask, mv) = upload(&rt, &[2, 5, 8], dtype, &rng.vec(80, -1.0, 1.0));
        let got = flash(&rt, &case3, &x3, Some(mask));
        let want = reference(&case3, &x3.qv, &x3.kv, &x3.vv, Some((&mv, mask_strides(&case3, &[2, 5, 8]))));
        worst = worst.max(check(&got, &want, tol(dtype), &format!("3-D mask {dtype}")));
        eprintln!("masks {dtype}: largest error {worst:e}");
    }
}

#[test]
fn views_at_odd_offsets_touch_only_their_elements() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(10);
        let case = mha(2, 4, 6, 11, 12).kv(2).causal(None).dv(10);
        let (q, qv) = view_of(&rt, &case.q_shape(), dtype, 5, &rng.vec(numel(&case.q_shape()), -1.0, 1.0));
        let (k, kv) = view_of(&rt, &case.k_shape(), dtype, 3, &rng.vec(numel(&case.k_shape()), -1.0, 1.0));
        let (v, vv) = view_of(&rt, &case.v_shape(), dtype, 7, &rng.vec(numel(&case.v_shape()), -1.0, 1.0));
        let (mask, mv) = view_of(&rt, &[6, 11], dtype, 1, &rng.vec(66, -1.0, 1.0));
        let n = numel(&case.out_shape());
        let big = poisoned(&rt, &[n + 20], dtype);
        let out = big.narrow(9, n).unwrap().reshape(case.out_shape()).unwrap();
        rt.record(&FlashAttention::new(&q, &k, &v, &out, case.options(Some(mask))).unwrap()).unwrap();
        let all = big.to_vec_f32().unwrap();
        assert!(all[..9].iter().chain(&all[9 + n..]).all(|x| x.is_nan()), "wrote outside the output view");
        let want = reference(&case, &qv, &kv, &vv, Some((&mv, mask_strides(&case, &[6, 11]))));
        check(&all[9..9 + n], &want, tol(dtype), &format!("views {dtype}"));
    }
}

#[test]
fn grids_beyond_65535_workgroups_fold() {
    let rt = runtime();
    let mut rng = Rng::new(15);
    // One row per workgroup: 66,000 workgroups.
    let case = Case { rank3: true, ..mha(66_000, 1, 1, 3, 4) };
    let x = inputs(&rt, &case, DType::F32, &mut rng, 1.0);
    let got = flash(&rt, &case, &x, None);
    check(&got, &reference(&case, &x.qv, &x.kv, &x.vv, None), 1e-4, "folded grid");
}

#[test]
fn causal_outputs_ignore_future_keys_and_values() {
    let rt = runtime();
    let mut rng = Rng::new(11);
    // Offset 0 over 40 keys: queries 0..16 see keys 0..16 at most.
    let case = mha(1, 2, 40, 40, 16).causal(Some(0));
    let x = inputs(&rt, &case, DType::F32, &mut rng, 1.0);
    let before = flash(&rt, &case, &x, None);
    // Rewrite keys and values from position 16 on.
    let change = |vals: &[f64], dim: usize| -> Vec<f32> {
        vals.iter()
            .enumerate()
            .map(|(e, &x)| if (e / dim) % 40 >= 16 { (x * 3.0 - 1.0) as f32 } else { x as f32 })
            .collect()
    };
    let y = Inputs {
        k: Tensor::from_slice(&rt, case.k_shape(), &change(&x.kv, 16)).unwrap(),
        v: Tensor::from_slice(&rt, case.v_shape(), &change(&x.vv, 16)).unwrap(),
        ..x
    };
    let after = flash(&rt, &case, &y, None);
    for h in 0..2 {
        let rows = |o: &[f32]| o[h * 40 * 16..][..16 * 16].to_vec();
        assert_eq!(rows(&before), rows(&after), "head {h}: queries before position 16 changed");
        let later = |o: &[f32]| o[(h * 40 + 30) * 16..][..16].to_vec();
        assert_ne!(later(&before), later(&after), "head {h}: a later query must see the change");
    }
}

#[test]
fn large_logits_stay_finite_and_correct() {
    let rt = runtime();
    let mut rng = Rng::new(12);
    for case in [mha(1, 2, 9, 21, 16), mha(1, 1, 33, 33, 64).causal(None)] {
        let x = inputs(&rt, &case, DType::F32, &mut rng, 100.0);
        let got = flash(&rt, &case, &x, None);
        assert!(got.iter().all(|g| g.is_finite()), "non-finite output");
        let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
        let worst = check(&got, &want, 1e-3, &format!("large logits {case:?}"));
        eprintln!("large logits {case:?}: largest error {worst:e}");
    }
}

#[test]
fn runs_are_bit_identical() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(13);
        let case = mha(2, 4, 17, 45, 32).kv(2).causal(None);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        let a = flash(&rt, &case, &x, None);
        let b = flash(&rt, &case, &x, None);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn rows_that_see_no_key_are_zero() {
    let rt = runtime();
    let mut rng = Rng::new(14);
    for dtype in float_dtypes(&rt) {
        // Default offset seq_k - seq_q = -6: the first six queries see nothing.
        let case = mha(1, 2, 10, 4, 8).causal(None);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        let got = flash(&rt, &case, &x, None);
        for h in 0..2 {
            assert!(got[h * 80..][..48].iter().all(|&g| g == 0.0), "{dtype}: masked rows must be 0");
            assert!(got[h * 80 + 48..][..32].iter().all(|&g| g != 0.0 && g.is_finite()));
        }
        // A mask of -inf everywhere, and no keys at all.
        let case = mha(1, 2, 3, 5, 8);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        let mask = Tensor::full(&rt, [5], dtype, f32::NEG_INFINITY).unwrap();
        assert!(flash(&rt, &case, &x, Some(mask)).iter().all(|&g| g == 0.0));
        let case = mha(1, 2, 3, 0, 8);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        assert!(flash(&rt, &case, &x, None).iter().all(|&g| g == 0.0));
    }
}

#[test]
fn shared_description_resolves_defaults() {
    let rt = runtime();
    let t = |dims: &[usize]| Tensor::zeros(&rt, dims, DType::F32).unwrap();
    let (q, k, v, out) = (t(&[2, 6, 5, 16]), t(&[2, 3, 9, 16]), t(&[2, 3, 9, 8]), t(&[2, 6, 5, 8]));
    let options = SdpaOptions { causal: true, mask: Some(t(&[5, 1])), ..Default::default() };
    let p = SdpaProblem::new(&q, &k, &v, &out, &options).unwrap();
    let s: SdpaShape = p.shape;
    assert_eq!(
        (s.batch, s.heads, s.kv_heads, s.seq_q, s.seq_k, s.head_dim, s.head_dim_v, s.rank),
        (2, 6, 3, 5, 9, 16, 8, 4)
    );
    assert_eq!((s.group(), s.kv_head(5)), (2, 2));
    assert_eq!(p.scale, 0.25);
    assert_eq!(p.causal_offset, Some(4));
    assert_eq!(p.mask.unwrap().strides, [0, 0, 1, 0]);
    assert_eq!(s.out_shape().unwrap().dims(), &[2, 6, 5, 8]);
}

#[test]
fn invalid_inputs_return_the_right_error() {
    let rt = runtime();
    let t = |dims: &[usize], dtype: DType| Tensor::zeros(&rt, dims, dtype).unwrap();
    let f = |dims: &[usize]| t(dims, DType::F32);
    let new = |q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, o: SdpaOptions| {
        FlashAttention::new(q, k, v, out, o).unwrap_err()
    };
    let (q, k, v, out) = (f(&[1, 4, 3, 8]), f(&[1, 2, 5, 8]), f(&[1, 2, 5, 8]), f(&[1, 4, 3, 8]));
    let none = SdpaOptions::default;
    let with_mask = |m: Tensor| SdpaOptions { mask: Some(m), ..Default::default() };

    // Head dimensions of q and k differ.
    assert!(matches!(new(&q, &f(&[1, 2, 5, 16]), &v, &out, none()), Error::ShapeMismatch { .. }));
    // Heads not a multiple of kv_heads: a disagreement between q and k.
    assert!(matches!(new(&q, &f(&[1, 3, 5, 8]), &f(&[1, 3, 5, 8]), &out, none()), Error::ShapeMismatch { .. }));
    // k and v disagree; batch differs; out has the wrong shape.
    assert!(matches!(new(&q, &k, &f(&[1, 2, 6, 8]), &out, none()), Error::ShapeMismatch { .. }));
    assert!(matches!(new(&f(&[2, 4, 3, 8]), &k, &v, &f(&[2, 4, 3, 8]), none()), Error::ShapeMismatch { .. }));
    assert!(matches!(new(&q, &k, &v, &f(&[1, 4, 3, 9]), none()), Error::ShapeMismatch { .. }));
    assert!(matches!(new(&q, &f(&[2, 5, 8]), &f(&[2, 5, 8]), &out, none()), Error::ShapeMismatch { .. }));
    // Dtypes.
    assert!(matches!(new(&q, &t(&[1, 2, 5, 8], DType::F16), &v, &out, none()), Error::DTypeMismatch { .. }));
    assert!(matches!(new(&q, &k, &v, &t(&[1, 4, 3, 8], DType::F16), none()), Error::DTypeMismatch { .. }));
    let u = |dims: &[usize]| t(dims, DType::U32);
    let err = new(&u(&[1, 4, 3, 8]), &u(&[1, 2, 5, 8]), &u(&[1, 2, 5, 8]), &u(&[1, 4, 3, 8]), none());
    assert!(matches!(err, Error::DTypeMismatch { got: DType::U32, .. }), "{err:?}");
    assert!(matches!(new(&q, &k, &v, &out, with_mask(t(&[5], DType::F16))), Error::DTypeMismatch { .. }));
    // Ranks.
    assert!(matches!(new(&f(&[3, 8]), &f(&[5, 8]), &f(&[5, 8]), &f(&[3, 8]), none()), Error::InvalidShape { .. }));
    let r5 = f(&[1, 1, 4, 3, 8]);
    assert!(matches!(new(&r5, &f(&[1, 1, 2, 5, 8]), &f(&[1, 1, 2, 5, 8]), &r5, none()), Error::InvalidShape { .. }));
    // Masks that do not broadcast.
    assert!(matches!(new(&q, &k, &v, &out, with_mask(f(&[4]))), Error::ShapeMismatch { .. }));
    assert!(matches!(new(&q, &k, &v, &out, with_mask(f(&[2, 3, 5]))), Error::ShapeMismatch { .. }));
    assert!(matches!(new(&q, &k, &v, &out, with_mask(f(&[1, 1, 4, 3, 5]))), Error::ShapeMismatch { .. }));
    // Scale.
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let o = SdpaOptions { scale: Some(scale), ..Default::default() };
        assert!(matches!(new(&q, &k, &v, &out, o), Error::InvalidArgument { .. }));
    }
    // Output overlapping an input.
    assert!(matches!(new(&q, &k, &v, &q, none()), Error::InvalidArgument { .. }));
    // Sliding windows: empty, or without the causal rule; the composite path takes none.
    let window = |w: usize, causal: bool| SdpaOptions { window: Some(w), causal, ..Default::default() };
    for o in [window(0, true), window(3, false)] {
        let e = new(&q, &k, &v, &out, o);
        assert!(matches!(&e, Error::InvalidArgument { message, .. } if message.contains("window")), "{e}");
    }
    let e = CompositeAttention::new(&q, &k, &v, &out, window(3, true)).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { message, .. } if message.contains("window")), "{e}");
    // Head dimension beyond the fused kernel's limit.
    let (q3, k3) = (f(&[1, 2, 300]), f(&[1, 3, 300]));
    assert!(matches!(new(&q3, &k3, &k3, &q3.empty_like().unwrap(), none()), Error::InvalidShape { .. }));
    // The tensor-level entry point reports the same.
    let e = scaled_dot_product_attention(&q, &f(&[1, 3, 5, 8]), &f(&[1, 3, 5, 8]), none()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    let e = scaled_dot_product_attention(&u(&[1, 4, 3, 8]), &u(&[1, 2, 5, 8]), &u(&[1, 2, 5, 8]), none()).unwrap_err();
    assert!(matches!(e, Error::DTypeMismatch { .. }));
}

/// Records the composite path (GEMM → softmax → GEMM) into a NaN-poisoned output.
fn composite(rt: &Runtime, case: &Case, x: &Inputs, mask: Option<Tensor>) -> Vec<f32> {
    let out = poisoned(rt, &case.out_shape(), x.q.dtype());
    rt.record(&CompositeAttention::new(&x.q, &x.k, &x.v, &out, case.options(mask)).unwrap()).unwrap();
    out.to_vec_f32().unwrap()
}

#[test]
fn composite_path_matches_reference_and_fused_kernel() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut worst = (0.0f64, 0.0f64);
        let mut rng = Rng::new(17);
        for case in CASES {
            let x = inputs(&rt, case, dtype, &mut rng, 1.0);
            if case.window.is_some() || (case.causal && case.offset.is_none() && case.seq_q > case.seq_k) {
                // A sliding window or a negative causal offset: only the fused kernel takes it.
                let out = poisoned(&rt, &case.out_shape(), dtype);
                let err = CompositeAttention::new(&x.q, &x.k, &x.v, &out, case.options(None)).unwrap_err();
                assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
                continue;
            }
            let got = composite(&rt, case, &x, None);
            let want = reference(case, &x.qv, &x.kv, &x.vv, None);
            let what = format!("composite {case:?} {dtype}");
            worst.0 = worst.0.max(check(&got, &want, tol(dtype), &what));
            let fused = flash(&rt, case, &x, None);
            let fused_vs_composite: Vec<f64> = fused.iter().map(|&f| f64::from(f)).collect();
            worst.1 = worst.1.max(check(&got, &fused_vs_composite, tol(dtype), &format!("{what} vs fused")));
        }
        // Masks through the composite path: key padding with GQA, and a full [B, H, Q, K] mask.
        let case = mha(2, 4, 6, 11, 16).kv(2).causal(None);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        let padding: Vec<f64> = (0..22).map(|e| if e >= 11 && e % 11 >= 7 { f64::NEG_INFINITY } else { 0.0 }).collect();
        let full = rng.vec(2 * 4 * 6 * 11, -2.0, 2.0);
        for (dims, values) in
            [(vec![2usize, 1, 1, 11], padding), (vec![2, 4, 6, 11], full), (vec![6, 11], rng.vec(66, -1.0, 1.0))]
        {
            let (mask, mv) = upload(&rt, &dims, dtype, &values);
            let got = composite(&rt, &case, &x, Some(mask.clone()));
            let want = reference(&case, &x.qv, &x.kv, &x.vv, Some((&mv, mask_strides(&case, &dims))));
            worst.0 = worst.0.max(check(&got, &want, tol(dtype), &format!("composite mask {dims:?} {dtype}")));
            let fused: Vec<f64> = flash(&rt, &case, &x, Some(mask)).iter().map(|&f| f64::from(f)).collect();
            worst.1 =
                worst.1.max(check(&got, &fused, tol(dtype), &format!("composite vs fused, mask {dims:?} {dtype}")));
        }
        eprintln!("composite {dtype}: largest error vs reference {:e}, vs fused {:e}", worst.0, worst.1);
    }
}

#[test]
fn head_dimensions_beyond_the_fused_kernel_take_the_composite_path() {
    let rt = runtime();
    let mut rng = Rng::new(18);
    let case = mha(1, 2, 3, 9, 320).causal(None);
    let x = inputs(&rt, &case, DType::F32, &mut rng, 1.0);
    let out = poisoned(&rt, &case.out_shape(), DType::F32);
    assert!(matches!(FlashAttention::new(&x.q, &x.k, &x.v, &out, case.options(None)), Err(Error::InvalidShape { .. })));
    for implementation in [SdpaImpl::Auto, SdpaImpl::Composite] {
        let got = scaled_dot_product_attention_with(&x.q, &x.k, &x.v, case.options(None), implementation).unwrap();
        let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
        check(&got.to_vec_f32().unwrap(), &want, tol(DType::F32), &format!("{implementation:?} head_dim 320"));
    }
    let forced = scaled_dot_product_attention_with(&x.q, &x.k, &x.v, case.options(None), SdpaImpl::Fused);
    assert!(matches!(forced, Err(Error::InvalidShape { .. })));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, failure_persistence: None, ..Default::default() })]

    /// Random attention problems (GQA groups, sequence lengths, head dimensions, causal
    /// offsets): the fused kernel and the composite path both match the f64 reference.
    #[test]
    fn property_random_attention_fused_and_composite_match_reference(
        batch in 1usize..3, kv_heads in 1usize..3, group in 1usize..4, seq_q in 1usize..20, seq_k in 1usize..40,
        d in proptest::sample::select(vec![4usize, 8, 12, 16, 32, 64]), dv in proptest::sample::select(vec![4usize, 8, 24, 64]),
        causal: bool, offset in proptest::option::of(0u32..16), window in proptest::option::of(1usize..24),
        f16: bool, seed: u64,
    ) {
        let rt = runtime();
        let dtype = if f16 && rt.context().caps().shader_f16() { DType::F16 } else { DType::F32 };
        let mut case = mha(batch, kv_heads * group, seq_q, seq_k, d).kv(kv_heads).dv(dv);
        if causal {
            // Composite needs a non-negative offset: default to one when seq_q > seq_k.
            case = case.causal(offset.or((seq_q > seq_k).then_some(0)));
        }
        let x = inputs(&rt, &case, dtype, &mut Rng::new(seed), 1.0);
        let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
        check(&flash(&rt, &case, &x, None), &want, tol(dtype), &format!("fused {case:?} {dtype}"));
        check(&composite(&rt, &case, &x, None), &want, tol(dtype), &format!("composite {case:?} {dtype}"));
        // The same problem under a sliding window (fused only).
        if let Some(window) = window {
            let case = case.window(window);
            let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
            check(&flash(&rt, &case, &x, None), &want, tol(dtype), &format!("fused {case:?} {dtype}"));
        }
    }
}
