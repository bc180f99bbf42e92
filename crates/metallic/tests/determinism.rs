//! Determinism: the same input on the same adapter gives bit-identical outputs run to run
//! (GEMM on every path, SDPA on every implementation, softmax, LayerNorm, RMSNorm), and a row
//! gives the same bits alone as inside a batch wherever the same kernel computes it.
//!
//! No kernel uses atomics or a reduction whose order depends on scheduling, so run-to-run
//! identity is expected everywhere. What batch composition changes is which *kernel* runs:
//!
//! - GEMM: on one path (tile size, split-K with a fixed number of slices) each output's K loop
//!   runs in the same order whatever M is: a row gives the same bits alone and in a batch.
//!   Under `MatmulPath::Auto` a row alone (M = 1) takes the GEMV and the batch a tiled or
//!   split-K kernel, which add the K products in another order: measured on lavapipe, up to
//!   2.2e-7 of `Σ|a_k b_kj|` apart (thousands of ulps for sums near zero); asserted within 1e-6.
//! - SDPA: the fused kernel gives a batch item the same bits alone and in a batch; split-K
//!   and the composite path divide their work by the batch size (to fill the GPU), so a batch
//!   item alone may be summed in other chunks: within 1e-6 (2.4e-8 measured over 4096 keys).
//! - Softmax and the norms: one workgroup per row, so a row alone, a row of a batch and a row
//!   viewed out of a batch give the same bits when they take the same kernel. The kernel
//!   depends on the row's alignment (vec4 loads need the row length and the tensor's element
//!   offset to be multiples of 4): a row at an odd element offset takes the scalar kernel,
//!   which on lavapipe gave softmax 2 ulps and LayerNorm 32 ulps (on outputs near zero) apart
//!   from the vec4 kernel, RMSNorm identical; asserted within 1e-6.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::matmul::{Matmul, MatmulPath};
use metallic::kernels::norm::{LayerNorm, RmsNorm};
use metallic::kernels::sdpa::{SdpaImpl, SdpaOptions, scaled_dot_product_attention_with};
use metallic::kernels::softmax::{Softmax, SoftmaxOptions};
use metallic::{DType, Operation, Runtime, Tensor};

/// How many times each computation runs.
const RUNS: usize = 3;

/// An f32 tensor of seeded values in [-1, 1), and the values.
fn random(rt: &Runtime, shape: &[usize], seed: u64) -> (Tensor, Vec<f32>) {
    let n = shape.iter().product();
    let values: Vec<f32> = Rng::new(seed).vec(n, -1.0, 1.0).into_iter().map(|x| x as f32).collect();
    (Tensor::from_slice(rt, shape, &values).unwrap(), values)
}

/// Asserts `got` has exactly the bit patterns of `want` (and is finite: NaN-poisoned outputs
/// that a kernel failed to write would otherwise compare equal).
fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(want.iter().all(|x| x.is_finite()), "{what}: non-finite output");
    let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i].to_bits() != want[i].to_bits()).collect();
    if let Some(&i) = differ.first() {
        panic!(
            "{what}: {} of {} elements differ; first at {i}: {:e} vs {:e}",
            differ.len(),
            got.len(),
            got[i],
            want[i]
        );
    }
}

/// Records `op` (whose output `out` was poisoned) and reads `out` back.
fn run(rt: &Runtime, op: &dyn Operation, out: &Tensor) -> Vec<f32> {
    rt.record(op).unwrap();
    out.to_vec::<f32>().unwrap()
}

/// The paths a product of `m` rows can take: every tiled and split-K kernel, GEMV for one row.
fn paths(m: usize) -> Vec<MatmulPath> {
    let mut out = vec![
        MatmulPath::Auto,
        MatmulPath::Gemm32,
        MatmulPath::Gemm64,
        MatmulPath::Gemm128,
        MatmulPath::SplitK,
        MatmulPath::SplitK64,
    ];
    if m == 1 {
        out.push(MatmulPath::Gemv);
    }
    out
}

#[test]
fn gemm_is_bit_identical_run_to_run() {
    let rt = runtime();
    // [M, K] x [K, N], batch first where there is one. [1, 384] x [384, 1536] is a decode
    // step's projection (GEMV); [16, 384] x [384, 1536] and [40, 1536] x [1536, 384] have few
    // output tiles and a long K, which Auto splits over K.
    let shapes: [(&[usize], &[usize]); 6] = [
        (&[1, 384], &[384, 1536]),
        (&[16, 384], &[384, 1536]),
        (&[40, 1536], &[1536, 384]),
        (&[7, 13], &[13, 31]),
        (&[130, 200], &[200, 70]),
        (&[3, 17, 33], &[3, 33, 9]),
    ];
    for (i, (a_shape, b_shape)) in shapes.into_iter().enumerate() {
        let (a, _) = random(&rt, a_shape, 10 + i as u64);
        let (b, _) = random(&rt, b_shape, 20 + i as u64);
        let m = a_shape[a_shape.len() - 2];
        let c_shape = [&a_shape[..a_shape.len() - 1], &b_shape[b_shape.len() - 1..]].concat();
        for path in paths(m) {
            let mut first: Option<Vec<f32>> = None;
            for r in 0..RUNS {
                let c = poisoned(&rt, &c_shape, DType::F32);
                let op = Matmul::new(&a, &b, &c).unwrap().path(path);
                let chosen = op.chosen_path().unwrap();
                let got = run(&rt, &op, &c);
                let what = format!("{a_shape:?} x {b_shape:?} on {path:?} ({chosen:?}), run {r}");
                match &first {
                    None => first = Some(got),
                    Some(want) => assert_bits(&got, want, &what),
                }
            }
            // The tensor API (Auto) gives the bits of Matmul on Auto.
            if path == MatmulPath::Auto {
                let want = first.as_ref().unwrap();
                for r in 0..RUNS {
                    let got = a.matmul(&b).unwrap().to_vec::<f32>().unwrap();
                    assert_bits(&got, want, &format!("{a_shape:?} x {b_shape:?} through Tensor::matmul, run {r}"));
                }
            }
        }
    }
}

#[test]
fn sdpa_is_bit_identical_run_to_run_and_batch_items_agree() {
    let rt = runtime();
    // (batch, heads, kv_heads, seq_q, seq_k, head_dim, causal): a GQA decode step over a
    // 300-key cache, a causal prefill of 37 tokens, a 4-token block against 260 keys, a decode
    // step over 4096 keys (which split-K and the composite's GEMMs divide by the batch).
    let cases = [
        (3, 4, 2, 1, 300, 64, false),
        (3, 2, 2, 37, 37, 32, true),
        (2, 8, 1, 4, 260, 64, true),
        (4, 4, 2, 1, 4096, 64, false),
    ];
    for (i, (b, h, kvh, sq, sk, d, causal)) in cases.into_iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let (q, _) = random(&rt, &[b, h, sq, d], seed);
        let (k, _) = random(&rt, &[b, kvh, sk, d], seed + 1);
        let (v, _) = random(&rt, &[b, kvh, sk, d], seed + 2);
        let options = || SdpaOptions { causal, ..SdpaOptions::default() };
        for implementation in [SdpaImpl::Fused, SdpaImpl::SplitK, SdpaImpl::Composite] {
            // Every output stays alive until compared: each run writes a region of its own.
            let outs: Vec<Tensor> = (0..RUNS)
                .map(|_| scaled_dot_product_attention_with(&q, &k, &v, options(), implementation).unwrap())
                .collect();
            let first = outs[0].to_vec::<f32>().unwrap();
            assert!(first.iter().all(|x| x.is_finite()), "{implementation:?} case {i}: non-finite output");
            for (r, out) in outs.iter().enumerate().skip(1) {
                let what = format!("sdpa {implementation:?} case {i} {:?}, run {r}", q.dims());
                assert_bits(&out.to_vec::<f32>().unwrap(), &first, &what);
            }
            // Batch composition: batch item j alone against item j in the batch. The fused
            // kernel's work per (batch, head) does not depend on the batch: the same bits.
            // Split-K cuts the keys into chunks sized to fill the GPU with batch × kv_heads
            // workgroups, and the composite path's GEMMs choose their split by the batch too:
            // a batch item alone may be summed in other chunks. Measured on lavapipe: identical
            // for the short caches, up to 2.4e-8 apart over 4096 keys; asserted within 1e-6.
            let per = h * sq * d;
            for j in 0..b {
                let one = |t: &Tensor| t.narrow(j, 1).unwrap();
                let alone = scaled_dot_product_attention_with(&one(&q), &one(&k), &one(&v), options(), implementation)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap();
                let in_batch = &first[j * per..(j + 1) * per];
                let what = format!("sdpa {implementation:?} case {i}: batch item {j} alone vs in the batch");
                if implementation == SdpaImpl::Fused {
                    assert_bits(&alone, in_batch, &what);
                } else {
                    let want: Vec<f64> = in_batch.iter().map(|&x| f64::from(x)).collect();
                    assert_close(&alone, &want, 1e-6, &what);
                }
            }
        }
    }
}

/// The row-wise ops, each into a fresh NaN-poisoned output.
fn row_ops(rt: &Runtime, x: &Tensor, w: &Tensor, bias: &Tensor) -> [(&'static str, Vec<f32>); 4] {
    let softmax = |options: SoftmaxOptions| {
        let out = poisoned(rt, x.dims(), DType::F32);
        run(rt, &Softmax::new(x, &out, options).unwrap(), &out)
    };
    let scaled = SoftmaxOptions { scale: 0.37, ..SoftmaxOptions::default() };
    let layer = {
        let out = poisoned(rt, x.dims(), DType::F32);
        run(rt, &LayerNorm::new(x, Some(w), Some(bias), 1e-5, &out).unwrap(), &out)
    };
    let rms = {
        let out = poisoned(rt, x.dims(), DType::F32);
        run(rt, &RmsNorm::new(x, Some(w), 1e-6, true, &out).unwrap(), &out)
    };
    [
        ("softmax", softmax(SoftmaxOptions::default())),
        ("scaled softmax", softmax(scaled)),
        ("layer_norm", layer),
        ("rms_norm", rms),
    ]
}

/// Row lengths covering each kernel: scalar (3, 257), vec4 (256), longer than a workgroup
/// holds in registers (5000).
const COLS: [usize; 4] = [3, 256, 257, 5000];

#[test]
fn softmax_and_norms_are_bit_identical_run_to_run() {
    let rt = runtime();
    for cols in COLS {
        let (x, _) = random(&rt, &[5, cols], cols as u64);
        let (w, _) = random(&rt, &[cols], 1);
        let (bias, _) = random(&rt, &[cols], 2);
        let first = row_ops(&rt, &x, &w, &bias);
        for r in 1..RUNS {
            for ((name, got), (_, want)) in row_ops(&rt, &x, &w, &bias).iter().zip(&first) {
                assert_bits(got, want, &format!("{name} of [5, {cols}], run {r}"));
            }
        }
    }
    // Causal softmax over [batch, heads, q, k] planes.
    let (x, _) = random(&rt, &[2, 3, 16, 16], 9);
    let causal = || {
        let out = poisoned(&rt, x.dims(), DType::F32);
        let options = SoftmaxOptions { causal: Some(0), ..SoftmaxOptions::default() };
        run(&rt, &Softmax::new(&x, &out, options).unwrap(), &out)
    };
    let first = causal();
    for r in 1..RUNS {
        assert_bits(&causal(), &first, &format!("causal softmax, run {r}"));
    }
}

#[test]
fn a_row_gives_the_same_bits_alone_and_in_a_batch() {
    let rt = runtime();
    let rows = 5;
    for cols in COLS {
        let (x, xv) = random(&rt, &[rows, cols], 50 + cols as u64);
        let (w, _) = random(&rt, &[cols], 3);
        let (bias, _) = random(&rt, &[cols], 4);
        let batch = row_ops(&rt, &x, &w, &bias);
        for r in 0..rows {
            let alone = Tensor::from_slice(&rt, [1, cols], &xv[r * cols..(r + 1) * cols]).unwrap();
            let view = x.narrow(r, 1).unwrap();
            for (how, row) in [("alone", &alone), ("viewed out of the batch", &view)] {
                for ((name, got), (_, in_batch)) in row_ops(&rt, row, &w, &bias).iter().zip(&batch) {
                    let what = format!("{name}: row {r} of [{rows}, {cols}] {how}");
                    assert_bits(got, &in_batch[r * cols..(r + 1) * cols], &what);
                }
            }
        }
    }
}

#[test]
fn a_rows_alignment_picks_the_kernel_and_changes_only_the_last_bits() {
    let rt = runtime();
    for cols in [12, 256, 4096] {
        let (x, xv) = random(&rt, &[1, cols], 70 + cols as u64);
        let (w, _) = random(&rt, &[cols], 5);
        let (bias, _) = random(&rt, &[cols], 6);
        // The same row one element into a buffer: element offset 1, not a multiple of 4.
        let shifted: Vec<f32> = std::iter::once(0.5).chain(xv.iter().copied()).collect();
        let flat = Tensor::from_slice(&rt, [cols + 1], &shifted).unwrap();
        let unaligned = flat.narrow(1, cols).unwrap().reshape([1, cols]).unwrap();

        // vec4 kernels also need a storage offset alignment of 16 bytes or a multiple of it.
        let vec4 = rt.context().caps().storage_alignment().is_multiple_of(16);
        let out = x.empty_like().unwrap();
        let path = |t: &Tensor| Softmax::new(t, &out, SoftmaxOptions::default()).unwrap().path();
        let aligned_path = if vec4 { "softmax_rows" } else { "softmax_rows_scalar" };
        assert_eq!(path(&x), aligned_path, "an aligned row of {cols}");
        assert_eq!(path(&unaligned), "softmax_rows_scalar", "an unaligned row takes the scalar kernel");
        let rms_path = |t: &Tensor| RmsNorm::new(t, Some(&w), 1e-6, true, &out).unwrap().path();
        let aligned_path = if vec4 { "rms_norm_rows" } else { "rms_norm_rows_scalar" };
        assert_eq!((rms_path(&x), rms_path(&unaligned)), (aligned_path, "rms_norm_rows_scalar"));

        let aligned = row_ops(&rt, &x, &w, &bias);
        for ((name, got), (_, want)) in row_ops(&rt, &unaligned, &w, &bias).iter().zip(&aligned) {
            let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
            assert_close(got, &want, 1e-6, &format!("{name} of {cols}: unaligned vs aligned row"));
        }
    }
}

#[test]
fn gemm_rows_alone_and_in_a_batch() {
    let rt = runtime();
    for (m, k, n) in [(16, 384, 1536), (64, 256, 96), (7, 13, 31), (130, 200, 70)] {
        let (a, av) = random(&rt, &[m, k], 30);
        let (b, bv) = random(&rt, &[k, n], 31);
        let product = |a: &Tensor, path: MatmulPath| {
            let c = poisoned(&rt, &[a.dims()[0], n], DType::F32);
            // Split-K with a fixed number of slices: by default the count follows M.
            let op = Matmul::new(a, &b, &c).unwrap().path(path);
            let op = if matches!(path, MatmulPath::SplitK | MatmulPath::SplitK64) { op.split_k(4) } else { op };
            let chosen = op.chosen_path().unwrap();
            (run(&rt, &op, &c), chosen)
        };
        for path in paths(m) {
            let (full, batch_path) = product(&a, path);
            for r in [0, m / 2, m - 1] {
                let row = Tensor::from_slice(&rt, [1, k], &av[r * k..(r + 1) * k]).unwrap();
                let (alone, row_path) = product(&row, path);
                let in_batch = &full[r * n..(r + 1) * n];
                let what =
                    format!("[{m}, {k}] x [{k}, {n}] row {r}: alone on {row_path:?}, in the batch on {batch_path:?}");
                if row_path == batch_path {
                    // One kernel: the K loop of each output runs in the same order.
                    assert_bits(&alone, in_batch, &what);
                } else {
                    // Auto: GEMV alone, a tiled or split-K kernel in the batch; another order of
                    // the K products. Within 1e-6 of the size of the terms summed.
                    assert_eq!((path, row_path), (MatmulPath::Auto, MatmulPath::Gemv), "{what}");
                    for j in 0..n {
                        let terms: f64 =
                            (0..k).map(|i| (f64::from(av[r * k + i]) * f64::from(bv[i * n + j])).abs()).sum();
                        let diff = (f64::from(alone[j]) - f64::from(in_batch[j])).abs();
                        assert!(
                            diff <= 1e-6 * terms,
                            "{what}, column {j}: {} vs {} (terms {terms})",
                            alone[j],
                            in_batch[j]
                        );
                    }
                }
            }
        }
    }
}
