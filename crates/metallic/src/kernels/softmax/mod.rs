//! Fused, numerically stable softmax over the last dimension, with scaling, causal masking
//! (with a query offset, for KV-cached decoding) and an additive broadcast mask.
//!
//! ```
//! use metallic::{kernels::softmax::SoftmaxOptions, Runtime, Tensor};
//! let rt = Runtime::new()?;
//! let scores = Tensor::from_slice(&rt, [2, 3], &[1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0])?;
//! let p = scores.softmax()?.to_vec::<f32>()?;
//! assert!((p[3] - 1.0 / 3.0).abs() < 1e-6);
//! // Query 0 sees key 0 only, query 1 keys 0 and 1.
//! let causal = scores.softmax_with(SoftmaxOptions { causal: Some(0), ..Default::default() })?;
//! assert_eq!(causal.to_vec::<f32>()?[..3], [1.0, 0.0, 0.0]);
//! # Ok::<(), metallic::Error>(())
//! ```
//!
//! # Kernels
//!
//! Chosen automatically per call ([`Softmax::path`] tells which):
//!
//! - Rows of K <= 4096 keys: each invocation of a workgroup of `clamp(next_pow2(K / 16), 32,
//!   256)` loads its (up to 16) keys of the row once into registers, and the max, the sum and
//!   the outputs come from there (one read and one write per element; the mask is still read
//!   element by element). `softmax_rows.wgsl` does so with `vec4` loads and stores when K is
//!   a multiple of 4, `x`'s and `out`'s element offsets within their bound ranges are
//!   multiples of 4 and the device's storage offset alignment is a multiple of 16 bytes;
//!   `softmax_rows_scalar.wgsl` with scalar ones otherwise.
//! - `softmax.wgsl` for longer rows (any length, any offsets): scalar loads in a strided loop
//!   with an online max and sum, then a second pass over the row for the outputs.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::Tensor;

pub(crate) static SOFTMAX: Kernel = Kernel {
    name: "softmax",
    source: concat!(include_str!("softmax.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 3,
};
pub(crate) static SOFTMAX_ROWS: Kernel = Kernel {
    name: "softmax_rows",
    source: concat!(include_str!("softmax_rows.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 3,
};
pub(crate) static SOFTMAX_ROWS_SCALAR: Kernel = Kernel {
    name: "softmax_rows_scalar",
    source: concat!(include_str!("softmax_rows_scalar.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 3,
};

/// Elements per vector access of the vec4 register kernel (`softmax_rows.wgsl`).
const VEC: u32 = 4;
/// `vec4` each invocation of the register kernels holds (named variables in `softmax_rows*.wgsl`).
const UNROLL: u32 = 4;
/// Longest row the register kernels take: [`MAX_WG`] invocations × [`UNROLL`] vectors of [`VEC`].
const REGISTER_MAX_K: u32 = MAX_WG * UNROLL * VEC;

/// Largest workgroup the kernel uses (one workgroup per row; shorter rows get a smaller power
/// of two, at least [`MIN_WG`]).
const MAX_WG: u32 = 256;
/// Smallest workgroup the kernel uses.
const MIN_WG: u32 = 32;

/// Whether [`Softmax`] uses Neumaier-compensated per-invocation sums unless told otherwise
/// ([`Softmax::compensated`]).
///
/// Measured on rows of 2^20 f32 logits against an f64 reference (lavapipe; `tests/softmax.rs`):
/// logits spread over [-1, 1) or [-10, 10) give the same largest relative error either way
/// (2.6e-6 / 2.5e-6 vs 2.8e-6, dominated by `exp`), but an attention-sink row (a few large
/// logits first, a million small ones after) gives 4.6e-5 with plain sums and 1.6e-6 with
/// compensated ones, because each invocation adds thousands of terms below half an ulp of its
/// running sum. The cost is a few ALU operations per key in a memory-bound loop.
pub const COMPENSATED_DEFAULT: bool = true;

/// What [`Softmax`] applies besides the softmax itself.
#[derive(Debug, Clone)]
pub struct SoftmaxOptions {
    /// Multiplies every logit before the mask and the row max (1 by default; must be finite).
    pub scale: f32,
    /// Causal masking with a query offset: query row `q` (the second-to-last dimension) attends
    /// key `k` iff `k <= q + offset`. For KV-cached decoding with `seq_q` queries against
    /// `seq_k` keys the offset is usually `seq_k - seq_q`. Needs rank >= 2.
    pub causal: Option<u32>,
    /// An additive mask of the input's dtype, added after scaling. Its shape broadcasts
    /// against the input's: right-aligned, at most the input's rank, each dimension equal to
    /// the input's or 1 (`[Q, K]`, `[B, 1, 1, K]`, `[B, H, Q, K]`, ...). `-inf` masks a key out.
    pub mask: Option<Tensor>,
}

impl Default for SoftmaxOptions {
    fn default() -> Self {
        SoftmaxOptions { scale: 1.0, causal: None, mask: None }
    }
}

/// `out = softmax(x * scale + mask)` over the last dimension, causal keys excluded.
///
/// `x` has rank >= 1 and is viewed as `[planes..., Q, K]`; `out` has `x`'s shape and dtype
/// (f32 or f16; the arithmetic is f32) and may be `x` itself. Masked keys (causal-excluded or
/// `-inf` in the mask) give exactly 0, a row with every key masked gives zeros, and finite
/// logits of any size give finite results.
#[derive(Debug, Clone)]
pub struct Softmax {
    x: Tensor,
    out: Tensor,
    options: SoftmaxOptions,
    compensated: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    k: u32,
    q_len: u32,
    x_off: u32,
    out_off: u32,
    mask_off: u32,
    scale: f32,
    causal: u32,
    causal_offset: u32,
    has_mask: u32,
    n1: u32,
    n2: u32,
    ms0: u32,
    ms1: u32,
    ms2: u32,
    ms_k: u32,
    /// Always 0; XOR-ed into compensated sums so that no compiler can prove the compensation
    /// cancels (NVIDIA's Vulkan compiler did, on an H100).
    zero: u32,
}

/// How the mask broadcasts: the row index splits into three digits of sizes `(_, n1, n2)`
/// with mask strides `row_strides`; keys step by `key_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MaskLayout {
    n1: u32,
    n2: u32,
    row_strides: [u32; 3],
    key_stride: u32,
}

/// The mask's strides over `x_dims`, with leading row dimensions merged so that at most three
/// remain. Fails with `ShapeMismatch` when the mask does not broadcast.
fn mask_layout(op: &'static str, x: &Tensor, mask: &Tensor) -> Result<MaskLayout> {
    let x_dims = x.dims();
    let m_dims = mask.dims();
    let m_strides = mask.strides();
    let mismatch = || Error::mismatch(op, x.shape(), mask.shape());
    let pad = x_dims.len().checked_sub(m_dims.len()).ok_or_else(mismatch)?;
    // (size, mask stride) per dimension of x; 0 where the mask broadcasts.
    let mut dims = Vec::with_capacity(x_dims.len());
    for (i, &n) in x_dims.iter().enumerate() {
        let (m, stride) = match i.checked_sub(pad) {
            Some(j) => (
                m_dims.get(j).copied().ok_or_else(mismatch)?,
                m_strides.as_slice().get(j).copied().ok_or_else(mismatch)?,
            ),
            None => (1, 0),
        };
        if m != n && m != 1 {
            return Err(mismatch());
        }
        dims.push((n, if m == 1 { 0 } else { stride }));
    }
    let Some(((_, key_stride), row_dims)) = dims.split_last() else {
        return Err(Error::shape(op, "softmax needs rank >= 1"));
    };
    // Merge neighbouring row dimensions the mask walks as one (outer stride = inner size ×
    // inner stride, which includes both broadcast).
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(3);
    for &(n, stride) in row_dims.iter().filter(|(n, _)| *n != 1) {
        match merged.last_mut() {
            Some(last) if Some(last.1) == n.checked_mul(stride) => *last = (last.0 * n, stride),
            _ => merged.push((n, stride)),
        }
    }
    if merged.len() > 3 {
        return Err(Error::invalid(
            op,
            format!("mask {} broadcasts over {} in more than 3 separate row dimensions", mask.shape(), x.shape()),
        ));
    }
    while merged.len() < 3 {
        merged.insert(0, (1, 0));
    }
    let u = |v: usize| count_u32(op, v);
    let [(_, s0), (n1, s1), (n2, s2)] = merged[..] else {
        return Err(Error::invalid(op, "mask layout"));
    };
    Ok(MaskLayout { n1: u(n1)?, n2: u(n2)?, row_strides: [u(s0)?, u(s1)?, u(s2)?], key_stride: u(*key_stride)? })
}

impl Softmax {
    /// `out = softmax(x * options.scale + options.mask)` over the last dimension, with
    /// `options.causal` applied. Fails with `DTypeMismatch` for a non-float `x` or an `out`
    /// or mask of another dtype, `ShapeMismatch` when `out`'s shape differs from `x`'s or the
    /// mask does not broadcast, `InvalidArgument` for a non-finite scale or causal masking
    /// of a rank-1 input (which has no query dimension: reshape it to `[1, K]`), and
    /// `InvalidShape` for a rank-0 input.
    pub fn new(x: &Tensor, out: &Tensor, options: SoftmaxOptions) -> Result<Self> {
        let this = Softmax { x: x.clone(), out: out.clone(), options, compensated: COMPENSATED_DEFAULT };
        this.validate()?;
        Ok(this)
    }

    /// Turns Neumaier-compensated summation of each invocation's partial sum on or off
    /// (a separate pipeline; [`COMPENSATED_DEFAULT`] otherwise).
    pub fn compensated(mut self, on: bool) -> Self {
        self.compensated = on;
        self
    }

    /// Which kernel [`encode`](Operation::encode) runs. Rows of K <= 4096 keys (256
    /// invocations × 16 keys) are loaded once into registers (one read and one write per
    /// element): `"softmax_rows"` with `vec4` loads and stores when K is a multiple of 4,
    /// `x`'s and `out`'s element offsets within their bound ranges (the byte offset modulo the
    /// device's storage offset alignment) are multiples of 4 and that alignment is a multiple
    /// of 16 bytes, else `"softmax_rows_scalar"` with scalar ones. Longer rows take `"softmax"`
    /// (scalar loads, a strided loop over rows of any length, reading the row twice). The
    /// mask, if any, is read element by element on every path.
    pub fn path(&self) -> &'static str {
        let caps = self.x.context().caps();
        let align = caps.storage_alignment();
        let size = self.x.dtype().size_in_bytes() as u64;
        let elem_offset = |t: &Tensor| t.byte_offset() % align.max(1) / size.max(1);
        let k = self.x.dims().last().copied().unwrap_or(0) as u64;
        kernel_for(align, k, elem_offset(&self.x), elem_offset(&self.out)).name
    }

    /// Everything the kernel needs but the buffer offsets.
    fn params(&self) -> Result<Params> {
        let op = self.name();
        let dims = self.x.dims();
        let k = *dims.last().ok_or_else(|| Error::shape(op, "softmax needs rank >= 1"))?;
        let q_len = if dims.len() >= 2 { dims.get(dims.len() - 2).copied().unwrap_or(1) } else { 1 };
        let numel = count_u32(op, self.x.numel())?;
        let k = count_u32(op, k)?;
        let mut p = Params {
            rows: numel.checked_div(k).unwrap_or(0),
            k,
            q_len: count_u32(op, q_len)?,
            scale: self.options.scale,
            n1: 1,
            n2: 1,
            ..Params::default()
        };
        if let Some(offset) = self.options.causal {
            p.causal = 1;
            p.causal_offset = offset.min(k);
        }
        if let Some(mask) = &self.options.mask {
            count_u32(op, mask.numel())?;
            let layout = mask_layout(op, &self.x, mask)?;
            p.has_mask = 1;
            p.n1 = layout.n1;
            p.n2 = layout.n2;
            [p.ms0, p.ms1, p.ms2] = layout.row_strides;
            p.ms_k = layout.key_stride;
        }
        Ok(p)
    }
}

/// The kernel for rows of `k` elements at element offsets `x_off` and `out_off` (as
/// [`ComputeEncoder::bind`] computes them) under storage offset alignment `align`.
fn kernel_for(align: u64, k: u64, x_off: u64, out_off: u64) -> &'static Kernel {
    let vec = u64::from(VEC);
    if k > u64::from(REGISTER_MAX_K) {
        return &SOFTMAX;
    }
    let vectors =
        align.is_multiple_of(16) && k.is_multiple_of(vec) && x_off.is_multiple_of(vec) && out_off.is_multiple_of(vec);
    if vectors { &SOFTMAX_ROWS } else { &SOFTMAX_ROWS_SCALAR }
}

impl Operation for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn validate(&self) -> Result<()> {
        let op = self.name();
        check_float(op, &self.x)?;
        check_dtype(op, self.x.dtype(), &self.out)?;
        check_same_device(op, &[&self.x, &self.out])?;
        if self.x.dims().is_empty() {
            return Err(Error::shape(op, "softmax needs rank >= 1"));
        }
        if self.out.shape() != self.x.shape() {
            return Err(Error::mismatch(op, self.x.shape(), self.out.shape()));
        }
        if !self.options.scale.is_finite() {
            return Err(Error::invalid(op, format!("scale {} is not finite", self.options.scale)));
        }
        if self.options.causal.is_some() && self.x.dims().len() < 2 {
            return Err(Error::invalid(op, "causal masking needs rank >= 2 ([.., Q, K]); reshape a row to [1, K]"));
        }
        if let Some(mask) = &self.options.mask {
            check_dtype(op, self.x.dtype(), mask)?;
            check_same_device(op, &[&self.x, mask])?;
        }
        self.params().map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let mut params = self.params()?;
        if params.rows == 0 || params.k == 0 {
            return Ok(());
        }
        let x = encoder.bind(&self.x)?;
        let out = encoder.bind(&self.out)?;
        // No mask: bind x in its place; `has_mask` is 0 and the kernel never reads it.
        let mask = match &self.options.mask {
            Some(mask) => encoder.bind(mask)?,
            None => x.clone(),
        };
        params.x_off = x.elem_offset();
        params.out_off = out.elem_offset();
        params.mask_off = mask.elem_offset();
        let align = encoder.context().caps().storage_alignment();
        let kernel = kernel_for(align, u64::from(params.k), u64::from(params.x_off), u64::from(params.out_off));
        let wg = if !std::ptr::eq(kernel, &SOFTMAX) {
            // Just enough invocations for UNROLL vectors each.
            params.k.div_ceil(VEC * UNROLL).next_power_of_two().clamp(MIN_WG, MAX_WG)
        } else {
            params.k.min(MAX_WG).next_power_of_two().clamp(MIN_WG, MAX_WG)
        };
        let workgroups = encoder.linear_grid(params.rows as usize, 1)?;
        let overrides =
            Overrides::new(&[("WG", f64::from(wg)), ("COMPENSATED", if self.compensated { 1.0 } else { 0.0 })])?;
        encoder.dispatch(
            cache,
            Dispatch { kernel, dtype: self.x.dtype(), overrides, bindings: &[&x, &mask, &out], params, workgroups },
        )
    }
}

impl Tensor {
    /// Softmax over the last dimension, into a new tensor.
    pub fn softmax(&self) -> Result<Tensor> {
        self.softmax_with(SoftmaxOptions::default())
    }

    /// Softmax over the last dimension with scaling, causal masking and an additive mask
    /// (see [`SoftmaxOptions`]), into a new tensor.
    pub fn softmax_with(&self, options: SoftmaxOptions) -> Result<Tensor> {
        let out = self.empty_like()?;
        self.runtime().record(&Softmax::new(self, &out, options)?)?;
        Ok(out)
    }
}
