//! Graph: named inputs, ops over preallocated tensors, outputs, one command buffer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::elementwise::{Binary, BinaryOp};
use metallic::{DType, Error, Graph, Tensor};

/// y = (x + b) * x, z = y - 1
fn build(rt: &metallic::Runtime) -> Graph {
    let mut g = Graph::new(rt);
    let x = g.input("x", [3, 5], DType::F32).unwrap();
    let b = g.input("b", [5], DType::F32).unwrap();
    let t = x.empty_like().unwrap();
    let y = x.empty_like().unwrap();
    let z = x.empty_like().unwrap();
    g.push(Binary::new(BinaryOp::Add, &x, &b, &t).unwrap()).unwrap();
    g.push(Binary::new(BinaryOp::Mul, &t, &x, &y).unwrap()).unwrap();
    g.push(Binary::scalar(BinaryOp::Sub, &y, 1.0, &z).unwrap()).unwrap();
    g.output("y", &y).unwrap();
    g.output("z", &z).unwrap();
    g
}

#[test]
fn forward_matches_reference_and_outputs_are_fresh_each_run() {
    let rt = runtime();
    let mut g = build(&rt);
    assert_eq!(g.len(), 3);
    let mut rng = Rng::new(5);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (x, xv) = upload(&rt, &[3, 5], DType::F32, &rng.vec(15, -2.0, 2.0));
        let (b, bv) = upload(&rt, &[5], DType::F32, &rng.vec(5, -2.0, 2.0));
        let out = g.forward(&[("b", &b), ("x", &x)]).unwrap();
        let want_y: Vec<f64> = (0..15).map(|i| (xv[i] + bv[i % 5]) * xv[i]).collect();
        runs.push((out, want_y));
    }
    // The first run's outputs survive the second run.
    for (out, want_y) in &runs {
        let want_z: Vec<f64> = want_y.iter().map(|y| y - 1.0).collect();
        assert_close(&out["y"].to_vec::<f32>().unwrap(), want_y, 1e-5, "y");
        assert_close(&out["z"].to_vec::<f32>().unwrap(), &want_z, 1e-5, "z");
    }
}

#[test]
fn forward_rejects_bad_inputs() {
    let rt = runtime();
    let mut g = build(&rt);
    let x = Tensor::zeros(&rt, [3, 5], DType::F32).unwrap();
    let b = Tensor::zeros(&rt, [5], DType::F32).unwrap();
    let missing = g.forward(&[("x", &x)]).unwrap_err();
    assert!(missing.to_string().contains("\"b\""), "{missing}");
    let unknown = g.forward(&[("x", &x), ("b", &b), ("c", &b)]).unwrap_err();
    assert!(unknown.to_string().contains("unknown input \"c\""), "{unknown}");
    let twice = g.forward(&[("x", &x), ("b", &b), ("b", &b)]).unwrap_err();
    assert!(twice.to_string().contains("exactly once"), "{twice}");
    let wrong_shape = g.forward(&[("x", &b), ("b", &b)]).unwrap_err();
    assert!(matches!(wrong_shape, Error::ShapeMismatch { .. }), "{wrong_shape}");
    let h = Tensor::zeros(&rt, [3, 5], DType::U32).unwrap();
    let wrong_dtype = g.forward(&[("x", &h), ("b", &b)]).unwrap_err();
    assert!(matches!(wrong_dtype, Error::DTypeMismatch { .. }), "{wrong_dtype}");
    assert!(g.input("x", [1], DType::F32).is_err());
    assert!(g.output("y", &x).is_err());
}
