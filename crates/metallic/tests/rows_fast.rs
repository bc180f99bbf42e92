//! The register paths (row loaded once; `vec4` or scalar accesses) of softmax, layer norm and RMS norm against
//! f64 references, around every boundary of the path selection: row lengths 1, 3, 4, 5, 255,
//! 256, 1024, 1025, 4096 (the longest register row) and 4100 (just beyond), views at aligned
//! and unaligned element offsets, f32 and f16, both reduction flavours, masks, causal and
//! scale (softmax), weight and bias combinations (norms), compensated and plain sums; each case
//! also asserts which kernel ran (`path()`) and that nothing outside the output view changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::norm::{LayerNorm, RmsNorm};
use metallic::kernels::softmax::{Softmax, SoftmaxOptions};
use metallic::{DType, Runtime, Tensor};

const LENGTHS: [usize; 10] = [1, 3, 4, 5, 255, 256, 1024, 1025, 4096, 4100];
/// Longest row the register kernels take (`REGISTER_MAX_K` / `REGISTER_MAX_COLS`).
const REGISTER_MAX: usize = 4096;
const ROWS: usize = 3;
const EPS: f32 = 1e-5;

/// Which kernel should run for op `op`: `{op}` for rows longer than the maximum, else
/// `{op}_rows` (vec4) for rows of a multiple of 4 with every tensor at an element offset
/// (within its bound range) that is a multiple of 4, else `{op}_rows_scalar`. Also returns
/// the path's index (0 strided, 1 vec4, 2 scalar registers).
fn expect_path(rt: &Runtime, op: &str, k: usize, tensors: &[&Tensor]) -> (String, usize) {
    let align = rt.context().caps().storage_alignment();
    if k > REGISTER_MAX {
        return (op.to_string(), 0);
    }
    let vec4 = align.is_multiple_of(16)
        && k.is_multiple_of(4)
        && tensors.iter().all(|t| (t.byte_offset() % align / t.dtype().size_in_bytes() as u64).is_multiple_of(4));
    if vec4 { (format!("{op}_rows"), 1) } else { (format!("{op}_rows_scalar"), 2) }
}

/// A `dims`-shaped view at element `off` of a larger tensor of `dtype` filled from `values`
/// (its first `off` elements and 5 trailing ones are padding); returns the view, its values
/// and the whole tensor.
fn view(rt: &Runtime, dims: &[usize], dtype: DType, off: usize, values: &[f64]) -> (Tensor, Vec<f64>, Tensor) {
    let n: usize = dims.iter().product();
    let mut all = vec![0.25; off];
    all.extend_from_slice(values);
    all.extend([0.5; 5]);
    let (whole, allv) = upload(rt, &[off + n + 5], dtype, &all);
    let v = whole.narrow(off, n).unwrap().reshape(dims).unwrap();
    (v, allv[off..off + n].to_vec(), whole)
}

/// A NaN-poisoned `dims` view at element `off`, and the whole tensor.
fn poisoned_view(rt: &Runtime, dims: &[usize], dtype: DType, off: usize) -> (Tensor, Tensor) {
    let n: usize = dims.iter().product();
    let whole = poisoned(rt, &[off + n + 5], dtype);
    (whole.narrow(off, n).unwrap().reshape(dims).unwrap(), whole)
}

/// The output view's values; asserts everything around it is still NaN.
fn read_view(whole: &Tensor, off: usize, n: usize, what: &str) -> Vec<f32> {
    let all = whole.to_vec_f32().unwrap();
    assert!(all[..off].iter().chain(&all[off + n..]).all(|v| v.is_nan()), "{what}: wrote outside its view");
    all[off..off + n].to_vec()
}

fn flavour(rt: &Runtime) -> &'static str {
    if rt.context().caps().subgroups() { "subgroups" } else { "workgroup memory" }
}

// ---------------------------------------------------------------------------------------------
// Softmax

/// The f64 twin for `[rows, k]` inputs (queries are rows): softmax of `x * scale + mask`
/// (mask `[k]` or `[rows, k]`), keys with `k > q + offset` (causal) or a -inf logit excluded;
/// an all-excluded row gives zeros.
fn ref_softmax(x: &[f64], k_len: usize, scale: f64, causal: Option<u32>, mask: Option<(&[f64], bool)>) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for row in 0..x.len() / k_len {
        let logits: Vec<Option<f64>> = (0..k_len)
            .map(|k| {
                let m = mask.map_or(0.0, |(m, per_row)| if per_row { m[row * k_len + k] } else { m[k] });
                let v = x[row * k_len + k] * scale + m;
                let allowed = causal.is_none_or(|off| k as u64 <= row as u64 + u64::from(off));
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

/// f32: relative error per element; f16: absolute. Reference zeros must be exactly zero.
fn check_softmax(got: &[f32], want: &[f64], dtype: DType, what: &str) -> f64 {
    let mut worst: f64 = 0.0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(g);
        assert!(g.is_finite(), "{what}: element {i} is {g}, expected {w}");
        if w == 0.0 {
            assert_eq!(g, 0.0, "{what}: element {i} should be exactly 0");
            continue;
        }
        let (err, tol) = match dtype {
            DType::F16 => ((g - w).abs(), 1e-2),
            _ => ((g - w).abs() / w, 1e-5),
        };
        worst = worst.max(err);
        assert!(err <= tol || (g - w).abs() < 1e-37, "{what}: element {i} is {g}, expected {w} (error {err:e})");
    }
    worst
}

#[test]
fn softmax_register_path_boundaries_views_masks_and_causal() {
    let mut worst = [0.0f64; 2];
    let mut taken = [0usize; 3];
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(41);
            for (case, &k) in LENGTHS.iter().enumerate() {
                for (x_off, out_off) in [(0, 0), (8, 4), (1, 0), (0, 2)] {
                    let dims = [ROWS, k];
                    let n = ROWS * k;
                    let (x, xv, _) = view(&rt, &dims, dtype, x_off, &rng.vec(n, -6.0, 6.0));
                    let (out, whole) = poisoned_view(&rt, &dims, dtype, out_off);
                    // Options in turn: plain; scale + causal; a key mask with -inf entries
                    // (plain sums); a per-row mask with one row fully masked, scaled and causal.
                    let variant = (case + x_off + out_off) % 4;
                    let mut mv: Vec<f64> = Vec::new();
                    let (mask, per_row) = match variant {
                        2 => {
                            mv = (0..k)
                                .map(|i| if i % 3 == 1 { f64::NEG_INFINITY } else { rng.uniform(-2.0, 2.0) })
                                .collect();
                            (Some(upload(&rt, &[k], dtype, &mv)), false)
                        }
                        3 => {
                            mv =
                                (0..n)
                                    .map(|i| {
                                        if i / k == 1 || i % 5 == 2 {
                                            f64::NEG_INFINITY
                                        } else {
                                            rng.uniform(-2.0, 2.0)
                                        }
                                    })
                                    .collect();
                            (Some(upload(&rt, &dims, dtype, &mv)), true)
                        }
                        _ => (None, false),
                    };
                    if let Some((_, rounded)) = &mask {
                        mv = rounded.clone();
                    }
                    let scale = if variant % 2 == 1 { 0.7 } else { 1.0 };
                    let causal = (variant % 2 == 1).then_some(1);
                    let options =
                        SoftmaxOptions { scale: scale as f32, causal, mask: mask.as_ref().map(|m| m.0.clone()) };
                    let op = Softmax::new(&x, &out, options).unwrap().compensated(variant != 2);
                    let (path, index) = expect_path(&rt, "softmax", k, &[&x, &out]);
                    assert_eq!(op.path(), path, "k {k} offsets {x_off}/{out_off}");
                    taken[index] += 1;
                    rt.record(&op).unwrap();
                    let what =
                        format!("softmax {dtype} k {k} offsets {x_off}/{out_off} variant {variant} {}", flavour(&rt));
                    let got = read_view(&whole, out_off, n, &what);
                    let want = ref_softmax(&xv, k, scale, causal, mask.as_ref().map(|_| (mv.as_slice(), per_row)));
                    let e = check_softmax(&got, &want, dtype, &what);
                    let slot = usize::from(dtype == DType::F16);
                    worst[slot] = worst[slot].max(e);
                }
            }
        }
    }
    eprintln!(
        "softmax rows: largest error f32 {:.3e}, f16 {:.3e}; cases strided {}, vec4 registers {}, scalar registers {}",
        worst[0], worst[1], taken[0], taken[1], taken[2]
    );
    assert!(taken.iter().all(|&n| n > 0), "every path must be exercised");
}

#[test]
fn softmax_register_path_in_place_extremes_and_folded_rows() {
    let rt = runtime();
    // In place, huge and identical logits, on the register path.
    let vals: Vec<f64> = (0..ROWS * 256)
        .map(|i| {
            if i < 256 {
                3.0e38
            } else if i < 512 {
                7.0
            } else {
                (i % 17) as f64
            }
        })
        .collect();
    let (x, xv) = upload(&rt, &[ROWS, 256], DType::F32, &vals);
    let op = Softmax::new(&x, &x, SoftmaxOptions { scale: 2.0, ..Default::default() }).unwrap();
    assert_eq!(op.path(), "softmax_rows");
    rt.record(&op).unwrap();
    let got = x.to_vec_f32().unwrap();
    // 3e38 * 2 overflows: every logit of row 0 is the largest finite one, so the row is uniform.
    let want: Vec<f64> =
        ref_softmax(&xv.iter().map(|v| (v * 2.0).min(f64::from(f32::MAX))).collect::<Vec<_>>(), 256, 1.0, None, None);
    check_softmax(&got, &want, DType::F32, "in place, extremes");

    // In place on the scalar register path (odd K), f16.
    if float_dtypes(&rt).contains(&DType::F16) {
        let mut rng = Rng::new(45);
        let (x, xv) = upload(&rt, &[ROWS, 255], DType::F16, &rng.vec(ROWS * 255, -8.0, 8.0));
        let op = Softmax::new(&x, &x, SoftmaxOptions { causal: Some(100), ..Default::default() }).unwrap();
        assert_eq!(op.path(), "softmax_rows_scalar");
        rt.record(&op).unwrap();
        let want = ref_softmax(&xv, 255, 1.0, Some(100), None);
        check_softmax(&x.to_vec_f32().unwrap(), &want, DType::F16, "in place, scalar registers");
    }

    // Rows beyond one grid dimension fold into y.
    let rows = 70_000;
    let mut rng = Rng::new(42);
    let (x, xv) = upload(&rt, &[rows, 4], DType::F32, &rng.vec(rows * 4, -3.0, 3.0));
    let out = poisoned(&rt, &[rows, 4], DType::F32);
    let op = Softmax::new(&x, &out, SoftmaxOptions { causal: Some(0), ..Default::default() }).unwrap();
    assert_eq!(op.path(), "softmax_rows");
    rt.record(&op).unwrap();
    let want = ref_softmax(&xv, 4, 1.0, Some(0), None);
    // Causal over [rows, 4] with offset 0: query q sees keys 0..=q, so rows >= 3 see all four.
    check_softmax(&out.to_vec_f32().unwrap(), &want, DType::F32, "70000 rows");
}

// ---------------------------------------------------------------------------------------------
// Norms

fn ref_layer_norm(x: &[f64], cols: usize, w: Option<&[f64]>, b: Option<&[f64]>, eps: f32) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let n = cols as f64;
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let scale = 1.0 / (var + f64::from(eps)).sqrt();
        for (i, v) in row.iter().enumerate() {
            let y = (v - mean) * scale;
            let y = w.map_or(y, |w| y * w[i]);
            out.push(b.map_or(y, |b| y + b[i]));
        }
    }
    out
}

fn ref_rms_norm(x: &[f64], cols: usize, w: Option<&[f64]>, eps: f32, unit_offset: bool) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / cols as f64;
        let scale = 1.0 / (ms + f64::from(eps)).sqrt();
        for (i, v) in row.iter().enumerate() {
            let y = v * scale;
            out.push(w.map_or(y, |w| if unit_offset { y * (1.0 + w[i]) } else { y * w[i] }));
        }
    }
    out
}

/// Largest |got - want| / max(1, |want|) (the measure `assert_close` bounds).
fn max_error(got: &[f32], want: &[f64]) -> f64 {
    got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max)
}

#[test]
fn norms_register_path_boundaries_views_weights_and_biases() {
    let mut worst = [0.0f64; 2];
    let mut taken = [0usize; 3];
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(43);
            for (case, &k) in LENGTHS.iter().enumerate() {
                // (x, out, weight, bias) element offsets: aligned, aligned at 4 and 8, and one
                // tensor unaligned at a time.
                for offs in [[0, 0, 0, 0], [4, 8, 4, 12], [1, 0, 0, 0], [0, 0, 2, 0], [0, 4, 0, 3], [0, 6, 0, 0]] {
                    let [x_off, out_off, w_off, b_off] = offs;
                    let dims = [ROWS, k];
                    let n = ROWS * k;
                    let mean = rng.uniform(-50.0, 50.0);
                    let xs: Vec<f64> = rng.vec(n, -2.0, 2.0).iter().map(|v| v + mean).collect();
                    let (x, xv, _) = view(&rt, &dims, dtype, x_off, &xs);
                    let (w, wv, _) = view(&rt, &[k], dtype, w_off, &rng.vec(k, 0.5, 1.5));
                    let (b, bv, _) = view(&rt, &[k], dtype, b_off, &rng.vec(k, -1.0, 1.0));
                    let turn = case + x_off + out_off + w_off + b_off;
                    let (has_w, has_b) = [(true, true), (false, false), (true, false), (false, true)][turn % 4];
                    let compensated = turn % 3 != 2;
                    let present: Vec<&Tensor> =
                        [Some(&x), has_w.then_some(&w), has_b.then_some(&b)].into_iter().flatten().collect();

                    let (out, whole) = poisoned_view(&rt, &dims, dtype, out_off);
                    let op = LayerNorm::new(&x, has_w.then_some(&w), has_b.then_some(&b), EPS, &out)
                        .unwrap()
                        .compensated(compensated);
                    let (path, index) = expect_path(&rt, "layer_norm", k, &[present.as_slice(), &[&out]].concat());
                    assert_eq!(op.path(), path, "k {k} {offs:?}");
                    taken[index] += 1;
                    rt.record(&op).unwrap();
                    let what = format!("layer_norm {dtype} k {k} {offs:?} w={has_w} b={has_b} {}", flavour(&rt));
                    let got = read_view(&whole, out_off, n, &what);
                    let want =
                        ref_layer_norm(&xv, k, has_w.then_some(wv.as_slice()), has_b.then_some(bv.as_slice()), EPS);
                    assert_close(&got, &want, tolerance(dtype), &what);
                    let slot = usize::from(dtype == DType::F16);
                    worst[slot] = worst[slot].max(max_error(&got, &want));

                    // RMS norm: the weight (plain or unit offset) or none; the bias view unused.
                    let unit = turn % 2 == 1;
                    let xr: Vec<f64> = xs.iter().map(|v| v - mean).collect();
                    let (x, xv, _) = view(&rt, &dims, dtype, x_off, &xr);
                    let (out, whole) = poisoned_view(&rt, &dims, dtype, out_off);
                    let op = RmsNorm::new(&x, has_w.then_some(&w), EPS, unit, &out).unwrap().compensated(compensated);
                    let mut present = vec![&x, &out];
                    if has_w {
                        present.push(&w);
                    }
                    let (path, index) = expect_path(&rt, "rms_norm", k, &present);
                    assert_eq!(op.path(), path, "k {k} {offs:?}");
                    taken[index] += 1;
                    rt.record(&op).unwrap();
                    let what = format!("rms_norm {dtype} k {k} {offs:?} w={has_w} unit={unit} {}", flavour(&rt));
                    let got = read_view(&whole, out_off, n, &what);
                    let want = ref_rms_norm(&xv, k, has_w.then_some(wv.as_slice()), EPS, unit);
                    assert_close(&got, &want, tolerance(dtype), &what);
                    worst[slot] = worst[slot].max(max_error(&got, &want));
                }
            }
        }
    }
    eprintln!(
        "norm rows: largest error f32 {:.3e}, f16 {:.3e}; cases strided {}, vec4 registers {}, scalar registers {}",
        worst[0], worst[1], taken[0], taken[1], taken[2]
    );
    assert!(taken.iter().all(|&n| n > 0), "every path must be exercised");
}

#[test]
fn norms_register_path_in_place_constant_rows_and_folded_rows() {
    let rt = runtime();
    // In place; row 0 constant (gives the bias), row 1 alternating 1.1 / 0.9, row 2 far from 0.
    let k = 1024;
    let vals: Vec<f64> = (0..ROWS * k)
        .map(|i| match i / k {
            0 => 3.0,
            1 => {
                if i % 2 == 0 {
                    1.1
                } else {
                    0.9
                }
            }
            _ => 1000.0 + (i % 7) as f64 * 0.01,
        })
        .collect();
    let mut rng = Rng::new(44);
    let (b, bv) = upload(&rt, &[k], DType::F32, &rng.vec(k, -1.0, 1.0));
    let (x, xv) = upload(&rt, &[ROWS, k], DType::F32, &vals);
    let op = LayerNorm::new(&x, None, Some(&b), EPS, &x).unwrap();
    assert_eq!(op.path(), "layer_norm_rows");
    rt.record(&op).unwrap();
    let want = ref_layer_norm(&xv, k, None, Some(&bv), EPS);
    assert_close(&x.to_vec_f32().unwrap(), &want, 1e-5, "layer_norm in place");

    // Rows beyond one grid dimension fold into y (scalar register path).
    let rows = 70_000;
    let (x, xv) = upload(&rt, &[rows, 3], DType::F32, &rng.vec(rows * 3, -2.0, 2.0));
    let out = poisoned(&rt, &[rows, 3], DType::F32);
    let op = RmsNorm::new(&x, None, EPS, false, &out).unwrap();
    assert_eq!(op.path(), "rms_norm_rows_scalar");
    rt.record(&op).unwrap();
    assert_close(&out.to_vec_f32().unwrap(), &ref_rms_norm(&xv, 3, None, EPS, false), 1e-5, "70000 rows");
}
