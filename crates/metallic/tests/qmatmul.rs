//! Quantized weights: the CPU decoder against gguf-py's (fixtures), and the GPU matmul and
//! embedding kernels against CPU decode-then-f64 references, for every type, GEMV, row GEMV
//! (CPU adapters) and GEMM, f32 and f16 activations, views at offsets, matrices split into
//! parts, and the errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{Rng, float_dtypes, poisoned, runtime, upload};
use metallic::kernels::gated::{Gated, GatedAct};
use metallic::kernels::matmul::cooperative_available;
use metallic::kernels::qmatmul::{QEmbedding, QMatmul, QMatmulPath, QuantMatrix, QuantizeQ8};
use metallic::quant::{QuantType, dequantize};
use metallic::{DType, Error, Operation, Runtime, Tensor};

const TYPES: [QuantType; 15] = [
    QuantType::F32,
    QuantType::F16,
    QuantType::BF16,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q8_0,
    QuantType::Q4K,
    QuantType::Q5K,
    QuantType::Q6K,
    QuantType::Q2K,
    QuantType::Q3K,
    QuantType::IQ4NL,
    QuantType::IQ4XS,
];

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Distance in units in the last place between two finite f32.
fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let bits = x.to_bits() as i32;
        if bits < 0 { i32::MIN.wrapping_sub(bits) } else { bits }
    };
    key(a).wrapping_sub(key(b)).unsigned_abs()
}

#[test]
fn cpu_dequantize_matches_gguf_py() {
    for ty in TYPES {
        let bytes = fixture(&format!("{}.bin", ty.name()));
        let want: Vec<f32> = fixture(&format!("{}.f32", ty.name()))
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(bytes.len() / ty.block_bytes() * ty.block_elems(), want.len(), "{ty}: fixture sizes");
        let mut got = vec![f32::NAN; want.len()];
        dequantize(ty, &bytes, &mut got).unwrap();
        let worst = got.iter().zip(&want).map(|(&g, &w)| ulps(g, w)).max().unwrap();
        assert!(worst <= 1, "{ty}: {worst} ulps from gguf-py");
        eprintln!("{ty}: largest difference from gguf-py {worst} ulps");
        assert!(want.iter().any(|&w| w != 0.0), "{ty}: fixture of zeros");
    }
}

#[test]
fn cpu_dequantize_rejects_bad_lengths_and_types() {
    let bad = |r: metallic::Result<()>| matches!(r, Err(Error::InvalidArgument { .. }));
    // Every block type: a byte past a whole block, an output a weight short.
    for ty in TYPES.into_iter().filter(|t| t.block_elems() > 1) {
        let (bb, be) = (ty.block_bytes(), ty.block_elems());
        assert!(bad(dequantize(ty, &vec![0u8; bb + 1], &mut vec![0.0; be])), "{ty}");
        assert!(bad(dequantize(ty, &vec![0u8; bb], &mut vec![0.0; be - 1])), "{ty}");
        assert!(dequantize(ty, &vec![0u8; bb], &mut vec![0.0; be]).is_ok(), "{ty}");
    }
    assert!(bad(dequantize(QuantType::Q8K, &[0u8; 292], &mut vec![0.0; 256])));
}

/// Byte offsets of the f16 scale fields of a block.
fn f16_fields(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 | QuantType::IQ4NL | QuantType::IQ4XS => &[0],
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q6K => &[208],
        _ => &[],
    }
}

/// `rows` random rows of `cols` weights of `ty` in GGML's layout, with sane finite scales.
fn random_matrix(rng: &mut Rng, ty: QuantType, rows: usize, cols: usize) -> Vec<u8> {
    let n = ty.bytes_for(rows * cols).unwrap();
    match ty {
        QuantType::F32 => rng.vec(rows * cols, -1.0, 1.0).iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        QuantType::F16 => {
            rng.vec(rows * cols, -1.0, 1.0).iter().flat_map(|&v| metallic::f16::from_f64(v).to_le_bytes()).collect()
        }
        QuantType::BF16 => rng
            .vec(rows * cols, -1.0, 1.0)
            .iter()
            .flat_map(|&v| (((v as f32).to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        _ => {
            let mut bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                for &at in f16_fields(ty) {
                    let sign = if rng.next_u64().is_multiple_of(2) { 1.0 } else { -1.0 };
                    let d = metallic::f16::from_f64(sign * 10f64.powf(rng.uniform(-3.0, -1.0)));
                    block[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
            bytes
        }
    }
}

fn decoded(ty: QuantType, bytes: &[u8]) -> Vec<f64> {
    let mut out = vec![0.0f32; bytes.len() / ty.block_bytes() * ty.block_elems()];
    dequantize(ty, bytes, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// y = x · wᵀ in f64, and Σ|x w| per output (the scale of its rounding error).
fn reference(x: &[f64], w: &[f64], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; m * n];
    let mut scale = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for t in 0..k {
                let p = x[i * k + t] * w[j * k + t];
                y[i * n + j] += p;
                scale[i * n + j] += p.abs();
            }
        }
    }
    (y, scale)
}

/// |got - want| <= tol * max(Σ|x w|, 1e-3) for every output; returns the largest error relative
/// to that bound's scale.
fn assert_dot_close(got: &[f32], want: &[f64], scale: &[f64], tol: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (f64::from(g) - w).abs() / s.max(1e-3);
        assert!(err <= tol, "{what}: element {i} is {g}, expected {w} (scale {s}, relative error {err:e})");
        worst = worst.max(err);
    }
    worst
}

fn tol(dtype: DType) -> f64 {
    if dtype == DType::F16 { 1e-2 } else { 1e-4 }
}

/// Runs x · wᵀ for x of `m` rows (a view one row into a larger tensor) into a view of a
/// poisoned output, and checks it.
#[allow(clippy::too_many_arguments)]
fn check_product(
    rt: &Runtime,
    rng: &mut Rng,
    w: &QuantMatrix,
    wf: &[f64],
    m: usize,
    dtype: DType,
    configure: &dyn Fn(QMatmul) -> QMatmul,
    what: &str,
) -> f64 {
    let (n, k) = (w.rows(), w.cols());
    let (xbig, xr) = upload(rt, &[m + 2, k], dtype, &rng.vec((m + 2) * k, -1.0, 1.0));
    let x = xbig.narrow(1, m).unwrap();
    let ybig = poisoned(rt, &[m + 1, n], dtype);
    let y = ybig.narrow(1, m).unwrap();
    let op = configure(QMatmul::new(&x, w, &y).unwrap());
    rt.record(&op).unwrap();
    let got = y.to_vec_f32().unwrap();
    let (want, scale) = reference(&xr[k..(m + 1) * k], wf, m, n, k);
    assert!(ybig.narrow(0, 1).unwrap().to_vec_f32().unwrap().iter().all(|v| v.is_nan()), "{what}: wrote outside y");
    assert_dot_close(&got, &want, &scale, tol(dtype), what)
}

#[test]
fn qmatmul_matches_cpu_for_every_type() {
    let rt = runtime();
    let mut rng = Rng::new(6);
    let n = 71;
    let mut worst = [0.0f64; 2];
    for ty in TYPES {
        let ks: &[usize] = match ty.block_elems() {
            1 => &[77, 256],
            32 => &[224, 512],
            _ => &[512],
        };
        for &k in ks {
            let bytes = random_matrix(&mut rng, ty, n, k);
            let w = QuantMatrix::from_bytes(&rt, ty, n, k, &bytes).unwrap();
            assert_eq!((w.rows(), w.cols(), w.parts(), w.quant_type()), (n, k, 1, ty));
            let wf = decoded(ty, &bytes);
            for dtype in float_dtypes(&rt) {
                for m in [1, 3, 67] {
                    let paths: &[QMatmulPath] = if dtype == DType::F32 {
                        &[QMatmulPath::Auto, QMatmulPath::Gemv, QMatmulPath::GemvRows, QMatmulPath::Gemm]
                    } else {
                        &[QMatmulPath::Auto, QMatmulPath::GemvRows]
                    };
                    // The row GEMV takes whole blocks of 32 weights only.
                    for &path in paths.iter().filter(|&&p| p != QMatmulPath::GemvRows || k % 32 == 0) {
                        let what = format!("{ty} K={k} M={m} {dtype} {path:?}");
                        let e = check_product(&rt, &mut rng, &w, &wf, m, dtype, &|op| op.path(path), &what);
                        let slot = usize::from(dtype == DType::F16);
                        worst[slot] = worst[slot].max(e);
                    }
                }
            }
        }
    }
    eprintln!("largest error / sum|x w|: f32 {:e}, f16 {:e}", worst[0], worst[1]);
}

/// The cooperative GEMM's output tiles (`QMatmul::coop_tile`).
const COOP_TILES: [(u32, u32); 4] = [(64, 64), (64, 128), (128, 64), (128, 128)];

/// The GEMM on cooperative matrices (tensor cores), where the adapter has them: every type
/// against the f64 reference within the rounding of x and the weights to f16 (2^-11 each,
/// relative), tiles cut by M and N, every tile shape giving the same bits, and each row of x
/// giving the same bits whether it runs with 129 others or 4 (x read as vectors where K is a
/// multiple of 4, as scalars elsewhere); K split across 1 to 16 workgroups (and as many as the
/// output tiles call for) within the same bound, rows alone again giving their bits among 130
/// for the same split. Elsewhere forcing it is an `Unsupported` error and Auto never takes it;
/// more than 16 splits are refused everywhere.
#[test]
fn cooperative_gemm_matches_cpu() {
    let rt = runtime();
    let mut rng = Rng::new(11);
    let coop = cooperative_available(rt.context());
    let (n, k) = (71, 256);
    let bytes = random_matrix(&mut rng, QuantType::Q4K, n, k);
    let w = QuantMatrix::from_bytes(&rt, QuantType::Q4K, n, k, &bytes).unwrap();
    let x = Tensor::zeros(&rt, [67, k], DType::F32).unwrap();
    let y = Tensor::zeros(&rt, [67, n], DType::F32).unwrap();
    let auto = QMatmul::new(&x, &w, &y).unwrap();
    let forced = auto.clone().path(QMatmulPath::Cooperative);
    let refused = rt.record(&auto.clone().coop_splits(17));
    assert!(matches!(refused, Err(Error::InvalidArgument { .. })), "17 splits: {refused:?}");
    if !coop {
        assert_ne!(auto.chosen_path(), QMatmulPath::Cooperative);
        assert!(matches!(rt.record(&forced), Err(Error::Unsupported { .. })));
        eprintln!("{}: no cooperative matrices; checked the Unsupported error", rt.context().adapter_info().name);
        return;
    }
    assert_eq!(auto.chosen_path(), QMatmulPath::Cooperative);
    let mut worst = 0.0f64;
    for ty in TYPES {
        let ks: &[usize] = match ty.block_elems() {
            1 => &[77, 256],
            32 => &[224, 512],
            _ => &[512],
        };
        for &k in ks {
            let n = 131;
            let bytes = random_matrix(&mut rng, ty, n, k);
            let w = QuantMatrix::from_bytes(&rt, ty, n, k, &bytes).unwrap();
            let wf = decoded(ty, &bytes);
            for dtype in float_dtypes(&rt) {
                let tol = tol(dtype).max(2e-3);
                let m = 130;
                let (x, xr) = upload(&rt, &[m, k], dtype, &rng.vec(m * k, -1.0, 1.0));
                let y = poisoned(&rt, &[m, n], dtype);
                rt.record(&QMatmul::new(&x, &w, &y).unwrap().path(QMatmulPath::Cooperative)).unwrap();
                let got = y.to_vec_f32().unwrap();
                let (want, scale) = reference(&xr, &wf, m, n, k);
                let what = format!("{ty} K={k} M={m} {dtype} cooperative");
                worst = worst.max(assert_dot_close(&got, &want, &scale, tol, &what));
                // Every tile shape: the same bits.
                for (bm, bn) in COOP_TILES {
                    let yt = poisoned(&rt, &[m, n], dtype);
                    let op = QMatmul::new(&x, &w, &yt).unwrap().path(QMatmulPath::Cooperative).coop_tile(bm, bn);
                    rt.record(&op).unwrap();
                    let tiled = yt.to_vec_f32().unwrap();
                    assert!(
                        tiled.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: tile {bm}x{bn} differs from the chosen tile"
                    );
                }
                // Rows 62..67 alone: the same bits as inside the 130-row product.
                let some = x.narrow(62, 5).unwrap();
                let ys = poisoned(&rt, &[5, n], dtype);
                rt.record(&QMatmul::new(&some, &w, &ys).unwrap().path(QMatmulPath::Cooperative)).unwrap();
                let alone = ys.to_vec_f32().unwrap();
                let inside = &got[62 * n..67 * n];
                assert!(
                    alone.iter().zip(inside).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}: rows 62..67 alone differ from the same rows among 130"
                );
                // K split across workgroups: the same bound, and rows alone as among 130.
                for splits in [1, 3, 16, 0] {
                    let op = |x: &Tensor, y: &Tensor| {
                        QMatmul::new(x, &w, y).unwrap().path(QMatmulPath::Cooperative).coop_splits(splits)
                    };
                    let ysplit = poisoned(&rt, &[m, n], dtype);
                    rt.record(&op(&x, &ysplit)).unwrap();
                    let split = ysplit.to_vec_f32().unwrap();
                    let what = format!("{what}, {splits} splits of K");
                    worst = worst.max(assert_dot_close(&split, &want, &scale, tol, &what));
                    let ys = poisoned(&rt, &[5, n], dtype);
                    rt.record(&op(&some, &ys)).unwrap();
                    let alone = ys.to_vec_f32().unwrap();
                    assert!(
                        alone.iter().zip(&split[62 * n..67 * n]).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}: rows 62..67 alone differ from the same rows among 130"
                    );
                }
            }
        }
    }
    eprintln!("cooperative: largest error / sum|x w| {worst:e}");
}

/// The GEMV's work items of 8 weights (`deq8`) and of 32 (`deq32`) give the same products,
/// for every type, x read as scalars (K = 77) and as vectors, f32 and f16, one row of x and
/// several.
#[test]
fn gemv_units_match_cpu_for_every_type() {
    let rt = runtime();
    let mut rng = Rng::new(16);
    let n = 9;
    for ty in TYPES {
        let ks: &[usize] = if ty.block_elems() == 1 { &[77, 96] } else { &[ty.block_elems() * 2] };
        for &k in ks {
            let bytes = random_matrix(&mut rng, ty, n, k);
            let w = QuantMatrix::from_bytes(&rt, ty, n, k, &bytes).unwrap();
            let wf = decoded(ty, &bytes);
            for dtype in float_dtypes(&rt) {
                for m in [1, 3] {
                    for unit in [8, 32] {
                        let what = format!("{ty} K={k} M={m} {dtype} unit {unit}");
                        let configure = |op: QMatmul| op.path(QMatmulPath::Gemv).gemv_unit(unit);
                        check_product(&rt, &mut rng, &w, &wf, m, dtype, &configure, &what);
                    }
                }
            }
        }
    }
    let x = Tensor::zeros(&rt, [1, 32], DType::F32).unwrap();
    let w = QuantMatrix::from_bytes(&rt, QuantType::F32, 2, 32, &[0u8; 256]).unwrap();
    let y = Tensor::zeros(&rt, [1, 2], DType::F32).unwrap();
    let odd = QMatmul::new(&x, &w, &y).unwrap().path(QMatmulPath::Gemv).gemv_unit(16);
    assert!(rt.record(&odd).is_err(), "a GEMV unit other than 8 or 32 is refused");
}

/// The word GEMV (the K-quants Q4_K, Q5_K, Q6_K and the blocks Q8_0, Q4_0, Q4_1, Q5_0, Q5_1)
/// against the CPU for its lane and row counts, rows of one pass and of several with the last
/// pass partial (workgroups of 32 lanes over 5 super-blocks or 40 blocks), x as vectors and as
/// scalars (a view at an odd offset), f32 and f16, and more rows of x than one workgroup takes;
/// and the knobs it refuses.
#[test]
fn word_gemv_matches_cpu() {
    let rt = runtime();
    let mut rng = Rng::new(17);
    let n = 9;
    let k_quants = [QuantType::Q4K, QuantType::Q5K, QuantType::Q6K];
    let blocks = [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1, QuantType::Q5_0, QuantType::Q5_1];
    for ty in k_quants.into_iter().chain(blocks) {
        let k_quant = k_quants.contains(&ty);
        let lane_rows: &[(u32, u32)] = if k_quant {
            &[(4, 4), (8, 4), (4, 8), (8, 2), (4, 1)]
        } else if ty == QuantType::Q8_0 {
            &[(8, 4), (8, 2), (8, 1)]
        } else {
            &[(4, 4), (4, 2), (4, 8)]
        };
        for k in if k_quant { [512, 1280] } else { [96, 1280] } {
            let bytes = random_matrix(&mut rng, ty, n, k);
            let w = QuantMatrix::from_bytes(&rt, ty, n, k, &bytes).unwrap();
            let wf = decoded(ty, &bytes);
            for dtype in float_dtypes(&rt) {
                for m in [1, 3, 9] {
                    for &(lanes, rows) in lane_rows {
                        for wg in [None, Some(32)] {
                            let what = format!("{ty} K={k} M={m} {dtype} lanes {lanes} rows {rows} wg {wg:?}");
                            let configure = |op: QMatmul| {
                                let op = op.path(QMatmulPath::Gemv).gemv_lanes(lanes).gemv_rows(rows);
                                match wg {
                                    Some(wg) => op.gemv_workgroup(wg),
                                    None => op,
                                }
                            };
                            check_product(&rt, &mut rng, &w, &wf, m, dtype, &configure, &what);
                        }
                    }
                }
                // x at an odd offset: read as scalars.
                let (xbig, xr) = upload(&rt, &[k + 1], dtype, &rng.vec(k + 1, -1.0, 1.0));
                let x = xbig.narrow(1, k).unwrap().reshape([1, k]).unwrap();
                let y = Tensor::zeros(&rt, [1, n], dtype).unwrap();
                rt.record(&QMatmul::new(&x, &w, &y).unwrap().path(QMatmulPath::Gemv)).unwrap();
                let (want, scale) = reference(&xr[1..=k], &wf, 1, n, k);
                assert_dot_close(
                    &y.to_vec_f32().unwrap(),
                    &want,
                    &scale,
                    tol(dtype),
                    &format!("{ty} K={k} {dtype} odd x"),
                );
            }
        }
    }
    let (x, y) = (Tensor::zeros(&rt, [1, 256], DType::F32).unwrap(), Tensor::zeros(&rt, [1, 2], DType::F32).unwrap());
    let q4k =
        QuantMatrix::from_bytes(&rt, QuantType::Q4K, 2, 256, &random_matrix(&mut rng, QuantType::Q4K, 2, 256)).unwrap();
    let q8 = QuantMatrix::from_bytes(&rt, QuantType::Q8_0, 2, 256, &random_matrix(&mut rng, QuantType::Q8_0, 2, 256))
        .unwrap();
    let q2k =
        QuantMatrix::from_bytes(&rt, QuantType::Q2K, 2, 256, &random_matrix(&mut rng, QuantType::Q2K, 2, 256)).unwrap();
    let gemv = |w: &QuantMatrix| QMatmul::new(&x, w, &y).unwrap().path(QMatmulPath::Gemv);
    for (op, what) in [
        (gemv(&q4k).gemv_lanes(16), "16 lanes"),
        (gemv(&q8).gemv_lanes(4), "4 lanes for Q8_0"),
        (gemv(&q4k).gemv_lanes(8).gemv_unit(32), "lanes and a unit"),
        (gemv(&q4k).gemv_workgroup(48), "a workgroup of 48"),
        (gemv(&q4k).gemv_lanes(8).gemv_workgroup(36), "a workgroup of 36"),
        (gemv(&q4k).gemv_rows(6), "6 rows"),
        (gemv(&q2k).gemv_rows(8), "rows for Q2_K"),
        (gemv(&q2k).gemv_lanes(4), "lanes for Q2_K"),
    ] {
        assert!(matches!(rt.record(&op), Err(Error::InvalidArgument { .. })), "{what} is refused");
    }
}

/// The GEMV and the row GEMV do each row of x's arithmetic the same way whatever the other
/// rows (batched decoding relies on it): every row of an M-row product is bit-identical to the
/// one-row product of that row.
#[test]
fn gemv_rows_are_bit_identical_to_one_row_products() {
    let rt = runtime();
    let mut rng = Rng::new(12);
    let (n, k) = (37, 512);
    for ty in [QuantType::Q8_0, QuantType::Q4_1, QuantType::Q4K, QuantType::Q6K, QuantType::IQ4XS, QuantType::F16] {
        let w = QuantMatrix::from_bytes(&rt, ty, n, k, &random_matrix(&mut rng, ty, n, k)).unwrap();
        for path in [QMatmulPath::Gemv, QMatmulPath::GemvRows] {
            let m = 11;
            let (x, _) = upload(&rt, &[m, k], DType::F32, &rng.vec(m * k, -1.0, 1.0));
            let y = Tensor::zeros(&rt, [m, n], DType::F32).unwrap();
            rt.record(&QMatmul::new(&x, &w, &y).unwrap().path(path)).unwrap();
            let all = y.to_vec::<f32>().unwrap();
            for row in 0..m {
                let one = Tensor::zeros(&rt, [1, n], DType::F32).unwrap();
                rt.record(&QMatmul::new(&x.narrow(row, 1).unwrap(), &w, &one).unwrap().path(path)).unwrap();
                let one = one.to_vec::<f32>().unwrap();
                let same = all[row * n..(row + 1) * n].iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty} {path:?}: row {row} of {m} differs from its one-row product");
            }
        }
    }
}

/// The GEMV reading x through a gate (`QMatmul::gated`, an MLP's down projection with its
/// GeGLU / SwiGLU activation fused in) against act(a) * b rounded to x's dtype, then the f64
/// product; rows past 8 (a second group of rows of x), x a view at an offset, and the errors.
#[test]
fn gated_input_matches_gate_then_product() {
    let rt = runtime();
    let mut rng = Rng::new(13);
    let (n, k) = (37, 512);
    for ty in [QuantType::Q4K, QuantType::Q6K, QuantType::Q8_0, QuantType::Q4_1, QuantType::F16] {
        let bytes = random_matrix(&mut rng, ty, n, k);
        let w = QuantMatrix::from_bytes(&rt, ty, n, k, &bytes).unwrap();
        let wf = decoded(ty, &bytes);
        for act in [GatedAct::Silu, GatedAct::GeluTanh, GatedAct::Gelu] {
            for dtype in float_dtypes(&rt) {
                for m in [1, 3, 9] {
                    let what = format!("{ty} {act:?} {dtype} M={m}");
                    let (xbig, xr) = upload(&rt, &[m + 1, 2 * k], dtype, &rng.vec((m + 1) * 2 * k, -3.0, 3.0));
                    let x = xbig.narrow(1, m).unwrap();
                    let ybig = poisoned(&rt, &[m + 1, n], dtype);
                    let y = ybig.narrow(1, m).unwrap();
                    rt.record(&QMatmul::gated(act, &x, &w, &y).unwrap()).unwrap();
                    // act(a) * b as the gated op stores it: rounded to x's dtype.
                    let round = |v: f64| match dtype {
                        DType::F16 => metallic::f16::from_f64(v).to_f64(),
                        _ => f64::from(v as f32),
                    };
                    let gated: Vec<f64> = (1..=m)
                        .flat_map(|r| {
                            let row = &xr[r * 2 * k..(r + 1) * 2 * k];
                            (0..k).map(|e| round(act.apply(row[e], row[k + e]))).collect::<Vec<_>>()
                        })
                        .collect();
                    let (want, scale) = reference(&gated, &wf, m, n, k);
                    assert_dot_close(&y.to_vec_f32().unwrap(), &want, &scale, tol(dtype), &what);
                    assert!(
                        ybig.narrow(0, 1).unwrap().to_vec_f32().unwrap().iter().all(|v| v.is_nan()),
                        "{what}: wrote outside y"
                    );
                    // Against the two ops it fuses, on the same kernel.
                    if dtype == DType::F32 {
                        let h = Tensor::zeros(&rt, [m, k], dtype).unwrap();
                        rt.record(&Gated::halves(act, &x, &h).unwrap()).unwrap();
                        let y2 = Tensor::zeros(&rt, [m, n], dtype).unwrap();
                        rt.record(&QMatmul::new(&h, &w, &y2).unwrap().path(QMatmulPath::Gemv)).unwrap();
                        let (got, two) = (y.to_vec::<f32>().unwrap(), y2.to_vec::<f32>().unwrap());
                        for (i, (a, b)) in got.iter().zip(&two).enumerate() {
                            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}: element {i} {a} against {b}");
                        }
                    }
                }
            }
        }
    }
    // x must hold both halves; only the GEMV reads through a gate.
    let w =
        QuantMatrix::from_bytes(&rt, QuantType::Q8_0, n, k, &random_matrix(&mut rng, QuantType::Q8_0, n, k)).unwrap();
    let y = Tensor::zeros(&rt, [1, n], DType::F32).unwrap();
    let half = Tensor::zeros(&rt, [1, k], DType::F32).unwrap();
    assert!(matches!(QMatmul::gated(GatedAct::Silu, &half, &w, &y), Err(Error::InvalidShape { .. })));
    let x = Tensor::zeros(&rt, [1, 2 * k], DType::F32).unwrap();
    for path in [QMatmulPath::Auto, QMatmulPath::GemvRows, QMatmulPath::Gemm] {
        let op = QMatmul::gated(GatedAct::Silu, &x, &w, &y).unwrap().path(path);
        assert!(matches!(op.validate(), Err(Error::InvalidArgument { .. })), "{path:?}");
    }
}

/// The decode step's fused options on every GEMV kernel: x read through an RMS norm
/// (`QMatmul::rms_norm`) and the product added to y (`QMatmul::accumulate`), against the norm,
/// product and add in f64; each row of a batch bit-identical to its one-row call; the errors.
#[test]
fn fused_norm_and_accumulation_match_cpu() {
    let rt = runtime();
    let mut rng = Rng::new(17);
    let (n, k, eps) = (37, 512, 1e-5f32);
    for ty in [QuantType::Q4K, QuantType::Q6K, QuantType::Q8_0, QuantType::Q4_1, QuantType::F16] {
        let bytes = random_matrix(&mut rng, ty, n, k);
        let w = QuantMatrix::from_bytes(&rt, ty, n, k, &bytes).unwrap();
        let wf = decoded(ty, &bytes);
        let kernels: [(&str, &dyn Fn(QMatmul) -> QMatmul); 3] = [
            ("GEMV", &|op| op.path(QMatmulPath::Gemv)),
            ("block GEMV", &|op| op.path(QMatmulPath::Gemv).gemv_unit(32)),
            ("row GEMV", &|op| op.path(QMatmulPath::GemvRows)),
        ];
        for (kernel, configure) in kernels {
            for dtype in float_dtypes(&rt) {
                for (norm, acc) in [(true, false), (false, true), (true, true)] {
                    let m = 9;
                    let what = format!("{ty} {kernel} {dtype} norm {norm} accumulate {acc}");
                    let (xbig, xr) = upload(&rt, &[m + 1, k], dtype, &rng.vec((m + 1) * k, -3.0, 3.0));
                    let x = xbig.narrow(1, m).unwrap();
                    let (nw, nwr) = upload(&rt, &[k], dtype, &rng.vec(k, 0.5, 1.5));
                    let y0 = rng.vec(m * n, -1.0, 1.0);
                    let run = |x: &Tensor, rows: usize, first: usize| -> Vec<f32> {
                        let (y, _) = upload(&rt, &[rows, n], dtype, &y0[first * n..(first + rows) * n]);
                        let mut op = configure(QMatmul::new(x, &w, &y).unwrap());
                        if norm {
                            op = op.rms_norm(&nw, eps).unwrap();
                        }
                        if acc {
                            op = op.accumulate().unwrap();
                        }
                        rt.record(&op).unwrap();
                        y.to_vec_f32().unwrap()
                    };
                    let got = run(&x, m, 0);
                    // The normalised rows, the product in f64, the add.
                    let rows: Vec<f64> = (1..=m)
                        .flat_map(|r| {
                            let row = &xr[r * k..(r + 1) * k];
                            let ms = row.iter().map(|v| v * v).sum::<f64>() / k as f64;
                            let s = if norm { 1.0 / (ms + f64::from(eps)).sqrt() } else { 1.0 };
                            row.iter()
                                .zip(&nwr)
                                .map(move |(v, g)| if norm { v * s * g } else { *v })
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    let (mut want, mut scale) = reference(&rows, &wf, m, n, k);
                    let (_, y0r) = upload(&rt, &[m, n], dtype, &y0);
                    if acc {
                        for ((want, scale), y0) in want.iter_mut().zip(&mut scale).zip(&y0r) {
                            *want += y0;
                            *scale += y0.abs();
                        }
                    }
                    assert_dot_close(&got, &want, &scale, tol(dtype), &what);
                    // Each row as its own call: the same bits.
                    for row in [0, 4, 8] {
                        let one = run(&x.narrow(row, 1).unwrap(), 1, row);
                        let same =
                            got[row * n..(row + 1) * n].iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{what}: row {row} differs from its one-row call");
                    }
                }
            }
        }
    }
    // Only a GEMV fuses them; the norm's weight is [K] of x's dtype; no gate and norm together.
    let w =
        QuantMatrix::from_bytes(&rt, QuantType::Q8_0, n, k, &random_matrix(&mut rng, QuantType::Q8_0, n, k)).unwrap();
    let nw = Tensor::zeros(&rt, [k], DType::F32).unwrap();
    let (x, y) = (Tensor::zeros(&rt, [1, k], DType::F32).unwrap(), Tensor::zeros(&rt, [1, n], DType::F32).unwrap());
    let gemm = || QMatmul::new(&x, &w, &y).unwrap().path(QMatmulPath::Gemm);
    assert!(matches!(gemm().rms_norm(&nw, eps), Err(Error::InvalidArgument { .. })));
    assert!(matches!(gemm().accumulate(), Err(Error::InvalidArgument { .. })));
    let short = Tensor::zeros(&rt, [k - 1], DType::F32).unwrap();
    assert!(matches!(QMatmul::new(&x, &w, &y).unwrap().rms_norm(&short, eps), Err(Error::InvalidShape { .. })));
    assert!(matches!(QMatmul::new(&x, &w, &y).unwrap().rms_norm(&nw, f32::NAN), Err(Error::InvalidArgument { .. })));
    let x2 = Tensor::zeros(&rt, [1, 2 * k], DType::F32).unwrap();
    let gated = QMatmul::gated(GatedAct::Silu, &x2, &w, &y).unwrap();
    assert!(matches!(gated.rms_norm(&nw, eps), Err(Error::InvalidArgument { .. })));
}

#[test]
fn auto_path_and_convenience_method() {
    let rt = runtime();
    let mut rng = Rng::new(7);
    let (n, k) = (9, 256);
    let bytes = random_matrix(&mut rng, QuantType::Q4K, n, k);
    let w = QuantMatrix::from_bytes(&rt, QuantType::Q4K, n, k, &bytes).unwrap();
    let wf = decoded(QuantType::Q4K, &bytes);
    // A CPU adapter takes the row GEMV up to 32 rows of x.
    let cpu = rt.context().caps().cpu();
    // Beyond the GEMV, the GEMM on cooperative matrices where the adapter has them.
    let many = if cooperative_available(rt.context()) { QMatmulPath::Cooperative } else { QMatmulPath::Gemm };
    let (few, some) = if cpu { (QMatmulPath::GemvRows, QMatmulPath::GemvRows) } else { (QMatmulPath::Gemv, many) };
    for (m, path) in [(1, few), (4, few), (5, some), (32, some), (33, many)] {
        let x = Tensor::zeros(&rt, [m, k], DType::F32).unwrap();
        let y = Tensor::zeros(&rt, [m, n], DType::F32).unwrap();
        assert_eq!(QMatmul::new(&x, &w, &y).unwrap().chosen_path(), path, "M = {m}");
    }
    // A batch of rows as [2, 3, K]: folded into M = 6.
    let (x, xr) = upload(&rt, &[2, 3, k], DType::F32, &rng.vec(6 * k, -1.0, 1.0));
    let y = x.qmatmul(&w).unwrap();
    assert_eq!(y.dims(), [2, 3, n]);
    let (want, scale) = reference(&xr, &wf, 6, n, k);
    assert_dot_close(&y.to_vec_f32().unwrap(), &want, &scale, 1e-4, "batched");
    // One row as a vector [K].
    let v = x.get_batch(1).unwrap().get_batch(2).unwrap();
    let y = v.qmatmul(&w).unwrap();
    assert_eq!(y.dims(), [n]);
    assert_dot_close(&y.to_vec_f32().unwrap(), &want[5 * n..], &scale[5 * n..], 1e-4, "vector");
}

#[test]
fn parts_split_the_rows() {
    let rt = runtime();
    let mut rng = Rng::new(8);
    for (ty, k) in [(QuantType::Q8_0, 96), (QuantType::Q4K, 256), (QuantType::F16, 19)] {
        let n = 37;
        let bytes = random_matrix(&mut rng, ty, n, k);
        let w = QuantMatrix::from_bytes_split(&rt, ty, n, k, &bytes, 5).unwrap();
        assert_eq!(w.parts(), 8);
        let wf = decoded(ty, &bytes);
        for dtype in float_dtypes(&rt) {
            let rows = [(1, QMatmulPath::GemvRows), (3, QMatmulPath::GemvRows)];
            let paths = [(1, QMatmulPath::Gemv), (3, QMatmulPath::Gemv), (67, QMatmulPath::Gemm)];
            for (m, path) in paths.into_iter().chain(rows.into_iter().filter(|_| k % 32 == 0)) {
                check_product(
                    &rt,
                    &mut rng,
                    &w,
                    &wf,
                    m,
                    dtype,
                    &|op| op.path(path),
                    &format!("{ty} in parts M={m} {dtype}"),
                );
            }
        }
        // The same rows as one part give the same embedding rows.
        let ids = Tensor::from_slice(&rt, [4], &[36u32, 0, 5, 4]).unwrap();
        let got = w.embedding(&ids).unwrap().to_vec::<f32>().unwrap();
        let whole = QuantMatrix::from_bytes(&rt, ty, n, k, &bytes).unwrap();
        assert_eq!(got, whole.embedding(&ids).unwrap().to_vec::<f32>().unwrap(), "{ty}");
        // Rows given in pieces (q, k and v of a layer) whose seams fall inside the parts of
        // 5 rows and on their edges: the same table, row for row.
        let rb = ty.bytes_for(k).unwrap();
        let pieces = [&bytes[..3 * rb], &bytes[3 * rb..3 * rb], &bytes[3 * rb..10 * rb], &bytes[10 * rb..]];
        let stacked = QuantMatrix::from_pieces_split(&rt, ty, n, k, &pieces, 5).unwrap();
        let all = Tensor::from_vec(&rt, [n], (0..n as u32).collect()).unwrap();
        let want = whole.embedding(&all).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(stacked.embedding(&all).unwrap().to_vec::<f32>().unwrap(), want, "{ty} in pieces");
    }
}

#[test]
fn embedding_gathers_and_decodes_rows() {
    let rt = runtime();
    let mut rng = Rng::new(9);
    for ty in TYPES {
        let (n, k) = (23, if ty.block_elems() == 1 { 45 } else { 2 * ty.block_elems() });
        let bytes = random_matrix(&mut rng, ty, n, k);
        let w = QuantMatrix::from_bytes_split(&rt, ty, n, k, &bytes, 10).unwrap();
        let wf = decoded(ty, &bytes);
        // Ids at an offset (a view), repeated, one per part and one past the table.
        let all = [7u32, 22, 0, 22, 11, 999, 3];
        let big = Tensor::from_slice(&rt, [all.len()], &all).unwrap();
        let ids = big.narrow(1, 6).unwrap().reshape([2, 3]).unwrap();
        for dtype in float_dtypes(&rt) {
            let out = poisoned(&rt, &[2, 3, k], dtype);
            rt.record(&QEmbedding::new(&w, &ids, &out).unwrap()).unwrap();
            let want: Vec<f64> = all[1..]
                .iter()
                .flat_map(|&id| if (id as usize) < n { wf[id as usize * k..][..k].to_vec() } else { vec![0.0; k] })
                .collect();
            let tol = if dtype == DType::F16 { 1e-3 } else { 1e-6 };
            common::assert_close(&out.to_vec_f32().unwrap(), &want, tol, &format!("{ty} embedding {dtype}"));
        }
        let f16 = w.embedding_as(&ids, float_dtypes(&rt)[float_dtypes(&rt).len() - 1]).unwrap();
        assert_eq!(f16.dims(), [2, 3, k]);
    }
}

#[test]
fn a_table_larger_than_one_binding_loads_in_parts() {
    // Gemma 3's tied embedding: 262144 x 640 in Q8_0, 178 MB; lavapipe binds 128 MiB at most.
    let rt = runtime();
    let (n, k, ty) = (262_144, 640, QuantType::Q8_0);
    let limit = rt.context().caps().limits.max_storage_buffer_binding_size;
    let mut bytes = vec![0u8; ty.bytes_for(n * k).unwrap()];
    // Row r: d = 1, q[j] = (r + j) mod 128 (as i8).
    let row_bytes = ty.bytes_for(k).unwrap();
    for (r, row) in bytes.chunks_exact_mut(row_bytes).enumerate() {
        for (b, block) in row.chunks_exact_mut(34).enumerate() {
            block[..2].copy_from_slice(&metallic::f16::ONE.to_le_bytes());
            for j in 0..32 {
                block[2 + j] = ((r + b * 32 + j) % 128) as u8;
            }
        }
    }
    let w = QuantMatrix::from_bytes(&rt, ty, n, k, &bytes).unwrap();
    drop(bytes);
    let want_parts = (w.size_in_bytes() as u64).div_ceil(limit).max(1) as usize;
    assert!(w.parts() >= 2 && w.parts() <= want_parts + 1, "{} parts under a {limit}-byte limit", w.parts());
    let ids = Tensor::from_slice(&rt, [3], &[0u32, 262_143, 140_000]).unwrap();
    let got = w.embedding(&ids).unwrap().to_vec::<f32>().unwrap();
    for (i, &id) in [0usize, 262_143, 140_000].iter().enumerate() {
        for j in 0..k {
            assert_eq!(got[i * k + j], ((id + j) % 128) as f32, "row {id}, column {j}");
        }
    }
}

#[test]
fn errors() {
    let rt = runtime();
    let mut rng = Rng::new(10);
    let ty = QuantType::Q4_0;
    let bytes = random_matrix(&mut rng, ty, 3, 64);
    // Wrong byte length, K not a whole number of blocks, a type without kernels, empty.
    assert!(matches!(QuantMatrix::from_bytes(&rt, ty, 3, 64, &bytes[1..]), Err(Error::InvalidArgument { .. })));
    assert!(matches!(QuantMatrix::from_bytes(&rt, ty, 4, 64, &bytes), Err(Error::InvalidArgument { .. })));
    assert!(matches!(QuantMatrix::from_bytes(&rt, ty, 3, 48, &bytes), Err(Error::InvalidShape { .. })));
    assert!(matches!(
        QuantMatrix::from_bytes(&rt, QuantType::Q8K, 1, 256, &[0; 292]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(QuantMatrix::from_bytes(&rt, ty, 0, 64, &[]), Err(Error::InvalidArgument { .. })));
    // Pieces of the right total whose seam cuts a row.
    let rb = ty.bytes_for(64).unwrap();
    let cut = [&bytes[..rb + 1], &bytes[rb + 1..]];
    assert!(matches!(QuantMatrix::from_pieces(&rt, ty, 3, 64, &cut), Err(Error::InvalidArgument { .. })));
    // Every block type: a byte short, K not a whole number of blocks.
    for t in TYPES.into_iter().filter(|t| t.block_elems() > 1) {
        let k = 2 * t.block_elems();
        let b = random_matrix(&mut rng, t, 2, k);
        assert!(matches!(QuantMatrix::from_bytes(&rt, t, 2, k, &b[1..]), Err(Error::InvalidArgument { .. })), "{t}");
        assert!(matches!(QuantMatrix::from_bytes(&rt, t, 2, k - 16, &b), Err(Error::InvalidShape { .. })), "{t}");
    }
    let w = QuantMatrix::from_bytes(&rt, ty, 3, 64, &bytes).unwrap();
    let x = Tensor::zeros(&rt, [2, 64], DType::F32).unwrap();
    let y = Tensor::zeros(&rt, [2, 3], DType::F32).unwrap();
    assert!(QMatmul::new(&x, &w, &y).is_ok());
    let odd_wg = QMatmul::new(&x, &w, &y).unwrap().path(QMatmulPath::Gemv).gemv_workgroup(48);
    assert!(matches!(rt.record(&odd_wg), Err(Error::InvalidArgument { .. })));
    rt.record(&QMatmul::new(&x, &w, &y).unwrap().gemv_workgroup(64)).unwrap();
    // A cooperative tile other than 64 or 128 by 64 or 128.
    let odd_tile = QMatmul::new(&x, &w, &y).unwrap().coop_tile(96, 64);
    assert!(matches!(odd_tile.validate(), Err(Error::InvalidArgument { .. })));
    // The row GEMV: K not whole blocks of 32; x not on a 4-element boundary (forced: an error;
    // `Auto` takes another kernel and gets it right).
    let w48 = QuantMatrix::from_bytes(&rt, QuantType::F32, 3, 48, &[0u8; 3 * 48 * 4]).unwrap();
    let x48 = Tensor::zeros(&rt, [1, 48], DType::F32).unwrap();
    let y48 = Tensor::zeros(&rt, [1, 3], DType::F32).unwrap();
    let rows48 = QMatmul::new(&x48, &w48, &y48).unwrap().path(QMatmulPath::GemvRows);
    assert!(matches!(rows48.validate(), Err(Error::InvalidArgument { .. })));
    let (wide, xr) = upload(&rt, &[2 * 64 + 1], DType::F32, &rng.vec(2 * 64 + 1, -1.0, 1.0));
    let skewed = wide.narrow(1, 2 * 64).unwrap().reshape([2, 64]).unwrap();
    let forced = QMatmul::new(&skewed, &w, &y).unwrap().path(QMatmulPath::GemvRows);
    assert!(matches!(rt.record(&forced), Err(Error::InvalidArgument { .. })));
    rt.record(&QMatmul::new(&skewed, &w, &y).unwrap()).unwrap();
    let (want, scale) = reference(&xr[1..], &decoded(ty, &bytes), 2, 3, 64);
    assert_dot_close(&y.to_vec_f32().unwrap(), &want, &scale, 1e-4, "x at an odd offset");
    // dtype mismatches: u32 x, f16 y for f32 x.
    let xu = Tensor::zeros(&rt, [2, 64], DType::U32).unwrap();
    assert!(matches!(QMatmul::new(&xu, &w, &y), Err(Error::DTypeMismatch { .. })));
    assert!(matches!(xu.qmatmul(&w), Err(Error::DTypeMismatch { .. })));
    if rt.context().caps().shader_f16() {
        let yh = Tensor::zeros(&rt, [2, 3], DType::F16).unwrap();
        assert!(matches!(QMatmul::new(&x, &w, &yh), Err(Error::DTypeMismatch { .. })));
    }
    // K disagrees, y of the wrong shape, y overlapping x.
    let x32 = Tensor::zeros(&rt, [2, 32], DType::F32).unwrap();
    assert!(matches!(QMatmul::new(&x32, &w, &y), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(x32.qmatmul(&w), Err(Error::ShapeMismatch { .. })));
    let y4 = Tensor::zeros(&rt, [2, 4], DType::F32).unwrap();
    assert!(matches!(QMatmul::new(&x, &w, &y4), Err(Error::ShapeMismatch { .. })));
    let xy = Tensor::zeros(&rt, [2, 64], DType::F32).unwrap();
    let inside = xy.reshape([128]).unwrap().narrow(0, 6).unwrap().reshape([2, 3]).unwrap();
    assert!(matches!(QMatmul::new(&xy, &w, &inside), Err(Error::InvalidArgument { .. })));
    // Embedding: float ids, a u32 output, the wrong output shape.
    let ids = Tensor::zeros(&rt, [2], DType::U32).unwrap();
    let idf = Tensor::zeros(&rt, [2], DType::F32).unwrap();
    assert!(matches!(w.embedding(&idf), Err(Error::DTypeMismatch { .. })));
    let out_u = Tensor::zeros(&rt, [2, 64], DType::U32).unwrap();
    assert!(matches!(QEmbedding::new(&w, &ids, &out_u), Err(Error::DTypeMismatch { .. })));
    let out_bad = Tensor::zeros(&rt, [2, 63], DType::F32).unwrap();
    assert!(matches!(QEmbedding::new(&w, &ids, &out_bad), Err(Error::ShapeMismatch { .. })));
    assert!(QEmbedding::new(&w, &ids, &x).is_ok());
    assert!(QEmbedding::new(&w, &ids, &x).unwrap().validate().is_ok());
}

/// `QuantizeQ8`'s layout computed on the CPU with the kernel's rounding: per block of 32,
/// d = max|x| / 127, q = round(x · (1 / d)) (ties to even, 0 where d = 0), the quants four
/// signed bytes a word at the row's start, then (d, d · Σq) per block as f32 bits.
fn quantize_q8_cpu(x: &[f32], k: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for row in x.chunks_exact(k) {
        let mut scales = Vec::new();
        for block in row.chunks_exact(32) {
            let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q: Vec<i32> = block.iter().map(|v| (v * id).round_ties_even().clamp(-127.0, 127.0) as i32).collect();
            for word in q.chunks_exact(4) {
                out.push(word.iter().enumerate().fold(0u32, |w, (c, &q)| w | ((q as u32 & 0xFF) << (8 * c))));
            }
            scales.push(d.to_bits());
            scales.push((d * q.iter().sum::<i32>() as f32).to_bits());
        }
        out.extend(scales);
    }
    out
}

/// x as the quantized words hold it: q · d per element, in f64.
fn dequantize_q8(words: &[u32], k: usize) -> Vec<f64> {
    let row_words = k / 4 + k / 16;
    words
        .chunks_exact(row_words)
        .flat_map(|row| {
            (0..k).map(move |e| {
                let q = f64::from((row[e / 4] >> (8 * (e % 4))) as u8 as i8);
                q * f64::from(f32::from_bits(row[k / 4 + 2 * (e / 32)]))
            })
        })
        .collect()
}

/// The quantizer of x for the GEMV over 8-bit x (`QuantizeQ8`) against the CPU, bit for bit:
/// rows of one block and of many, blocks of zeros, large and tiny magnitudes, x a view at an
/// odd offset, f32 and f16 x, more rows than one dispatch row; and the shapes it refuses.
#[test]
fn quantize_q8_matches_cpu_exactly() {
    let rt = runtime();
    let mut rng = Rng::new(31);
    for dtype in float_dtypes(&rt) {
        for (m, k) in [(1, 32), (3, 96), (8, 4096), (5, 256)] {
            let mut values = rng.vec((m + 1) * k, -1.0, 1.0);
            // x starts at element 1: its elements 32..64 (the second block) zeros, its first
            // block large, its last block tiny.
            for (i, v) in values.iter_mut().enumerate().skip(1) {
                let e = i - 1;
                if (32..64).contains(&e) {
                    *v = 0.0;
                } else if e < 32 {
                    *v *= 1000.0;
                } else if e >= m * k - 32 {
                    *v *= 1e-3;
                }
            }
            let (xbig, xr) = upload(&rt, &[(m + 1) * k], dtype, &values);
            // A view starting one element in: an odd offset.
            let x = xbig.narrow(1, m * k).unwrap().reshape([m, k]).unwrap();
            let words = QuantizeQ8::words(m, k).unwrap();
            assert_eq!(words, m * (k / 4 + k / 16));
            let out = Tensor::full(&rt, [words], DType::U32, 0.0).unwrap();
            rt.record(&QuantizeQ8::new(&x, &out).unwrap()).unwrap();
            let got = out.to_vec::<u32>().unwrap();
            let xf: Vec<f32> = xr[1..=m * k].iter().map(|&v| v as f32).collect();
            let want = quantize_q8_cpu(&xf, k);
            let bad = got.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                bad.is_none(),
                "{dtype} [{m}, {k}]: word {bad:?} is {:#x}, expected {:#x}",
                got[bad.unwrap()],
                want[bad.unwrap()]
            );
            // The zero block: zero quants, d = 0.
            if m * k >= 64 {
                let (row, block) = (32 / k, (32 % k) / 32);
                let at = row * (k / 4 + k / 16);
                assert_eq!(&got[at + 8 * block..at + 8 * block + 8], &[0; 8], "{dtype} [{m}, {k}]: zero quants");
                assert_eq!(got[at + k / 4 + 2 * block], 0, "{dtype} [{m}, {k}]: d of the zero block");
            }
        }
    }
    let x = Tensor::zeros(&rt, [2, 48], DType::F32).unwrap();
    let out = Tensor::zeros(&rt, [30], DType::U32).unwrap();
    assert!(matches!(QuantizeQ8::new(&x, &out), Err(Error::InvalidShape { .. })), "K = 48");
    let x = Tensor::zeros(&rt, [2, 64], DType::F32).unwrap();
    let short = Tensor::zeros(&rt, [39], DType::U32).unwrap();
    assert!(matches!(QuantizeQ8::new(&x, &short), Err(Error::InvalidShape { .. })), "an output a word short");
    let floats = Tensor::zeros(&rt, [40], DType::F32).unwrap();
    assert!(matches!(QuantizeQ8::new(&x, &floats), Err(Error::DTypeMismatch { .. })), "an f32 output");
    assert!(QuantizeQ8::new(&x, &Tensor::zeros(&rt, [40], DType::U32).unwrap()).is_ok());
}

/// The GEMV over 8-bit x (`QMatmulPath::GemvQ8`) for every type it takes, against (a) the f64
/// product of the decoded weights with x as the quantizer rounded it (the same quantized x, so
/// only f32 rounding differs: 1e-5 of Σ|x̂ w| for f32 outputs, 1e-3 for f16 ones) and (b) the
/// f64 product with x itself, within the bound the rounding of x allows: each element of x is
/// off by at most half its block's step, d / 2 = max|x_block| / 254, so output j is off by at
/// most Σ_blocks max|x_block| / 254 · Σ_block |w_j| (plus the f32 slack of (a)). N not a
/// multiple of the rows per workgroup, K of one unit and of several passes, M = 1, 3, 8 and 9
/// (two groups of rows of x), the lane and row counts, x a view, y poisoned around its rows, a
/// matrix split into parts.
#[test]
fn gemv_q8_matches_cpu() {
    let rt = runtime();
    let mut rng = Rng::new(32);
    let k_quants = [QuantType::Q4K, QuantType::Q5K, QuantType::Q6K];
    let mut worst = [0.0f64; 2];
    // (b): the largest error over its bound, and over Σ|x w|.
    let mut worst_b = [0.0f64; 2];
    for ty in [QuantType::Q4K, QuantType::Q5K, QuantType::Q6K, QuantType::Q8_0, QuantType::Q4_0] {
        let k_quant = k_quants.contains(&ty);
        let ks: &[usize] = if k_quant { &[256, 1280] } else { &[32, 96, 1280] };
        let knobs: &[Option<(u32, u32)>] = if k_quant {
            &[None, Some((4, 4)), Some((8, 2)), Some((4, 8)), Some((8, 1))]
        } else if ty == QuantType::Q8_0 {
            &[None, Some((8, 4)), Some((8, 8))]
        } else {
            &[None, Some((4, 2)), Some((4, 8))]
        };
        for &k in ks {
            for (n, split) in [(9, usize::MAX), (70, 32), (131, usize::MAX)] {
                let bytes = random_matrix(&mut rng, ty, n, k);
                let w = QuantMatrix::from_bytes_split(&rt, ty, n, k, &bytes, split).unwrap();
                let wf = decoded(ty, &bytes);
                for dtype in float_dtypes(&rt) {
                    for m in [1, 3, 8, 9] {
                        for &knob in knobs {
                            // The full set of knobs on one shape; the default elsewhere.
                            if knob.is_some() && (n != 70 || m == 9) {
                                continue;
                            }
                            let what = format!("{ty} N={n} K={k} M={m} {dtype} lanes/rows {knob:?}");
                            let (xbig, xr) = upload(&rt, &[m + 1, k], dtype, &rng.vec((m + 1) * k, -1.0, 1.0));
                            let x = xbig.narrow(1, m).unwrap();
                            let ybig = poisoned(&rt, &[m + 2, n], dtype);
                            let y = ybig.narrow(1, m).unwrap();
                            let mut op = QMatmul::new(&x, &w, &y).unwrap().path(QMatmulPath::GemvQ8);
                            if let Some((lanes, rows)) = knob {
                                op = op.gemv_lanes(lanes).gemv_rows(rows);
                            }
                            assert_eq!(op.chosen_path(), QMatmulPath::GemvQ8);
                            rt.record(&op).unwrap();
                            let got = y.to_vec_f32().unwrap();
                            for r in [0, m + 1] {
                                let rest = ybig.narrow(r, 1).unwrap().to_vec_f32().unwrap();
                                assert!(rest.iter().all(|v| v.is_nan()), "{what}: wrote outside y");
                            }
                            // (a) The same quantized x, from the quantizer.
                            let q = Tensor::zeros(&rt, [QuantizeQ8::words(m, k).unwrap()], DType::U32).unwrap();
                            rt.record(&QuantizeQ8::new(&x, &q).unwrap()).unwrap();
                            let xq = dequantize_q8(&q.to_vec::<u32>().unwrap(), k);
                            let (want, scale) = reference(&xq, &wf, m, n, k);
                            let tol_a = if dtype == DType::F16 { 1e-3 } else { 1e-5 };
                            let slot = usize::from(dtype == DType::F16);
                            let e = assert_dot_close(&got, &want, &scale, tol_a, &format!("{what} (a)"));
                            worst[slot] = worst[slot].max(e);
                            // (b) x itself, within the rounding bound.
                            let xs = &xr[k..(m + 1) * k];
                            let (exact, exact_scale) = reference(xs, &wf, m, n, k);
                            for i in 0..m {
                                for j in 0..n {
                                    let mut bound = tol_a * scale[i * n + j].max(1e-3);
                                    for b in 0..k / 32 {
                                        let xb = &xs[i * k + 32 * b..i * k + 32 * b + 32];
                                        let amax = xb.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                                        let wsum: f64 =
                                            wf[j * k + 32 * b..j * k + 32 * b + 32].iter().map(|v| v.abs()).sum();
                                        bound += amax / 254.0 * wsum * (1.0 + 1e-6);
                                    }
                                    let g = f64::from(got[i * n + j]);
                                    let err = (g - exact[i * n + j]).abs();
                                    worst_b[0] = worst_b[0].max(err / bound);
                                    worst_b[1] = worst_b[1].max(err / exact_scale[i * n + j].max(1e-3));
                                    assert!(
                                        err <= bound,
                                        "{what} (b): element ({i}, {j}) is {g}, exact {} (error {err:e}, bound {bound:e}, scale {})",
                                        exact[i * n + j],
                                        exact_scale[i * n + j]
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "GEMV over 8-bit x, against the same quantized x: largest error / Σ|x̂ w|: f32 {:e}, f16 {:e}; against x: \
         largest error / bound {:e}, / Σ|x w| {:e}",
        worst[0], worst[1], worst_b[0], worst_b[1]
    );
}

/// What the GEMV over 8-bit x refuses: types without its kernel, a gate, a norm, an
/// accumulation, a block-GEMV unit, lane counts of other types; Auto never takes it.
#[test]
fn gemv_q8_refuses_what_it_does_not_take() {
    let rt = runtime();
    let mut rng = Rng::new(33);
    let (n, k) = (8, 256);
    let x = Tensor::zeros(&rt, [1, k], DType::F32).unwrap();
    let y = Tensor::zeros(&rt, [1, n], DType::F32).unwrap();
    let matrix = |rng: &mut Rng, ty| QuantMatrix::from_bytes(&rt, ty, n, k, &random_matrix(rng, ty, n, k)).unwrap();
    for ty in [QuantType::Q4_1, QuantType::Q5_0, QuantType::Q2K, QuantType::IQ4XS, QuantType::F16, QuantType::F32] {
        let w = matrix(&mut rng, ty);
        let op = QMatmul::new(&x, &w, &y).unwrap().path(QMatmulPath::GemvQ8);
        assert!(matches!(op.validate(), Err(Error::InvalidArgument { .. })), "{ty}");
        assert!(matches!(rt.record(&op), Err(Error::InvalidArgument { .. })), "{ty}");
    }
    let q4k = matrix(&mut rng, QuantType::Q4K);
    let q8 = matrix(&mut rng, QuantType::Q8_0);
    let auto = QMatmul::new(&x, &q4k, &y).unwrap();
    assert_ne!(auto.chosen_path(), QMatmulPath::GemvQ8, "Auto takes the experimental path");
    let nw = Tensor::ones(&rt, [k], DType::F32).unwrap();
    let q8_path = |op: QMatmul| op.path(QMatmulPath::GemvQ8);
    assert!(matches!(q8_path(auto.clone()).rms_norm(&nw, 1e-5), Err(Error::InvalidArgument { .. })), "a norm");
    assert!(matches!(q8_path(auto.clone()).accumulate(), Err(Error::InvalidArgument { .. })), "an accumulation");
    let x2 = Tensor::zeros(&rt, [1, 2 * k], DType::F32).unwrap();
    let gated = QMatmul::gated(GatedAct::Silu, &x2, &q4k, &y).unwrap().path(QMatmulPath::GemvQ8);
    assert!(matches!(gated.validate(), Err(Error::InvalidArgument { .. })), "a gate");
    for (op, what) in [
        (q8_path(auto.clone()).gemv_unit(32), "a block-GEMV unit"),
        (q8_path(auto.clone()).gemv_lanes(16), "16 lanes"),
        (q8_path(QMatmul::new(&x, &q8, &y).unwrap()).gemv_lanes(4), "4 lanes for Q8_0"),
        (q8_path(auto.clone()).gemv_rows(3), "3 rows"),
    ] {
        assert!(matches!(rt.record(&op), Err(Error::InvalidArgument { .. })), "{what} is refused");
    }
}
