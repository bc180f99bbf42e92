//! The residual step between transformer blocks, fused: `h = x + rms_norm(d) · wd`, then
//! `y = rms_norm(h) · w` — the post-block norm (Gemma's post-attention / post-feed-forward
//! norms; optional), the residual add and the next block's input norm in one dispatch.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::Tensor;

pub(crate) static RESIDUAL: Kernel =
    Kernel { name: "residual_rms_norm", source: include_str!("residual.wgsl"), entry: "main", bindings: 6 };

const OP: &str = "residual_rms_norm";

/// Invocations per row (one workgroup per row): 256, or one per 4 elements of longer rows up to
/// 1024 where the adapter allows. The kernel is latency-bound (a decode step runs it twice per
/// layer on one row): on an H200, 256 rather than 128 made decoding 3-4% faster on SmolLM2 135M,
/// Gemma 3 270M and Qwen2.5 0.5B (rows of 576, 640 and 896); an 8B model's 4096-wide rows took
/// 25 µs each with 256 (H100, profiled).
fn workgroup_size(n: usize, limits: &wgpu::Limits) -> u32 {
    let most = limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x).clamp(256, 1024);
    // The reduction wants a power of two.
    let most = 1 << (31 - most.leading_zeros());
    let wanted = u32::try_from(n.div_ceil(4)).unwrap_or(u32::MAX).min(1 << 20).next_power_of_two();
    wanted.clamp(256, most)
}

/// `h = x + rms_norm(d) · wd` (or `h = x + d` without `wd`), then `y = rms_norm(h) · w`, over
/// rows of the last dimension; `rms_norm(v) = v / sqrt(mean(v²) + eps)`. Sums in f32.
///
/// `x`, `d`, `h` and `y` have one shape `[..., n]` and one float dtype, `wd` and `w` are
/// `[n]` of that dtype. `h` may be `x` (the residual stream updated in place); `y` must not
/// overlap `h` or `x`.
///
/// ```
/// use metallic::{kernels::residual::ResidualRmsNorm, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let x = Tensor::from_slice(&rt, [1, 2], &[1.0f32, 1.0])?;
/// let d = Tensor::from_slice(&rt, [1, 2], &[3.0f32, -3.0])?;
/// let w = Tensor::from_slice(&rt, [2], &[1.0f32, 2.0])?;
/// let (h, y) = (x.empty_like()?, x.empty_like()?);
/// rt.record(&ResidualRmsNorm::new(&x, &d, Some(&w), &w, 0.0, &h, &y)?)?;
/// // rms_norm(d) = [1, -1], times wd: [1, -2]; h = [2, -1]; rms(h) = sqrt(2.5).
/// assert_eq!(h.to_vec::<f32>()?, [2.0, -1.0]);
/// let y = y.to_vec::<f32>()?;
/// assert!((y[0] - 2.0 / 2.5f32.sqrt()).abs() < 1e-6 && (y[1] + 2.0 / 2.5f32.sqrt()).abs() < 1e-6);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResidualRmsNorm {
    x: Tensor,
    d: Tensor,
    wd: Option<Tensor>,
    w: Tensor,
    eps: f32,
    h: Tensor,
    y: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    x_off: u32,
    d_off: u32,
    wd_off: u32,
    w_off: u32,
    h_off: u32,
    y_off: u32,
    flags: u32,
    eps: f32,
}

impl ResidualRmsNorm {
    /// The fused step; see the type's documentation. Errors: shapes or dtypes that differ
    /// (`ShapeMismatch`, `DTypeMismatch`), a non-float dtype, weights that are not `[n]`, an
    /// empty row, a negative or non-finite `eps` (`InvalidArgument`).
    pub fn new(
        x: &Tensor,
        d: &Tensor,
        wd: Option<&Tensor>,
        w: &Tensor,
        eps: f32,
        h: &Tensor,
        y: &Tensor,
    ) -> Result<Self> {
        let op = ResidualRmsNorm {
            x: x.clone(),
            d: d.clone(),
            wd: wd.cloned(),
            w: w.clone(),
            eps,
            h: h.clone(),
            y: y.clone(),
        };
        op.validate()?;
        Ok(op)
    }

    fn row_len(&self) -> Result<usize> {
        match self.x.dims().last() {
            Some(&n) if n > 0 => Ok(n),
            _ => Err(Error::shape(OP, format!("x must be [..., n] with n > 0, got {}", self.x.shape()))),
        }
    }
}

impl Operation for ResidualRmsNorm {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_float(OP, &self.x)?;
        let dtype = self.x.dtype();
        let weights: Vec<&Tensor> = self.wd.iter().chain([&self.w]).collect();
        for t in [&self.d, &self.h, &self.y].into_iter().chain(weights.iter().copied()) {
            check_dtype(OP, dtype, t)?;
        }
        check_same_device(OP, &[&self.x, &self.d, &self.w, &self.h, &self.y])?;
        if let Some(wd) = &self.wd {
            check_same_device(OP, &[&self.x, wd])?;
        }
        for t in [&self.d, &self.h, &self.y] {
            if t.shape() != self.x.shape() {
                return Err(Error::mismatch(OP, self.x.shape(), t.shape()));
            }
        }
        let n = self.row_len()?;
        for weight in weights {
            if weight.dims() != [n] {
                return Err(Error::shape(OP, format!("norm weights must be [{n}], got {}", weight.shape())));
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::invalid(OP, format!("eps {} must be finite and non-negative", self.eps)));
        }
        if self.y.buffer() == self.h.buffer() || self.y.buffer() == self.x.buffer() {
            let span = |t: &Tensor| t.byte_offset()..t.byte_offset() + t.size_in_bytes() as u64;
            let (ys, hs, xs) = (span(&self.y), span(&self.h), span(&self.x));
            let overlaps = |a: &std::ops::Range<u64>, b: &std::ops::Range<u64>| a.start < b.end && b.start < a.end;
            let same_h = self.y.buffer() == self.h.buffer() && overlaps(&ys, &hs);
            let same_x = self.y.buffer() == self.x.buffer() && overlaps(&ys, &xs);
            if same_h || same_x {
                return Err(Error::invalid(OP, "y overlaps h or x"));
            }
        }
        count_u32(OP, self.x.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let n = self.row_len()?;
        let rows = self.x.numel() / n;
        let x = encoder.bind(&self.x)?;
        let d = encoder.bind(&self.d)?;
        let wd = encoder.bind(self.wd.as_ref().unwrap_or(&self.w))?;
        let w = encoder.bind(&self.w)?;
        let h = encoder.bind(&self.h)?;
        let y = encoder.bind(&self.y)?;
        let params = Params {
            rows: count_u32(OP, rows)?,
            n: count_u32(OP, n)?,
            x_off: x.elem_offset(),
            d_off: d.elem_offset(),
            wd_off: wd.elem_offset(),
            w_off: w.elem_offset(),
            h_off: h.elem_offset(),
            y_off: y.elem_offset(),
            flags: u32::from(self.wd.is_some()),
            eps: self.eps,
        };
        let workgroups = encoder.linear_grid(rows, 1)?;
        let wg = workgroup_size(n, &encoder.context().caps().limits);
        let overrides = Overrides::new(&[("WG", f64::from(wg))])?;
        encoder.dispatch(
            cache,
            Dispatch {
                kernel: &RESIDUAL,
                dtype: self.x.dtype(),
                overrides,
                bindings: &[&x, &d, &wd, &w, &h, &y],
                params,
                workgroups,
            },
        )
    }
}
