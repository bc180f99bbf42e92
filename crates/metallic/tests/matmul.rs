//! Batched GEMM / GEMV against an f64 CPU reference: transposes, alpha/beta, odd sizes, many
//! tiles, batch broadcasting, views at offsets, f16, both parameter paths and both reduction
//! flavours, a seeded random sweep, and every error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::matmul::{Matmul, MatmulPath, cooperative_available};
use metallic::{DType, Error, Operation, Runtime, Tensor};

/// One multiplication to run and check.
#[derive(Debug, Clone)]
struct Case {
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    c_batch: Vec<usize>,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    alpha: f32,
    beta: f32,
    path: MatmulPath,
    /// Put A, B and C at odd element offsets inside larger buffers (views via `narrow`).
    offset: bool,
    /// Compile with wgpu's runtime checks ([`Matmul::checked`]).
    checked: bool,
    /// K-step of the register-blocked kernel (0: the default).
    bk: u32,
    /// K slices of the split-K path (0: chosen by shape).
    splits: u32,
}

impl Case {
    fn new(m: usize, n: usize, k: usize) -> Self {
        Case {
            a_batch: vec![],
            b_batch: vec![],
            c_batch: vec![],
            m,
            n,
            k,
            ta: false,
            tb: false,
            alpha: 1.0,
            beta: 0.0,
            path: MatmulPath::Auto,
            offset: false,
            checked: false,
            bk: 0,
            splits: 0,
        }
    }
    fn batch(mut self, a: &[usize], b: &[usize], c: &[usize]) -> Self {
        (self.a_batch, self.b_batch, self.c_batch) = (a.to_vec(), b.to_vec(), c.to_vec());
        self
    }
    fn trans(mut self, ta: bool, tb: bool) -> Self {
        (self.ta, self.tb) = (ta, tb);
        self
    }
    fn scale(mut self, alpha: f32, beta: f32) -> Self {
        (self.alpha, self.beta) = (alpha, beta);
        self
    }
    fn path(mut self, path: MatmulPath) -> Self {
        self.path = path;
        self
    }
    fn offset(mut self) -> Self {
        self.offset = true;
        self
    }
    fn checked(mut self) -> Self {
        self.checked = true;
        self
    }
    fn bk(mut self, bk: u32) -> Self {
        self.bk = bk;
        self
    }
    /// The split-K path with `splits` K slices.
    fn split(mut self, splits: u32) -> Self {
        (self.path, self.splits) = (MatmulPath::SplitK, splits);
        self
    }
}

/// Allowed error relative to sum |alpha a b| + |beta c| per output element.
fn gemm_tolerance(dtype: DType, k: usize) -> f64 {
    match dtype {
        DType::F16 => 1e-2,
        _ => 1e-5 * (k.max(1) as f64).sqrt(),
    }
}

/// Elements of padding before (odd, so views sit at unaligned offsets) and after a view.
const PAD_BEFORE: usize = 3;
const PAD_AFTER: usize = 5;
const SENTINEL: f64 = 1234.0;

/// An operand: the tensor the op sees (maybe a view), the whole buffer's tensor, and the
/// values (rounded to the dtype) of the view.
struct Operand {
    view: Tensor,
    whole: Tensor,
    values: Vec<f64>,
}

/// With `offset`, the view sits between `pad` values (NaN around inputs, so that reading
/// outside them shows; a finite sentinel around C, so that writing outside it shows).
fn operand(rt: &Runtime, shape: &[usize], dtype: DType, values: &[f64], offset: bool, pad: f64) -> Operand {
    if !offset {
        let (t, v) = upload(rt, shape, dtype, values);
        return Operand { view: t.clone(), whole: t, values: v };
    }
    let n = values.len();
    let mut all = vec![pad; PAD_BEFORE];
    all.extend_from_slice(values);
    all.extend(std::iter::repeat_n(pad, PAD_AFTER));
    let (whole, rounded) = upload(rt, &[all.len()], dtype, &all);
    let view = whole.narrow(PAD_BEFORE, n).unwrap().reshape(shape).unwrap();
    Operand { view, whole, values: rounded[PAD_BEFORE..PAD_BEFORE + n].to_vec() }
}

/// Index of an operand's matrix for output batch item `i`: 0 when it holds a single matrix.
fn item(batch: &[usize], i: usize) -> usize {
    if batch.iter().product::<usize>() == 1 { 0 } else { i }
}

/// Runs `case` and checks it; returns the largest fraction of the tolerance an element used.
fn check(rt: &Runtime, dtype: DType, case: &Case, rng: &mut Rng) -> f64 {
    let Case { m, n, k, ta, tb, alpha, beta, .. } = *case;
    let what = format!("{dtype} {case:?} {:?}", rt.context().caps().params);
    let a_shape = [case.a_batch.clone(), if ta { vec![k, m] } else { vec![m, k] }].concat();
    let b_shape = [case.b_batch.clone(), if tb { vec![n, k] } else { vec![k, n] }].concat();
    let c_shape = [case.c_batch.clone(), vec![m, n]].concat();
    let count = |s: &[usize]| s.iter().product::<usize>();
    let a = operand(rt, &a_shape, dtype, &rng.vec(count(&a_shape), -1.0, 1.0), case.offset, f64::NAN);
    let b = operand(rt, &b_shape, dtype, &rng.vec(count(&b_shape), -1.0, 1.0), case.offset, f64::NAN);
    let c0 = if beta == 0.0 { vec![f64::NAN; count(&c_shape)] } else { rng.vec(count(&c_shape), -1.0, 1.0) };
    let c = operand(rt, &c_shape, dtype, &c0, case.offset, SENTINEL);

    let op = Matmul::new(&a.view, &b.view, &c.view)
        .unwrap()
        .transpose_a(ta)
        .transpose_b(tb)
        .alpha(alpha)
        .beta(beta)
        .path(case.path)
        .checked(case.checked);
    let op = if case.bk == 0 { op } else { op.wide_k_step(case.bk) };
    let op = if case.splits == 0 { op } else { op.split_k(case.splits) };
    rt.record(&op).unwrap_or_else(|e| panic!("{what}: {e}"));
    let got = c.whole.to_vec_f32().unwrap();

    let (alpha, beta) = (f64::from(alpha), f64::from(beta));
    let tol = gemm_tolerance(dtype, k);
    // f16 results below 2^-14 are subnormal, spaced 2^-24 apart.
    let floor = if dtype == DType::F16 { 2f64.powi(-24) } else { 0.0 };
    let mut worst = 0.0f64;
    let batch = count(&case.c_batch);
    let base = if case.offset { PAD_BEFORE } else { 0 };
    for bi in 0..batch {
        let ab = item(&case.a_batch, bi) * m * k;
        let bb = item(&case.b_batch, bi) * k * n;
        for i in 0..m {
            for j in 0..n {
                let (mut dot, mut mag) = (0.0, 0.0);
                for p in 0..k {
                    let x = a.values[ab + if ta { p * m + i } else { i * k + p }];
                    let y = b.values[bb + if tb { j * k + p } else { p * n + j }];
                    dot += x * y;
                    mag += (x * y).abs();
                }
                let idx = bi * m * n + i * n + j;
                let old = if beta == 0.0 { 0.0 } else { c.values[idx] };
                let want = alpha * dot + beta * old;
                let scale = (alpha.abs() * mag + (beta * old).abs()).max(f64::MIN_POSITIVE);
                let g = f64::from(got[base + idx]);
                let err = (g - want).abs();
                let allowed = tol * scale + floor;
                assert!(
                    err <= allowed,
                    "{what}: C[{bi}][{i}][{j}] = {g}, expected {want} (error {err:e}, allowed {allowed:e})"
                );
                worst = worst.max(err / allowed);
            }
        }
    }
    if case.offset {
        let len = count(&c_shape);
        for (i, &v) in got.iter().enumerate() {
            if i < PAD_BEFORE || i >= PAD_BEFORE + len {
                assert_eq!(f64::from(v), SENTINEL, "{what}: element {i} outside the C view was written");
            }
        }
        for t in [&a.whole, &b.whole] {
            let v = t.to_vec_f32().unwrap();
            assert!(v[0].is_nan() && v[v.len() - 1].is_nan(), "{what}: an input's padding was written");
        }
    }
    worst
}

/// Runs every case in every float dtype; returns the largest fraction of the tolerance used
/// per dtype.
fn check_all(rt: &Runtime, cases: &[Case], seed: u64) -> Vec<(DType, f64)> {
    float_dtypes(rt)
        .into_iter()
        .map(|dtype| {
            let mut rng = Rng::new(seed);
            let worst = cases.iter().map(|case| check(rt, dtype, case, &mut rng)).fold(0.0, f64::max);
            eprintln!("{dtype}: largest error {:.1}% of the tolerance", 100.0 * worst);
            (dtype, worst)
        })
        .collect()
}

#[test]
fn small_integer_product_is_exact() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let (a, _) = upload(&rt, &[2, 3], dtype, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let (b, _) = upload(&rt, &[3, 2], dtype, &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        assert_eq!(a.matmul(&b).unwrap().to_vec_f32().unwrap(), [58.0, 64.0, 139.0, 154.0], "{dtype}");
        for path in [MatmulPath::Gemm32, MatmulPath::Gemm64, MatmulPath::Gemm128] {
            let c = poisoned(&rt, &[2, 2], dtype);
            rt.record(&Matmul::new(&a, &b, &c).unwrap().path(path)).unwrap();
            assert_eq!(c.to_vec_f32().unwrap(), [58.0, 64.0, 139.0, 154.0], "{dtype} {path:?}");
        }
        // One row: the GEMV path, both layouts of B.
        let row = a.narrow(1, 1).unwrap();
        let (bt, _) = upload(&rt, &[2, 3], dtype, &[7.0, 9.0, 11.0, 8.0, 10.0, 12.0]);
        assert_eq!(row.matmul(&b).unwrap().to_vec_f32().unwrap(), [139.0, 154.0], "{dtype} gemv [K, N]");
        assert_eq!(row.matmul_t(&bt).unwrap().to_vec_f32().unwrap(), [139.0, 154.0], "{dtype} gemv [N, K]");
        assert_eq!(a.matmul_t(&bt).unwrap().to_vec_f32().unwrap(), [58.0, 64.0, 139.0, 154.0], "{dtype} A·Bᵀ");
    }
}

#[test]
fn all_four_transpose_combinations() {
    let rt = runtime();
    let mut cases = Vec::new();
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for path in [MatmulPath::Gemm32, MatmulPath::Gemm64, MatmulPath::Gemm128] {
            cases.push(Case::new(13, 31, 7).trans(ta, tb).path(path));
            cases.push(Case::new(65, 33, 70).trans(ta, tb).path(path));
        }
        cases.push(Case::new(1, 45, 37).trans(ta, tb)); // GEMV
        cases.push(Case::new(7, 9, 20).trans(ta, tb).batch(&[2], &[2], &[2]));
    }
    check_all(&rt, &cases, 1);
}

#[test]
fn alpha_and_beta_scale_and_accumulate_and_beta_zero_ignores_nan_c() {
    let rt = runtime();
    let mut cases = Vec::new();
    for path in [MatmulPath::Auto, MatmulPath::Gemm32, MatmulPath::Gemm64, MatmulPath::Gemm128] {
        for (alpha, beta) in [(1.5, -0.75), (0.0, 1.0), (-2.0, 0.0), (1.0, 1.0)] {
            cases.push(Case::new(19, 23, 29).scale(alpha, beta).path(path));
            cases.push(Case::new(19, 23, 29).scale(alpha, beta).path(path).trans(true, true).batch(&[2], &[], &[2]));
        }
    }
    for tb in [false, true] {
        for (alpha, beta) in [(1.5, -0.75), (0.0, 1.0), (-2.0, 0.0)] {
            cases.push(Case::new(1, 77, 300).scale(alpha, beta).trans(false, tb)); // GEMV
        }
    }
    check_all(&rt, &cases, 2);

    // Explicitly: beta = 0 never reads C, so NaN in C does not leak.
    for dtype in float_dtypes(&rt) {
        let (a, _) = upload(&rt, &[3, 2], dtype, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let (b, _) = upload(&rt, &[2, 1], dtype, &[1.0, -1.0]);
        for (m, a) in [(3, a.clone()), (1, a.narrow(2, 1).unwrap())] {
            let c = poisoned(&rt, &[m, 1], dtype);
            rt.record(&Matmul::new(&a, &b, &c).unwrap().alpha(2.0)).unwrap();
            let want: &[f32] = if m == 3 { &[-2.0, -2.0, -2.0] } else { &[-2.0] };
            assert_eq!(c.to_vec_f32().unwrap(), want, "{dtype} m={m}");
        }
    }
}

#[test]
fn odd_sizes() {
    let rt = runtime();
    let sizes = [1usize, 7, 13, 31, 63, 65];
    let mut cases = Vec::new();
    for &m in &sizes {
        for &n in &sizes {
            for &k in &sizes {
                cases.push(Case::new(m, n, k));
            }
        }
    }
    // 257 in each position (and all three once).
    for (m, n, k) in [(257, 13, 31), (7, 257, 13), (31, 7, 257), (1, 257, 63), (1, 31, 257), (257, 257, 257)] {
        cases.push(Case::new(m, n, k));
    }
    check_all(&rt, &cases, 3);
}

#[test]
fn many_tiles_in_both_tile_configs() {
    let rt = runtime();
    let mut cases = Vec::new();
    for path in [MatmulPath::Auto, MatmulPath::Gemm32, MatmulPath::Gemm64, MatmulPath::Gemm128] {
        cases.push(Case::new(130, 200, 70).path(path));
        cases.push(Case::new(130, 200, 70).path(path).trans(true, true));
    }
    cases.push(Case::new(256, 256, 256).path(MatmulPath::Gemm64).trans(false, true));
    check_all(&rt, &cases, 4);
}

#[test]
fn batches_and_broadcasting() {
    let rt = runtime();
    let mut cases = Vec::new();
    for (ta, tb) in [(false, false), (true, true), (false, true), (true, false)] {
        // Both operands batched.
        cases.push(Case::new(13, 17, 19).batch(&[3], &[3], &[3]).trans(ta, tb));
        // B shared (a rank-2 weight): folds into one tall GEMM when A is untransposed.
        cases.push(Case::new(13, 17, 19).batch(&[3], &[], &[3]).trans(ta, tb));
        // A shared.
        cases.push(Case::new(13, 17, 19).batch(&[], &[3], &[3]).trans(ta, tb));
        // Several batch dimensions; single matrices given as all-ones batch dimensions;
        // leading ones on a batched operand.
        cases.push(Case::new(5, 6, 7).batch(&[2, 3], &[1, 1], &[2, 3]).trans(ta, tb));
        cases.push(Case::new(5, 6, 7).batch(&[1, 3], &[3], &[3]).trans(ta, tb));
        // One row per batch item: batched GEMV, and GEMM after folding the rows.
        cases.push(Case::new(1, 40, 50).batch(&[4], &[4], &[4]).trans(ta, tb));
        cases.push(Case::new(1, 40, 50).batch(&[4], &[], &[4]).trans(ta, tb));
        cases.push(Case::new(1, 40, 50).batch(&[], &[4], &[4]).trans(ta, tb));
    }
    cases.push(Case::new(9, 10, 11).batch(&[3], &[3], &[3]).scale(0.5, 2.0).path(MatmulPath::Gemm64));
    cases.push(Case::new(9, 10, 11).batch(&[3], &[3], &[3]).scale(0.5, 2.0).path(MatmulPath::Gemm128));
    cases.push(Case::new(70, 10, 11).batch(&[3], &[], &[3]).trans(true, false).path(MatmulPath::Gemm128));
    check_all(&rt, &cases, 5);
}

#[test]
fn the_kernel_choice() {
    let rt = runtime();
    let path = |a: &[usize], b: &[usize], c: &[usize], tb: bool| {
        let t = |s: &[usize]| Tensor::zeros(&rt, s, DType::F32).unwrap();
        Matmul::new(&t(a), &t(b), &t(c)).unwrap().transpose_b(tb).chosen_path().unwrap()
    };
    assert_eq!(path(&[1, 64], &[64, 100], &[1, 100], false), MatmulPath::Gemv);
    assert_eq!(path(&[1, 64], &[100, 64], &[1, 100], true), MatmulPath::Gemv);
    assert_eq!(path(&[3, 1, 64], &[3, 64, 100], &[3, 1, 100], false), MatmulPath::Gemv);
    // A batch of rows against one weight is one GEMM with M = batch.
    assert_eq!(path(&[8, 1, 64], &[100, 64], &[8, 1, 100], true), MatmulPath::Gemm32);
    assert_eq!(path(&[2, 64], &[64, 100], &[2, 100], false), MatmulPath::Gemm32);
    assert_eq!(path(&[512, 64], &[64, 1024], &[512, 1024], false), MatmulPath::Gemm64);
    // 48 output tiles of 128 x 128 or more: the register-blocked kernel.
    assert_eq!(path(&[1024, 64], &[64, 1024], &[1024, 1024], false), MatmulPath::Gemm128);
    assert_eq!(path(&[2048, 64], &[64, 1024], &[2048, 1024], false), MatmulPath::Gemm128);
    assert_eq!(path(&[8, 256, 64], &[64, 1024], &[8, 256, 1024], false), MatmulPath::Gemm128);
    // Few output tiles and a long K: split-K (the linear layers of a small encoder), over
    // 64 x 64 tiles below K = 1024, else over 128 x 128 ones.
    assert_eq!(path(&[40, 384], &[1152, 384], &[40, 1152], true), MatmulPath::SplitK64);
    assert_eq!(path(&[40, 1536], &[384, 1536], &[40, 384], true), MatmulPath::SplitK);
    assert_eq!(path(&[32, 40, 384], &[384, 384], &[32, 40, 384], true), MatmulPath::SplitK64);
    assert_eq!(path(&[1280, 384], &[384, 384], &[1280, 384], true), MatmulPath::SplitK64);
    assert_eq!(path(&[1280, 1536], &[384, 1536], &[1280, 384], true), MatmulPath::SplitK);
    assert_eq!(path(&[8, 1, 300], &[100, 300], &[8, 1, 100], true), MatmulPath::SplitK64);
    assert_eq!(path(&[2048, 1536], &[384, 1536], &[2048, 384], true), MatmulPath::SplitK);
    // Enough tiles, or too short a K, and it does not split.
    assert_eq!(path(&[2048, 384], &[1536, 384], &[2048, 1536], true), MatmulPath::Gemm128);
    assert_eq!(path(&[1280, 384], &[1152, 384], &[1280, 1152], true), MatmulPath::Gemm128);
    assert_eq!(path(&[4096, 4096], &[4096, 4096], &[4096, 4096], false), MatmulPath::Gemm128);
    assert_eq!(path(&[40, 200], &[1152, 200], &[40, 1152], true), MatmulPath::Gemm32);
    // f16 takes the cooperative kernel where the adapter has it.
    if rt.context().caps().shader_f16() {
        let h = |s: &[usize]| Tensor::zeros(&rt, s, DType::F16).unwrap();
        let chosen = Matmul::new(&h(&[1024, 64]), &h(&[64, 1024]), &h(&[1024, 1024])).unwrap().chosen_path().unwrap();
        let want = if cooperative_available(rt.context()) { MatmulPath::Cooperative } else { MatmulPath::Gemm128 };
        assert_eq!(chosen, want);
    }
}

/// The register-blocked kernel (128 x 128 tiles, 8 x 8 per invocation): odd sizes around its
/// tile and K-step, every transpose, both K-steps, with and without wgpu's runtime checks.
#[test]
fn register_blocked_kernel() {
    let rt = runtime();
    let t = |s: &[usize]| Tensor::zeros(&rt, s, DType::F32).unwrap();
    let wide =
        |bk| Matmul::new(&t(&[2, 3]), &t(&[3, 2]), &t(&[2, 2])).unwrap().path(MatmulPath::Gemm128).wide_k_step(bk);
    // A K-step of 16 needs 34 KiB of workgroup memory (lavapipe has 32): where it is missing,
    // asking for it is Unsupported (and the default is 8).
    let steps: &[u32] = if rt.context().caps().limits.max_compute_workgroup_storage_size >= 34 * 1024 {
        &[8, 16]
    } else {
        assert!(matches!(wide(16).validate(), Err(Error::Unsupported { .. })));
        &[8]
    };
    let mut cases = Vec::new();
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for &bk in steps {
            let case = |m, n, k| Case::new(m, n, k).trans(ta, tb).path(MatmulPath::Gemm128).bk(bk);
            cases.push(case(1, 1, 1));
            cases.push(case(7, 13, 31));
            cases.push(case(129, 131, 17));
            cases.push(case(63, 257, 40).scale(0.5, -1.5));
            cases.push(case(257, 65, 9).checked());
        }
    }
    for &m in &[1usize, 13, 127, 128, 200] {
        for &k in &[1usize, 8, 16, 33] {
            cases.push(Case::new(m, 130, k).path(MatmulPath::Gemm128));
        }
    }
    cases.push(Case::new(300, 260, 100).path(MatmulPath::Gemm128).trans(false, true).checked().bk(8));
    cases.push(Case::new(20, 30, 40).path(MatmulPath::Gemm128).batch(&[2, 2], &[2, 2], &[2, 2]).trans(true, true));
    cases.push(Case::new(6, 5, 4).batch(&[2], &[], &[2]).path(MatmulPath::Gemm128).offset().trans(true, false));
    check_all(&rt, &cases, 15);
    // The old kernel with the runtime checks, for the record.
    check_all(&rt, &[Case::new(70, 66, 20).path(MatmulPath::Gemm64).checked().trans(false, true)], 16);
    // K-steps other than 8 and 16 are refused.
    assert!(matches!(wide(4).validate(), Err(Error::InvalidArgument { .. })));
}

/// Split-K: K cut into slices (whole K-steps; the last one short where K is not a multiple),
/// partial sums reduced by a second kernel that applies alpha and beta: odd sizes, every
/// transpose, slice counts from 1 to more than K-steps exist, batches (folded and not),
/// offsets, K = 0, with and without wgpu's runtime checks, and the choice by shape.
#[test]
fn split_k_kernel() {
    let rt = runtime();
    let mut cases = Vec::new();
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let case = |m, n, k, s| Case::new(m, n, k).trans(ta, tb).split(s);
        cases.push(case(1, 1, 1, 2));
        cases.push(case(7, 13, 31, 3));
        cases.push(case(40, 70, 257, 5).scale(0.5, -1.5));
        cases.push(case(129, 131, 37, 3));
        cases.push(case(13, 7, 63, 4).offset().scale(1.0, 0.5));
        cases.push(case(20, 30, 40, 2).batch(&[2], &[2], &[2]));
        cases.push(case(20, 30, 40, 3).batch(&[3], &[], &[3]).scale(-1.0, 0.25));
        // M and N of 64 or more: f16 splits the cooperative kernel where the adapter has it.
        cases.push(case(65, 70, 100, 3).scale(1.0, 0.5));
        cases.push(case(64, 96, 80, 2).batch(&[2], &[2], &[2]));
        // Over 64 x 64 tiles.
        let case64 = |m, n, k, s| Case::new(m, n, k).trans(ta, tb).split(s).path(MatmulPath::SplitK64);
        cases.push(case64(1, 1, 1, 2));
        cases.push(case64(7, 13, 31, 3));
        cases.push(case64(70, 130, 257, 5).scale(0.5, -1.5));
        cases.push(case64(13, 7, 63, 4).offset().scale(1.0, 0.5));
        cases.push(case64(20, 30, 40, 3).batch(&[3], &[], &[3]));
        cases.push(case64(20, 30, 40, 2).batch(&[2], &[2], &[2]).checked());
    }
    // More slices than K-steps (K = 24: three steps of 8), one slice, and a slice per K-step.
    cases.push(Case::new(31, 63, 24).split(7).trans(false, true));
    cases.push(Case::new(31, 63, 24).split(1).trans(false, true).scale(2.0, 1.0));
    cases.push(Case::new(31, 63, 64).split(8).trans(false, true));
    // K = 0: C = beta * C.
    cases.push(Case::new(5, 6, 0).split(3).scale(1.0, 0.5));
    cases.push(Case::new(50, 40, 100).split(4).checked().trans(false, true));
    cases.push(Case::new(6, 5, 40).batch(&[2, 2], &[2, 2], &[2, 2]).split(2).offset().trans(true, false));
    // Chosen by shape (Auto): 40 rows against a [200, 512] weight (over 64 x 64 tiles) and a
    // [130, 1100] one (over 128 x 128 tiles).
    cases.push(Case::new(40, 200, 512).trans(false, true).scale(1.0, 0.5));
    cases.push(Case::new(40, 130, 1100).trans(false, true));
    check_all(&rt, &cases, 20);
    let t = |s: &[usize]| Tensor::zeros(&rt, s, DType::F32).unwrap();
    let op = Matmul::new(&t(&[40, 512]), &t(&[200, 512]), &t(&[40, 200])).unwrap().transpose_b(true);
    assert_eq!(op.chosen_path().unwrap(), MatmulPath::SplitK64);
    // Two dispatches (the slices, the reduction); one slice is the plain register-blocked kernel.
    let mut cb = rt.command_buffer().unwrap();
    cb.record(&op).unwrap();
    assert_eq!(cb.dispatches(), 2);
    cb.record(&op.clone().path(MatmulPath::SplitK).split_k(1)).unwrap();
    assert_eq!(cb.dispatches(), 3);
    cb.record(&op.clone().path(MatmulPath::SplitK64).split_k(3)).unwrap();
    assert_eq!(cb.dispatches(), 5);
    cb.record(&op.clone().path(MatmulPath::SplitK64).split_k(1)).unwrap();
    assert_eq!(cb.dispatches(), 6);
    cb.commit().unwrap();
    cb.wait().unwrap();
}

/// The cooperative-matrix (tensor core) path: on an adapter that has it, f16 products against
/// the f64 reference at odd sizes, transposes, batches, offsets and scales; on one that lacks
/// it, asking for it returns `Unsupported`. f32 operands are refused either way (the kernel
/// rounds its operands to f16).
#[test]
fn cooperative_matrix_path() {
    let rt = runtime();
    let t = |s: &[usize], dtype| Tensor::zeros(&rt, s, dtype).unwrap();
    let op = |dtype| {
        Matmul::new(&t(&[2, 3], dtype), &t(&[3, 2], dtype), &t(&[2, 2], dtype)).unwrap().path(MatmulPath::Cooperative)
    };
    assert!(matches!(op(DType::F32).validate(), Err(Error::InvalidArgument { op: "matmul", .. })));
    if !rt.context().caps().shader_f16() {
        assert!(!cooperative_available(rt.context()));
        return;
    }
    if !cooperative_available(rt.context()) {
        let err = op(DType::F16).validate().unwrap_err();
        assert!(matches!(err, Error::Unsupported { op: "matmul", .. }), "{err}");
        assert!(matches!(rt.record(&op(DType::F16)), Err(Error::Unsupported { .. })));
        eprintln!("{}: no cooperative matrices; checked the Unsupported error", rt.context().adapter_info().name);
        return;
    }
    let mut cases = Vec::new();
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let case = |m, n, k| Case::new(m, n, k).trans(ta, tb).path(MatmulPath::Cooperative);
        cases.push(case(1, 1, 1));
        cases.push(case(7, 13, 31));
        cases.push(case(129, 131, 17));
        cases.push(case(63, 257, 40).scale(0.5, -1.5));
        cases.push(case(256, 128, 96));
        cases.push(case(13, 7, 33).offset().scale(1.0, 0.5));
        cases.push(case(20, 30, 40).batch(&[3], &[], &[3]));
        cases.push(case(20, 30, 40).batch(&[2], &[2], &[2]));
    }
    let mut rng = Rng::new(17);
    let worst = cases.iter().map(|case| check(&rt, DType::F16, case, &mut rng)).fold(0.0, f64::max);
    eprintln!("cooperative f16: largest error {:.1}% of the tolerance", 100.0 * worst);
    // Auto takes it for f16.
    let h = |s: &[usize]| t(s, DType::F16);
    let chosen = Matmul::new(&h(&[256, 64]), &h(&[64, 256]), &h(&[256, 256])).unwrap().chosen_path().unwrap();
    assert_eq!(chosen, MatmulPath::Cooperative);
}

/// Large products on every GEMM path against the f64 reference (slow on a CPU adapter: run
/// with `--ignored` on a GPU).
#[test]
#[ignore = "large shapes: run on a GPU with --ignored"]
fn large_shapes_on_every_path() {
    let rt = runtime();
    let mut cases = Vec::new();
    for path in [MatmulPath::Auto, MatmulPath::Gemm64, MatmulPath::Gemm128, MatmulPath::SplitK, MatmulPath::SplitK64] {
        cases.push(Case::new(2048, 1536, 384).path(path));
        cases.push(Case::new(1000, 1030, 1100).path(path).trans(false, true).scale(1.0, 0.5));
        cases.push(Case::new(515, 1025, 700).path(path).trans(true, false).bk(8));
        cases.push(Case::new(8 * 128, 1536, 384).batch(&[2], &[], &[2]).path(path).trans(false, true));
    }
    cases.push(Case::new(1, 11008, 4096).trans(false, true));
    check_all(&rt, &cases, 18);
    if cooperative_available(rt.context()) {
        let mut rng = Rng::new(19);
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for (m, n, k) in [(2048, 1536, 384), (1000, 1030, 1100)] {
                let case = Case::new(m, n, k).trans(ta, tb).path(MatmulPath::Cooperative);
                let worst = check(&rt, DType::F16, &case, &mut rng);
                eprintln!(
                    "cooperative f16 {m}x{n}x{k} {ta} {tb}: largest error {:.1}% of the tolerance",
                    100.0 * worst
                );
            }
        }
    }
}

/// Times every GEMM variant on the shapes of the brief (GPU timestamps around one command
/// buffer of iterations); prints, asserts nothing but that they run. `--ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run on a GPU with --ignored --nocapture"]
fn timings_of_every_variant() {
    let rt = runtime();
    let ctx = rt.context();
    println!("adapter: {:?}", ctx.adapter_info());
    println!(
        "cooperative matrix feature: {}, path available: {}",
        ctx.caps().cooperative_matrix(),
        cooperative_available(ctx)
    );
    let instance = metallic::wgpu::Instance::new(metallic::wgpu::InstanceDescriptor::new_without_display_handle());
    for adapter in pollster::block_on(instance.enumerate_adapters(metallic::wgpu::Backends::VULKAN)) {
        println!(
            "{}: cooperative matrix configurations {:?}",
            adapter.get_info().name,
            adapter.cooperative_matrix_properties()
        );
    }
    let time = |op: &Matmul, iters: usize| -> f64 {
        rt.synchronize().unwrap();
        let mut cb = rt.command_buffer().unwrap();
        for _ in 0..3 {
            cb.record(op).unwrap();
        }
        cb.commit().unwrap();
        cb.wait().unwrap();
        cb.enable_gpu_timing().unwrap();
        for _ in 0..iters {
            cb.record(op).unwrap();
        }
        cb.commit().unwrap();
        cb.wait().unwrap();
        cb.gpu_time().unwrap().unwrap().as_secs_f64() / iters as f64
    };
    // (name, path, checked, K-step (0: default), vec4 loads)
    type Variant = (&'static str, MatmulPath, bool, u32, bool);
    let variants: &[Variant] = &[
        ("auto", MatmulPath::Auto, false, 0, true),
        ("gemm64 checked", MatmulPath::Gemm64, true, 0, true),
        ("gemm64 trusted", MatmulPath::Gemm64, false, 0, true),
        ("gemm32 trusted", MatmulPath::Gemm32, false, 0, true),
        ("gemm128 bk8 checked", MatmulPath::Gemm128, true, 8, true),
        ("gemm128 bk8", MatmulPath::Gemm128, false, 8, true),
        ("gemm128 bk8 scalar", MatmulPath::Gemm128, false, 8, false),
        ("gemm128 bk16 checked", MatmulPath::Gemm128, true, 16, true),
        ("gemm128 bk16", MatmulPath::Gemm128, false, 16, true),
        ("gemm128 bk16 scalar", MatmulPath::Gemm128, false, 16, false),
        ("cooperative", MatmulPath::Cooperative, false, 0, true),
        ("split-k", MatmulPath::SplitK, false, 0, true),
        ("split-k 64", MatmulPath::SplitK64, false, 0, true),
    ];
    // (batch, m, n, k, transpose_b, iterations)
    let shapes = [
        (1usize, 4096usize, 4096usize, 4096usize, false, 10usize),
        (1, 4096, 4096, 4096, true, 10),
        (1, 2048, 1536, 384, false, 50),
        (1, 2048, 1536, 384, true, 50),
        (8, 128, 1536, 384, true, 50),
        (4, 512, 384, 1536, true, 50),
        (1, 1024, 1024, 1024, false, 50),
        (1, 256, 4096, 4096, true, 20),
        (1, 1, 11008, 4096, true, 200),
        // The linear layers of a MiniLM encoder: 40 tokens, and a batch of 32 sentences.
        (1, 40, 1152, 384, true, 200),
        (1, 40, 384, 1536, true, 200),
        (32, 40, 384, 384, true, 200),
        (32, 40, 384, 1536, true, 100),
    ];
    for dtype in float_dtypes(&rt) {
        for &(batch, m, n, k, tb, iters) in &shapes {
            let a = Tensor::random_uniform(&rt, [batch, m, k], dtype, -1.0, 1.0, 1).unwrap();
            let b_dims = if tb { [n, k] } else { [k, n] };
            let b = Tensor::random_uniform(&rt, b_dims, dtype, -1.0, 1.0, 2).unwrap();
            let c = Tensor::empty(&rt, [batch, m, n], dtype).unwrap();
            let flops = 2.0 * (batch * m * n * k) as f64;
            let mut line = format!("{dtype} [{batch},{m},{k}]x{b_dims:?}{}:", if tb { "^T" } else { "" });
            for &(name, path, checked, bk, vec) in variants {
                let op = Matmul::new(&a, &b, &c).unwrap().transpose_b(tb).path(path).checked(checked).vector_loads(vec);
                let op = if bk == 0 { op } else { op.wide_k_step(bk) };
                if op.validate().is_err() {
                    continue;
                }
                let chosen = op.chosen_path().unwrap();
                let t = time(&op, iters);
                line += &format!("\n    {name:<22} ({chosen:?}) {:.4} ms {:.1} TFLOP/s", t * 1e3, flops / t / 1e12);
            }
            println!("{line}");
        }
    }
}

#[test]
fn operands_at_offsets() {
    let rt = runtime();
    let mut cases = Vec::new();
    for (ta, tb) in [(false, false), (true, true), (false, true)] {
        cases.push(Case::new(13, 7, 31).trans(ta, tb).offset());
        cases.push(Case::new(13, 7, 31).trans(ta, tb).offset().path(MatmulPath::Gemm64).scale(1.0, 0.5));
        cases.push(Case::new(13, 7, 31).trans(ta, tb).offset().path(MatmulPath::Gemm128).scale(1.0, 0.5));
        cases.push(Case::new(1, 33, 65).trans(ta, tb).offset()); // GEMV
        cases.push(Case::new(1, 33, 65).trans(ta, tb).offset().scale(-1.0, 1.0));
        cases.push(Case::new(6, 5, 4).batch(&[2], &[], &[2]).trans(ta, tb).offset());
    }
    check_all(&rt, &cases, 6);

    // Views from `get_batch` of batched tensors: item 1 of each.
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(7);
        let (a, av) = upload(&rt, &[3, 5, 9], dtype, &rng.vec(135, -1.0, 1.0));
        let (b, bv) = upload(&rt, &[3, 9, 7], dtype, &rng.vec(189, -1.0, 1.0));
        let c = poisoned(&rt, &[3, 5, 7], dtype);
        let (a1, b1, c1) = (a.get_batch(1).unwrap(), b.get_batch(1).unwrap(), c.get_batch(1).unwrap());
        rt.record(&Matmul::new(&a1, &b1, &c1).unwrap()).unwrap();
        let got = c.to_vec_f32().unwrap();
        let want: Vec<f64> =
            (0..35).map(|idx| (0..9).map(|p| av[45 + (idx / 7) * 9 + p] * bv[63 + p * 7 + idx % 7]).sum()).collect();
        assert_close(&got[35..70], &want, 1e-2, &format!("{dtype} get_batch view"));
        assert!(got[..35].iter().chain(&got[70..]).all(|v| v.is_nan()), "{dtype}: wrote outside the view");
    }
}

#[test]
fn gemv_for_one_row_in_both_weight_layouts() {
    let rt = runtime();
    let mut cases = Vec::new();
    for tb in [true, false] {
        for k in [1usize, 7, 64, 513, 2000, 4099] {
            for n in [1usize, 5, 33, 300] {
                cases.push(Case::new(1, n, k).trans(false, tb));
            }
        }
        cases.push(Case::new(1, 300, 4099).trans(true, tb).batch(&[2], &[2], &[2]));
        // The same shapes through the GEMM, for the record.
        cases.push(Case::new(1, 300, 513).trans(false, tb).path(MatmulPath::Gemm32));
        // Wide outputs: 32 columns a workgroup for [K, N]; more column groups than one grid
        // dimension holds (65,535) for [N, K].
        cases.push(Case::new(1, 32_768 + 5, 70).trans(false, tb));
    }
    cases.push(Case::new(1, 4 * 65_535 + 9, 2).trans(false, true));
    check_all(&rt, &cases, 8);
}

#[test]
fn batches_beyond_one_grid_dimension() {
    let rt = runtime();
    // The grid's z holds 65,535 batch items; workgroups loop over the rest (f32 only: the
    // dtype does not change the grid).
    let batch = 65_535 + 3;
    let mut rng = Rng::new(14);
    for case in [
        Case::new(2, 3, 2).batch(&[batch], &[batch], &[batch]).path(MatmulPath::Gemm32),
        Case::new(1, 3, 2).batch(&[batch], &[batch], &[batch]).trans(false, true),
    ] {
        check(&rt, DType::F32, &case, &mut rng);
    }
}

#[test]
fn both_param_paths_and_both_reduction_flavours() {
    let mut runtimes = runtimes();
    runtimes.extend(reduction_runtimes());
    for rt in &runtimes {
        let cases = [
            Case::new(37, 41, 43).trans(false, true).scale(1.0, 0.5),
            Case::new(70, 66, 20).path(MatmulPath::Gemm64).batch(&[2], &[], &[2]),
            Case::new(70, 66, 20).path(MatmulPath::Gemm128).batch(&[2], &[], &[2]).scale(1.0, 0.5),
            Case::new(1, 50, 700).trans(false, true),
            Case::new(1, 50, 70).trans(false, false).scale(2.0, -1.0),
        ];
        check_all(rt, &cases, 9);
    }
}

#[test]
fn random_shapes_and_flags() {
    let rt = runtime();
    let mut rng = Rng::new(10);
    let mut pick = |choices: &[usize]| choices[(rng.next_u64() % choices.len() as u64) as usize];
    let mut cases = Vec::new();
    for _ in 0..20 {
        let m = pick(&[1, 2, 5, 16, 33, 64, 97]);
        let n = pick(&[1, 3, 8, 31, 64, 100]);
        let k = pick(&[1, 4, 17, 64, 129, 300]);
        let batch = pick(&[1, 2, 3]);
        let (ab, bb) = match pick(&[0, 1, 2]) {
            0 => (vec![batch], vec![batch]),
            1 => (vec![batch], vec![]),
            _ => (vec![], vec![batch]),
        };
        let paths = [
            MatmulPath::Auto,
            MatmulPath::Gemm32,
            MatmulPath::Gemm64,
            MatmulPath::Gemm128,
            MatmulPath::SplitK,
            MatmulPath::SplitK64,
        ];
        let path = paths[pick(&[0, 1, 2, 3, 4, 5])];
        let (alpha, beta) = [(1.0, 0.0), (0.5, 1.5), (-1.0, 0.25)][pick(&[0, 1, 2])];
        let mut case = Case::new(m, n, k)
            .batch(&ab, &bb, &[batch])
            .trans(pick(&[0, 1]) == 1, pick(&[0, 1]) == 1)
            .scale(alpha, beta)
            .path(path);
        case.offset = pick(&[0, 1]) == 1;
        cases.push(case);
    }
    check_all(&rt, &cases, 11);
}

#[test]
fn zero_sized_dimensions() {
    let rt = runtime();
    // K = 0: the product is empty, C = beta * C.
    let cases = [Case::new(5, 6, 0).scale(1.0, 0.5), Case::new(5, 6, 0), Case::new(1, 6, 0).scale(1.0, 2.0)];
    check_all(&rt, &cases, 12);
    // M = 0, N = 0 or an empty batch: nothing to do.
    for (a, b, c) in [
        (vec![0, 4], vec![4, 3], vec![0, 3]),
        (vec![2, 4], vec![4, 0], vec![2, 0]),
        (vec![0, 2, 4], vec![4, 3], vec![0, 2, 3]),
    ] {
        let t = |s: &[usize]| Tensor::zeros(&rt, s, DType::F32).unwrap();
        rt.record(&Matmul::new(&t(&a), &t(&b), &t(&c)).unwrap()).unwrap();
        assert_eq!(t(&a).matmul(&t(&b)).unwrap().dims(), c.as_slice());
    }
    rt.synchronize().unwrap();
}

/// Shapes of A and B, whether B is transposed, and the expected shape of the product.
type ShapeCase<'a> = (&'a [usize], &'a [usize], bool, &'a [usize]);

#[test]
fn tensor_methods_broadcast_batch_dimensions() {
    let rt = runtime();
    let mut rng = Rng::new(13);
    let mut t = |s: &[usize]| {
        let n = s.iter().product();
        upload(&rt, s, DType::F32, &rng.vec(n, -1.0, 1.0)).0
    };
    let cases: &[ShapeCase] = &[
        (&[4, 5], &[5, 6], false, &[4, 6]),
        (&[2, 4, 5], &[5, 6], false, &[2, 4, 6]),
        (&[4, 5], &[2, 5, 6], false, &[2, 4, 6]),
        (&[2, 3, 4, 5], &[2, 3, 5, 6], false, &[2, 3, 4, 6]),
        (&[2, 3, 4, 5], &[1, 1, 5, 6], false, &[2, 3, 4, 6]),
        (&[1, 4, 5], &[5, 6], false, &[1, 4, 6]),
        (&[2, 4, 5], &[6, 5], true, &[2, 4, 6]),
        (&[1, 5], &[6, 5], true, &[1, 6]),
    ];
    for &(a_shape, b_shape, transposed, want) in cases {
        let (a, b) = (t(a_shape), t(b_shape));
        let out = if transposed { a.matmul_t(&b).unwrap() } else { a.matmul(&b).unwrap() };
        assert_eq!(out.dims(), want, "{a_shape:?} x {b_shape:?}");
        // Same values as the op with an explicit C.
        let c = poisoned(&rt, want, DType::F32);
        rt.record(&Matmul::new(&a, &b, &c).unwrap().transpose_b(transposed)).unwrap();
        assert_eq!(out.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap(), "{a_shape:?} x {b_shape:?}");
    }
    // Batch dimensions either agree (leading ones aside) or hold one matrix: no partial
    // broadcasting.
    for (a, b) in [(&[2, 4, 5][..], &[3, 5, 6][..]), (&[2, 3, 4, 5], &[3, 5, 6]), (&[2, 3, 4, 5], &[2, 1, 5, 6])] {
        assert!(matches!(t(a).matmul(&t(b)), Err(Error::ShapeMismatch { op: "matmul", .. })), "{a:?} x {b:?}");
    }
}

#[test]
fn errors() {
    let rt = runtime();
    let t = |s: &[usize]| Tensor::zeros(&rt, s, DType::F32).unwrap();
    let record = |op: Matmul| rt.record(&op);

    // Inner dimensions differ.
    let err = Matmul::new(&t(&[2, 3]), &t(&[4, 2]), &t(&[2, 2])).unwrap().validate().unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { op: "matmul", lhs, rhs } if lhs == &[2, 3] && rhs == &[4, 2]),
        "{err}"
    );
    assert!(matches!(t(&[2, 3]).matmul(&t(&[4, 2])), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(t(&[2, 3]).matmul_t(&t(&[2, 4])), Err(Error::ShapeMismatch { .. })));
    // The transposes change which dimensions must agree.
    let op = Matmul::new(&t(&[3, 2]), &t(&[2, 3]), &t(&[2, 2])).unwrap();
    assert!(matches!(op.clone().validate(), Err(Error::ShapeMismatch { .. })));
    op.clone().transpose_a(true).transpose_b(true).validate().unwrap();
    // C of the wrong shape (matrix or batch).
    for c in [&[2, 3][..], &[3, 2], &[2, 2, 3]] {
        let err = record(Matmul::new(&t(&[2, 3]), &t(&[3, 2]), &t(c)).unwrap()).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "C {c:?}: {err}");
    }
    // Incompatible batch dimensions.
    for (a, b, c) in [
        (&[2, 2, 3][..], &[3, 3, 2][..], &[2, 2, 2][..]),
        (&[3, 2, 3], &[3, 2], &[2, 2, 2]),
        (&[2, 3, 2, 3], &[3, 2], &[3, 2, 2, 2]),
    ] {
        let err = record(Matmul::new(&t(a), &t(b), &t(c)).unwrap()).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{a:?} {b:?} {c:?}: {err}");
    }
    // Dtypes: mixed, and u32.
    if rt.context().caps().shader_f16() {
        let h = Tensor::zeros(&rt, [3, 2], DType::F16).unwrap();
        let err = Matmul::new(&t(&[2, 3]), &h, &t(&[2, 2])).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::F16, .. }), "{err}");
        let hc = Tensor::zeros(&rt, [2, 2], DType::F16).unwrap();
        let err = Matmul::new(&t(&[2, 3]), &t(&[3, 2]), &hc).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
    }
    let ids = |s: &[usize]| Tensor::zeros(&rt, s, DType::U32).unwrap();
    let err = Matmul::new(&ids(&[2, 3]), &ids(&[3, 2]), &ids(&[2, 2])).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { got: DType::U32, .. }), "{err}");
    assert!(matches!(ids(&[2, 3]).matmul(&ids(&[3, 2])), Err(Error::DTypeMismatch { .. })));
    // Rank below 2.
    for (a, b, c) in [(&[3][..], &[3, 2][..], &[2][..]), (&[2, 3], &[3], &[2]), (&[2, 3], &[3, 2], &[4])] {
        let err = Matmul::new(&t(a), &t(b), &t(c)).unwrap_err();
        assert!(matches!(err, Error::InvalidShape { op: "matmul", .. }), "{a:?} {b:?} {c:?}: {err}");
    }
    assert!(matches!(t(&[3]).matmul(&t(&[3, 2])), Err(Error::InvalidShape { .. })));
    // Non-finite alpha or beta.
    for (alpha, beta) in [(f32::NAN, 0.0), (f32::INFINITY, 0.0), (1.0, f32::NEG_INFINITY), (1.0, f32::NAN)] {
        let op = Matmul::new(&t(&[2, 3]), &t(&[3, 2]), &t(&[2, 2])).unwrap().alpha(alpha).beta(beta);
        assert!(matches!(record(op), Err(Error::InvalidArgument { op: "matmul", .. })), "{alpha} {beta}");
    }
    // The GEMV path needs one row.
    let op = Matmul::new(&t(&[2, 3]), &t(&[3, 2]), &t(&[2, 2])).unwrap().path(MatmulPath::Gemv);
    assert!(matches!(record(op), Err(Error::InvalidArgument { .. })));
    // C may not overlap an input.
    let a = t(&[4, 4]);
    let err = record(Matmul::new(&a, &t(&[4, 4]), &a).unwrap()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let whole = t(&[8, 4]);
    let (top, bottom) = (whole.narrow(0, 4).unwrap(), whole.narrow(4, 4).unwrap());
    record(Matmul::new(&top, &t(&[4, 4]), &bottom).unwrap()).unwrap(); // disjoint views are fine
    let err = record(Matmul::new(&top, &t(&[4, 4]), &whole.narrow(2, 4).unwrap()).unwrap()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // Tensors of different runtimes.
    let other = runtime();
    let foreign = Tensor::zeros(&other, [3, 2], DType::F32).unwrap();
    assert!(t(&[2, 3]).matmul(&foreign).unwrap_err().to_string().contains("different"));
    rt.synchronize().unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, failure_persistence: None, ..Default::default() })]

    /// Random shapes, transposes, scales and batch layouts against the f64 reference.
    #[test]
    fn property_random_gemm_matches_reference(
        m in 1usize..80, n in 1usize..80, k in 1usize..150,
        ta: bool, tb: bool, beta_on: bool, layout in 0usize..3, batch in 1usize..3, f16: bool, seed: u64,
    ) {
        let rt = runtime();
        let dtype = if f16 && rt.context().caps().shader_f16() { DType::F16 } else { DType::F32 };
        let (ab, bb) = match layout {
            0 => (vec![batch], vec![batch]),
            1 => (vec![batch], vec![]),
            _ => (vec![], vec![batch]),
        };
        let case = Case::new(m, n, k).trans(ta, tb).batch(&ab, &bb, &[batch]).scale(0.75, if beta_on { 0.5 } else { 0.0 });
        check(&rt, dtype, &case, &mut Rng::new(seed));
    }
}
