//! Data-movement kernels of transformer models against host references: rotary position
//! embedding (`rope`), embedding lookup (`embedding`) and the strided copy behind
//! permute / transpose / concat / write_slice (`strided`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::kernels::embedding::Embedding;
use metallic::kernels::rope::{Rope, RopeOptions, RopeStyle};
use metallic::kernels::strided::{Strided, StridedCopy};
use metallic::{DType, Error, Runtime, Tensor};

// ---------------------------------------------------------------------------------------------
// Host references
// ---------------------------------------------------------------------------------------------

/// RoPE in f64: rows of `head_dim` at position `offset + row % seq`.
fn rope_ref(x: &[f64], dims: &[usize], o: &RopeOptions) -> Vec<f64> {
    let hd = dims[dims.len() - 1];
    let seq = dims[dims.len() - 2];
    let rd = o.rotary_dim.unwrap_or(hd);
    let mut out = x.to_vec();
    for (r, row) in out.chunks_mut(hd.max(1)).enumerate() {
        let pos = (u64::from(o.position_offset) + (r % seq) as u64) as f64 * f64::from(o.freq_scale);
        for j in 0..rd / 2 {
            let theta = pos * f64::from(o.base).powf(-2.0 * j as f64 / rd as f64);
            let (a, b) = match o.style {
                RopeStyle::NeoX => (j, j + rd / 2),
                RopeStyle::Interleaved => (2 * j, 2 * j + 1),
            };
            let (x1, x2) = (row[a], row[b]);
            row[a] = x1 * theta.cos() - x2 * theta.sin();
            row[b] = x2 * theta.cos() + x1 * theta.sin();
        }
    }
    out
}

/// The largest position a tensor of `dims` reaches.
fn last_position(dims: &[usize], o: &RopeOptions) -> f64 {
    f64::from(o.position_offset) + (dims[dims.len() - 2].max(1) - 1) as f64
}

/// Relative error in the f32 angle the kernel may have: f32 rounding of the frequency (exp2
/// in f32) and of the product position × frequency, a few units in the last place.
const ANGLE_EPS: f64 = 4e-7;

/// Checks a RoPE result: `tol` relative to the output plus, for f32, the angle error the
/// f32 computation of `position × frequency` allows (|x| · position · ANGLE_EPS). Returns the
/// largest error seen relative to max(1, |want|).
fn check_rope(got: &[f32], want: &[f64], x: &[f64], dims: &[usize], o: &RopeOptions, tol: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let angle = last_position(dims, o) * f64::from(o.freq_scale) * ANGLE_EPS;
    let hd = dims[dims.len() - 1];
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let row = &x[i / hd * hd..(i / hd + 1) * hd];
        let amp = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = (f64::from(g) - w).abs();
        let allowed = tol * w.abs().max(1.0) + 2.0 * amp * angle;
        assert!(err <= allowed, "{what}: element {i} is {g}, expected {w} (error {err:e}, allowed {allowed:e})");
        worst = worst.max(err / w.abs().max(1.0));
    }
    worst
}

/// Row-major coordinates of linear index `i` in `dims`.
fn coords(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut c = vec![0; dims.len()];
    for k in (0..dims.len()).rev() {
        c[k] = i % dims[k];
        i /= dims[k];
    }
    c
}

/// Row-major linear index of `c` in `dims`.
fn linear(c: &[usize], dims: &[usize]) -> usize {
    c.iter().zip(dims).fold(0, |acc, (&x, &d)| acc * d + x)
}

/// `out[c] = x[c permuted]`: dimension k of the result is dimension `perm[k]` of `x`.
fn permute_ref<V: Copy>(x: &[V], dims: &[usize], perm: &[usize]) -> Vec<V> {
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    (0..x.len())
        .map(|i| {
            let oc = coords(i, &out_dims);
            let mut ic = vec![0; dims.len()];
            for (k, &p) in perm.iter().enumerate() {
                ic[p] = oc[k];
            }
            x[linear(&ic, dims)]
        })
        .collect()
}

/// Writes `src` (of `src_dims`) into `dst` (of `dst_dims`) at `start` along `dim`.
fn write_slice_ref<V: Copy>(
    dst: &mut [V],
    dst_dims: &[usize],
    src: &[V],
    src_dims: &[usize],
    dim: usize,
    start: usize,
) {
    for (i, &v) in src.iter().enumerate() {
        let mut c = coords(i, src_dims);
        c[dim] += start;
        dst[linear(&c, dst_dims)] = v;
    }
}

/// Distinct u32 values (no two equal), so any misplaced element shows.
fn distinct(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(seed) | 1).collect()
}

/// A u32 tensor filled with a sentinel that no kernel writes.
const SENTINEL: u32 = 0xDEAD_BEEF;

fn sentinel(rt: &Runtime, dims: &[usize]) -> Tensor {
    Tensor::from_vec(rt, dims, vec![SENTINEL; dims.iter().product()]).unwrap()
}

/// Uploads `values` as `dtype` (u32 values taken as they are); returns the tensor and the
/// values as stored, as f64.
fn upload_any(rt: &Runtime, dims: &[usize], dtype: DType, values: &[f64]) -> (Tensor, Vec<f64>) {
    match dtype {
        DType::U32 => {
            let v: Vec<u32> = values.iter().map(|&x| x as u32).collect();
            (Tensor::from_slice(rt, dims, &v).unwrap(), v.iter().map(|&x| f64::from(x)).collect())
        }
        _ => upload(rt, dims, dtype, values),
    }
}

/// A destination with no valid data: NaN for floats, the sentinel for u32.
fn poisoned_any(rt: &Runtime, dims: &[usize], dtype: DType) -> Tensor {
    match dtype {
        DType::U32 => sentinel(rt, dims),
        _ => poisoned(rt, dims, dtype),
    }
}

/// What `poisoned_any` holds, as the f64 the comparison expects.
fn poison_value(dtype: DType) -> f64 {
    match dtype {
        DType::U32 => f64::from(SENTINEL),
        _ => f64::NAN,
    }
}

/// Reads any dtype back as f64 (u32 exactly).
fn read(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::U32 => t.to_vec::<u32>().unwrap().into_iter().map(f64::from).collect(),
        _ => t.to_vec_f32().unwrap().into_iter().map(f64::from).collect(),
    }
}

/// Exact comparison, NaN equal to NaN.
fn assert_same(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w || (g.is_nan() && w.is_nan()), "{what}: element {i} is {g}, expected {w}");
    }
}

/// Every dtype the adapter can copy: u32, f32 and (with SHADER_F16) f16.
fn all_dtypes(rt: &Runtime) -> Vec<DType> {
    let mut d = float_dtypes(rt);
    d.push(DType::U32);
    d
}

/// Values that survive every dtype exactly (small integers, halves).
fn exact_values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.next_u64() % 2000) as f64 * 0.5).collect()
}

// ---------------------------------------------------------------------------------------------
// RoPE
// ---------------------------------------------------------------------------------------------

#[test]
fn rope_matches_reference_for_styles_head_dims_seqs_offsets_and_dtypes() {
    let rt = runtime();
    let mut worst = (0.0f64, 0.0f64);
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(10);
        for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
            for hd in [2usize, 8, 64, 128] {
                for seq in [1usize, 7, 33] {
                    for offset in [0u32, 1000] {
                        // Leading [batch, heads] on some shapes, none on others.
                        let dims: Vec<usize> = if hd == 64 { vec![2, 3, seq, hd] } else { vec![seq, hd] };
                        let n: usize = dims.iter().product();
                        let (x, xv) = upload(&rt, &dims, dtype, &rng.vec(n, -2.0, 2.0));
                        let o = RopeOptions { style, base: 10_000.0, position_offset: offset, ..Default::default() };
                        let out = poisoned(&rt, &dims, dtype);
                        rt.record(&Rope::new(&x, &out, o).unwrap()).unwrap();
                        let want = rope_ref(&xv, &dims, &o);
                        let what = format!("{style:?} {dtype} {dims:?} offset {offset}");
                        let e = check_rope(&out.to_vec_f32().unwrap(), &want, &xv, &dims, &o, tolerance(dtype), &what);
                        if dtype == DType::F32 {
                            worst.0 = worst.0.max(e);
                        } else {
                            worst.1 = worst.1.max(e);
                        }
                    }
                }
            }
        }
    }
    eprintln!("rope: largest relative error f32 {:e}, f16 {:e}", worst.0, worst.1);
}

#[test]
fn rope_partial_rotary_dim_base_and_freq_scale() {
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        let mut rng = Rng::new(11);
        // (head_dim, rotary_dim, base, freq_scale): Phi-2 style 80/32, a single pair, ...
        for (hd, rd, base, scale) in [
            (64usize, 32usize, 10_000.0f32, 1.0f32),
            (8, 2, 10_000.0, 1.0),
            (80, 32, 10_000.0, 0.25),
            (128, 96, 1_000_000.0, 1.0),
            (64, 64, 500_000.0, 0.125),
            (16, 0, 10_000.0, 1.0),
        ] {
            for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
                let dims = [3usize, 13, hd];
                let n = 3 * 13 * hd;
                let (x, xv) = upload(&rt, &dims, dtype, &rng.vec(n, -2.0, 2.0));
                let o = RopeOptions { style, base, position_offset: 77, rotary_dim: Some(rd), freq_scale: scale };
                let got = x.rope(o).unwrap().to_vec_f32().unwrap();
                let want = rope_ref(&xv, &dims, &o);
                let what = format!("{style:?} {dtype} hd {hd} rd {rd} base {base} scale {scale}");
                check_rope(&got, &want, &xv, &dims, &o, tolerance(dtype), &what);
                // The elements past rotary_dim are copied bit for bit.
                for (i, (g, v)) in got.iter().zip(&xv).enumerate() {
                    if i % hd >= rd {
                        assert_eq!(f64::from(*g), *v, "{what}: pass-through element {i}");
                    }
                }
            }
        }
    }
}

#[test]
fn rope_both_param_paths_in_place_and_views() {
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(12);
            // A view at a non-zero, unaligned offset: batch 1 of [3, 7, 10], written into batch 1
            // of a poisoned [3, 7, 10].
            let dims = [3usize, 7, 10];
            let (x, xv) = upload(&rt, &dims, dtype, &rng.vec(210, -1.0, 1.0));
            let out = poisoned(&rt, &dims, dtype);
            let o = RopeOptions { style: RopeStyle::Interleaved, position_offset: 3, ..Default::default() };
            rt.record(&Rope::new(&x.get_batch(1).unwrap(), &out.get_batch(1).unwrap(), o).unwrap()).unwrap();
            let got = out.to_vec_f32().unwrap();
            let want = rope_ref(&xv[70..140], &[7, 10], &o);
            let what = format!("view {dtype} {mode:?}");
            check_rope(&got[70..140], &want, &xv[70..140], &[7, 10], &o, tolerance(dtype), &what);
            assert!(got[..70].iter().chain(&got[140..]).all(|v| v.is_nan()), "{what}: wrote outside the view");

            // In place: out = x.
            let o = RopeOptions { rotary_dim: Some(6), ..o };
            rt.record(&Rope::new(&x, &x, o).unwrap()).unwrap();
            let want = rope_ref(&xv, &dims, &o);
            check_rope(&x.to_vec_f32().unwrap(), &want, &xv, &dims, &o, tolerance(dtype), &format!("in place {what}"));
        }
    }
}

#[test]
fn rope_large_positions_and_many_workgroups() {
    let rt = runtime();
    let mut rng = Rng::new(13);
    // Positions 8000..8200 over 4 heads of 128: 51,200 pairs, 200 workgroups.
    for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
        for base in [10_000.0f32, 1_000_000.0] {
            let dims = [4usize, 200, 128];
            let n = 4 * 200 * 128;
            let (x, xv) = upload(&rt, &dims, DType::F32, &rng.vec(n, -1.0, 1.0));
            let o = RopeOptions { style, base, position_offset: 8000, ..Default::default() };
            let got = x.rope(o).unwrap().to_vec_f32().unwrap();
            let want = rope_ref(&xv, &dims, &o);
            let e = check_rope(&got, &want, &xv, &dims, &o, 1e-5, &format!("{style:?} base {base} at 8000..8200"));
            eprintln!("rope {style:?} base {base} positions 8000..8200: largest error {e:e}");
        }
    }
}

#[test]
fn rope_preserves_pair_norms() {
    let rt = runtime();
    let mut rng = Rng::new(14);
    for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
        let (hd, rd) = (64usize, 48usize);
        let dims = [2usize, 31, hd];
        let (x, xv) = upload(&rt, &dims, DType::F32, &rng.vec(2 * 31 * hd, -3.0, 3.0));
        let o = RopeOptions { style, position_offset: 5000, rotary_dim: Some(rd), ..Default::default() };
        let got: Vec<f64> = x.rope(o).unwrap().to_vec_f32().unwrap().into_iter().map(f64::from).collect();
        for row in 0..2 * 31 {
            for j in 0..rd / 2 {
                let (a, b) = match style {
                    RopeStyle::NeoX => (j, j + rd / 2),
                    RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                };
                let (a, b) = (row * hd + a, row * hd + b);
                let before = xv[a].hypot(xv[b]);
                let after = got[a].hypot(got[b]);
                assert!(
                    (before - after).abs() <= 2e-6 * before.max(1.0),
                    "{style:?} row {row} pair {j}: norm {before} became {after}"
                );
            }
        }
    }
}

#[test]
fn rope_offset_equals_shifted_row() {
    // Row p of a sequence at offset 0 is rotated exactly like row 0 at offset p.
    let rt = runtime();
    let mut rng = Rng::new(15);
    for dtype in float_dtypes(&rt) {
        for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
            let hd = 64;
            let p = 1037usize;
            let (v, vv) = upload(&rt, &[hd], dtype, &rng.vec(hd, -2.0, 2.0));
            let rows: Vec<f64> = (0..=p).flat_map(|_| vv.iter().copied()).collect();
            let (seq_x, _) = upload(&rt, &[p + 1, hd], dtype, &rows);
            let base = RopeOptions { style, base: 10_000.0, ..Default::default() };
            let from_seq = seq_x.rope(base).unwrap().to_vec_f32().unwrap();
            let one = v.reshape([1, hd]).unwrap();
            let shifted = one.rope(RopeOptions { position_offset: p as u32, ..base }).unwrap().to_vec_f32().unwrap();
            assert_eq!(&from_seq[p * hd..], &shifted[..], "{style:?} {dtype}");
        }
    }
}

#[test]
fn rope_errors() {
    let rt = runtime();
    let o = RopeOptions::default();
    let odd = Tensor::zeros(&rt, [2, 7], DType::F32).unwrap();
    assert!(matches!(odd.rope(o), Err(Error::InvalidArgument { op: "rope", .. })), "odd head_dim");
    let x = Tensor::zeros(&rt, [2, 3, 8], DType::F32).unwrap();
    for rd in [10, 3] {
        let err = x.rope(RopeOptions { rotary_dim: Some(rd), ..o }).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "rotary_dim {rd}: {err}");
    }
    for (base, scale) in [(0.0, 1.0), (-1.0, 1.0), (f32::NAN, 1.0), (10_000.0, 0.0), (10_000.0, f32::INFINITY)] {
        let err = x.rope(RopeOptions { base, freq_scale: scale, ..o }).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "base {base} scale {scale}: {err}");
    }
    let far = RopeOptions { position_offset: (1 << 24) - 2, ..o };
    assert!(matches!(x.rope(far), Err(Error::InvalidArgument { .. })), "positions past 2^24");
    assert!(x.rope(RopeOptions { position_offset: (1 << 24) - 3, ..o }).is_ok());
    let flat = Tensor::zeros(&rt, [8], DType::F32).unwrap();
    assert!(matches!(flat.rope(o), Err(Error::InvalidShape { .. })), "rank 1");
    let ids = Tensor::from_slice(&rt, [1, 2], &[1u32, 2]).unwrap();
    assert!(matches!(ids.rope(o), Err(Error::DTypeMismatch { got: DType::U32, .. })));
    let other_shape = Tensor::zeros(&rt, [2, 8, 3], DType::F32).unwrap();
    assert!(matches!(Rope::new(&x, &other_shape, o), Err(Error::ShapeMismatch { .. })));
    if rt.context().caps().shader_f16() {
        let h = Tensor::zeros(&rt, [2, 3, 8], DType::F16).unwrap();
        let err = Rope::new(&x, &h, o).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::F16, .. }), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------------------------

/// `table[ids]` on the host, zero rows for ids out of range.
fn embedding_ref(table: &[f64], vocab: usize, dim: usize, ids: &[u32]) -> Vec<f64> {
    ids.iter()
        .flat_map(|&id| {
            let id = id as usize;
            (0..dim).map(move |k| if id < vocab { table[id * dim + k] } else { 0.0 })
        })
        .collect()
}

#[test]
fn embedding_matches_reference_for_vocab_dim_and_dtypes() {
    let rt = runtime();
    for dtype in all_dtypes(&rt) {
        let mut rng = Rng::new(20);
        for vocab in [1usize, 7, 1000] {
            for dim in [1usize, 7, 257] {
                let (table, tv) = upload_any(&rt, &[vocab, dim], dtype, &exact_values(vocab * dim, vocab as u64));
                // ids [3, 5]: in range, with the last valid id and out-of-range ones mixed in.
                let mut idv: Vec<u32> = (0..15).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
                idv[3] = vocab as u32 - 1;
                idv[7] = vocab as u32;
                idv[11] = u32::MAX;
                let ids = Tensor::from_slice(&rt, [3, 5], &idv).unwrap();
                let out = poisoned_any(&rt, &[3, 5, dim], dtype);
                rt.record(&Embedding::new(&table, &ids, &out).unwrap()).unwrap();
                let want = embedding_ref(&tv, vocab, dim, &idv);
                assert_same(&read(&out), &want, &format!("{dtype} vocab {vocab} dim {dim}"));
            }
        }
    }
}

#[test]
fn embedding_id_shapes_views_both_param_paths_and_many_workgroups() {
    for rt in runtimes() {
        for dtype in float_dtypes(&rt) {
            let mut rng = Rng::new(21);
            let (vocab, dim) = (300usize, 257usize);
            let (table, tv) = upload(&rt, &[vocab, dim], dtype, &rng.vec(vocab * dim, -1.0, 1.0));
            // Scalar ids, 1-D, 3-D, and 400 ids (102,800 outputs: many workgroups).
            for id_dims in [vec![], vec![1], vec![2, 3, 4], vec![400]] {
                let n: usize = id_dims.iter().product();
                let idv: Vec<u32> = (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
                let ids = Tensor::from_slice(&rt, &id_dims[..], &idv).unwrap();
                let out = table.embedding(&ids).unwrap();
                let mut want_dims = id_dims.clone();
                want_dims.push(dim);
                assert_eq!(out.dims(), &want_dims[..]);
                assert_same(&read(&out), &embedding_ref(&tv, vocab, dim, &idv), &format!("{dtype} ids {id_dims:?}"));
            }
            // Views at unaligned offsets: a table of rows 3.. of a bigger one, ids from batch 1,
            // output into batch 1 of a poisoned tensor whose other batches must stay NaN.
            let sub = table.narrow(3, 11).unwrap();
            let idv: Vec<u32> = vec![9, 9, 9, 0, 1, 2, 3, 4, 10, 11, 5, 6];
            let ids = Tensor::from_slice(&rt, [3, 4], &idv).unwrap().get_batch(1).unwrap();
            let out = poisoned(&rt, &[3, 4, dim], dtype);
            rt.record(&Embedding::new(&sub, &ids, &out.get_batch(1).unwrap()).unwrap()).unwrap();
            let got = read(&out);
            let want = embedding_ref(&tv[3 * dim..14 * dim], 11, dim, &idv[4..8]);
            assert_same(&got[4 * dim..8 * dim], &want, &format!("{dtype} views"));
            assert!(
                got[..4 * dim].iter().chain(&got[8 * dim..]).all(|v| v.is_nan()),
                "{dtype}: wrote outside the view"
            );
        }
    }
}

#[test]
fn embedding_errors() {
    let rt = runtime();
    let table = Tensor::zeros(&rt, [10, 4], DType::F32).unwrap();
    let ids = Tensor::from_slice(&rt, [3], &[1u32, 2, 3]).unwrap();
    let float_ids = Tensor::zeros(&rt, [3], DType::F32).unwrap();
    let err = table.embedding(&float_ids).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::U32, got: DType::F32, .. }), "{err}");
    let out = Tensor::zeros(&rt, [3, 4], DType::F32).unwrap();
    assert!(matches!(Embedding::new(&table, &float_ids, &out), Err(Error::DTypeMismatch { .. })));
    for bad in [vec![40], vec![2, 5, 4]] {
        let t = Tensor::zeros(&rt, &bad[..], DType::F32).unwrap();
        assert!(matches!(t.embedding(&ids), Err(Error::InvalidShape { .. })), "table {bad:?}");
        assert!(matches!(Embedding::new(&t, &ids, &out), Err(Error::InvalidShape { .. })), "table {bad:?}");
    }
    let wrong = Tensor::zeros(&rt, [3, 5], DType::F32).unwrap();
    assert!(matches!(Embedding::new(&table, &ids, &wrong), Err(Error::ShapeMismatch { .. })));
    let u = Tensor::zeros(&rt, [3, 4], DType::U32).unwrap();
    assert!(matches!(Embedding::new(&table, &ids, &u), Err(Error::DTypeMismatch { got: DType::U32, .. })));
    let deep = Tensor::zeros(&rt, [1, 1, 1, 1, 1, 1, 1, 2], DType::U32).unwrap();
    assert!(matches!(table.embedding(&deep), Err(Error::InvalidShape { .. })), "output rank 9");
}

// ---------------------------------------------------------------------------------------------
// Strided copy: permute, transpose, concat, write_slice
// ---------------------------------------------------------------------------------------------

/// All permutations of 0..n.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn permute_matches_reference_for_every_permutation_and_dtype() {
    let rt = runtime();
    for dtype in all_dtypes(&rt) {
        for dims in
            [vec![7usize], vec![13, 1], vec![3, 5, 7], vec![2, 7, 3, 5], vec![1, 13, 1, 3], vec![2, 3, 1, 2, 3, 2]]
        {
            let n: usize = dims.iter().product();
            let values = exact_values(n, n as u64);
            let (x, xv) = upload_any(&rt, &dims, dtype, &values);
            let perms = permutations(dims.len());
            // Every permutation up to rank 4; a spread of them for rank 6.
            let step = if dims.len() > 4 { 37 } else { 1 };
            for perm in perms.iter().step_by(step) {
                let out = x.permute(perm).unwrap();
                let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
                assert_eq!(out.dims(), &out_dims[..]);
                assert_same(&read(&out), &permute_ref(&xv, &dims, perm), &format!("{dtype} {dims:?} {perm:?}"));
            }
        }
    }
}

#[test]
fn permute_heads_both_param_paths_large_and_views() {
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        // [b, s, h, d] -> [b, h, s, d] as attention does, 2 × 33 × 6 × 65 = 25,740 elements.
        let dims = [2usize, 33, 6, 65];
        let xv = distinct(dims.iter().product(), 5);
        let x = Tensor::from_slice(&rt, dims, &xv).unwrap();
        let got = x.permute(&[0, 2, 1, 3]).unwrap().to_vec::<u32>().unwrap();
        assert_eq!(got, permute_ref(&xv, &dims, &[0, 2, 1, 3]), "{mode:?}");
        // A 2-D transpose spanning many workgroups: 300 × 257.
        let xv = distinct(300 * 257, 6);
        let x = Tensor::from_slice(&rt, [300, 257], &xv).unwrap();
        assert_eq!(x.transpose(0, 1).unwrap().to_vec::<u32>().unwrap(), permute_ref(&xv, &[300, 257], &[1, 0]));
    }
    let rt = runtime();
    for dtype in float_dtypes(&rt) {
        // Source view at an unaligned offset (batch 1 of [3, 5, 7]).
        let (x, xv) = upload(&rt, &[3, 5, 7], dtype, &exact_values(105, 1));
        let view = x.get_batch(1).unwrap();
        let got = read(&view.transpose(1, 0).unwrap());
        assert_same(&got, &permute_ref(&xv[35..70], &[5, 7], &[1, 0]), &format!("{dtype} view transpose"));
        // A scalar permutes to a copy of itself.
        let (s, sv) = upload(&rt, &[], dtype, &[3.5]);
        assert_same(&read(&s.permute(&[]).unwrap()), &sv, "scalar");
        // transpose(d, d) and the identity permutation copy.
        assert_same(&read(&x.transpose(2, 2).unwrap()), &xv, "transpose(2, 2)");
        assert_same(&read(&x.permute(&[0, 1, 2]).unwrap()), &xv, "identity");
        // transpose equals the permutation that swaps the two dimensions.
        assert_same(&read(&x.transpose(0, 2).unwrap()), &permute_ref(&xv, &[3, 5, 7], &[2, 1, 0]), "transpose(0, 2)");
    }
}

#[test]
fn concat_matches_reference_along_every_dim() {
    let rt = runtime();
    for dtype in all_dtypes(&rt) {
        for dim in 0..3 {
            // Three pieces of sizes 3, 1 and 5 along `dim` (plus an empty one), 4 × 7 elsewhere.
            let sizes = [3usize, 1, 0, 5];
            let mut pieces = Vec::new();
            let mut host = Vec::new();
            for (k, &s) in sizes.iter().enumerate() {
                let mut d = vec![4usize, 7, 6];
                d[dim] = s;
                let n: usize = d.iter().product();
                let (t, tv) = upload_any(&rt, &d, dtype, &exact_values(n, 100 + k as u64));
                pieces.push(t);
                host.push((d, tv));
            }
            // One piece as a view at an unaligned offset: batch 1 of a [2, ...] tensor.
            let mut d = vec![4usize, 7, 6];
            d[dim] = 2;
            let mut big = vec![2usize];
            big.extend(&d);
            let n: usize = d.iter().product();
            let (b, bv) = upload_any(&rt, &big, dtype, &exact_values(2 * n, 7));
            pieces.push(b.get_batch(1).unwrap());
            host.push((d, bv[n..].to_vec()));

            let refs: Vec<&Tensor> = pieces.iter().collect();
            let out = Tensor::concat(&refs, dim).unwrap();
            let mut out_dims = vec![4usize, 7, 6];
            out_dims[dim] = sizes.iter().sum::<usize>() + 2;
            assert_eq!(out.dims(), &out_dims[..]);
            let mut want = vec![f64::NAN; out_dims.iter().product()];
            let mut at = 0;
            for (d, v) in &host {
                write_slice_ref(&mut want, &out_dims, v, d, dim, at);
                at += d[dim];
            }
            assert_same(&read(&out), &want, &format!("{dtype} concat along {dim}"));
        }
        // A single tensor concatenates to a copy.
        let (a, av) = upload_any(&rt, &[5, 3], dtype, &exact_values(15, 3));
        assert_same(&read(&Tensor::concat(&[&a], 1).unwrap()), &av, "single");
    }
}

#[test]
fn write_slice_changes_only_its_region() {
    let rt = runtime();
    for dtype in all_dtypes(&rt) {
        let poison = poison_value(dtype);
        // A KV cache [b, h, max_seq, d] = [2, 3, 11, 5]; tokens written one at a time.
        let cache_dims = [2usize, 3, 11, 5];
        let cache = poisoned_any(&rt, &cache_dims, dtype);
        let mut want = vec![poison; cache_dims.iter().product()];
        for (k, p) in [0usize, 4, 10, 5].into_iter().enumerate() {
            let (kv, kvv) = upload_any(&rt, &[2, 3, 1, 5], dtype, &exact_values(30, 40 + k as u64));
            cache.write_slice(&kv, 2, p).unwrap();
            write_slice_ref(&mut want, &cache_dims, &kvv, &[2, 3, 1, 5], 2, p);
            assert_same(&read(&cache), &want, &format!("{dtype} token at {p}"));
        }
        // A prefill block of 3 positions from a source view at an unaligned offset.
        let (big, bv) = upload_any(&rt, &[2, 2, 3, 3, 5], dtype, &exact_values(180, 50));
        let block = big.get_batch(1).unwrap();
        cache.write_slice(&block, 2, 6).unwrap();
        write_slice_ref(&mut want, &cache_dims, &bv[90..], &[2, 3, 3, 5], 2, 6);
        assert_same(&read(&cache), &want, &format!("{dtype} block"));
        // Into a destination view (batch 1 of the cache), along the last and the first dimension.
        let dst = cache.get_batch(1).unwrap();
        let (col, cv) = upload_any(&rt, &[3, 11, 2], dtype, &exact_values(66, 51));
        dst.write_slice(&col, 2, 3).unwrap();
        let mut sub = want[165..].to_vec();
        write_slice_ref(&mut sub, &[3, 11, 5], &cv, &[3, 11, 2], 2, 3);
        want[165..].copy_from_slice(&sub);
        assert_same(&read(&cache), &want, &format!("{dtype} last dim of a view"));
        let (head, hv) = upload_any(&rt, &[1, 11, 5], dtype, &exact_values(55, 52));
        dst.write_slice(&head, 0, 2).unwrap();
        want[165 + 110..].copy_from_slice(&hv);
        assert_same(&read(&cache), &want, &format!("{dtype} first dim of a view"));
    }
}

#[test]
fn write_slice_both_param_paths_and_many_workgroups() {
    for rt in runtimes() {
        let mode = rt.context().caps().params;
        let dims = [4usize, 100, 257];
        let cache = sentinel(&rt, &dims);
        let src_dims = [4usize, 70, 257];
        let sv = distinct(src_dims.iter().product(), 9);
        let src = Tensor::from_slice(&rt, src_dims, &sv).unwrap();
        cache.write_slice(&src, 1, 30).unwrap();
        let mut want = vec![SENTINEL; dims.iter().product()];
        write_slice_ref(&mut want, &dims, &sv, &src_dims, 1, 30);
        assert_eq!(cache.to_vec::<u32>().unwrap(), want, "{mode:?}");
    }
}

#[test]
fn strided_copy_with_explicit_strides() {
    let rt = runtime();
    // Every other column of a [4, 6] matrix into the odd columns of a poisoned [4, 6].
    let xv = distinct(24, 3);
    let x = Tensor::from_slice(&rt, [4, 6], &xv).unwrap();
    let out = sentinel(&rt, &[4, 6]);
    let copy = StridedCopy::new(&x, Strided::new(0, &[6, 2]), &out, Strided::new(1, &[6, 2]), &[4, 3]).unwrap();
    rt.record(&copy).unwrap();
    let got = out.to_vec::<u32>().unwrap();
    for (i, &g) in got.iter().enumerate() {
        let want = if i % 2 == 1 { xv[i - 1] } else { SENTINEL };
        assert_eq!(g, want, "element {i}");
    }
    // A destination whose innermost region dimension is not its fastest one: the transpose
    // written through destination strides, and a broadcast read (source stride 0).
    let out = sentinel(&rt, &[6, 4]);
    rt.record(&StridedCopy::new(&x, Strided::new(0, &[6, 1]), &out, Strided::new(0, &[1, 4]), &[4, 6]).unwrap())
        .unwrap();
    assert_eq!(out.to_vec::<u32>().unwrap(), permute_ref(&xv, &[4, 6], &[1, 0]));
    let row = Tensor::from_slice(&rt, [3], &[7u32, 8, 9]).unwrap();
    let tiled = sentinel(&rt, &[5, 3]);
    rt.record(&StridedCopy::new(&row, Strided::new(0, &[0, 1]), &tiled, Strided::new(0, &[3, 1]), &[5, 3]).unwrap())
        .unwrap();
    assert_eq!(tiled.to_vec::<u32>().unwrap(), [7, 8, 9].repeat(5));
    // An empty region records nothing.
    rt.record(&StridedCopy::new(&x, Strided::new(0, &[6, 1]), &out, Strided::new(0, &[4, 1]), &[0, 6]).unwrap())
        .unwrap();
}

#[test]
fn layout_errors() {
    let rt = runtime();
    let x = Tensor::zeros(&rt, [2, 3, 4], DType::F32).unwrap();
    // permute / transpose
    for bad in [&[0usize, 1][..], &[0, 1, 1], &[0, 1, 3], &[2, 1, 0, 3]] {
        assert!(matches!(x.permute(bad), Err(Error::InvalidArgument { op: "permute", .. })), "{bad:?}");
    }
    assert!(matches!(x.transpose(0, 3), Err(Error::InvalidArgument { .. })));
    // Eight dimensions that cannot merge exceed the kernel's six.
    let deep = Tensor::zeros(&rt, [2; 8], DType::U32).unwrap();
    let err = deep.permute(&[7, 6, 5, 4, 3, 2, 1, 0]).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { .. }), "{err}");
    // ... while eight that merge to few are fine.
    assert_eq!(deep.permute(&[1, 0, 2, 3, 4, 5, 6, 7]).unwrap().dims(), &[2; 8]);

    // concat
    let a = Tensor::zeros(&rt, [2, 3], DType::F32).unwrap();
    let b = Tensor::zeros(&rt, [2, 4], DType::F32).unwrap();
    assert!(Tensor::concat(&[&a, &b], 1).is_ok());
    let err = Tensor::concat(&[&a, &b], 0).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "concat", .. }), "{err}");
    let c = Tensor::zeros(&rt, [2, 3, 1], DType::F32).unwrap();
    assert!(matches!(Tensor::concat(&[&a, &c], 0), Err(Error::ShapeMismatch { .. })), "rank");
    assert!(matches!(Tensor::concat(&[&a, &b], 2), Err(Error::InvalidArgument { .. })), "dim");
    assert!(matches!(Tensor::concat(&[], 0), Err(Error::InvalidArgument { .. })), "empty list");
    let u = Tensor::zeros(&rt, [2, 3], DType::U32).unwrap();
    let err = Tensor::concat(&[&a, &u], 1).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::U32, .. }), "{err}");
    let foreign = Tensor::zeros(&runtime(), [2, 3], DType::F32).unwrap();
    assert!(matches!(Tensor::concat(&[&a, &foreign], 1), Err(Error::InvalidArgument { .. })));

    // write_slice
    let cache = Tensor::zeros(&rt, [2, 3, 8, 4], DType::F32).unwrap();
    let kv = Tensor::zeros(&rt, [2, 3, 1, 4], DType::F32).unwrap();
    assert!(cache.write_slice(&kv, 2, 7).is_ok());
    assert!(matches!(cache.write_slice(&kv, 2, 8), Err(Error::InvalidArgument { op: "write_slice", .. })));
    assert!(matches!(cache.write_slice(&kv, 2, usize::MAX), Err(Error::InvalidArgument { .. })));
    assert!(matches!(cache.write_slice(&kv, 4, 0), Err(Error::InvalidArgument { .. })));
    let wrong = Tensor::zeros(&rt, [2, 2, 1, 4], DType::F32).unwrap();
    assert!(matches!(cache.write_slice(&wrong, 2, 0), Err(Error::ShapeMismatch { .. })));
    let wrong_rank = Tensor::zeros(&rt, [3, 1, 4], DType::F32).unwrap();
    assert!(matches!(cache.write_slice(&wrong_rank, 1, 0), Err(Error::ShapeMismatch { .. })));
    let kv_u = Tensor::zeros(&rt, [2, 3, 1, 4], DType::U32).unwrap();
    assert!(matches!(cache.write_slice(&kv_u, 2, 0), Err(Error::DTypeMismatch { .. })));
    if rt.context().caps().shader_f16() {
        let kv_h = Tensor::zeros(&rt, [2, 3, 1, 4], DType::F16).unwrap();
        let err = cache.write_slice(&kv_h, 2, 0).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::F16, .. }), "{err}");
    }
    // Writing a tensor into itself (overlapping memory) is refused.
    let first = cache.narrow(0, 1).unwrap();
    assert!(matches!(cache.narrow(0, 1).unwrap().write_slice(&first, 0, 0), Err(Error::InvalidArgument { .. })));

    // StridedCopy directly
    let x = Tensor::zeros(&rt, [4, 6], DType::U32).unwrap();
    let y = Tensor::zeros(&rt, [4, 6], DType::U32).unwrap();
    let region = |o, s: &'static [usize]| Strided::new(o, s);
    let err = StridedCopy::new(&x, region(0, &[6, 1]), &y, region(1, &[6, 1]), &[4, 6]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "destination past the end: {err}");
    let err = StridedCopy::new(&x, region(0, &[7, 1]), &y, region(0, &[6, 1]), &[4, 6]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "source past the end: {err}");
    let err = StridedCopy::new(&x, region(0, &[6, 1]), &y, region(0, &[1, 1]), &[4, 6]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "destination elements written twice: {err}");
    let err = StridedCopy::new(&x, region(0, &[6, 1]), &y, region(0, &[0, 1]), &[4, 6]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "destination stride 0: {err}");
    let err = StridedCopy::new(&x, region(0, &[6]), &y, region(0, &[6, 1]), &[4, 6]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "stride count: {err}");
    let err = StridedCopy::new(&x, region(0, &[6, 1]), &x, region(0, &[1, 4]), &[4, 6]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "in-place transpose: {err}");
    let f = Tensor::zeros(&rt, [4, 6], DType::F32).unwrap();
    let err = StridedCopy::new(&x, region(0, &[6, 1]), &f, region(0, &[6, 1]), &[4, 6]).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { expected: DType::F32, got: DType::U32, .. }), "{err}");
    // Disjoint halves of one tensor may be copied into each other.
    let halves = StridedCopy::new(&x, region(0, &[6, 1]), &x, region(12, &[6, 1]), &[2, 6]);
    assert!(halves.is_ok());
}
