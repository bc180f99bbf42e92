//! Element-wise unary math, activations and gated activations against f64 CPU references.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;

use common::*;
use metallic::kernels::gated::{Gated, GatedAct};
use metallic::kernels::unary::{Unary, UnaryOp};
use metallic::{DType, Error, Runtime, Tensor};

const ACTS: [GatedAct; 3] = [GatedAct::Gelu, GatedAct::GeluTanh, GatedAct::Silu];

/// 1, odd sizes, a batch, more than one workgroup (256) and many workgroups.
const SHAPES: &[&[usize]] = &[&[1], &[7], &[13], &[31], &[63], &[257], &[3, 5, 7], &[2, 700], &[70_001]];

/// Random inputs from the op's domain.
fn inputs(op: UnaryOp, rng: &mut Rng, n: usize) -> Vec<f64> {
    match op {
        // Positive, over six decades.
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => {
            rng.vec(n, -3.0, 3.0).into_iter().map(|e| 10f64.powf(e)).collect()
        }
        UnaryOp::Exp => rng.vec(n, -10.0, 10.0),
        // Covers both branches of tanh and of the erf (|x|/√2 below and above 1, and the
        // far negative tail of GELU).
        _ => rng.vec(n, -8.0, 8.0),
    }
}

/// Largest errors seen, per op and dtype: `|got - want| / max(1, |want|)` (what the tolerance
/// bounds) and the plain relative error `|got - want| / |want|` over normal `want`.
#[derive(Default)]
struct Errors(BTreeMap<(String, DType), (f64, f64)>);

impl Errors {
    fn add(&mut self, what: String, dtype: DType, got: &[f32], want: &[f64]) {
        let floor = if dtype == DType::F16 { 6.2e-5 } else { 1.2e-38 };
        let entry = self.0.entry((what, dtype)).or_default();
        for (&g, &w) in got.iter().zip(want) {
            let d = (f64::from(g) - w).abs();
            if !d.is_finite() {
                continue;
            }
            entry.0 = entry.0.max(d / w.abs().max(1.0));
            if w.abs() >= floor {
                entry.1 = entry.1.max(d / w.abs());
            }
        }
    }

    fn print(&self, title: &str) {
        println!("{title}: largest |got - want| / max(1, |want|), and |got - want| / |want|");
        for ((what, dtype), (scaled, rel)) in &self.0 {
            println!("  {what:<10} {dtype}: {scaled:.2e}  {rel:.2e}");
        }
    }
}

#[test]
fn every_op_matches_reference_for_every_dtype_shape_and_param_path() {
    let mut errors = Errors::default();
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(1);
            for &shape in SHAPES {
                let n: usize = shape.iter().product();
                for op in UnaryOp::ALL {
                    let (x, xv) = upload(&rt, shape, dtype, &inputs(op, &mut rng, n));
                    let out = poisoned(&rt, shape, dtype);
                    rt.record(&Unary::new(op, &x, &out).unwrap()).unwrap();
                    let want: Vec<f64> = xv.iter().map(|&v| op.apply(v)).collect();
                    let got = out.to_vec_f32().unwrap();
                    assert_close(&got, &want, tolerance(dtype), &format!("{op:?} {dtype} {shape:?} {mode:?}"));
                    errors.add(format!("{op:?}"), dtype, &got, &want);
                }
            }
        }
    }
    errors.print("unary");
}

#[test]
fn gated_matches_reference_for_every_act_dtype_shape_and_param_path() {
    let mut errors = Errors::default();
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(2);
            for &shape in SHAPES {
                let n: usize = shape.iter().product();
                for act in ACTS {
                    let (a, av) = upload(&rt, shape, dtype, &rng.vec(n, -8.0, 8.0));
                    let (b, bv) = upload(&rt, shape, dtype, &rng.vec(n, -3.0, 3.0));
                    let out = poisoned(&rt, shape, dtype);
                    rt.record(&Gated::new(act, &a, &b, &out).unwrap()).unwrap();
                    let want: Vec<f64> = av.iter().zip(&bv).map(|(&x, &y)| act.apply(x, y)).collect();
                    let got = out.to_vec_f32().unwrap();
                    assert_close(&got, &want, tolerance(dtype), &format!("gated {act:?} {dtype} {shape:?} {mode:?}"));
                    errors.add(format!("{act:?}"), dtype, &got, &want);
                }
            }
        }
    }
    errors.print("gated");
}

/// The fused gate/up layout: rows of `[gate | up]`, 2w wide, into `[.., w]`.
#[test]
fn gated_halves_match_reference() {
    let rt = runtime();
    for &(rows, w) in &[(1usize, 1usize), (3, 7), (2, 2048), (5, 130)] {
        for act in ACTS {
            let mut rng = Rng::new((rows * w) as u64);
            let (x, xv) = upload(&rt, &[rows, 2 * w], DType::F32, &rng.vec(rows * 2 * w, -8.0, 8.0));
            let out = poisoned(&rt, &[rows, w], DType::F32);
            rt.record(&Gated::halves(act, &x, &out).unwrap()).unwrap();
            let want: Vec<f64> = (0..rows * w)
                .map(|i| act.apply(xv[(i / w) * 2 * w + i % w], xv[(i / w) * 2 * w + w + i % w]))
                .collect();
            assert_close(
                &out.to_vec_f32().unwrap(),
                &want,
                tolerance(DType::F32),
                &format!("halves {act:?} {rows}x{w}"),
            );
        }
    }
    let x = Tensor::zeros(&rt, [2, 5], DType::F32).unwrap();
    let err = Gated::halves(GatedAct::Silu, &x, &Tensor::zeros(&rt, [2, 2], DType::F32).unwrap()).unwrap_err();
    assert!(err.to_string().contains("x must be [.., 2w]"), "{err}");
}

/// `want` as stored in `dtype`, or `None` where a finite value overflows it (converting an
/// out-of-range f32 to f16 is indeterminate in WGSL, so there is nothing to check).
fn stored(want: f64, dtype: DType) -> Option<f64> {
    match dtype {
        DType::F16 if want.is_finite() && want.abs() > 65504.0 => None,
        DType::F16 => Some(metallic::f16::from_f64(want).to_f64()),
        _ => Some(f64::from(want as f32)),
    }
}

/// Compares where the stored reference exists; finite references must come back finite.
fn check_extremes(got: &[f32], xs: &[f64], want: &[f64], dtype: DType, what: &str) -> usize {
    let mut checked = 0;
    for ((&g, &x), &w) in got.iter().zip(xs).zip(want) {
        let Some(w) = stored(w, dtype) else { continue };
        let g = f64::from(g);
        assert!(!w.is_finite() || g.is_finite(), "{what} {dtype}: f({x}) = {g}, expected finite {w}");
        assert_close(&[g as f32], &[w], tolerance(dtype), &format!("{what} {dtype}: f({x})"));
        checked += 1;
    }
    checked
}

#[test]
fn extreme_inputs_stay_finite_where_the_math_is() {
    let rt = runtime();
    let signed =
        [1e4, -1e4, 88.0, -88.0, 80.0, -80.0, 20.0, -20.0, 14.5, -14.5, 10.0, -10.0, 5.0, -5.0, 1e-3, -1e-3, 0.0];
    for dtype in float_dtypes(&rt) {
        let positive: &[f64] = if dtype == DType::F16 {
            &[1e-4, 1e-3, 1.0, 80.0, 1e4, 6e4]
        } else {
            &[1e-30, 1e-10, 1e-3, 1.0, 80.0, 1e4, 1e30]
        };
        for op in UnaryOp::ALL {
            let values: &[f64] = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => positive,
                _ => &signed,
            };
            let (x, xv) = upload(&rt, &[values.len()], dtype, values);
            let out = poisoned(&rt, &[values.len()], dtype);
            rt.record(&Unary::new(op, &x, &out).unwrap()).unwrap();
            let want: Vec<f64> = xv.iter().map(|&v| op.apply(v)).collect();
            let checked = check_extremes(&out.to_vec_f32().unwrap(), &xv, &want, dtype, &format!("{op:?}"));
            assert!(checked >= values.len() / 2, "{op:?} {dtype}: only {checked} values checked");
        }
        for act in ACTS {
            for gate in [1.5, -0.75] {
                let (a, av) = upload(&rt, &[signed.len()], dtype, &signed);
                let (b, bv) = upload(&rt, &[signed.len()], dtype, &vec![gate; signed.len()]);
                let out = poisoned(&rt, &[signed.len()], dtype);
                rt.record(&Gated::new(act, &a, &b, &out).unwrap()).unwrap();
                let want: Vec<f64> = av.iter().zip(&bv).map(|(&x, &y)| act.apply(x, y)).collect();
                check_extremes(&out.to_vec_f32().unwrap(), &av, &want, dtype, &format!("gated {act:?}"));
            }
        }
    }
    // The overflowing cases do overflow rather than turn into NaN.
    let x = Tensor::from_slice(&rt, [2], &[1e4f32, -1e4]).unwrap();
    assert_eq!(x.exp().unwrap().to_vec::<f32>().unwrap(), [f32::INFINITY, 0.0]);
    assert_eq!(x.tanh().unwrap().to_vec::<f32>().unwrap(), [1.0, -1.0]);
    assert_eq!(x.sigmoid().unwrap().to_vec::<f32>().unwrap(), [1.0, 0.0]);
    assert_eq!(x.gelu().unwrap().to_vec::<f32>().unwrap(), [1e4, 0.0]);
    assert_eq!(x.gelu_tanh().unwrap().to_vec::<f32>().unwrap(), [1e4, 0.0]);
    assert_eq!(x.silu().unwrap().to_vec::<f32>().unwrap(), [1e4, 0.0]);
}

#[test]
fn nan_inputs_give_nan() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let x = Tensor::full(&rt, [3], dtype, f32::NAN).unwrap();
        for op in UnaryOp::ALL {
            // Finite before the run, so that a NaN after it is the kernel's.
            let out = Tensor::full(&rt, [3], dtype, 7.0).unwrap();
            rt.record(&Unary::new(op, &x, &out).unwrap()).unwrap();
            let got = out.to_vec_f32().unwrap();
            assert!(got.iter().all(|v| v.is_nan()), "{op:?} {dtype}: {got:?}");
        }
    }
}

#[test]
fn host_reference_matches_tabulated_erf() {
    // erf(z) and erfc(z) from mpmath, to f64 precision, through GELU: gelu(±√2 z) = ±z/√2 (1 ± erf z).
    let table: [(f64, f64, f64); 6] = [
        (0.1, 0.112_462_916_018_284_9, 0.887_537_083_981_715),
        (0.5, 0.520_499_877_813_046_5, 0.479_500_122_186_953_5),
        (1.0, 0.842_700_792_949_714_9, 0.157_299_207_050_285_13),
        (2.0, 0.995_322_265_018_952_7, 4.677_734_981_047_266e-3),
        (3.0, 0.999_977_909_503_001_4, 2.209_049_699_858_544e-5),
        (5.0, 0.999_999_999_998_462_6, 1.537_459_794_428_035e-12),
    ];
    let sqrt2 = std::f64::consts::SQRT_2;
    for (z, erf, erfc) in table {
        let pos = UnaryOp::Gelu.apply(sqrt2 * z);
        let neg = UnaryOp::Gelu.apply(-sqrt2 * z);
        let (want_pos, want_neg) = (z / sqrt2 * (1.0 + erf), -z / sqrt2 * erfc);
        assert!((pos / want_pos - 1.0).abs() < 1e-14, "gelu(√2·{z}) = {pos}, want {want_pos}");
        assert!((neg / want_neg - 1.0).abs() < 1e-12, "gelu(-√2·{z}) = {neg}, want {want_neg}");
    }
    assert_eq!(UnaryOp::Gelu.apply(0.0), 0.0);
    assert_eq!(UnaryOp::Gelu.apply(-60.0), 0.0);
    assert_eq!(UnaryOp::Gelu.apply(60.0), 60.0);
    // 17 digits from mpmath, the second in the tail where 1 + tanh u cancels in f64.
    assert!((UnaryOp::GeluTanh.apply(1.0) / 0.841_191_990_608_276_7 - 1.0).abs() < 1e-15);
    assert!((UnaryOp::GeluTanh.apply(-8.0) / -3.107_782_937_501_111_2e-21 - 1.0).abs() < 1e-12);
    assert!((UnaryOp::Silu.apply(1.0) - 0.731_058_578_630_004_9).abs() < 1e-15);
}

#[test]
fn gelu_bounds_the_erf_error() {
    // A dense sweep: gelu(x) / x = Φ(x) = (1 + erf(x/√2)) / 2, so twice the error of
    // gelu(x) / x bounds the kernel's erf error. The output's own rounding to f32 (half an ulp
    // of gelu(x)) is taken off: it is not erf's.
    let rt = runtime();
    let n = 200_001;
    let xs: Vec<f64> = (0..n).map(|i| -10.0 + 20.0 * i as f64 / (n - 1) as f64).collect();
    let (x, xv) = upload(&rt, &[n], DType::F32, &xs);
    let got = x.gelu().unwrap().to_vec_f32().unwrap();
    let (mut gross, mut net) = ((0.0f64, 0.0f64), (0.0f64, 0.0f64));
    for (&g, &v) in got.iter().zip(&xv) {
        if v.abs() < 0.5 {
            continue;
        }
        let d = (f64::from(g) - UnaryOp::Gelu.apply(v)).abs();
        let half_ulp = f64::from(g.abs()) * f64::from(f32::EPSILON) / 2.0;
        let (e, e_net) = (2.0 * d / v.abs(), 2.0 * (d - half_ulp).max(0.0) / v.abs());
        if e > gross.0 {
            gross = (e, v);
        }
        if e_net > net.0 {
            net = (e_net, v);
        }
    }
    let z = |v: f64| v / std::f64::consts::SQRT_2;
    println!(
        "erf via gelu: largest error {:.2e} at z = {:.4}; {:.2e} at z = {:.4} net of the output rounding",
        gross.0,
        z(gross.1),
        net.0,
        z(net.1)
    );
    assert!(net.0 < 1.5e-7, "erf error {:.3e} at x = {}", net.0, net.1);
}

/// `n` rows of 13: unaligned row starts (13 elements is not a multiple of the 32-byte
/// storage alignment).
fn rows(rt: &Runtime, dtype: DType, n: usize, seed: u64) -> (Tensor, Vec<f64>) {
    upload(rt, &[n, 13], dtype, &Rng::new(seed).vec(n * 13, -4.0, 4.0))
}

/// Asserts that only rows `row` of `out` hold `want` and every other element is still NaN.
fn assert_only_row(out: &Tensor, row: usize, want: &[f64], dtype: DType, what: &str) {
    let got = out.to_vec_f32().unwrap();
    let width = want.len();
    for (i, v) in got.iter().enumerate() {
        if i / width != row {
            assert!(v.is_nan(), "{what} {dtype}: element {i} outside the view was written ({v})");
        }
    }
    assert_close(&got[row * width..(row + 1) * width], want, tolerance(dtype), &format!("{what} {dtype}"));
}

#[test]
fn views_at_unaligned_offsets_read_and_write_only_their_region() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let (x, xv) = rows(&rt, dtype, 4, 3);
        let (b, bv) = rows(&rt, dtype, 4, 4);
        for op in [UnaryOp::Gelu, UnaryOp::Exp, UnaryOp::Neg] {
            let out = poisoned(&rt, &[4, 13], dtype);
            // Read row 1, write row 2.
            rt.record(&Unary::new(op, &x.get_batch(1).unwrap(), &out.get_batch(2).unwrap()).unwrap()).unwrap();
            let want: Vec<f64> = xv[13..26].iter().map(|&v| op.apply(v)).collect();
            assert_only_row(&out, 2, &want, dtype, &format!("{op:?}"));
        }
        for act in ACTS {
            let out = poisoned(&rt, &[4, 13], dtype);
            // a from row 3, b from row 1, out to row 1: three different offsets.
            let (a1, b1, o1) = (x.narrow(3, 1).unwrap(), b.narrow(1, 1).unwrap(), out.narrow(1, 1).unwrap());
            rt.record(&Gated::new(act, &a1, &b1, &o1).unwrap()).unwrap();
            let want: Vec<f64> = (0..13).map(|i| act.apply(xv[39 + i], bv[13 + i])).collect();
            assert_only_row(&out, 1, &want, dtype, &format!("gated {act:?}"));
        }
        // The inputs are untouched.
        assert_close(&x.to_vec_f32().unwrap(), &xv, 0.0, "x after the views");
        assert_close(&b.to_vec_f32().unwrap(), &bv, 0.0, "b after the views");
    }
}

#[test]
fn in_place_output_is_allowed() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let (x, xv) = rows(&rt, dtype, 3, 5);
        rt.record(&Unary::new(UnaryOp::Silu, &x, &x).unwrap()).unwrap();
        let want: Vec<f64> = xv.iter().map(|&v| UnaryOp::Silu.apply(v)).collect();
        assert_close(&x.to_vec_f32().unwrap(), &want, tolerance(dtype), &format!("silu in place {dtype}"));

        let (a, av) = rows(&rt, dtype, 3, 6);
        let (b, bv) = rows(&rt, dtype, 3, 7);
        rt.record(&Gated::new(GatedAct::GeluTanh, &a, &b, &a).unwrap()).unwrap();
        let want: Vec<f64> = av.iter().zip(&bv).map(|(&p, &q)| GatedAct::GeluTanh.apply(p, q)).collect();
        assert_close(&a.to_vec_f32().unwrap(), &want, tolerance(dtype), &format!("gated into a {dtype}"));

        let (a, av) = rows(&rt, dtype, 3, 8);
        rt.record(&Gated::new(GatedAct::Gelu, &a, &b, &b).unwrap()).unwrap();
        let want: Vec<f64> = av.iter().zip(&bv).map(|(&p, &q)| GatedAct::Gelu.apply(p, q)).collect();
        assert_close(&b.to_vec_f32().unwrap(), &want, tolerance(dtype), &format!("gated into b {dtype}"));
    }
}

/// The host twin of an element-wise result.
type Reference = Box<dyn Fn(f64) -> f64>;

#[test]
fn tensor_methods_match_their_ops() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let (x, xv) = upload(&rt, &[4, 33], dtype, &Rng::new(9).vec(132, 0.1, 4.0));
        let (g, gv) = upload(&rt, &[4, 33], dtype, &Rng::new(10).vec(132, -2.0, 2.0));
        let op = |op: UnaryOp| -> Reference { Box::new(move |v| op.apply(v)) };
        let cases: Vec<(&str, Tensor, Reference)> = vec![
            ("neg", x.neg().unwrap(), Box::new(|v: f64| -v)),
            ("abs", x.neg().unwrap().abs().unwrap(), Box::new(|v: f64| v)),
            ("exp", x.exp().unwrap(), op(UnaryOp::Exp)),
            ("log", x.log().unwrap(), op(UnaryOp::Log)),
            ("sqrt", x.sqrt().unwrap(), op(UnaryOp::Sqrt)),
            ("rsqrt", x.rsqrt().unwrap(), op(UnaryOp::Rsqrt)),
            ("tanh", x.tanh().unwrap(), op(UnaryOp::Tanh)),
            ("sigmoid", x.sigmoid().unwrap(), op(UnaryOp::Sigmoid)),
            ("relu", x.neg().unwrap().relu().unwrap(), Box::new(|_| 0.0)),
            ("gelu", x.gelu().unwrap(), op(UnaryOp::Gelu)),
            ("gelu_tanh", x.gelu_tanh().unwrap(), op(UnaryOp::GeluTanh)),
            ("silu", x.silu().unwrap(), op(UnaryOp::Silu)),
            ("square", x.square().unwrap(), op(UnaryOp::Square)),
        ];
        for (name, got, f) in cases {
            assert_eq!(got.dims(), x.dims(), "{name}");
            assert_eq!(got.dtype(), dtype, "{name}");
            let want: Vec<f64> = xv.iter().map(|&v| f(v)).collect();
            assert_close(&got.to_vec_f32().unwrap(), &want, tolerance(dtype), &format!("{name} {dtype}"));
        }
        for act in ACTS {
            let got = g.gated(act, &x).unwrap();
            let want: Vec<f64> = gv.iter().zip(&xv).map(|(&p, &q)| act.apply(p, q)).collect();
            assert_close(&got.to_vec_f32().unwrap(), &want, tolerance(dtype), &format!("gated({act:?}) {dtype}"));
        }
    }
}

#[test]
fn empty_tensors_are_a_no_op() {
    let rt = runtime();
    let x = Tensor::zeros(&rt, [0, 4], DType::F32).unwrap();
    let y = x.gelu().unwrap();
    assert_eq!(y.dims(), &[0, 4]);
    assert!(y.to_vec::<f32>().unwrap().is_empty());
    assert!(x.gated(GatedAct::Silu, &x).unwrap().to_vec::<f32>().unwrap().is_empty());
}

#[test]
fn u32_tensors_are_a_dtype_mismatch() {
    let rt = runtime();
    let ids = Tensor::from_slice(&rt, [2, 3], &[1u32, 2, 3, 4, 5, 6]).unwrap();
    let f = Tensor::zeros(&rt, [2, 3], DType::F32).unwrap();
    let err = Unary::new(UnaryOp::Exp, &ids, &ids).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { op: "unary", got: DType::U32, .. }), "{err}");
    assert!(matches!(ids.relu(), Err(Error::DTypeMismatch { got: DType::U32, .. })));
    let err = Gated::new(GatedAct::Silu, &ids, &ids, &ids).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { op: "gated", got: DType::U32, .. }), "{err}");
    // A float `a` with a u32 `b` or `out`.
    let err = Gated::new(GatedAct::Silu, &f, &ids, &f).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::U32, .. }), "{err}");
    let err = Unary::new(UnaryOp::Neg, &f, &ids).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::U32, .. }), "{err}");
}

#[test]
fn mixed_float_dtypes_are_a_dtype_mismatch() {
    let rt = runtime();
    assert!(rt.context().caps().shader_f16(), "this test needs SHADER_F16 (lavapipe has it)");
    let f = Tensor::zeros(&rt, [5], DType::F32).unwrap();
    let h = Tensor::zeros(&rt, [5], DType::F16).unwrap();
    let err = Unary::new(UnaryOp::Tanh, &f, &h).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::F16, .. }), "{err}");
    let err = h.gated(GatedAct::Gelu, &f).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F16, got: DType::F32, .. }), "{err}");
    let err = Gated::new(GatedAct::Gelu, &f, &f, &h).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::F16, .. }), "{err}");
}

#[test]
fn shape_mismatches_are_errors() {
    let rt = runtime();
    let a = Tensor::zeros(&rt, [2, 3], DType::F32).unwrap();
    let t = Tensor::zeros(&rt, [3, 2], DType::F32).unwrap();
    let row = Tensor::zeros(&rt, [3], DType::F32).unwrap();
    // Same element count, other shape: still a mismatch (no implicit reshape).
    let err = Unary::new(UnaryOp::Sqrt, &a, &t).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "unary", .. }), "{err}");
    // No broadcasting of the gate either.
    let err = a.gated(GatedAct::Silu, &row).unwrap_err();
    assert!(matches!(&err, Error::ShapeMismatch { op: "gated", lhs, rhs } if lhs == &[2, 3] && rhs == &[3]), "{err}");
    let err = Gated::new(GatedAct::Silu, &a, &a, &t).unwrap_err();
    assert!(matches!(&err, Error::ShapeMismatch { op: "gated", rhs, .. } if rhs == &[3, 2]), "{err}");
}

#[test]
fn tensors_of_other_runtimes_or_devices_are_invalid_arguments() {
    let rt = runtime();
    let a = Tensor::zeros(&rt, [4], DType::F32).unwrap();
    // Same device, another runtime: the convenience method refuses to mix implicit buffers.
    let other = runtime();
    let b = Tensor::zeros(&other, [4], DType::F32).unwrap();
    let err = a.gated(GatedAct::Silu, &b).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "gated", .. }), "{err}");
    // Another device: the ops themselves refuse.
    let _serial = serial();
    let foreign_rt = Runtime::with_context(&fresh_context(None)).unwrap();
    let foreign = Tensor::zeros(&foreign_rt, [4], DType::F32).unwrap();
    let err = Unary::new(UnaryOp::Abs, &a, &foreign).unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { op: "unary", .. }) && err.to_string().contains("devices"), "{err}");
    let err = Gated::new(GatedAct::Gelu, &a, &foreign, &a).unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { op: "gated", .. }) && err.to_string().contains("devices"), "{err}");
}
