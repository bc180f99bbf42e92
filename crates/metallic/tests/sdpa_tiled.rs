//! The register-blocked fused attention kernel (`FlashKernel::Tiled`, `flash_tiled.wgsl`) against the
//! f64 CPU reference: several row blocks and key tiles, partial tiles, grouped-query heads and
//! blocks spanning heads, causal offsets (negative too), additive masks, 3-D inputs, views at
//! odd offsets (scalar loads) and aligned ones (vec4 loads), f32 and f16, both param paths;
//! which kernel `Auto` picks, and the errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::attention::*;
use common::*;
use metallic::kernels::sdpa::{FlashAttention, FlashKernel, SdpaOptions, SdpaProblem, scaled_dot_product_attention};
use metallic::{DType, Error, Runtime, Tensor};

/// Records the tiled kernel (forced) into a NaN-poisoned output and returns it.
fn tiled(rt: &Runtime, case: &Case, x: &Inputs, mask: Option<Tensor>) -> Vec<f32> {
    let out = poisoned(rt, &case.out_shape(), x.q.dtype());
    let op = FlashAttention::new(&x.q, &x.k, &x.v, &out, case.options(mask)).unwrap();
    let op = op.with_kernel(FlashKernel::Tiled).unwrap();
    assert_eq!(op.kernel().unwrap(), FlashKernel::Tiled);
    rt.record(&op).unwrap();
    out.to_vec_f32().unwrap()
}

const CASES: &[Case] = &[
    // Single rows, one key, odd sizes, head dimensions not multiples of 4 (scalar loads).
    mha(1, 1, 1, 1, 8),
    mha(2, 3, 7, 13, 16),
    mha(2, 1, 13, 31, 7).dv(13).causal(Some(3)),
    mha(1, 2, 6, 10, 24).dv(40),
    mha(1, 1, 31, 63, 1),
    // More than one row block and key tile, partial last ones; the full head dimension.
    mha(1, 2, 130, 97, 40),
    mha(1, 1, 257, 70, 32).dv(64).causal(None),
    mha(2, 1, 65, 257, 32).causal(Some(5)),
    mha(1, 1, 100, 100, 39).dv(37).causal(None),
    // More queries than keys under the default (negative) offset: the first rows see nothing.
    mha(1, 1, 70, 33, 16).causal(None),
    // Grouped-query attention: row blocks spanning heads, a decode-like group of single rows.
    mha(1, 6, 30, 41, 16).kv(2).causal(None),
    mha(2, 8, 1, 45, 32).kv(2).causal(None),
    mha(1, 4, 33, 64, 24).dv(64).kv(1).scale(0.3),
    // Sliding windows: row blocks whose first key tiles are skipped, a chunk of queries against
    // a longer cache, blocks spanning heads, a window of one key, a negative offset.
    mha(1, 1, 257, 257, 32).window(40),
    mha(2, 1, 65, 257, 32).causal(Some(150)).window(70),
    mha(1, 6, 30, 41, 16).kv(2).window(5),
    mha(1, 1, 100, 100, 39).dv(37).window(1),
    mha(1, 1, 70, 33, 16).window(20),
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
                let got = tiled(&rt, case, &x, None);
                let want = reference(case, &x.qv, &x.kv, &x.vv, None);
                worst = worst.max(check(&got, &want, tol(dtype), &format!("{case:?} {dtype} {mode:?}")));
            }
            eprintln!("tiled {dtype} {mode:?}: largest error {worst:e}");
        }
    }
}

#[test]
fn three_dimensional_inputs_and_the_entry_point() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(22);
        // The seed's shape scaled down (head dimension 64: tiled where the adapter has the
        // workgroup memory, 44 KiB; lavapipe's 32 KiB runs it on the rows kernel), and one that
        // fits everywhere.
        for case in [
            Case { rank3: true, ..mha(3, 1, 75, 75, 64) },
            Case { rank3: true, ..mha(2, 1, 130, 130, 64).causal(None) },
            Case { rank3: true, ..mha(2, 1, 64, 40, 32).causal(None) },
        ] {
            let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
            let out = poisoned(&rt, &case.out_shape(), dtype);
            let op = FlashAttention::new(&x.q, &x.k, &x.v, &out, case.options(None)).unwrap();
            let problem = op.problem().unwrap();
            let fits = FlashAttention::supports_tiled(&problem, rt.context()).is_ok();
            assert!(fits || case.d == 64, "{case:?} must fit");
            // 64 rows or more per K/V head: `Auto` picks the tiled kernel where it runs.
            let want_kernel = if fits { FlashKernel::Tiled } else { FlashKernel::Rows };
            assert_eq!(op.kernel().unwrap(), want_kernel);
            let got = scaled_dot_product_attention(&x.q, &x.k, &x.v, case.options(None)).unwrap();
            let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
            let worst = check(&got.to_vec_f32().unwrap(), &want, tol(dtype), &format!("{case:?} {dtype}"));
            eprintln!("{want_kernel:?} {case:?} {dtype}: largest error {worst:e}");
        }
    }
}

#[test]
fn additive_masks_broadcast() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut worst = 0.0f64;
        let mut rng = Rng::new(23);
        let case = mha(2, 2, 70, 45, 16);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        // Key padding [B, 1, 1, K]: batch 1 sees the first 30 keys.
        let padding: Vec<f64> =
            (0..2 * 45).map(|e| if e >= 45 && e % 45 >= 30 { f64::NEG_INFINITY } else { 0.0 }).collect();
        // [Q, K] random values, some -inf, query 4 sees no key.
        let mut qk = rng.vec(70 * 45, -2.0, 2.0);
        for (e, m) in qk.iter_mut().enumerate() {
            if e / 45 == 4 || e % 7 == 0 {
                *m = f64::NEG_INFINITY;
            }
        }
        let full = rng.vec(2 * 2 * 70 * 45, -3.0, 3.0).into_iter().map(|m| if m > 2.0 { -1e9 } else { m }).collect();
        let masked = [
            (vec![2usize, 1, 1, 45], padding, case),
            (vec![70, 45], qk.clone(), case),
            (vec![70, 45], qk, case.causal(Some(2))),
            (vec![2, 2, 70, 45], full, case.causal(Some(20))),
            (vec![2, 1, 45], rng.vec(2 * 45, -1.0, 1.0), case),
        ];
        for (dims, values, case) in masked {
            let (mask, mv) = upload(&rt, &dims, dtype, &values);
            let got = tiled(&rt, &case, &x, Some(mask));
            let want = reference(&case, &x.qv, &x.kv, &x.vv, Some((&mv, mask_strides(&case, &dims))));
            worst = worst.max(check(&got, &want, tol(dtype), &format!("mask {dims:?} {case:?} {dtype}")));
            if dims == [70, 45] {
                for bh in 0..4 {
                    assert!(got[(bh * 70 + 4) * 16..][..16].iter().all(|&g| g == 0.0), "fully masked row");
                }
            }
        }
        eprintln!("tiled masks {dtype}: largest error {worst:e}");
    }
}

#[test]
fn views_at_odd_and_aligned_offsets_touch_only_their_elements() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(24);
        // Odd offsets: scalar loads; offsets of 4 / 8 with head dimensions of 32: vec4 loads.
        for (offsets, case) in [
            ([5, 3, 7, 1, 9], mha(2, 4, 36, 50, 12).kv(2).causal(None).dv(10)),
            ([4, 8, 12, 4, 8], mha(2, 4, 36, 50, 32).kv(2).causal(None)),
        ] {
            let [qo, ko, vo, mo, oo] = offsets;
            let (q, qv) = view_of(&rt, &case.q_shape(), dtype, qo, &rng.vec(numel(&case.q_shape()), -1.0, 1.0));
            let (k, kv) = view_of(&rt, &case.k_shape(), dtype, ko, &rng.vec(numel(&case.k_shape()), -1.0, 1.0));
            let (v, vv) = view_of(&rt, &case.v_shape(), dtype, vo, &rng.vec(numel(&case.v_shape()), -1.0, 1.0));
            let (mask, mv) = view_of(&rt, &[36, 50], dtype, mo, &rng.vec(36 * 50, -1.0, 1.0));
            let n = numel(&case.out_shape());
            let big = poisoned(&rt, &[n + 20], dtype);
            let out = big.narrow(oo, n).unwrap().reshape(case.out_shape()).unwrap();
            let op = FlashAttention::new(&q, &k, &v, &out, case.options(Some(mask))).unwrap();
            rt.record(&op.with_kernel(FlashKernel::Tiled).unwrap()).unwrap();
            let all = big.to_vec_f32().unwrap();
            assert!(all[..oo].iter().chain(&all[oo + n..]).all(|x| x.is_nan()), "wrote outside the output view");
            let want = reference(&case, &qv, &kv, &vv, Some((&mv, mask_strides(&case, &[36, 50]))));
            check(&all[oo..oo + n], &want, tol(dtype), &format!("views {offsets:?} {dtype}"));
        }
    }
}

#[test]
fn large_logits_and_empty_problems() {
    let rt = runtime();
    let mut rng = Rng::new(25);
    for case in [mha(1, 2, 70, 21, 16), mha(1, 1, 80, 80, 40).causal(None)] {
        let x = inputs(&rt, &case, DType::F32, &mut rng, 100.0);
        let got = tiled(&rt, &case, &x, None);
        assert!(got.iter().all(|g| g.is_finite()), "non-finite output");
        let want = reference(&case, &x.qv, &x.kv, &x.vv, None);
        let worst = check(&got, &want, 1e-3, &format!("large logits {case:?}"));
        eprintln!("tiled large logits {case:?}: largest error {worst:e}");
    }
    for dtype in float_dtypes(&rt) {
        // No keys at all; a mask of -inf everywhere.
        let case = mha(1, 2, 3, 0, 8);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        assert!(tiled(&rt, &case, &x, None).iter().all(|&g| g == 0.0));
        let case = mha(1, 2, 67, 5, 8);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        let mask = Tensor::full(&rt, [5], dtype, f32::NEG_INFINITY).unwrap();
        assert!(tiled(&rt, &case, &x, Some(mask)).iter().all(|&g| g == 0.0));
    }
}

#[test]
fn tiled_and_rows_kernels_agree_and_runs_are_bit_identical() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(26);
        let case = mha(2, 4, 40, 77, 32).kv(2).causal(None);
        let x = inputs(&rt, &case, dtype, &mut rng, 1.0);
        let a = tiled(&rt, &case, &x, None);
        let b = tiled(&rt, &case, &x, None);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        let out = poisoned(&rt, &case.out_shape(), dtype);
        let op = FlashAttention::new(&x.q, &x.k, &x.v, &out, case.options(None)).unwrap();
        let op = op.with_kernel(FlashKernel::Rows).unwrap();
        assert_eq!(op.kernel().unwrap(), FlashKernel::Rows);
        rt.record(&op).unwrap();
        let rows: Vec<f64> = out.to_vec_f32().unwrap().iter().map(|&r| f64::from(r)).collect();
        check(&a, &rows, tol(dtype), &format!("tiled vs rows {dtype}"));
    }
}

#[test]
fn auto_picks_tiled_only_where_it_runs_and_pays() {
    let rt = runtime();
    let f = |dims: &[usize]| Tensor::zeros(&rt, dims, DType::F32).unwrap();
    let kernel = |q: &Tensor, k: &Tensor, v: &Tensor| {
        let out = Tensor::zeros(&rt, SdpaProblemShape::out(q, v), DType::F32).unwrap();
        FlashAttention::new(q, k, v, &out, SdpaOptions::default()).unwrap().kernel().unwrap()
    };
    // 64 rows per K/V head: tiled; 63: rows; 8 heads of 8 queries sharing a K/V head: tiled.
    assert_eq!(kernel(&f(&[1, 2, 64, 16]), &f(&[1, 2, 9, 16]), &f(&[1, 2, 9, 16])), FlashKernel::Tiled);
    assert_eq!(kernel(&f(&[1, 2, 63, 16]), &f(&[1, 2, 9, 16]), &f(&[1, 2, 9, 16])), FlashKernel::Rows);
    assert_eq!(kernel(&f(&[1, 8, 8, 16]), &f(&[1, 1, 9, 16]), &f(&[1, 1, 9, 16])), FlashKernel::Tiled);
    // Head dimensions past 64 (of q/k or of v): rows.
    assert_eq!(kernel(&f(&[1, 1, 64, 65]), &f(&[1, 1, 9, 65]), &f(&[1, 1, 9, 16])), FlashKernel::Rows);
    assert_eq!(kernel(&f(&[1, 1, 64, 16]), &f(&[1, 1, 9, 16]), &f(&[1, 1, 9, 72])), FlashKernel::Rows);
}

/// The output shape of `q` against `v`.
struct SdpaProblemShape;
impl SdpaProblemShape {
    fn out(q: &Tensor, v: &Tensor) -> Vec<usize> {
        let mut dims = q.dims().to_vec();
        *dims.last_mut().unwrap() = *v.dims().last().unwrap();
        dims
    }
}

#[test]
fn forcing_tiled_past_its_head_dimension_is_invalid_shape() {
    let rt = runtime();
    let f = |dims: &[usize]| Tensor::zeros(&rt, dims, DType::F32).unwrap();
    for (d, dv) in [(65, 16), (16, 65), (128, 128)] {
        let (q, k, v, out) = (f(&[1, 70, d]), f(&[1, 9, d]), f(&[1, 9, dv]), f(&[1, 70, dv]));
        let op = FlashAttention::new(&q, &k, &v, &out, SdpaOptions::default()).unwrap();
        let problem = SdpaProblem::new(&q, &k, &v, &out, &SdpaOptions::default()).unwrap();
        assert!(matches!(FlashAttention::supports_tiled(&problem, rt.context()), Err(Error::InvalidShape { .. })));
        assert!(matches!(op.with_kernel(FlashKernel::Tiled), Err(Error::InvalidShape { .. })), "{d} {dv}");
    }
}
