//! Layer norm and RMS norm against f64 CPU references: row lengths, batches, views, dtypes,
//! both reduction flavours and parameter paths, compensated vs plain sums, edge values, errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::norm::{LayerNorm, RmsNorm};
use metallic::{DType, Error, Runtime, Shape, Tensor};

const EPS: f32 = 1e-5;

/// Layer norm of each row of `x` in f64 (two passes: mean, then squared deviations).
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

/// RMS norm of each row of `x` in f64.
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

/// Standard normal samples (Box–Muller) shifted and scaled.
fn normal(rng: &mut Rng, n: usize, mean: f64, std: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u1 = 1.0 - rng.uniform(0.0, 1.0);
            let u2 = rng.uniform(0.0, 1.0);
            mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

fn flavour(rt: &Runtime) -> &'static str {
    if rt.context().caps().subgroups() { "subgroups" } else { "workgroup memory" }
}

/// Track of the largest error seen per dtype, printed at the end of a test.
#[derive(Default)]
struct Worst(Vec<(String, f64)>);

impl Worst {
    fn check(&mut self, got: &[f32], want: &[f64], dtype: DType, what: &str) {
        assert_close(got, want, tolerance(dtype), what);
        let err = max_error(got, want);
        match self.0.iter_mut().find(|(d, _)| *d == dtype.to_string()) {
            Some((_, worst)) => *worst = worst.max(err),
            None => self.0.push((dtype.to_string(), err)),
        }
    }
    fn print(&self, test: &str) {
        for (dtype, err) in &self.0 {
            eprintln!("{test}: largest error {dtype}: {err:.3e}");
        }
    }
}

/// Row lengths covering every workgroup size the op picks (32, 64, 128, 256).
const ROW_LENGTHS: [usize; 10] = [1, 7, 13, 31, 63, 200, 257, 1024, 1031, 4099];

#[test]
fn layer_norm_matches_reference_for_every_length_dtype_and_reduction_flavour() {
    let mut worst = Worst::default();
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(11);
            for (k, &cols) in ROW_LENGTHS.iter().enumerate() {
                let rows = 3;
                let offset = rng.uniform(-3.0, 3.0);
                let xs: Vec<f64> = rng.vec(rows * cols, -2.0, 2.0).iter().map(|v| v + offset).collect();
                let (x, xv) = upload(&rt, &[rows, cols], dtype, &xs);
                let (w, wv) = upload(&rt, &[cols], dtype, &rng.vec(cols, 0.5, 1.5));
                let (b, bv) = upload(&rt, &[cols], dtype, &rng.vec(cols, -1.0, 1.0));
                // Every combination of weight and bias, one per length in turn.
                let (has_w, has_b) = [(true, true), (false, false), (true, false), (false, true)][k % 4];
                let out = poisoned(&rt, &[rows, cols], dtype);
                let op = LayerNorm::new(&x, has_w.then_some(&w), has_b.then_some(&b), EPS, &out).unwrap();
                rt.record(&op).unwrap();
                let want =
                    ref_layer_norm(&xv, cols, has_w.then_some(wv.as_slice()), has_b.then_some(bv.as_slice()), EPS);
                let what = format!("layer_norm {dtype} [{rows}, {cols}] w={has_w} b={has_b} {}", flavour(&rt));
                worst.check(&out.to_vec_f32().unwrap(), &want, dtype, &what);
            }
        }
    }
    worst.print("layer_norm");
}

#[test]
fn rms_norm_matches_reference_for_every_length_dtype_and_reduction_flavour() {
    let mut worst = Worst::default();
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(12);
            for (k, &cols) in ROW_LENGTHS.iter().enumerate() {
                let rows = 3;
                let (x, xv) = upload(&rt, &[rows, cols], dtype, &rng.vec(rows * cols, -3.0, 3.0));
                let (w, wv) = upload(&rt, &[cols], dtype, &rng.vec(cols, -1.0, 1.0));
                let (has_w, unit) = [(true, false), (true, true), (false, false)][k % 3];
                let out = poisoned(&rt, &[rows, cols], dtype);
                rt.record(&RmsNorm::new(&x, has_w.then_some(&w), EPS, unit, &out).unwrap()).unwrap();
                let want = ref_rms_norm(&xv, cols, has_w.then_some(wv.as_slice()), EPS, unit);
                let what = format!("rms_norm {dtype} [{rows}, {cols}] w={has_w} unit={unit} {}", flavour(&rt));
                worst.check(&out.to_vec_f32().unwrap(), &want, dtype, &what);
            }
        }
    }
    worst.print("rms_norm");
}

#[test]
fn batches_of_rows_and_views_at_offsets() {
    let rt = runtime();
    let mut worst = Worst::default();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(13);
        // [2, 5, 13]: ten rows of a rank-3 tensor, inside a larger buffer, with the weight and
        // bias rows of [3, 13] tensors and the output a view of a poisoned tensor.
        let (cols, rows) = (13, 10);
        let (all, allv) = upload(&rt, &[14, 2, 5, cols], dtype, &rng.vec(14 * rows * cols, -2.0, 2.0));
        let x = all.get_batch(3).unwrap();
        let xv = &allv[3 * rows * cols..4 * rows * cols];
        let (ws, wsv) = upload(&rt, &[3, cols], dtype, &rng.vec(3 * cols, 0.5, 1.5));
        let (bs, bsv) = upload(&rt, &[3, cols], dtype, &rng.vec(3 * cols, -1.0, 1.0));
        let (w, wv) = (ws.get_batch(1).unwrap(), &wsv[cols..2 * cols]);
        let (b, bv) = (bs.get_batch(2).unwrap(), &bsv[2 * cols..]);
        assert_ne!(x.byte_offset() % rt.context().caps().storage_alignment(), 0, "x must sit at an unaligned offset");

        let outs = poisoned(&rt, &[3, 2, 5, cols], dtype);
        let out = outs.get_batch(1).unwrap();
        rt.record(&LayerNorm::new(&x, Some(&w), Some(&b), EPS, &out).unwrap()).unwrap();
        let want = ref_layer_norm(xv, cols, Some(wv), Some(bv), EPS);
        worst.check(&out.to_vec_f32().unwrap(), &want, dtype, &format!("layer_norm view {dtype}"));
        let all_out = outs.to_vec_f32().unwrap();
        let n = rows * cols;
        assert!(all_out[..n].iter().chain(&all_out[2 * n..]).all(|v| v.is_nan()), "wrote outside its view");

        let out = outs.get_batch(2).unwrap();
        rt.record(&RmsNorm::new(&x, Some(&w), EPS, true, &out).unwrap()).unwrap();
        let want = ref_rms_norm(xv, cols, Some(wv), EPS, true);
        worst.check(&out.to_vec_f32().unwrap(), &want, dtype, &format!("rms_norm view {dtype}"));
        assert!(outs.to_vec_f32().unwrap()[..n].iter().all(|v| v.is_nan()), "wrote outside its view");
    }
    worst.print("views");
}

#[test]
fn both_parameter_paths_and_the_tensor_methods() {
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        let mut rng = Rng::new(14);
        let (rows, cols) = (4, 300);
        let (x, xv) = upload(&rt, &[rows, cols], DType::F32, &rng.vec(rows * cols, -2.0, 2.0));
        let (w, wv) = upload(&rt, &[cols], DType::F32, &rng.vec(cols, 0.5, 1.5));
        let (b, bv) = upload(&rt, &[cols], DType::F32, &rng.vec(cols, -1.0, 1.0));
        let got = x.layer_norm(Some(&w), Some(&b), EPS).unwrap().to_vec_f32().unwrap();
        let want = ref_layer_norm(&xv, cols, Some(&wv), Some(&bv), EPS);
        assert_close(&got, &want, tolerance(DType::F32), &format!("Tensor::layer_norm {mode:?}"));
        let got = x.rms_norm(Some(&w), EPS, false).unwrap().to_vec_f32().unwrap();
        let want = ref_rms_norm(&xv, cols, Some(&wv), EPS, false);
        assert_close(&got, &want, tolerance(DType::F32), &format!("Tensor::rms_norm {mode:?}"));
        let got = x.rms_norm(None, EPS, false).unwrap().to_vec_f32().unwrap();
        let want = ref_rms_norm(&xv, cols, None, EPS, false);
        assert_close(&got, &want, tolerance(DType::F32), &format!("Tensor::rms_norm no weight {mode:?}"));
    }
}

#[test]
fn in_place_on_x() {
    let rt = runtime();
    let mut rng = Rng::new(15);
    let (rows, cols) = (3, 1031);
    let (x, xv) = upload(&rt, &[rows, cols], DType::F32, &rng.vec(rows * cols, -2.0, 2.0));
    rt.record(&LayerNorm::new(&x, None, None, EPS, &x).unwrap()).unwrap();
    assert_close(&x.to_vec_f32().unwrap(), &ref_layer_norm(&xv, cols, None, None, EPS), 1e-5, "in-place layer_norm");
}

/// Max error over one row of 2^20 values, compensated and plain, for both ops, both
/// distributions and both reduction flavours; the numbers go to stderr and the module docs.
#[test]
fn compensation_on_a_row_of_a_million() {
    let cols = 1 << 20;
    let mut rng = Rng::new(16);
    let data = [
        ("N(100, 1)", normal(&mut rng, cols, 100.0, 1.0)),
        ("U(-1, 1)", rng.vec(cols, -1.0, 1.0)),
        // Two values: every invocation adds the same square over and over, so plain f32
        // rounding errors pile up instead of cancelling.
        ("1.1, 0.9 alternating", (0..cols).map(|i| if i % 2 == 0 { 1.1 } else { 0.9 }).collect()),
    ];
    for rt in reduction_runtimes() {
        for (name, values) in &data {
            let (x, xv) = upload(&rt, &[1, cols], DType::F32, values);
            let ln_want = ref_layer_norm(&xv, cols, None, None, EPS);
            let rms_want = ref_rms_norm(&xv, cols, None, EPS, false);
            let mut errors = Vec::new();
            for compensated in [false, true] {
                let out = poisoned(&rt, &[1, cols], DType::F32);
                rt.record(&LayerNorm::new(&x, None, None, EPS, &out).unwrap().compensated(compensated)).unwrap();
                let ln = max_error(&out.to_vec_f32().unwrap(), &ln_want);
                let out = poisoned(&rt, &[1, cols], DType::F32);
                rt.record(&RmsNorm::new(&x, None, EPS, false, &out).unwrap().compensated(compensated)).unwrap();
                let rms = max_error(&out.to_vec_f32().unwrap(), &rms_want);
                eprintln!("{} {name} compensated={compensated}: layer_norm {ln:.3e}, rms_norm {rms:.3e}", flavour(&rt));
                errors.push((ln, rms));
            }
            let (plain, comp) = (errors[0], errors[1]);
            assert!(comp.0 <= 1e-5 && comp.1 <= 1e-5, "{} {name}: compensated errors {comp:?}", flavour(&rt));
            // Never worse than plain beyond the f32 noise floor of the output (two ulps of 1).
            let floor = 2.5e-7;
            assert!(
                comp.0 <= plain.0.max(floor) && comp.1 <= plain.1.max(floor),
                "{} {name}: compensated {comp:?} vs plain {plain:?}",
                flavour(&rt)
            );
            if name.contains("alternating") {
                // Where plain sums drift, compensation must show (fails if a compiler folds the
                // compensation away).
                assert!(
                    plain.0 > 10.0 * comp.0 && plain.1 > 10.0 * comp.1,
                    "{} {name}: compensated {comp:?} vs plain {plain:?}",
                    flavour(&rt)
                );
            }
        }
    }
}

#[test]
fn nan_in_a_row_poisons_that_row_only() {
    for rt in reduction_runtimes() {
        let mut rng = Rng::new(17);
        let (rows, cols) = (3, 257);
        let mut xs = rng.vec(rows * cols, -2.0, 2.0);
        xs[cols + 100] = f64::NAN;
        let (x, xv) = upload(&rt, &[rows, cols], DType::F32, &xs);
        let out = poisoned(&rt, &[rows, cols], DType::F32);
        rt.record(&LayerNorm::new(&x, None, None, EPS, &out).unwrap()).unwrap();
        let got = out.to_vec_f32().unwrap();
        assert!(got[cols..2 * cols].iter().all(|v| v.is_nan()), "{}: the NaN row", flavour(&rt));
        let want = ref_layer_norm(&xv, cols, None, None, EPS);
        assert_close(&got[..cols], &want[..cols], 1e-5, "row 0");
        assert_close(&got[2 * cols..], &want[2 * cols..], 1e-5, "row 2");
        let out = poisoned(&rt, &[rows, cols], DType::F32);
        rt.record(&RmsNorm::new(&x, None, EPS, false, &out).unwrap()).unwrap();
        let got = out.to_vec_f32().unwrap();
        assert!(got[cols..2 * cols].iter().all(|v| v.is_nan()), "{}: the NaN row", flavour(&rt));
        assert!(got[..cols].iter().chain(&got[2 * cols..]).all(|v| v.is_finite()), "{}: the other rows", flavour(&rt));
    }
}

#[test]
fn constant_rows_give_the_bias_and_large_magnitudes_stay_finite() {
    for rt in reduction_runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(18);
            for cols in [1, 7, 257, 4099] {
                // Constant rows: variance 0, so layer norm gives exactly the bias.
                let consts = [3.7, -1.0e4, 0.0];
                let xs: Vec<f64> = consts.iter().flat_map(|&c| std::iter::repeat_n(c, cols)).collect();
                let (x, xv) = upload(&rt, &[3, cols], dtype, &xs);
                let (w, wv) = upload(&rt, &[cols], dtype, &rng.vec(cols, 0.5, 1.5));
                let (b, bv) = upload(&rt, &[cols], dtype, &rng.vec(cols, -1.0, 1.0));
                let out = poisoned(&rt, &[3, cols], dtype);
                rt.record(&LayerNorm::new(&x, Some(&w), Some(&b), EPS, &out).unwrap()).unwrap();
                let want: Vec<f64> = (0..3).flat_map(|_| bv.iter().copied()).collect();
                let what = format!("constant rows layer_norm {dtype} {cols} {}", flavour(&rt));
                assert_close(&out.to_vec_f32().unwrap(), &want, tolerance(dtype), &what);
                let out = poisoned(&rt, &[3, cols], dtype);
                rt.record(&RmsNorm::new(&x, Some(&w), EPS, false, &out).unwrap()).unwrap();
                let what = format!("constant rows rms_norm {dtype} {cols} {}", flavour(&rt));
                assert_close(
                    &out.to_vec_f32().unwrap(),
                    &ref_rms_norm(&xv, cols, Some(&wv), EPS, false),
                    tolerance(dtype),
                    &what,
                );

                // Magnitudes around 1e4 (squares near 1e8, sums near 1e11): finite and right.
                let xs = rng.vec(3 * cols, -1.0e4, 1.0e4);
                let (x, xv) = upload(&rt, &[3, cols], dtype, &xs);
                let out = poisoned(&rt, &[3, cols], dtype);
                rt.record(&LayerNorm::new(&x, Some(&w), Some(&b), EPS, &out).unwrap()).unwrap();
                let got = out.to_vec_f32().unwrap();
                assert!(got.iter().all(|v| v.is_finite()), "large layer_norm {dtype} {cols}");
                let what = format!("large layer_norm {dtype} {cols} {}", flavour(&rt));
                assert_close(&got, &ref_layer_norm(&xv, cols, Some(&wv), Some(&bv), EPS), tolerance(dtype), &what);
                let out = poisoned(&rt, &[3, cols], dtype);
                rt.record(&RmsNorm::new(&x, Some(&w), EPS, true, &out).unwrap()).unwrap();
                let got = out.to_vec_f32().unwrap();
                assert!(got.iter().all(|v| v.is_finite()), "large rms_norm {dtype} {cols}");
                let what = format!("large rms_norm {dtype} {cols} {}", flavour(&rt));
                assert_close(&got, &ref_rms_norm(&xv, cols, Some(&wv), EPS, true), tolerance(dtype), &what);
            }
        }
    }
}

#[test]
fn rows_beyond_one_grid_dimension_fold_into_y() {
    let rt = runtime();
    let max = rt.context().caps().limits.max_compute_workgroups_per_dimension as usize;
    let (rows, cols) = (max + 3, 2);
    let mut rng = Rng::new(19);
    let (x, xv) = upload(&rt, &[rows, cols], DType::F32, &rng.vec(rows * cols, -2.0, 2.0));
    let out = poisoned(&rt, &[rows, cols], DType::F32);
    rt.record(&RmsNorm::new(&x, None, EPS, false, &out).unwrap()).unwrap();
    assert_close(&out.to_vec_f32().unwrap(), &ref_rms_norm(&xv, cols, None, EPS, false), 1e-5, "folded rows");
}

#[test]
fn an_empty_tensor_records_nothing() {
    let rt = runtime();
    let x = Tensor::empty(&rt, [3, 0], DType::F32).unwrap();
    assert_eq!(x.layer_norm(None, None, EPS).unwrap().dims(), [3, 0]);
    let x = Tensor::empty(&rt, [0, 5], DType::F32).unwrap();
    assert_eq!(x.rms_norm(None, EPS, false).unwrap().dims(), [0, 5]);
}

#[test]
fn errors() {
    let rt = runtime();
    let x = Tensor::zeros(&rt, [2, 8], DType::F32).unwrap();
    let out = x.empty_like().unwrap();
    let w7 = Tensor::ones(&rt, [7], DType::F32).unwrap();
    let w8 = Tensor::ones(&rt, [8], DType::F32).unwrap();
    let w2x8 = Tensor::ones(&rt, [2, 8], DType::F32).unwrap();
    let w16 = Tensor::ones(&rt, [8], DType::F16).unwrap();

    // Weight or bias of the wrong length or rank; output of the wrong shape.
    for w in [&w7, &w2x8] {
        assert!(matches!(LayerNorm::new(&x, Some(w), None, EPS, &out), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(LayerNorm::new(&x, None, Some(w), EPS, &out), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(RmsNorm::new(&x, Some(w), EPS, false, &out), Err(Error::ShapeMismatch { .. })));
    }
    let out_wrong = Tensor::zeros(&rt, [8, 2], DType::F32).unwrap();
    assert!(matches!(LayerNorm::new(&x, None, None, EPS, &out_wrong), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(x.layer_norm(Some(&w7), None, EPS), Err(Error::ShapeMismatch { .. })));

    // Dtypes: weight or bias unlike x, a u32 input, an output unlike x.
    assert!(matches!(LayerNorm::new(&x, Some(&w16), None, EPS, &out), Err(Error::DTypeMismatch { .. })));
    assert!(matches!(LayerNorm::new(&x, None, Some(&w16), EPS, &out), Err(Error::DTypeMismatch { .. })));
    assert!(matches!(RmsNorm::new(&x, Some(&w16), EPS, false, &out), Err(Error::DTypeMismatch { .. })));
    let xu = Tensor::zeros(&rt, [2, 8], DType::U32).unwrap();
    assert!(matches!(LayerNorm::new(&xu, None, None, EPS, &xu), Err(Error::DTypeMismatch { .. })));
    assert!(matches!(xu.rms_norm(None, EPS, false), Err(Error::DTypeMismatch { .. })));
    let out16 = Tensor::zeros(&rt, [2, 8], DType::F16).unwrap();
    assert!(matches!(RmsNorm::new(&x, None, EPS, false, &out16), Err(Error::DTypeMismatch { .. })));

    // eps: negative, NaN, infinite.
    for eps in [-1e-5, f32::NAN, f32::INFINITY] {
        assert!(matches!(LayerNorm::new(&x, Some(&w8), None, eps, &out), Err(Error::InvalidArgument { .. })));
        assert!(matches!(x.rms_norm(None, eps, true), Err(Error::InvalidArgument { .. })));
    }
    assert!(LayerNorm::new(&x, Some(&w8), Some(&w8), 0.0, &out).is_ok(), "eps = 0 is allowed");

    // A scalar has no dimension to normalise over.
    let scalar = Tensor::zeros(&rt, Shape::new(&[]).unwrap(), DType::F32).unwrap();
    assert!(matches!(LayerNorm::new(&scalar, None, None, EPS, &scalar), Err(Error::InvalidShape { .. })));
    assert!(matches!(scalar.rms_norm(None, EPS, false), Err(Error::InvalidShape { .. })));

    // Weight from another runtime (its pending writes would not be ordered).
    let other = runtime();
    let w_other = Tensor::ones(&other, [8], DType::F32).unwrap();
    assert!(matches!(x.layer_norm(Some(&w_other), None, EPS), Err(Error::InvalidArgument { .. })));
}
