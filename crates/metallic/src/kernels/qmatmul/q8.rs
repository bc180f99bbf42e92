//! Experimental: x quantized to 8-bit blocks of 32 ([`QuantizeQ8`]) and the GEMV that
//! multiplies K-quant and block weights with it four at a time through packed integer dot
//! products ([`QMatmulPath::GemvQ8`](super::QMatmulPath::GemvQ8), `gemv_q8.wgsl`).
//!
//! Why: on an H100 the word GEMV (`gemv_sb.wgsl`) reads its weights at 78-100% of copy
//! bandwidth but runs at 35-58% of it, limited by the per-weight work (quants turned into f32,
//! one FMA per weight) and the f32 reads of x (docs/PERFORMANCE.md, 2026-12-06). Rounding x to
//! signed bytes once per product turns four weights' work into one `dot4I8Packed` (SPIR-V
//! `OpSDot` where the device has integer dot products) and x's reads into a quarter of the
//! bytes, for an error of up to half a step of x's block scale per element.
//!
//! ## Layout of quantized x
//!
//! Each row of x (K a multiple of 32) becomes `K / 4 + K / 16` words ([`QuantizeQ8::row_words`]):
//!
//! | words | content |
//! |-------|---------|
//! | `0 .. K/4` | the quants: element e of the row at byte `e % 4` of word `e / 4`, signed bytes |
//! | `K/4 + 2b` | block b's scale `d = max|x| / 127` (f32 bits) |
//! | `K/4 + 2b + 1` | block b's sum `d · Σ q` (f32 bits), for the weights' offsets and mins |
//!
//! `q = round(x / d)` is computed as `round(x · (1 / d))`, ties to even; a block of zeros has
//! `d = 0` and zero quants. The quants come first, contiguous, so the GEMV's lanes, which read
//! adjacent words of weights, read adjacent words of x too (the one word holding the same four
//! elements).

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation, TensorBinding};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_dtype, check_float, check_same_device, count_u32};
use crate::quant::QuantType;
use crate::tensor::{DType, Tensor};

/// Both entry points of `gemv_q8.wgsl` share its bindings: x, the weights, y, quantized x.
pub(crate) static QUANTIZE: Kernel = Kernel {
    name: "quantize_q8",
    source: concat!(include_str!("gemv_q8.wgsl"), include_str!("gemv_units_common.wgsl"), include_str!("common.wgsl")),
    entry: "quantize",
    bindings: 4,
};
pub(crate) static GEMV_Q8: Kernel = Kernel {
    name: "qmatmul_gemv_q8",
    source: concat!(include_str!("gemv_q8.wgsl"), include_str!("gemv_units_common.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};

const OP: &str = "quantize_q8";
/// Invocations per workgroup of the quantizer (one per block of 32).
const QUANTIZE_WG: u32 = 64;

/// The weight types the GEMV over quantized x takes.
pub(super) fn gemv_q8_supports(ty: QuantType) -> bool {
    matches!(ty, QuantType::Q4K | QuantType::Q5K | QuantType::Q6K | QuantType::Q8_0 | QuantType::Q4_0)
}

/// The parameters of both entry points of `gemv_q8.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Q8Params {
    pub(super) n: u32,
    pub(super) k: u32,
    pub(super) m: u32,
    pub(super) row_words: u32,
    pub(super) x_off: u32,
    pub(super) w_off: u32,
    pub(super) y_off: u32,
    pub(super) ldy: u32,
    pub(super) n0: u32,
    pub(super) q_off: u32,
    pub(super) q_stride: u32,
}

/// Quantizes the rows of `x` (`[.., K]`, f32 or f16, K a multiple of 32) into `out` (u32,
/// [`QuantizeQ8::words`] elements, any shape) as blocks of 32 signed bytes with an f32 scale
/// and sum each; the module documentation gives the layout. One dispatch, one invocation per
/// block. Experimental: the input of [`QMatmulPath::GemvQ8`](super::QMatmulPath::GemvQ8).
#[derive(Debug, Clone)]
pub struct QuantizeQ8 {
    x: Tensor,
    out: Tensor,
}

impl QuantizeQ8 {
    /// Words one row of `k` elements takes quantized: `k / 4 + k / 16`.
    pub fn row_words(k: usize) -> usize {
        k / 4 + k / 16
    }

    /// Words `rows` rows of `k` elements take quantized.
    pub fn words(rows: usize, k: usize) -> Option<usize> {
        rows.checked_mul(Self::row_words(k))
    }

    /// Quantizes `x` into `out`; fails unless `x` is a float tensor of rows of K, a positive
    /// multiple of 32, and `out` a u32 tensor of [`QuantizeQ8::words`] elements on the same
    /// device, not overlapping `x`.
    pub fn new(x: &Tensor, out: &Tensor) -> Result<Self> {
        let this = QuantizeQ8 { x: x.clone(), out: out.clone() };
        this.validate()?;
        Ok(this)
    }

    fn k(&self) -> usize {
        self.x.dims().last().copied().unwrap_or(0)
    }
}

/// Records the quantizer: `m` rows of `k` elements of x into `q` (rows of
/// [`QuantizeQ8::row_words`] words).
pub(super) fn encode_quantize(
    encoder: &mut ComputeEncoder<'_>,
    cache: &ResourceCache,
    dtype: DType,
    x: &TensorBinding,
    q: &TensorBinding,
    m: u32,
    k: u32,
) -> Result<()> {
    let max = encoder.context().caps().limits.max_compute_workgroups_per_dimension.max(1);
    let blocks = k / 32;
    let along = blocks.div_ceil(QUANTIZE_WG);
    if along > max {
        return Err(Error::invalid(OP, format!("{blocks} blocks per row exceed the dispatch limit")));
    }
    let params = Q8Params {
        n: 0,
        k,
        m,
        row_words: 0,
        x_off: x.elem_offset(),
        w_off: 0,
        y_off: 0,
        ldy: 0,
        n0: 0,
        q_off: q.elem_offset(),
        q_stride: count_u32(OP, QuantizeQ8::row_words(k as usize))?,
    };
    encoder.dispatch(
        cache,
        Dispatch {
            kernel: &QUANTIZE,
            dtype,
            overrides: Overrides::new(&[("WG", f64::from(QUANTIZE_WG))])?,
            // The weights' and y's slots hold quantized x and x: the quantizer reads neither.
            bindings: &[x, q, x, q],
            params,
            workgroups: [along, m.min(max), 1],
        },
    )
}

impl Operation for QuantizeQ8 {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_float(OP, &self.x)?;
        check_dtype(OP, DType::U32, &self.out)?;
        check_same_device(OP, &[&self.x, &self.out])?;
        let k = self.k();
        if k == 0 || !k.is_multiple_of(32) {
            return Err(Error::shape(OP, format!("x {}: rows of a positive multiple of 32", self.x.shape())));
        }
        let rows = self.x.numel() / k;
        let want = Self::words(rows, k).ok_or_else(|| Error::invalid(OP, "the output size overflows"))?;
        if self.out.numel() != want {
            return Err(Error::shape(
                OP,
                format!("x {} quantizes to {want} words, the output has {}", self.x.shape(), self.out.numel()),
            ));
        }
        if super::overlaps(&self.x, &self.out) {
            return Err(Error::invalid(OP, "the output overlaps x"));
        }
        count_u32(OP, self.x.numel())?;
        count_u32(OP, self.out.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        self.validate()?;
        let k = self.k();
        let m = count_u32(OP, self.x.numel() / k)?;
        if m == 0 {
            return Ok(());
        }
        let x = encoder.bind(&self.x)?;
        let q = encoder.bind(&self.out)?;
        encode_quantize(encoder, cache, self.x.dtype(), &x, &q, m, count_u32(OP, k)?)
    }
}
