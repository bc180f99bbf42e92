//! Softmax over the last dimension (scale, causal with offset, broadcast additive mask)
//! against an f64 CPU reference, in both reduction flavours, both parameter paths, f32 and f16.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::softmax::{Softmax, SoftmaxOptions};
use metallic::{DType, Error, Runtime, Tensor};

/// A mask for the reference: values and shape (right-aligned against x's).
struct HostMask<'a> {
    values: &'a [f64],
    dims: &'a [usize],
}

/// The f64 twin: softmax over the last dimension of `x * scale + mask`, keys with
/// `k > q + offset` (causal) or a -inf logit excluded; an all-excluded row gives zeros.
fn reference(x: &[f64], dims: &[usize], scale: f64, causal: Option<u32>, mask: Option<&HostMask<'_>>) -> Vec<f64> {
    let k_len = *dims.last().unwrap();
    let q_len = if dims.len() >= 2 { dims[dims.len() - 2] } else { 1 };
    let rank = dims.len();
    let mut out = vec![0.0; x.len()];
    let mask_value = |flat: usize| -> f64 {
        let Some(m) = mask else { return 0.0 };
        // Multi-index of `flat` in x, mapped onto the mask's (right-aligned, broadcast) shape.
        let pad = rank - m.dims.len();
        let (mut rest, mut idx, mut mstride) = (flat, 0, 1);
        for i in (0..rank).rev() {
            let coord = rest % dims[i];
            rest /= dims[i];
            if i >= pad {
                let md = m.dims[i - pad];
                if md != 1 {
                    idx += coord * mstride;
                }
                mstride *= md;
            }
        }
        m.values[idx]
    };
    if k_len == 0 {
        return out;
    }
    for row in 0..x.len() / k_len {
        let q = row % q_len;
        let logits: Vec<Option<f64>> = (0..k_len)
            .map(|k| {
                let flat = row * k_len + k;
                let v = x[flat] * scale + mask_value(flat);
                let allowed = causal.is_none_or(|off| k as u64 <= q as u64 + u64::from(off));
                (allowed && v != f64::NEG_INFINITY).then_some(v)
            })
            .collect();
        let max = logits.iter().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = logits.iter().flatten().map(|v| (v - max).exp()).sum();
        for (k, v) in logits.iter().enumerate() {
            out[row * k_len + k] = v.map_or(0.0, |v| (v - max).exp() / sum);
        }
    }
    out
}

/// Elementwise check: f32 relative to each value (softmax outputs are tiny on long rows, so an
/// absolute bound would say nothing), f16 absolute (small values are subnormal in f16).
/// Reference zeros (masked keys) must be exactly zero. Returns the largest error seen.
fn check(got: &[f32], want: &[f64], dtype: DType, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: f64 = 0.0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        assert!(g.is_finite(), "{what}: element {i} is {g}, expected {w}");
        if w == 0.0 {
            assert_eq!(g, 0.0, "{what}: element {i} should be exactly 0");
            continue;
        }
        let err = match dtype {
            DType::F16 => (g - w).abs(),
            _ => (g - w).abs() / w,
        };
        worst = worst.max(err);
        let tol = match dtype {
            DType::F16 => F16_TOL,
            _ => F32_REL_TOL,
        };
        // Below f32's normal range the relative bound means nothing; allow a denormal's worth.
        assert!(err <= tol || (g - w).abs() < 1e-37, "{what}: element {i} is {g}, expected {w} (error {err:e})");
    }
    worst
}

/// f32: relative error per element (the sum is a reduction, exp is a few ulp on GPUs).
const F32_REL_TOL: f64 = 1e-5;
/// f16: absolute error per element.
const F16_TOL: f64 = 1e-2;

/// Each row of `got` (rows of `k`) sums to 1, or to 0 where `want`'s row is all zeros.
fn check_row_sums(got: &[f32], want: &[f64], k: usize, dtype: DType, what: &str) {
    for (r, (g, w)) in got.chunks(k).zip(want.chunks(k)).enumerate() {
        let sum: f64 = g.iter().map(|&v| f64::from(v)).sum();
        let want_sum: f64 = w.iter().sum();
        let tol = if dtype == DType::F16 { 2e-2 } else { 1e-5 };
        assert!((sum - want_sum).abs() <= tol, "{what}: row {r} sums to {sum}, expected {want_sum}");
    }
}

/// Runs `Softmax` on a NaN-poisoned output and returns it as f32.
fn run(rt: &Runtime, x: &Tensor, options: SoftmaxOptions) -> Vec<f32> {
    let out = poisoned(rt, x.dims(), x.dtype());
    rt.record(&Softmax::new(x, &out, options).unwrap()).unwrap();
    out.to_vec_f32().unwrap()
}

const SHAPES: &[&[usize]] =
    &[&[1], &[7], &[13], &[3, 1], &[3, 31], &[2, 63], &[5, 257], &[2, 4099], &[2, 3, 13], &[2, 2, 7, 31]];

#[test]
fn matches_reference_for_shapes_dtypes_and_reduction_flavours() {
    for rt in reduction_runtimes() {
        let flavour = if rt.context().caps().subgroups() { "subgroups" } else { "workgroup memory" };
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(11);
            let mut worst: f64 = 0.0;
            for &shape in SHAPES {
                let n: usize = shape.iter().product();
                let (x, xv) = upload(&rt, shape, dtype, &rng.vec(n, -8.0, 8.0));
                let got = run(&rt, &x, SoftmaxOptions::default());
                let want = reference(&xv, shape, 1.0, None, None);
                let what = format!("{flavour} {dtype} {shape:?}");
                worst = worst.max(check(&got, &want, dtype, &what));
                check_row_sums(&got, &want, *shape.last().unwrap(), dtype, &what);
            }
            eprintln!("{flavour} {dtype}: largest error {worst:e}");
        }
    }
}

#[test]
fn both_parameter_paths_with_scale_mask_and_causal() {
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(12);
            let dims = [2, 3, 5, 300];
            let n: usize = dims.iter().product();
            let (x, xv) = upload(&rt, &dims, dtype, &rng.vec(n, -3.0, 3.0));
            let mdims = [2, 1, 1, 300];
            let mvals: Vec<f64> =
                (0..600).map(|i| if i % 300 >= 280 { f64::NEG_INFINITY } else { (i % 7) as f64 * 0.1 }).collect();
            let (mask, mv) = upload(&rt, &mdims, dtype, &mvals);
            let options = SoftmaxOptions { scale: 0.7, causal: Some(290), mask: Some(mask) };
            let got = run(&rt, &x, options);
            let want = reference(&xv, &dims, 0.7, Some(290), Some(&HostMask { values: &mv, dims: &mdims }));
            check(&got, &want, dtype, &format!("{mode:?} {dtype}"));
        }
    }
}

/// Long rows take the hierarchical path (thousands of keys per invocation, online rescaling).
/// This measures compensated against plain summation on rows of 2^20 f32 logits (run with
/// `--nocapture` for the numbers): compensation must keep every element within the f32
/// tolerance, and must beat plain summation clearly where plain summation loses terms.
#[test]
fn long_row_of_a_million_keys_with_and_without_compensation() {
    let rt = runtime();
    let k = 1 << 20;
    let mut rng = Rng::new(13);
    for (lo, hi, sink) in [(-1.0, 1.0, false), (-10.0, 10.0, false), (-18.0, -15.0, true)] {
        // Rising logits: the running max grows all along the row, so the online rescaling runs.
        // A sink (attention sinks): the first keys dominate, and each invocation then adds
        // thousands of terms below half an ulp of its running sum.
        let vals: Vec<f64> = (0..k)
            .map(|i| match (sink, i < 1024) {
                (true, true) => rng.uniform(0.0, 1.0),
                (true, false) => rng.uniform(lo, hi),
                (false, _) => rng.uniform(lo, hi) + i as f64 * 1e-5,
            })
            .collect();
        let (x, xv) = upload(&rt, &[1, k], DType::F32, &vals);
        let want = reference(&xv, &[1, k], 1.0, None, None);
        let mut errors = [0.0; 2];
        for compensated in [false, true] {
            let out = poisoned(&rt, &[1, k], DType::F32);
            let op = Softmax::new(&x, &out, SoftmaxOptions::default()).unwrap().compensated(compensated);
            rt.record(&op).unwrap();
            let got = out.to_vec::<f32>().unwrap();
            let what = format!("K = 2^20, logits in [{lo}, {hi}) sink={sink} compensated={compensated}");
            assert!(got.iter().all(|v| v.is_finite() && *v > 0.0), "{what}: non-finite or zero output");
            let rel: Vec<f64> = got.iter().zip(&want).map(|(&g, &w)| (f64::from(g) - w) / w).collect();
            let worst = rel.iter().fold(0.0f64, |a, e| a.max(e.abs()));
            // The mean signed error shows the factor 1/sum that all elements share, apart from
            // exp's per-element noise.
            let bias = rel.iter().sum::<f64>() / k as f64;
            let sum: f64 = got.iter().map(|&v| f64::from(v)).sum();
            eprintln!(
                "{what}: max rel error {worst:.2e}, mean signed rel error {bias:.2e}, sum - 1 = {:.2e}",
                sum - 1.0
            );
            assert!((sum - 1.0).abs() < 1e-4, "{what}: sums to {sum}");
            errors[usize::from(compensated)] = worst;
        }
        let [plain, compensated] = errors;
        assert!(compensated <= F32_REL_TOL, "compensated: max rel error {compensated:e}");
        if sink {
            assert!(compensated * 4.0 < plain, "compensation does not help: {compensated:e} vs plain {plain:e}");
        }
    }
}

#[test]
fn views_at_offsets_read_and_write_only_their_rows() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(14);
        let dims = [3, 7, 13];
        let n = 3 * 7 * 13;
        let (x, xv) = upload(&rt, &dims, dtype, &rng.vec(n, -4.0, 4.0));
        let (mask, mv) = upload(&rt, &[2, 7, 13], dtype, &rng.vec(2 * 7 * 13, -1.0, 1.0));
        let out = poisoned(&rt, &dims, dtype);
        // Batch 1 starts 91 elements in (not a multiple of the storage alignment).
        let (x1, m1, out1) = (x.get_batch(1).unwrap(), mask.get_batch(1).unwrap(), out.get_batch(1).unwrap());
        let options = SoftmaxOptions { scale: 1.0, causal: Some(3), mask: Some(m1) };
        rt.record(&Softmax::new(&x1, &out1, options).unwrap()).unwrap();
        let got = out.to_vec_f32().unwrap();
        let want =
            reference(&xv[91..182], &[7, 13], 1.0, Some(3), Some(&HostMask { values: &mv[91..], dims: &[7, 13] }));
        check(&got[91..182], &want, dtype, &format!("{dtype} view"));
        assert!(got[..91].iter().chain(&got[182..]).all(|v| v.is_nan()), "{dtype}: wrote outside the view");
        // In place, on a view.
        rt.record(&Softmax::new(&x1, &x1, SoftmaxOptions::default()).unwrap()).unwrap();
        let got = x.to_vec_f32().unwrap();
        check(&got[91..182], &reference(&xv[91..182], &[7, 13], 1.0, None, None), dtype, &format!("{dtype} in place"));
        let untouched: Vec<f32> = xv[..91].iter().chain(&xv[182..]).map(|&v| v as f32).collect();
        let now: Vec<f32> = got[..91].iter().chain(&got[182..]).copied().collect();
        assert_eq!(now, untouched, "{dtype}: in-place softmax touched other rows");
    }
}

#[test]
fn rows_are_invariant_to_adding_a_constant() {
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(15);
            // Grid values so that x + 1000 is exact in the storage type: the logits differ by
            // exactly 1000, and every max-subtracted difference is the same.
            let grid = if dtype == DType::F16 { 2.0 } else { 64.0 };
            for k in [13usize, 257, 4099] {
                let vals: Vec<f64> = rng.vec(2 * k, -4.0, 4.0).iter().map(|v| (v * grid).round() / grid).collect();
                let shifted: Vec<f64> = vals.iter().map(|v| v + 1000.0).collect();
                let (a, _) = upload(&rt, &[2, k], dtype, &vals);
                let (b, _) = upload(&rt, &[2, k], dtype, &shifted);
                let ga = a.softmax().unwrap().to_vec_f32().unwrap();
                let gb = b.softmax().unwrap().to_vec_f32().unwrap();
                for (i, (p, q)) in ga.iter().zip(&gb).enumerate() {
                    assert!((p - q).abs() <= 1e-6 * p.abs().max(1e-30), "{dtype} K={k} element {i}: {p} vs {q}");
                }
            }
        }
    }
}

#[test]
fn identical_values_give_a_uniform_row_and_an_outlier_a_one_hot_row() {
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            for k in [1usize, 7, 257, 4099] {
                let (x, _) = upload(&rt, &[2, k], dtype, &vec![3.7; 2 * k]);
                let got = x.softmax().unwrap().to_vec_f32().unwrap();
                let tol = if dtype == DType::F16 { 1e-3 } else { 1e-6 };
                for (i, &v) in got.iter().enumerate() {
                    let want = 1.0 / k as f64;
                    assert!((f64::from(v) - want).abs() <= tol * want, "{dtype} K={k} element {i}: {v}, want {want}");
                }
                // One huge outlier per row: exactly one-hot.
                let huge = if dtype == DType::F16 { 60000.0 } else { 1e30 };
                let mut rng = Rng::new(16);
                let mut vals = rng.vec(2 * k, -4.0, 4.0);
                let hot = [k / 2, k + k / 3];
                for &h in &hot {
                    vals[h] = huge;
                }
                let (x, _) = upload(&rt, &[2, k], dtype, &vals);
                let got = x.softmax().unwrap().to_vec_f32().unwrap();
                for (i, &v) in got.iter().enumerate() {
                    assert_eq!(v, if hot.contains(&i) { 1.0 } else { 0.0 }, "{dtype} K={k} outlier, element {i}");
                }
            }
        }
    }
}

#[test]
fn huge_logits_never_give_nan_or_inf() {
    let rt = runtime();
    let cases: Vec<(Vec<f64>, f32)> = vec![
        (vec![1e30, -1e30, 0.0, 1e30, -3e38, 3e38, 3e38], 1.0),
        (vec![1.0, -1.0, 0.5, 0.25, -0.75], 1e30),
        (vec![-1e30; 5], 1.0),
        (vec![-3e38, -3e38, -3.4e38], 1.0),
    ];
    for (vals, scale) in cases {
        let (x, xv) = upload(&rt, &[1, vals.len()], DType::F32, &vals);
        let got = run(&rt, &x, SoftmaxOptions { scale, ..Default::default() });
        let want = reference(&xv, &[1, vals.len()], f64::from(scale), None, None);
        check(&got, &want, DType::F32, &format!("{vals:?} * {scale}"));
    }
    // Finite inputs whose scaled logits overflow f32: finite, summing to 1.
    let (x, _) = upload(&rt, &[1, 4], DType::F32, &[1e30, 2e30, -1e30, 0.0]);
    let got = run(&rt, &x, SoftmaxOptions { scale: 1e10, ..Default::default() });
    assert!(got.iter().all(|v| v.is_finite()), "{got:?}");
    assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{got:?}");
    assert_eq!(got[2..], [0.0, 0.0]);
}

#[test]
fn masked_keys_are_exactly_zero_and_a_fully_masked_row_is_all_zeros() {
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(17);
            for k in [7usize, 257, 4099] {
                let rows = 4;
                let (x, xv) = upload(&rt, &[rows, k], dtype, &rng.vec(rows * k, -5.0, 5.0));
                // Row 0: every other key masked; row 1: all masked; row 2: all but the last
                // key masked (one invocation holds the only live key); row 3: none masked.
                let mvals: Vec<f64> = (0..rows * k)
                    .map(|i| {
                        let (r, c) = (i / k, i % k);
                        let masked = match r {
                            0 => c % 2 == 1,
                            1 => true,
                            2 => c != k - 1,
                            _ => false,
                        };
                        if masked { f64::NEG_INFINITY } else { rng.uniform(-1.0, 1.0) }
                    })
                    .collect();
                let (mask, mv) = upload(&rt, &[rows, k], dtype, &mvals);
                let got = run(&rt, &x, SoftmaxOptions { mask: Some(mask), ..Default::default() });
                let want = reference(&xv, &[rows, k], 1.0, None, Some(&HostMask { values: &mv, dims: &[rows, k] }));
                let what = format!("{dtype} K={k}");
                check(&got, &want, dtype, &what);
                assert!(got[k..2 * k].iter().all(|&v| v == 0.0), "{what}: fully masked row");
                assert_eq!(got[3 * k - 1], 1.0, "{what}: the only live key");
                check_row_sums(&got, &want, k, dtype, &what);
            }
        }
    }
}

#[test]
fn causal_with_offset_matches_reference_and_ignores_future_keys() {
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(18);
            // (planes, seq_q, seq_k, offset): prefill, decode with a KV cache, offsets past K.
            for (planes, q, k, offset) in
                [(3, 9, 9, 0), (2, 5, 17, 12), (2, 1, 300, 299), (1, 4, 600, 0), (2, 3, 7, 100), (1, 7, 5, 1)]
            {
                let dims = [planes, q, k];
                let n = planes * q * k;
                let vals = rng.vec(n, -4.0, 4.0);
                let (x, xv) = upload(&rt, &dims, dtype, &vals);
                let options = || SoftmaxOptions { causal: Some(offset), ..Default::default() };
                let got = run(&rt, &x, options());
                let want = reference(&xv, &dims, 1.0, Some(offset), None);
                let what = format!("{dtype} {dims:?} offset {offset}");
                check(&got, &want, dtype, &what);
                check_row_sums(&got, &want, k, dtype, &what);
                // Changing the keys a query may not see changes nothing.
                let future: Vec<f64> = vals
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| if (i % k) as u64 > ((i / k) % q) as u64 + u64::from(offset) { 1e4 } else { v })
                    .collect();
                let (y, _) = upload(&rt, &dims, dtype, &future);
                assert_eq!(run(&rt, &y, options()), got, "{what}: future keys leaked");
            }
        }
    }
}

#[test]
fn masks_broadcast_key_padding_query_key_full_and_per_query() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(19);
        let dims = [2usize, 3, 5, 37];
        let n: usize = dims.iter().product();
        let (x, xv) = upload(&rt, &dims, dtype, &rng.vec(n, -3.0, 3.0));
        let mask_shapes: &[&[usize]] = &[
            &[2, 1, 1, 37], // key padding
            &[5, 37],       // [Q, K], e.g. a causal-style mask
            &[2, 3, 5, 37], // full
            &[37],          // one row for all
            &[2, 3, 5, 1],  // one value per row (broadcast along the keys)
            &[1, 3, 1, 37], // per head
            &[2, 1, 5, 37], // per batch and query, shared by heads
            &[],            // a scalar
        ];
        for &mdims in mask_shapes {
            let mn: usize = mdims.iter().product();
            let mvals: Vec<f64> = (0..mn)
                .map(
                    |i| if i % 5 == 3 && mdims.last() != Some(&1) { f64::NEG_INFINITY } else { rng.uniform(-2.0, 2.0) },
                )
                .collect();
            let (mask, mv) = upload(&rt, mdims, dtype, &mvals);
            for causal in [None, Some(32)] {
                let got = run(&rt, &x, SoftmaxOptions { scale: 0.5, causal, mask: Some(mask.clone()) });
                let want = reference(&xv, &dims, 0.5, causal, Some(&HostMask { values: &mv, dims: mdims }));
                check(&got, &want, dtype, &format!("{dtype} mask {mdims:?} causal {causal:?}"));
            }
        }
    }
}

#[test]
fn higher_rank_inputs_merge_broadcast_dimensions() {
    let rt = runtime();
    let mut rng = Rng::new(20);
    let dims = [2usize, 2, 3, 2, 4, 9];
    let n: usize = dims.iter().product();
    let (x, xv) = upload(&rt, &dims, DType::F32, &rng.vec(n, -3.0, 3.0));
    // Broadcast over dims 1 and 2 (merged into one), kept over 0, 3, 4: three row dimensions.
    let mdims = [2usize, 1, 1, 2, 4, 9];
    let mn: usize = mdims.iter().product();
    let (mask, mv) = upload(&rt, &mdims, DType::F32, &rng.vec(mn, -1.0, 1.0));
    let got = run(&rt, &x, SoftmaxOptions { causal: Some(2), mask: Some(mask), ..Default::default() });
    let want = reference(&xv, &dims, 1.0, Some(2), Some(&HostMask { values: &mv, dims: &mdims }));
    check(&got, &want, DType::F32, "rank 6");
    // Kept, broadcast, kept, broadcast, kept: more than three row dimensions.
    let odd = Tensor::zeros(&rt, [2, 1, 3, 1, 4, 9], DType::F32).unwrap();
    let err = x.softmax_with(SoftmaxOptions { mask: Some(odd), ..Default::default() }).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "softmax", .. }), "{err}");
}

#[test]
fn rows_beyond_one_grid_dimension_fold_into_y() {
    let rt = runtime();
    let rows = 70_000;
    let vals: Vec<f64> = (0..rows * 2).map(|i| (i % 11) as f64 * 0.25).collect();
    let (x, xv) = upload(&rt, &[rows, 2], DType::F32, &vals);
    let got = run(&rt, &x, SoftmaxOptions { causal: Some(0), ..Default::default() });
    // Rank 2 with Q = rows: query q sees keys 0..=q, so every row but the first sees both keys.
    check(&got, &reference(&xv, &[rows, 2], 1.0, Some(0), None), DType::F32, "70000 rows");
    let got = x.softmax().unwrap().to_vec::<f32>().unwrap();
    check(&got, &reference(&xv, &[rows, 2], 1.0, None, None), DType::F32, "70000 rows");
}

#[test]
fn empty_inputs_are_a_no_op_and_results_are_deterministic() {
    let rt = runtime();
    for dims in [[0usize, 5], [3, 0]] {
        let x = Tensor::zeros(&rt, dims, DType::F32).unwrap();
        let y = x.softmax_with(SoftmaxOptions { causal: Some(0), ..Default::default() }).unwrap();
        assert_eq!(y.dims(), &dims);
        assert!(y.to_vec::<f32>().unwrap().is_empty());
    }
    let mut rng = Rng::new(21);
    let (x, _) = upload(&rt, &[3, 5000], DType::F32, &rng.vec(15_000, -6.0, 6.0));
    let a = x.softmax().unwrap().to_vec::<f32>().unwrap();
    let b = x.softmax().unwrap().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
}

#[test]
fn randomized_shapes_and_options() {
    let flavours = reduction_runtimes();
    let mut rng = Rng::new(22);
    for case in 0..30 {
        let rt = &flavours[case % flavours.len()];
        let dtypes = float_dtypes(rt);
        let dtype = dtypes[(rng.next_u64() % dtypes.len() as u64) as usize];
        let rank = 1 + (rng.next_u64() % 4) as usize;
        let mut dims: Vec<usize> = (0..rank - 1).map(|_| 1 + (rng.next_u64() % 4) as usize).collect();
        let k = match rng.next_u64() % 4 {
            0 => 1 + (rng.next_u64() % 8) as usize,
            1 | 2 => 1 + (rng.next_u64() % 300) as usize,
            _ => 1 + (rng.next_u64() % 3000) as usize,
        };
        dims.push(k);
        let n: usize = dims.iter().product();
        let (x, xv) = upload(rt, &dims, dtype, &rng.vec(n, -6.0, 6.0));
        let scale = if rng.next_u64().is_multiple_of(2) { 1.0 } else { rng.uniform(0.05, 2.0) as f32 };
        let causal = (rank >= 2 && rng.next_u64().is_multiple_of(2)).then(|| (rng.next_u64() % (k as u64 + 2)) as u32);
        // A mask over a random suffix of the dims, each kept or broadcast, with some -inf.
        let mask_rank = (rng.next_u64() % (rank as u64 + 1)) as usize;
        let use_mask = !rng.next_u64().is_multiple_of(3);
        let mdims: Vec<usize> =
            dims[rank - mask_rank..].iter().map(|&d| if rng.next_u64().is_multiple_of(3) { 1 } else { d }).collect();
        let mn: usize = mdims.iter().product();
        let mvals: Vec<f64> = (0..mn)
            .map(|_| if rng.next_u64().is_multiple_of(6) { f64::NEG_INFINITY } else { rng.uniform(-2.0, 2.0) })
            .collect();
        let (mask, mv) = upload(rt, &mdims, dtype, &mvals);
        let host_mask = HostMask { values: &mv, dims: &mdims };
        let got = run(rt, &x, SoftmaxOptions { scale, causal, mask: use_mask.then_some(mask) });
        let want = reference(&xv, &dims, f64::from(scale), causal, use_mask.then_some(&host_mask));
        let what = format!(
            "case {case}: {dtype} {dims:?} scale {scale} causal {causal:?} mask {:?} subgroups {}",
            use_mask.then_some(&mdims),
            rt.context().caps().subgroups()
        );
        check(&got, &want, dtype, &what);
        check_row_sums(&got, &want, k, dtype, &what);
    }
}

#[test]
fn invalid_arguments_are_errors() {
    let rt = runtime();
    let x = Tensor::zeros(&rt, [2, 3, 4], DType::F32).unwrap();
    let out = x.empty_like().unwrap();
    let with_mask = |mask: Tensor| SoftmaxOptions { mask: Some(mask), ..Default::default() };
    // Mask shapes that do not broadcast: a wrong size, a wrong size that is not 1, more dims.
    for mdims in [vec![5usize], vec![3, 3, 4], vec![1, 2, 3, 4]] {
        let mask = Tensor::zeros(&rt, &mdims, DType::F32).unwrap();
        let err = Softmax::new(&x, &out, with_mask(mask)).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { op: "softmax", .. }), "{mdims:?}: {err}");
    }
    // Output shape.
    let wrong = Tensor::zeros(&rt, [2, 4, 3], DType::F32).unwrap();
    let err = Softmax::new(&x, &wrong, SoftmaxOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "softmax", .. }), "{err}");
    // U32 input.
    let ids = Tensor::from_slice(&rt, [2, 2], &[1u32, 2, 3, 4]).unwrap();
    let err = ids.softmax().unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { got: DType::U32, .. }), "{err}");
    // Output of another dtype.
    let ids_out = Tensor::zeros(&rt, [2, 3, 4], DType::U32).unwrap();
    let err = Softmax::new(&x, &ids_out, SoftmaxOptions::default()).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::U32, .. }), "{err}");
    // Mask of another dtype.
    let mask_dtype = if rt.context().caps().shader_f16() { DType::F16 } else { DType::U32 };
    let mask = Tensor::zeros(&rt, [3, 4], mask_dtype).unwrap();
    let err = Softmax::new(&x, &out, with_mask(mask)).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, .. }), "{err}");
    // Causal on a rank-1 input: no query dimension.
    let row = Tensor::zeros(&rt, [4], DType::F32).unwrap();
    let err = row.softmax_with(SoftmaxOptions { causal: Some(0), ..Default::default() }).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "softmax", .. }), "{err}");
    // Non-finite scales.
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = x.softmax_with(SoftmaxOptions { scale, ..Default::default() }).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { op: "softmax", .. }), "{scale}: {err}");
    }
    // A rank-0 input has no last dimension.
    let scalar = Tensor::zeros(&rt, [0usize; 0], DType::F32).unwrap();
    let err = scalar.softmax().unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "softmax", .. }), "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, failure_persistence: None, ..Default::default() })]

    /// Random shapes, scales and causal offsets, in both reduction flavours: matches the f64
    /// reference and every row sums to 1.
    #[test]
    fn property_random_rows_match_reference_and_sum_to_one(
        planes in 1usize..4, q in 1usize..6, k in 1usize..700, scale in 0.05f32..3.0,
        causal in proptest::option::of(0u32..8), subgroups: bool, f16: bool, seed: u64,
    ) {
        let rt = if subgroups { runtime() } else { runtime_without_subgroups() };
        let dtype = if f16 && rt.context().caps().shader_f16() { DType::F16 } else { DType::F32 };
        let dims = [planes, q, k];
        let mut rng = Rng::new(seed);
        let (x, xv) = upload(&rt, &dims, dtype, &rng.vec(planes * q * k, -8.0, 8.0));
        let got = run(&rt, &x, SoftmaxOptions { scale, causal, mask: None });
        let want = reference(&xv, &dims, f64::from(scale), causal, None);
        let what = format!("{dtype} {dims:?} scale {scale} causal {causal:?} subgroups {subgroups}");
        check(&got, &want, dtype, &what);
        check_row_sums(&got, &want, k, dtype, &what);
    }
}
