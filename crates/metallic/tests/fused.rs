//! The fused decoder-layer ops against f64 references: `ResidualRmsNorm` and `QkvRope`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{Rng, poisoned, reduction_runtimes, runtime, upload};
use metallic::kernels::residual::ResidualRmsNorm;
use metallic::kernels::rope::{QkvRope, RopeOptions, RopeStyle};
use metallic::{DType, Error, Tensor};

fn rms_scale(v: &[f64], eps: f64) -> f64 {
    1.0 / (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64 + eps).sqrt()
}

fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(g) - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn residual_rms_norm_matches_f64() {
    let eps = 1e-6;
    for rt in reduction_runtimes() {
        for &(rows, n, delta_norm, in_place) in &[
            (1, 640, true, true),
            (3, 7, true, false),
            (5, 1000, false, false),
            (2, 129, false, true),
            (1, 1, true, false),
            // Long rows take workgroups of 512 and 1024 where the adapter allows.
            (2, 4096, true, true),
            (1, 2048, false, false),
            (1, 3001, true, false),
        ] {
            let mut rng = Rng::new(rows as u64 * 1000 + n as u64);
            let (x, xv) = upload(&rt, &[rows, n], DType::F32, &rng.vec(rows * n, -2.0, 2.0));
            let (d, dv) = upload(&rt, &[rows, n], DType::F32, &rng.vec(rows * n, -30.0, 30.0));
            let (wd, wdv) = upload(&rt, &[n], DType::F32, &rng.vec(n, 0.5, 1.5));
            let (w, wv) = upload(&rt, &[n], DType::F32, &rng.vec(n, 0.5, 1.5));
            let h = if in_place { x.clone() } else { poisoned(&rt, &[rows, n], DType::F32) };
            let y = poisoned(&rt, &[rows, n], DType::F32);
            let op = ResidualRmsNorm::new(&x, &d, delta_norm.then_some(&wd), &w, eps as f32, &h, &y).unwrap();
            rt.record(&op).unwrap();
            let (mut want_h, mut want_y) = (Vec::new(), Vec::new());
            for r in 0..rows {
                let (xr, dr) = (&xv[r * n..(r + 1) * n], &dv[r * n..(r + 1) * n]);
                let ds = if delta_norm { rms_scale(dr, eps) } else { 1.0 };
                let hr: Vec<f64> =
                    (0..n).map(|i| xr[i] + if delta_norm { dr[i] * ds * wdv[i] } else { dr[i] }).collect();
                let hs = rms_scale(&hr, eps);
                want_y.extend((0..n).map(|i| hr[i] * hs * wv[i]));
                want_h.extend(hr);
            }
            let what = format!("rows {rows} n {n} delta_norm {delta_norm} in_place {in_place}");
            close(&h.to_vec::<f32>().unwrap(), &want_h, 1e-5, &format!("h, {what}"));
            close(&y.to_vec::<f32>().unwrap(), &want_y, 1e-5, &format!("y, {what}"));
        }
    }
}

#[test]
fn residual_rms_norm_rejects_bad_arguments() {
    let rt = runtime();
    let t = |dims: &[usize]| Tensor::zeros(&rt, dims, DType::F32).unwrap();
    let (x, d, w, h, y) = (t(&[2, 4]), t(&[2, 4]), t(&[4]), t(&[2, 4]), t(&[2, 4]));
    let err = ResidualRmsNorm::new(&x, &t(&[2, 5]), None, &w, 1e-6, &h, &y).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = ResidualRmsNorm::new(&x, &d, None, &t(&[5]), 1e-6, &h, &y).unwrap_err();
    assert!(err.to_string().contains("norm weights must be [4]"), "{err}");
    let err = ResidualRmsNorm::new(&x, &d, None, &w, f32::NAN, &h, &y).unwrap_err();
    assert!(err.to_string().contains("eps"), "{err}");
    let err = ResidualRmsNorm::new(&x, &d, None, &w, 1e-6, &h, &h).unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
    let ints = Tensor::zeros(&rt, [2, 4], DType::U32).unwrap();
    assert!(matches!(ResidualRmsNorm::new(&ints, &d, None, &w, 1e-6, &h, &y), Err(Error::DTypeMismatch { .. })));
}

/// `(x1, x2)` rotated by `angle`.
fn rotate(x1: f64, x2: f64, angle: f64) -> (f64, f64) {
    (x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin())
}

/// One head normalised (when `w` is given) and rotated at `pos` (pair `p`'s angle divided by
/// `factors[p]` when given), in f64.
fn head_ref(
    x: &[f64],
    w: Option<&[f64]>,
    eps: f64,
    pos: usize,
    base: f64,
    style: RopeStyle,
    factors: Option<&[f64]>,
) -> Vec<f64> {
    let hd = x.len();
    let scale = if w.is_some() { rms_scale(x, eps) } else { 1.0 };
    let v: Vec<f64> = (0..hd).map(|i| x[i] * scale * w.map_or(1.0, |w| w[i])).collect();
    let mut out = v.clone();
    for p in 0..hd / 2 {
        let (a, b) = match style {
            RopeStyle::NeoX => (p, p + hd / 2),
            RopeStyle::Interleaved => (2 * p, 2 * p + 1),
        };
        let angle = pos as f64 * base.powf(-2.0 * p as f64 / hd as f64) / factors.map_or(1.0, |f| f[p]);
        (out[a], out[b]) = rotate(v[a], v[b], angle);
    }
    out
}

#[test]
fn qkv_rope_matches_f64() {
    let eps = 1e-6;
    let rt = runtime();
    // (seq, n_q, n_kv, head_dim, capacity, start, norms, style, bias, freq factors)
    let cases = [
        (1, 4, 1, 256, 40, 17, true, RopeStyle::NeoX, false, false),
        (3, 2, 2, 8, 9, 5, false, RopeStyle::NeoX, false, false),
        (5, 3, 1, 6, 5, 0, true, RopeStyle::Interleaved, false, false),
        (2, 1, 1, 130, 4, 2, true, RopeStyle::NeoX, false, false),
        (3, 4, 2, 16, 12, 7, false, RopeStyle::NeoX, true, false),
        (2, 2, 1, 64, 30, 21, false, RopeStyle::Interleaved, false, true),
        (4, 3, 3, 32, 9, 3, true, RopeStyle::NeoX, true, true),
    ];
    for (seq, n_q, n_kv, hd, cap, start, norms, style, bias, factors) in cases {
        let what = format!(
            "seq {seq} n_q {n_q} n_kv {n_kv} hd {hd} cap {cap} start {start} norms {norms} {style:?} bias {bias} factors {factors}"
        );
        let mut rng = Rng::new((seq * 7 + n_q * 131 + hd) as u64);
        let heads = n_q + 2 * n_kv;
        let (x, xv) = upload(&rt, &[seq, heads * hd], DType::F32, &rng.vec(seq * heads * hd, -3.0, 3.0));
        let (qw, qwv) = upload(&rt, &[hd], DType::F32, &rng.vec(hd, 0.5, 1.5));
        let (kw, kwv) = upload(&rt, &[hd], DType::F32, &rng.vec(hd, 0.5, 1.5));
        let q = poisoned(&rt, &[n_q, seq, hd], DType::F32);
        // Cache rows outside start..start + seq keep their (random) contents.
        let (k, kv0) = upload(&rt, &[n_kv, cap, hd], DType::F32, &rng.vec(n_kv * cap * hd, -1.0, 1.0));
        let (v, vv0) = upload(&rt, &[n_kv, cap, hd], DType::F32, &rng.vec(n_kv * cap * hd, -1.0, 1.0));
        let base = 10_000.0;
        let options = RopeOptions { style, base: base as f32, position_offset: start as u32, ..Default::default() };
        let (b, bv) = upload(&rt, &[heads * hd], DType::F32, &rng.vec(heads * hd, -2.0, 2.0));
        let (f, fv) = upload(&rt, &[hd / 2], DType::F32, &rng.vec(hd / 2, 1.0, 40.0));
        let mut op = QkvRope::new(&x, &q, &k, &v, options).unwrap();
        if norms {
            op = op.with_norms(&qw, &kw, eps as f32).unwrap();
        }
        if bias {
            op = op.with_bias(&b).unwrap();
        }
        if factors {
            op = op.with_freq_factors(&f).unwrap();
        }
        rt.record(&op).unwrap();
        let (mut want_q, mut want_k, mut want_v) = (vec![0.0; n_q * seq * hd], kv0.clone(), vv0.clone());
        let ff = factors.then_some(&fv[..]);
        for s in 0..seq {
            for j in 0..heads {
                let row = &xv[(s * heads + j) * hd..(s * heads + j + 1) * hd];
                let src: Vec<f64> =
                    row.iter().enumerate().map(|(i, x)| x + if bias { bv[j * hd + i] } else { 0.0 }).collect();
                let pos = start + s;
                let (qn, kn) = if norms { (Some(&qwv[..]), Some(&kwv[..])) } else { (None, None) };
                if j < n_q {
                    let dst = (j * seq + s) * hd;
                    want_q[dst..dst + hd].copy_from_slice(&head_ref(&src, qn, eps, pos, base, style, ff));
                } else if j < n_q + n_kv {
                    let dst = ((j - n_q) * cap + pos) * hd;
                    want_k[dst..dst + hd].copy_from_slice(&head_ref(&src, kn, eps, pos, base, style, ff));
                } else {
                    let dst = ((j - n_q - n_kv) * cap + pos) * hd;
                    want_v[dst..dst + hd].copy_from_slice(&src);
                }
            }
        }
        // Angles up to ~40 radians in f32: a few 1e-6 of error.
        close(&q.to_vec::<f32>().unwrap(), &want_q, 2e-5, &format!("q, {what}"));
        close(&k.to_vec::<f32>().unwrap(), &want_k, 2e-5, &format!("k, {what}"));
        // Values are copied, or rounded once to f32 after the bias.
        let v_tol = if bias { 1e-6 } else { 0.0 };
        close(&v.to_vec::<f32>().unwrap(), &want_v, v_tol, &format!("v, {what}"));
    }
}

/// The batched form: each row at its own slot and position (from a table on the GPU), q
/// sequence-major; every other slot and position of the caches keeps its contents.
#[test]
fn batched_qkv_rope_matches_f64_at_each_rows_slot_and_position() {
    let eps = 1e-6;
    let rt = runtime();
    let (n_q, n_kv, hd, slots, cap) = (3, 1, 16, 3, 9);
    // (slot, position) per row: slots out of order, one left out, positions far apart.
    let rows: [(usize, usize); 2] = [(2, 7), (0, 0)];
    let seq = rows.len();
    let heads = n_q + 2 * n_kv;
    let mut rng = Rng::new(77);
    let (x, xv) = upload(&rt, &[seq, heads * hd], DType::F32, &rng.vec(seq * heads * hd, -3.0, 3.0));
    let (w, wv) = upload(&rt, &[hd], DType::F32, &rng.vec(hd, 0.5, 1.5));
    let (b, bv) = upload(&rt, &[heads * hd], DType::F32, &rng.vec(heads * hd, -2.0, 2.0));
    let (f, fv) = upload(&rt, &[hd / 2], DType::F32, &rng.vec(hd / 2, 1.0, 40.0));
    let table: Vec<u32> = rows.iter().flat_map(|&(s, p)| [s as u32, p as u32]).collect();
    let table = Tensor::from_slice(&rt, [seq, 2], &table).unwrap();
    let q = poisoned(&rt, &[seq, n_q, hd], DType::F32);
    let shape = [slots, n_kv, cap, hd];
    let (k, kv0) = upload(&rt, &shape, DType::F32, &rng.vec(slots * n_kv * cap * hd, -1.0, 1.0));
    let (v, vv0) = upload(&rt, &shape, DType::F32, &rng.vec(slots * n_kv * cap * hd, -1.0, 1.0));
    let base = 10_000.0;
    for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
        let options = RopeOptions { style, base: base as f32, ..Default::default() };
        let op = QkvRope::batched(&x, &q, &k, &v, options, &table)
            .unwrap()
            .with_norms(&w, &w, eps as f32)
            .unwrap()
            .with_bias(&b)
            .unwrap()
            .with_freq_factors(&f)
            .unwrap();
        rt.record(&op).unwrap();
        let (mut want_q, mut want_k, mut want_v) = (vec![0.0; seq * n_q * hd], kv0.clone(), vv0.clone());
        for (s, &(slot, pos)) in rows.iter().enumerate() {
            for j in 0..heads {
                let src: Vec<f64> = (0..hd).map(|i| xv[(s * heads + j) * hd + i] + bv[j * hd + i]).collect();
                let slot_base = slot * n_kv * cap * hd;
                let head = |norm| head_ref(&src, norm, eps, pos, base, style, Some(&fv[..]));
                if j < n_q {
                    want_q[(s * n_q + j) * hd..][..hd].copy_from_slice(&head(Some(&wv[..])));
                } else if j < n_q + n_kv {
                    want_k[slot_base + ((j - n_q) * cap + pos) * hd..][..hd].copy_from_slice(&head(Some(&wv[..])));
                } else {
                    want_v[slot_base + ((j - n_q - n_kv) * cap + pos) * hd..][..hd].copy_from_slice(&src);
                }
            }
        }
        close(&q.to_vec::<f32>().unwrap(), &want_q, 2e-5, &format!("q, {style:?}"));
        close(&k.to_vec::<f32>().unwrap(), &want_k, 2e-5, &format!("k, {style:?}"));
        close(&v.to_vec::<f32>().unwrap(), &want_v, 1e-6, &format!("v, {style:?}"));
    }
    // The one-sequence layouts are refused with a table, and a wrong table.
    let flat = Tensor::zeros(&rt, [n_kv, cap, hd], DType::F32).unwrap();
    let options = RopeOptions::default();
    assert!(QkvRope::batched(&x, &q, &flat, &flat, options, &table).is_err());
    let short = Tensor::from_slice(&rt, [1, 2], &[0u32, 0]).unwrap();
    assert!(QkvRope::batched(&x, &q, &k, &v, options, &short).is_err());
    let at_3 = RopeOptions { position_offset: 3, ..Default::default() };
    assert!(QkvRope::batched(&x, &q, &k, &v, at_3, &table).is_err());
}

/// The fused op computes what the separate ops do: per-head `rms_norm`, then `rope`.
#[test]
fn qkv_rope_agrees_with_rms_norm_then_rope() {
    let rt = runtime();
    let (seq, n_q, n_kv, hd) = (2, 2, 1, 64);
    let heads = n_q + 2 * n_kv;
    let mut rng = Rng::new(5);
    let (x, _) = upload(&rt, &[seq, heads * hd], DType::F32, &rng.vec(seq * heads * hd, -3.0, 3.0));
    let (w, _) = upload(&rt, &[hd], DType::F32, &rng.vec(hd, 0.5, 1.5));
    let q = Tensor::zeros(&rt, [n_q, seq, hd], DType::F32).unwrap();
    let (k, v) = (
        Tensor::zeros(&rt, [n_kv, 8, hd], DType::F32).unwrap(),
        Tensor::zeros(&rt, [n_kv, 8, hd], DType::F32).unwrap(),
    );
    let options = RopeOptions { base: 1e6, position_offset: 3, ..Default::default() };
    rt.record(&QkvRope::new(&x, &q, &k, &v, options).unwrap().with_norms(&w, &w, 1e-6).unwrap()).unwrap();
    let separate = x
        .reshape([seq, heads, hd])
        .unwrap()
        .rms_norm(Some(&w), 1e-6, false)
        .unwrap()
        .permute(&[1, 0, 2])
        .unwrap()
        .rope(options)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let fused = q.to_vec::<f32>().unwrap();
    for (i, (a, b)) in fused.iter().zip(&separate[..n_q * seq * hd]).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "q[{i}]: fused {a}, separate {b}");
    }
}

#[test]
fn qkv_rope_rejects_bad_shapes() {
    let rt = runtime();
    let t = |dims: &[usize]| Tensor::zeros(&rt, dims, DType::F32).unwrap();
    let (x, q, k, v) = (t(&[1, 24]), t(&[2, 1, 6]), t(&[1, 4, 6]), t(&[1, 4, 6]));
    assert!(QkvRope::new(&x, &q, &k, &v, RopeOptions::default()).is_ok());
    let err = QkvRope::new(&t(&[1, 23]), &q, &k, &v, RopeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("x must be [1, 24]"), "{err}");
    let past = RopeOptions { position_offset: 4, ..Default::default() };
    let err = QkvRope::new(&x, &q, &k, &v, past).unwrap_err();
    assert!(err.to_string().contains("exceed the cache capacity 4"), "{err}");
    let err = QkvRope::new(&x, &q, &k, &t(&[1, 5, 6]), RopeOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let partial = RopeOptions { rotary_dim: Some(4), ..Default::default() };
    assert!(QkvRope::new(&x, &q, &k, &v, partial).unwrap_err().to_string().contains("whole head"));
    let op = QkvRope::new(&x, &q, &k, &v, RopeOptions::default()).unwrap();
    let err = op.clone().with_norms(&t(&[5]), &t(&[6]), 1e-6).unwrap_err();
    assert!(err.to_string().contains("norm weights must be [6]"), "{err}");
    let err = op.clone().with_bias(&t(&[6])).unwrap_err();
    assert!(err.to_string().contains("bias must be [24]"), "{err}");
    let err = op.with_freq_factors(&t(&[6])).unwrap_err();
    assert!(err.to_string().contains("freq factors must be [3]"), "{err}");
}
