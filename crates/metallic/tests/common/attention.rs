//! The attention test harness shared by `tests/sdpa.rs` and `tests/sdpa_decode.rs`: problem
//! descriptions, the f64 CPU reference, inputs and the fused kernel's runner.

use metallic::kernels::sdpa::{FlashAttention, SdpaOptions};
use metallic::{DType, Runtime, Tensor};

use super::{Rng, assert_close, poisoned, upload};

/// One attention problem.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub d: usize,
    pub dv: usize,
    /// 3-D `[batch, seq, dim]` inputs (heads = kv_heads = 1).
    pub rank3: bool,
    pub causal: bool,
    pub offset: Option<u32>,
    pub scale: Option<f32>,
    /// Sliding window (with `causal`): keys `j > i + offset - window` only.
    pub window: Option<usize>,
}

/// `[batch, heads, seq_q, seq_k, d]` with one head per K/V head, d = dv.
pub const fn mha(batch: usize, heads: usize, seq_q: usize, seq_k: usize, d: usize) -> Case {
    Case {
        batch,
        heads,
        kv_heads: heads,
        seq_q,
        seq_k,
        d,
        dv: d,
        rank3: false,
        causal: false,
        offset: None,
        scale: None,
        window: None,
    }
}

impl Case {
    pub const fn causal(mut self, offset: Option<u32>) -> Self {
        self.causal = true;
        self.offset = offset;
        self
    }
    /// Causal with a sliding window of `window` keys.
    pub const fn window(mut self, window: usize) -> Self {
        self.causal = true;
        self.window = Some(window);
        self
    }
    pub const fn kv(mut self, kv_heads: usize) -> Self {
        self.kv_heads = kv_heads;
        self
    }
    pub const fn dv(mut self, dv: usize) -> Self {
        self.dv = dv;
        self
    }
    pub const fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    pub fn shape(&self, heads: usize, seq: usize, dim: usize) -> Vec<usize> {
        if self.rank3 { vec![self.batch, seq, dim] } else { vec![self.batch, heads, seq, dim] }
    }
    pub fn q_shape(&self) -> Vec<usize> {
        self.shape(self.heads, self.seq_q, self.d)
    }
    pub fn k_shape(&self) -> Vec<usize> {
        self.shape(self.kv_heads, self.seq_k, self.d)
    }
    pub fn v_shape(&self) -> Vec<usize> {
        self.shape(self.kv_heads, self.seq_k, self.dv)
    }
    pub fn out_shape(&self) -> Vec<usize> {
        self.shape(self.heads, self.seq_q, self.dv)
    }
    /// The logits a mask broadcasts to.
    pub fn logits_shape(&self) -> Vec<usize> {
        self.shape(self.heads, self.seq_q, self.seq_k)
    }
    pub fn options(&self, mask: Option<Tensor>) -> SdpaOptions {
        SdpaOptions {
            scale: self.scale,
            causal: self.causal,
            causal_offset: self.offset,
            mask,
            window: self.window,
            keys: None,
        }
    }
    pub fn scale_f64(&self) -> f64 {
        match self.scale {
            Some(s) => f64::from(s),
            None => 1.0 / (self.d as f64).sqrt(),
        }
    }
    pub fn causal_offset(&self) -> Option<i64> {
        self.causal.then(|| match self.offset {
            Some(o) => i64::from(o),
            None => self.seq_k as i64 - self.seq_q as i64,
        })
    }
}

/// Element strides of a mask over (batch, head, query, key), broadcasting right-aligned.
pub fn mask_strides(case: &Case, mask_dims: &[usize]) -> [usize; 4] {
    let target = case.logits_shape();
    assert!(mask_dims.len() <= target.len());
    let mut strides = vec![0usize; mask_dims.len()];
    let mut acc = 1;
    for a in (0..mask_dims.len()).rev() {
        strides[a] = if mask_dims[a] == 1 { 0 } else { acc };
        acc *= mask_dims[a];
    }
    let lead = target.len() - mask_dims.len();
    let mut per_axis = vec![0usize; target.len()];
    for a in 0..mask_dims.len() {
        assert!(mask_dims[a] == target[lead + a] || mask_dims[a] == 1);
        per_axis[lead + a] = strides[a];
    }
    if case.rank3 {
        [per_axis[0], 0, per_axis[1], per_axis[2]]
    } else {
        [per_axis[0], per_axis[1], per_axis[2], per_axis[3]]
    }
}

/// The f64 reference: softmax(scale q kᵀ + mask, causal) v; rows with no visible key give 0.
pub fn reference(case: &Case, q: &[f64], k: &[f64], v: &[f64], mask: Option<(&[f64], [usize; 4])>) -> Vec<f64> {
    let (heads, kvh, sq, sk, d, dv) = (case.heads, case.kv_heads, case.seq_q, case.seq_k, case.d, case.dv);
    let group = heads / kvh;
    let scale = case.scale_f64();
    let causal = case.causal_offset();
    let mut out = vec![0.0; case.batch * heads * sq * dv];
    for b in 0..case.batch {
        for h in 0..heads {
            let kh = h / group;
            for i in 0..sq {
                let qrow = &q[((b * heads + h) * sq + i) * d..][..d];
                let scores: Vec<f64> = (0..sk)
                    .map(|j| {
                        if causal.is_some_and(|off| j as i64 > i as i64 + off) {
                            return f64::NEG_INFINITY;
                        }
                        let window = case.window.map(|w| w as i64);
                        if causal.zip(window).is_some_and(|(off, w)| j as i64 <= i as i64 + off - w) {
                            return f64::NEG_INFINITY;
                        }
                        let krow = &k[((b * kvh + kh) * sk + j) * d..][..d];
                        let mut s = scale * qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f64>();
                        if let Some((m, st)) = mask {
                            s += m[b * st[0] + h * st[1] + i * st[2] + j * st[3]];
                        }
                        s
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let o = &mut out[((b * heads + h) * sq + i) * dv..][..dv];
                if max == f64::NEG_INFINITY {
                    continue; // every key masked: zeros
                }
                let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = w.iter().sum();
                for (j, wj) in w.iter().enumerate() {
                    let vrow = &v[((b * kvh + kh) * sk + j) * dv..][..dv];
                    for (oc, vc) in o.iter_mut().zip(vrow) {
                        *oc += wj / total * vc;
                    }
                }
            }
        }
    }
    out
}

pub struct Inputs {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub qv: Vec<f64>,
    pub kv: Vec<f64>,
    pub vv: Vec<f64>,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

pub fn inputs(rt: &Runtime, case: &Case, dtype: DType, rng: &mut Rng, range: f64) -> Inputs {
    let (q, qv) = upload(rt, &case.q_shape(), dtype, &rng.vec(numel(&case.q_shape()), -range, range));
    let (k, kv) = upload(rt, &case.k_shape(), dtype, &rng.vec(numel(&case.k_shape()), -range, range));
    let (v, vv) = upload(rt, &case.v_shape(), dtype, &rng.vec(numel(&case.v_shape()), -1.0, 1.0));
    Inputs { q, k, v, qv, kv, vv }
}

/// Records the fused kernel into a NaN-poisoned output and returns it.
pub fn flash(rt: &Runtime, case: &Case, x: &Inputs, mask: Option<Tensor>) -> Vec<f32> {
    let out = poisoned(rt, &case.out_shape(), x.q.dtype());
    rt.record(&FlashAttention::new(&x.q, &x.k, &x.v, &out, case.options(mask)).unwrap()).unwrap();
    out.to_vec_f32().unwrap()
}

/// Asserts closeness and returns the largest absolute error.
pub fn check(got: &[f32], want: &[f64], tol: f64, what: &str) -> f64 {
    assert_close(got, want, tol, what);
    got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max)
}

pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 1e-2,
        _ => 1e-4,
    }
}

/// A view of `numel` elements at element `offset` of a larger flat tensor.
pub fn view_of(rt: &Runtime, shape: &[usize], dtype: DType, offset: usize, values: &[f64]) -> (Tensor, Vec<f64>) {
    let n = numel(shape);
    let mut all = vec![0.5; offset + n + 3];
    all[offset..offset + n].copy_from_slice(values);
    let (t, rounded) = upload(rt, &[all.len()], dtype, &all);
    (t.narrow(offset, n).unwrap().reshape(shape.to_vec()).unwrap(), rounded[offset..offset + n].to_vec())
}
