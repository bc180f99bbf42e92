//! Element-wise arithmetic against an f64 CPU reference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::elementwise::{Binary, BinaryOp};
use metallic::{DType, Error, Tensor};

const OPS: [BinaryOp; 6] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum, BinaryOp::Minimum];

/// Shapes of `a` and of a broadcast `b` (a suffix of `a`'s shape).
const CASES: &[(&[usize], &[usize])] = &[
    (&[1], &[1]),
    (&[7], &[7]),
    (&[13], &[]),
    (&[3, 257], &[257]),
    (&[31, 63], &[31, 63]),
    (&[2, 5, 7], &[5, 7]),
    (&[70_001], &[70_001]),
];

#[test]
fn tensor_tensor_matches_reference_for_every_op_dtype_shape_and_param_path() {
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(1);
            for &(shape, b_shape) in CASES {
                let n: usize = shape.iter().product();
                let nb: usize = b_shape.iter().product();
                let (a, av) = upload(&rt, shape, dtype, &rng.vec(n, -4.0, 4.0));
                // Keep divisors away from zero so the f16 reference is meaningful.
                let bvals: Vec<f64> = rng
                    .vec(nb, 0.5, 3.0)
                    .into_iter()
                    .map(|x| if rng.next_u64().is_multiple_of(2) { x } else { -x })
                    .collect();
                let (b, bv) = upload(&rt, b_shape, dtype, &bvals);
                for op in OPS {
                    let out = poisoned(&rt, shape, dtype);
                    rt.record(&Binary::new(op, &a, &b, &out).unwrap()).unwrap();
                    let want: Vec<f64> = (0..n).map(|i| op.apply(av[i], bv[i % nb])).collect();
                    assert_close(
                        &out.to_vec_f32().unwrap(),
                        &want,
                        tolerance(dtype),
                        &format!("{op:?} {dtype} {shape:?}/{b_shape:?} {mode:?}"),
                    );
                }
            }
        }
    }
}

/// The host twin of an element-wise result.
type Reference = Box<dyn Fn(f64) -> f64>;

#[test]
fn scalar_ops_and_operators() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(2);
        let (a, av) = upload(&rt, &[4, 33], dtype, &rng.vec(132, -2.0, 2.0));
        let s = 1.75f32;
        let sf = f64::from(s);
        let cases: Vec<(&str, Tensor, Reference)> = vec![
            ("add_scalar", a.add_scalar(s).unwrap(), Box::new(move |x| x + sf)),
            ("sub_scalar", a.sub_scalar(s).unwrap(), Box::new(move |x| x - sf)),
            ("mul_scalar", a.mul_scalar(s).unwrap(), Box::new(move |x| x * sf)),
            ("div_scalar", a.div_scalar(s).unwrap(), Box::new(move |x| x / sf)),
            ("rsub_scalar", a.rsub_scalar(s).unwrap(), Box::new(move |x| sf - x)),
            ("maximum_scalar", a.maximum_scalar(0.0).unwrap(), Box::new(|x: f64| x.max(0.0))),
            ("&a + s", (&a + s).unwrap(), Box::new(move |x| x + sf)),
            ("&a * s", (&a * s).unwrap(), Box::new(move |x| x * sf)),
            ("&a - &a", (&a - &a).unwrap(), Box::new(|_| 0.0)),
            ("&a / &a", (&a / &a).unwrap(), Box::new(|_| 1.0)),
            ("(&a + &a)? * 0.5", ((&a + &a).unwrap() * 0.5).unwrap(), Box::new(|x| x)),
        ];
        for (name, got, f) in cases {
            let want: Vec<f64> = av.iter().map(|&x| f(x)).collect();
            assert_close(&got.to_vec_f32().unwrap(), &want, tolerance(dtype), &format!("{name} {dtype}"));
        }
    }
}

#[test]
fn elem_methods_match_operators() {
    let rt = runtime();
    let a = Tensor::from_slice(&rt, [4], &[1.0f32, -2.0, 3.0, 8.0]).unwrap();
    let b = Tensor::from_slice(&rt, [4], &[2.0f32, 2.0, -1.0, 4.0]).unwrap();
    assert_eq!(a.add_elem(&b).unwrap().to_vec::<f32>().unwrap(), [3.0, 0.0, 2.0, 12.0]);
    assert_eq!(a.sub_elem(&b).unwrap().to_vec::<f32>().unwrap(), [-1.0, -4.0, 4.0, 4.0]);
    assert_eq!(a.mul_elem(&b).unwrap().to_vec::<f32>().unwrap(), [2.0, -4.0, -3.0, 32.0]);
    assert_eq!(a.div_elem(&b).unwrap().to_vec::<f32>().unwrap(), [0.5, -1.0, -3.0, 2.0]);
    assert_eq!(a.maximum(&b).unwrap().to_vec::<f32>().unwrap(), [2.0, 2.0, 3.0, 8.0]);
    assert_eq!(a.minimum(&b).unwrap().to_vec::<f32>().unwrap(), [1.0, -2.0, -1.0, 4.0]);
    assert_eq!((a.clone() + &b).unwrap().to_vec::<f32>().unwrap(), [3.0, 0.0, 2.0, 12.0]);
}

#[test]
fn division_by_zero_follows_ieee() {
    let rt = runtime();
    let a = Tensor::from_slice(&rt, [3], &[1.0f32, -1.0, 0.0]).unwrap();
    let got = a.div_scalar(0.0).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(got[0], f32::INFINITY);
    assert_eq!(got[1], f32::NEG_INFINITY);
    assert!(got[2].is_nan());
}

#[test]
fn views_at_unaligned_offsets_read_and_write_only_their_region() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        // 3 rows of 7: row 1 starts 7 elements in, which is not a multiple of the storage
        // offset alignment, so the kernel binds an aligned range and offsets inside it.
        let base: Vec<f64> = (0..21).map(f64::from).collect();
        let (a, _) = upload(&rt, &[3, 7], dtype, &base);
        let (b, _) = upload(&rt, &[3, 7], dtype, &[100.0; 21]);
        let out = poisoned(&rt, &[3, 7], dtype);
        let (a1, b1, out1) = (a.get_batch(1).unwrap(), b.get_batch(1).unwrap(), out.get_batch(1).unwrap());
        assert_eq!(out1.byte_offset() - out.byte_offset(), 7 * dtype.size_in_bytes() as u64);
        rt.record(&Binary::new(BinaryOp::Add, &a1, &b1, &out1).unwrap()).unwrap();
        let got = out.to_vec_f32().unwrap();
        for (i, v) in got.iter().enumerate() {
            if (7..14).contains(&i) {
                assert_eq!(*v as f64, 100.0 + i as f64, "{dtype}: element {i} of the view");
            } else {
                assert!(v.is_nan(), "{dtype}: element {i} outside the view was written ({v})");
            }
        }
        // The inputs are untouched too.
        assert_eq!(a.to_vec_f32().unwrap(), (0..21).map(|x| x as f32).collect::<Vec<_>>());
    }
}

#[test]
fn in_place_output_is_allowed() {
    let rt = runtime();
    let a = Tensor::from_slice(&rt, [5], &[1.0f32, 2.0, 3.0, 4.0, 5.0]).unwrap();
    rt.record(&Binary::scalar(BinaryOp::Mul, &a, 2.0, &a).unwrap()).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0, 8.0, 10.0]);
}

#[test]
fn dispatches_beyond_one_grid_dimension_fold_into_y() {
    let rt = runtime();
    // 65,535 workgroups of 256 cover 16,776,960 elements; go past that.
    let n = 65_535 * 256 + 1000;
    let a = Tensor::arange(&rt, 0.0, n as f32, 1.0, DType::F32).unwrap();
    let got = a.add_scalar(1.0).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(got.len(), n);
    for i in [0, 1, 65_535 * 256 - 1, 65_535 * 256, n - 1] {
        assert_eq!(got[i], (i as f32) + 1.0, "element {i}");
    }
}

#[test]
fn empty_tensors_are_a_no_op() {
    let rt = runtime();
    let a = Tensor::zeros(&rt, [0, 4], DType::F32).unwrap();
    let b = (&a + 1.0).unwrap();
    assert_eq!(b.dims(), &[0, 4]);
    assert!(b.to_vec::<f32>().unwrap().is_empty());
}

#[test]
fn invalid_arguments_are_errors() {
    let rt = runtime();
    let a = Tensor::zeros(&rt, [2, 3], DType::F32).unwrap();
    let wrong = Tensor::zeros(&rt, [2], DType::F32).unwrap();
    assert!(matches!(a.add_elem(&wrong), Err(Error::ShapeMismatch { op: "binary", .. })));
    let out_wrong = Tensor::zeros(&rt, [3, 2], DType::F32).unwrap();
    assert!(matches!(Binary::new(BinaryOp::Add, &a, &a, &out_wrong), Err(Error::ShapeMismatch { .. })));
    let ids = Tensor::from_slice(&rt, [2, 3], &[1u32, 2, 3, 4, 5, 6]).unwrap();
    assert!(matches!(ids.add_scalar(1.0), Err(Error::DTypeMismatch { got: DType::U32, .. })));
    if rt.context().caps().shader_f16() {
        let h = Tensor::zeros(&rt, [2, 3], DType::F16).unwrap();
        let err = a.add_elem(&h).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::F16, .. }), "{err}");
    }
    let other = runtime(); // same device, another runtime
    let foreign = Tensor::zeros(&other, [2, 3], DType::F32).unwrap();
    let err = a.add_elem(&foreign).unwrap_err();
    assert!(err.to_string().contains("different"), "{err}");
}
