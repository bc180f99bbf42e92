//! Normalisation over the last dimension: [`LayerNorm`] and [`RmsNorm`], fused into one
//! kernel that runs one workgroup per row (`norm.wgsl`, or for rows of at most 4096 elements
//! `norm_rows.wgsl` / `norm_rows_scalar.wgsl`: see [Kernels](#kernels)).
//!
//! Storage is f32 or f16; every sum is f32. Layer norm uses the corrected two-pass algorithm
//! (a first mean, then sums of the deviations from it and of their squares, re-reading the
//! row), so rows far from zero lose nothing to cancellation.
//!
//! # Compensation
//!
//! By default (`.compensated(true)`, an override constant and so a pipeline of its own) each
//! invocation sums its share of the row with Neumaier's compensated addition, and the sum of
//! squares gets a second workgroup reduction that corrects the rounding of the first
//! (`norm.wgsl` says how). `.compensated(false)` gives plain f32 sums and one reduction.
//!
//! The default is on because the numbers support it. Largest relative error
//! (`|got - want| / max(1, |want|)`) against an f64 reference over one row of 2^20 f32 values
//! (no weight or bias), plain → compensated, the same in both reduction flavours (workgroup
//! memory and subgroups) unless two figures are given, on lavapipe (`tests/norm.rs`,
//! `compensation_on_a_row_of_a_million`):
//!
//! | row values | layer norm | RMS norm |
//! |---|---|---|
//! | N(100, 1) | 2.4e-7 → 1.2e-7 | 6.6e-8 → 6.6e-8 |
//! | U(-1, 1) | 8.4e-8 → 8.4e-8 | 7.6e-8 → 7.6e-8 |
//! | 1.1, 0.9 alternating | 2.3e-5 → 1.9e-8 | 2.7e-6 / 2.9e-6 → 7.1e-8 |
//!
//! Random rows are already at f32's noise floor without compensation (the corrected two-pass
//! layer norm removes the cancellation a mean of 100 would cause), but rows in which each
//! invocation adds near-equal values again and again drift by 2e-5 in plain f32, beyond the
//! 1e-5 tolerance; compensated, every case stays within a rounding or two of the output. Without
//! the second reduction the subgroup flavour's RMS norm was 1.5e-7 / 1.8e-7 on the first two
//! rows (sequential sums over 32 subgroups of 8). The cost is a few flops per element in a
//! memory-bound loop plus one workgroup reduction per row, not yet timed on a real GPU.
//!
//! # Kernels
//!
//! Chosen automatically per call ([`LayerNorm::path`], [`RmsNorm::path`] tell which):
//!
//! - Rows of at most 4096 elements: each invocation of a workgroup of
//!   `clamp(next_pow2(cols / 16), 32, 256)` loads its (up to 16) elements of the row once into
//!   registers and computes the same corrected two-pass statistics (same compensation) from
//!   them, then writes from registers: one read and one write per element. `norm_rows.wgsl`
//!   does so with `vec4` loads and stores when the row length is a multiple of 4, the element
//!   offsets of `x`, `out` and the weight and bias present within their bound ranges are
//!   multiples of 4 and the device's storage offset alignment is a multiple of 16 bytes;
//!   `norm_rows_scalar.wgsl` with scalar ones otherwise.
//! - `norm.wgsl` for longer rows (any length, any offsets): scalar loads in strided loops,
//!   reading the row three times (layer norm) or twice (RMS norm).

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::Tensor;

pub(crate) static LAYER_NORM: Kernel = Kernel {
    name: "layer_norm",
    source: concat!(include_str!("norm.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static RMS_NORM: Kernel = Kernel {
    name: "rms_norm",
    source: concat!(include_str!("norm.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static LAYER_NORM_ROWS: Kernel = Kernel {
    name: "layer_norm_rows",
    source: concat!(include_str!("norm_rows.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static RMS_NORM_ROWS: Kernel = Kernel {
    name: "rms_norm_rows",
    source: concat!(include_str!("norm_rows.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static LAYER_NORM_ROWS_SCALAR: Kernel = Kernel {
    name: "layer_norm_rows_scalar",
    source: concat!(include_str!("norm_rows_scalar.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static RMS_NORM_ROWS_SCALAR: Kernel = Kernel {
    name: "rms_norm_rows_scalar",
    source: concat!(include_str!("norm_rows_scalar.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};

/// Elements per vector access of the vec4 register kernel (`norm_rows.wgsl`).
const VEC: u32 = 4;
/// `vec4` each invocation of the register kernels holds (named variables in `norm_rows*.wgsl`).
const UNROLL: u32 = 4;
/// Largest workgroup either kernel uses.
const MAX_WG: u32 = 256;
/// Longest row the register kernels take: [`MAX_WG`] invocations × [`UNROLL`] vectors of [`VEC`].
const REGISTER_MAX_COLS: u32 = MAX_WG * UNROLL * VEC;

/// Bits of `Params::flags` (mirrors `norm.wgsl`).
const HAS_WEIGHT: u32 = 1;
const HAS_BIAS: u32 = 2;
const UNIT_OFFSET: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    x_off: u32,
    w_off: u32,
    b_off: u32,
    out_off: u32,
    flags: u32,
    eps: f32,
    zero: u32,
}

/// The workgroup size for rows of `cols` elements: about four elements per invocation for
/// short rows (QK-norm over a head of 64..256), 256 invocations from 1024 elements on.
fn workgroup_size(cols: usize) -> u32 {
    let per_lane = cols.div_ceil(4).next_power_of_two();
    per_lane.clamp(32, 256) as u32
}

/// Which register kernel rows of `cols` elements at element offsets `offsets` (x, out and
/// the present weight and bias, as [`ComputeEncoder::bind`] computes them) under storage
/// offset alignment `align` take: `Some(true)` the vec4 one, `Some(false)` the scalar one,
/// `None` neither (rows too long).
fn register_path(align: u64, cols: u64, offsets: &[u64]) -> Option<bool> {
    let vec = u64::from(VEC);
    (cols <= u64::from(REGISTER_MAX_COLS))
        .then(|| align.is_multiple_of(16) && cols.is_multiple_of(vec) && offsets.iter().all(|o| o.is_multiple_of(vec)))
}

/// What layer norm and RMS norm share: validation and encoding.
#[derive(Debug, Clone)]
struct Norm {
    kernel: &'static Kernel,
    x: Tensor,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f32,
    unit_offset: bool,
    out: Tensor,
    compensated: bool,
}

impl Norm {
    fn name(&self) -> &'static str {
        self.kernel.name
    }

    fn rms(&self) -> bool {
        std::ptr::eq(self.kernel, &RMS_NORM)
    }

    /// The kernel for rows of `cols` at element offsets `offsets` under alignment `align`.
    fn kernel_for(&self, align: u64, cols: u64, offsets: &[u64]) -> &'static Kernel {
        match (register_path(align, cols, offsets), self.rms()) {
            (Some(true), true) => &RMS_NORM_ROWS,
            (Some(true), false) => &LAYER_NORM_ROWS,
            (Some(false), true) => &RMS_NORM_ROWS_SCALAR,
            (Some(false), false) => &LAYER_NORM_ROWS_SCALAR,
            (None, _) => self.kernel,
        }
    }

    fn path(&self) -> &'static str {
        let caps = self.x.context().caps();
        let align = caps.storage_alignment();
        let size = self.x.dtype().size_in_bytes() as u64;
        let elem_offset = |t: &Tensor| t.byte_offset() % align.max(1) / size.max(1);
        let offsets: Vec<u64> = [Some(&self.x), Some(&self.out), self.weight.as_ref(), self.bias.as_ref()]
            .into_iter()
            .flatten()
            .map(elem_offset)
            .collect();
        let cols = self.x.dims().last().copied().unwrap_or(0) as u64;
        self.kernel_for(align, cols, &offsets).name
    }

    fn validate(&self) -> Result<()> {
        let op = self.name();
        let shape = self.x.shape();
        let Some(&cols) = shape.dims().last() else {
            return Err(Error::shape(op, "needs at least one dimension to normalise over, got a scalar"));
        };
        check_float(op, &self.x)?;
        check_dtype(op, self.x.dtype(), &self.out)?;
        check_same_device(op, &[&self.x, &self.out])?;
        if self.out.shape() != shape {
            return Err(Error::mismatch(op, shape, self.out.shape()));
        }
        for param in [&self.weight, &self.bias].into_iter().flatten() {
            check_dtype(op, self.x.dtype(), param)?;
            check_same_device(op, &[&self.x, param])?;
            if param.dims() != [cols] {
                return Err(Error::mismatch(op, shape, param.shape()));
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::invalid(op, format!("eps must be finite and non-negative, got {}", self.eps)));
        }
        count_u32(op, self.x.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let op = self.name();
        let cols = self.x.dims().last().copied().unwrap_or(1);
        let numel = self.x.numel();
        if numel == 0 {
            return Ok(());
        }
        let rows = numel / cols;
        let x = encoder.bind(&self.x)?;
        let out = encoder.bind(&self.out)?;
        let weight = self.weight.as_ref().map(|w| encoder.bind(w)).transpose()?;
        let bias = self.bias.as_ref().map(|b| encoder.bind(b)).transpose()?;
        let flags = weight.as_ref().map_or(0, |_| HAS_WEIGHT)
            | bias.as_ref().map_or(0, |_| HAS_BIAS)
            | if self.unit_offset { UNIT_OFFSET } else { 0 };
        let params = Params {
            rows: count_u32(op, rows)?,
            cols: count_u32(op, cols)?,
            x_off: x.elem_offset(),
            w_off: weight.as_ref().map_or(0, |w| w.elem_offset()),
            b_off: bias.as_ref().map_or(0, |b| b.elem_offset()),
            out_off: out.elem_offset(),
            flags,
            eps: self.eps,
            zero: 0,
        };
        // One workgroup per row; rows beyond the x limit fold into y.
        let max = encoder.context().caps().limits.max_compute_workgroups_per_dimension.max(1);
        let gx = params.rows.min(max);
        let gy = params.rows.div_ceil(gx);
        if gy > max {
            return Err(Error::invalid(op, format!("{rows} rows exceed the dispatch limit")));
        }
        let align = encoder.context().caps().storage_alignment();
        let offsets: Vec<u64> = [Some(params.x_off), Some(params.out_off), weight.as_ref().map(|_| params.w_off)]
            .into_iter()
            .chain([bias.as_ref().map(|_| params.b_off)])
            .flatten()
            .map(u64::from)
            .collect();
        let kernel = self.kernel_for(align, u64::from(params.cols), &offsets);
        let wg = if std::ptr::eq(kernel, self.kernel) {
            workgroup_size(cols)
        } else {
            // Just enough invocations for UNROLL vectors each.
            params.cols.div_ceil(VEC * UNROLL).next_power_of_two().clamp(32, MAX_WG)
        };
        let overrides = Overrides::new(&[
            ("WG", f64::from(wg)),
            ("RMS", if self.rms() { 1.0 } else { 0.0 }),
            ("COMPENSATED", if self.compensated { 1.0 } else { 0.0 }),
        ])?;
        // Absent weight or bias: bind `x` in its place (the flag tells the kernel).
        let weight = weight.as_ref().unwrap_or(&x);
        let bias = bias.as_ref().unwrap_or(&x);
        encoder.dispatch(
            cache,
            Dispatch {
                kernel,
                dtype: self.x.dtype(),
                overrides,
                bindings: &[&x, weight, bias, &out],
                params,
                workgroups: [gx, gy, 1],
            },
        )
    }
}

/// Layer normalisation over the last dimension:
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance (`/ n`) and
/// optional `weight` and `bias` of shape `[last_dim]`.
///
/// Mean and variance come from the corrected two-pass algorithm in f32, with compensated
/// per-invocation sums by default (see [`compensated`](Self::compensated) and the module
/// documentation for the measured effect). `out` may be `x` itself.
#[derive(Debug, Clone)]
pub struct LayerNorm(Norm);

impl LayerNorm {
    /// `out = layer_norm(x) * weight + bias` over `x`'s last dimension. Fails on a scalar `x`
    /// ([`Error::InvalidShape`]), a non-float `x` or dtypes that differ from `x`'s
    /// ([`Error::DTypeMismatch`]), `weight`/`bias` not of shape `[last_dim]` or `out` not of
    /// `x`'s shape ([`Error::ShapeMismatch`]), a negative, infinite or NaN `eps`
    /// ([`Error::InvalidArgument`]).
    pub fn new(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32, out: &Tensor) -> Result<Self> {
        let norm = Norm {
            kernel: &LAYER_NORM,
            x: x.clone(),
            weight: weight.cloned(),
            bias: bias.cloned(),
            eps,
            unit_offset: false,
            out: out.clone(),
            compensated: true,
        };
        norm.validate()?;
        Ok(LayerNorm(norm))
    }

    /// Compensated (Neumaier) per-invocation sums, on by default; `false` gives plain f32
    /// sums (a separate pipeline), kept for comparison.
    #[must_use]
    pub fn compensated(mut self, on: bool) -> Self {
        self.0.compensated = on;
        self
    }

    /// Which kernel [`encode`](Operation::encode) runs. Rows of at most 4096 elements (256
    /// invocations × 16 elements) are loaded once into registers (one read and one write per
    /// element): `"layer_norm_rows"` with `vec4` loads and stores when the row length is a multiple
    /// of 4, the element offsets of `x`, `out` and the weight and bias present within their
    /// bound ranges (the byte offset modulo the device's storage offset alignment) are
    /// multiples of 4 and that alignment is a multiple of 16 bytes, else `"layer_norm_rows_scalar"`
    /// with scalar ones. Longer rows take `"layer_norm"` (scalar loads, a strided loop over rows of
    /// any length, reading the row three times).
    pub fn path(&self) -> &'static str {
        self.0.path()
    }
}

impl Operation for LayerNorm {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn validate(&self) -> Result<()> {
        self.0.validate()
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        self.0.encode(encoder, cache)
    }
}

/// RMS normalisation over the last dimension: `y = x / sqrt(mean(x²) + eps) * weight`, or
/// `* (1 + weight)` with `add_unit_offset` (Gemma's convention), with an optional `weight` of
/// shape `[last_dim]`.
///
/// The mean square is an f32 sum, compensated per invocation by default (see
/// [`compensated`](Self::compensated)). `out` may be `x` itself.
#[derive(Debug, Clone)]
pub struct RmsNorm(Norm);

impl RmsNorm {
    /// `out = rms_norm(x) * weight` (or `* (1 + weight)` with `add_unit_offset`) over `x`'s
    /// last dimension. Errors as for [`LayerNorm::new`].
    pub fn new(x: &Tensor, weight: Option<&Tensor>, eps: f32, add_unit_offset: bool, out: &Tensor) -> Result<Self> {
        let norm = Norm {
            kernel: &RMS_NORM,
            x: x.clone(),
            weight: weight.cloned(),
            bias: None,
            eps,
            unit_offset: add_unit_offset,
            out: out.clone(),
            compensated: true,
        };
        norm.validate()?;
        Ok(RmsNorm(norm))
    }

    /// Compensated (Neumaier) per-invocation sums, on by default; `false` gives plain f32
    /// sums (a separate pipeline), kept for comparison.
    #[must_use]
    pub fn compensated(mut self, on: bool) -> Self {
        self.0.compensated = on;
        self
    }

    /// Which kernel [`encode`](Operation::encode) runs. Rows of at most 4096 elements (256
    /// invocations × 16 elements) are loaded once into registers (one read and one write per
    /// element): `"rms_norm_rows"` with `vec4` loads and stores when the row length is a multiple
    /// of 4, the element offsets of `x`, `out` and the weight and bias present within their
    /// bound ranges (the byte offset modulo the device's storage offset alignment) are
    /// multiples of 4 and that alignment is a multiple of 16 bytes, else `"rms_norm_rows_scalar"`
    /// with scalar ones. Longer rows take `"rms_norm"` (scalar loads, a strided loop over rows of
    /// any length, reading the row twice).
    pub fn path(&self) -> &'static str {
        self.0.path()
    }
}

impl Operation for RmsNorm {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn validate(&self) -> Result<()> {
        self.0.validate()
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        self.0.encode(encoder, cache)
    }
}

impl Tensor {
    /// Layer normalisation over the last dimension into a new tensor (see [`LayerNorm`]).
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        same_runtime("layer_norm", self, &[weight, bias])?;
        let out = self.empty_like()?;
        self.runtime().record(&LayerNorm::new(self, weight, bias, eps, &out)?)?;
        Ok(out)
    }

    /// RMS normalisation over the last dimension into a new tensor (see [`RmsNorm`]).
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f32, add_unit_offset: bool) -> Result<Tensor> {
        same_runtime("rms_norm", self, &[weight])?;
        let out = self.empty_like()?;
        self.runtime().record(&RmsNorm::new(self, weight, eps, add_unit_offset, &out)?)?;
        Ok(out)
    }
}

/// Fails unless every given tensor records on `x`'s runtime (whose implicit command buffer
/// orders the work).
fn same_runtime(op: &'static str, x: &Tensor, others: &[Option<&Tensor>]) -> Result<()> {
    if others.iter().flatten().any(|t| !t.runtime().same(x.runtime())) {
        return Err(Error::invalid(op, "tensors belong to different runtimes"));
    }
    Ok(())
}
