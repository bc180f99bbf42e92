//! Rotary position embedding (RoPE), in the NeoX (rotate-half) and GPT-J (interleaved) layouts.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::Tensor;

pub(crate) static ROPE: Kernel = Kernel {
    name: "rope",
    source: concat!(include_str!("rope.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 2,
};

pub(crate) mod qkv;
pub use qkv::QkvRope;

const OP: &str = "rope";

/// Positions must be exact in f32: below 2^24.
const MAX_POSITION: u64 = 1 << 24;

/// Which elements of a head form the rotated pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RopeStyle {
    /// Rotate-half: pairs `(i, i + rotary_dim / 2)` (GPT-NeoX; Llama, Gemma, Qwen in Hugging
    /// Face layout).
    #[default]
    NeoX,
    /// Interleaved: pairs `(2i, 2i + 1)` (GPT-J; Llama in Meta's original layout).
    Interleaved,
}

/// Parameters of a [`Rope`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeOptions {
    /// Pair layout.
    pub style: RopeStyle,
    /// The frequency base θ (10000 for Llama 2, 1e6 for Qwen2.5 / Gemma 3 global layers).
    pub base: f32,
    /// Position of the first row of the sequence (the number of tokens already cached).
    pub position_offset: u32,
    /// Rotate only the first `rotary_dim` elements of each head (even, at most `head_dim`);
    /// the rest pass through unchanged. `None`: the whole head.
    pub rotary_dim: Option<usize>,
    /// Linear position scaling: positions are multiplied by it (1 for none).
    pub freq_scale: f32,
}

impl Default for RopeOptions {
    /// NeoX style, base 10000, offset 0, the whole head, no scaling.
    fn default() -> Self {
        RopeOptions { style: RopeStyle::NeoX, base: 10_000.0, position_offset: 0, rotary_dim: None, freq_scale: 1.0 }
    }
}

/// Rotary position embedding: `out = rope(x)`.
///
/// `x` is `[..., seq, head_dim]` with any leading dimensions (`[batch, heads, seq, head_dim]`,
/// say); the row at sequence index `s` sits at position `position_offset + s`. Pair `j` of a
/// row (`j < rotary_dim / 2`) is rotated by `position * freq_scale * base^(-2j / rotary_dim)`:
/// `(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)`. Computed in f32 whatever the storage
/// dtype; `out` may be `x` itself.
///
/// Precision: the angle is reduced exactly in turns and sin/cos are evaluated by the kernel's
/// own polynomials, so the error is that of the f32 angle, about `1e-7 * position` radians
/// (1e-3 at position 8192, like f32 reference implementations), not that of the GPU's
/// sin/cos of large arguments.
///
/// Errors: `x` of rank < 2 (`InvalidShape`), odd `head_dim`, odd or too large `rotary_dim`,
/// a non-positive `base` or `freq_scale`, positions beyond 2^24 (`InvalidArgument`), a
/// non-float dtype or an `out` of another dtype (`DTypeMismatch`), an `out` of another shape
/// (`ShapeMismatch`).
///
/// ```
/// use metallic::{kernels::rope::RopeOptions, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let x = Tensor::from_slice(&rt, [2, 2], &[1.0f32, 0.0, 1.0, 0.0])?;
/// let y = x.rope(RopeOptions { base: 10_000.0, ..Default::default() })?.to_vec::<f32>()?;
/// // Position 0 is unrotated; position 1 is rotated by one radian.
/// assert_eq!(&y[..2], &[1.0, 0.0]);
/// assert!((y[2] - 1f32.cos()).abs() < 1e-6 && (y[3] - 1f32.sin()).abs() < 1e-6);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rope {
    x: Tensor,
    out: Tensor,
    options: RopeOptions,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    half: u32,
    rot_half: u32,
    seq: u32,
    offset: u32,
    x_off: u32,
    out_off: u32,
    log2_step: f32,
    turns: f32,
}

/// What the kernel needs from the shape and options, once validated.
struct Geometry {
    head_dim: usize,
    rotary_dim: usize,
    seq: usize,
}

impl Rope {
    /// `out = rope(x)` with `options`; `out` has `x`'s shape and dtype (and may be `x`).
    pub fn new(x: &Tensor, out: &Tensor, options: RopeOptions) -> Result<Self> {
        let this = Rope { x: x.clone(), out: out.clone(), options };
        this.validate()?;
        Ok(this)
    }

    /// The options.
    pub fn options(&self) -> RopeOptions {
        self.options
    }

    fn geometry(&self) -> Result<Geometry> {
        let dims = self.x.dims();
        let (seq, head_dim) = match dims {
            [.., seq, head_dim] => (*seq, *head_dim),
            _ => return Err(Error::shape(OP, format!("x must be [..., seq, head_dim], got {}", self.x.shape()))),
        };
        if !head_dim.is_multiple_of(2) {
            return Err(Error::invalid(OP, format!("head_dim {head_dim} is odd")));
        }
        let rotary_dim = self.options.rotary_dim.unwrap_or(head_dim);
        if !rotary_dim.is_multiple_of(2) || rotary_dim > head_dim {
            return Err(Error::invalid(
                OP,
                format!("rotary_dim {rotary_dim} must be even and at most head_dim {head_dim}"),
            ));
        }
        check_options(&self.options, seq)?;
        Ok(Geometry { head_dim, rotary_dim, seq })
    }
}

/// The kernels' angle parameters for `options` over `rotary_dim` elements: the log2 of the ratio
/// between neighbouring frequencies and the turns per position of pair 0, computed in f64 and
/// rounded once to f32.
fn angle_steps(options: &RopeOptions, rotary_dim: usize) -> (f32, f32) {
    let log2_step = if rotary_dim == 0 { 0.0 } else { -2.0 * f64::from(options.base).log2() / rotary_dim as f64 };
    let turns = f64::from(options.freq_scale) / std::f64::consts::TAU;
    (log2_step as f32, turns as f32)
}

/// Checks `options` for rows at positions `position_offset..position_offset + seq`.
fn check_options(options: &RopeOptions, seq: usize) -> Result<()> {
    let o = options;
    if !(o.base.is_finite() && o.base > 0.0) {
        return Err(Error::invalid(OP, format!("base {} must be positive and finite", o.base)));
    }
    if !(o.freq_scale.is_finite() && o.freq_scale > 0.0) {
        return Err(Error::invalid(OP, format!("freq_scale {} must be positive and finite", o.freq_scale)));
    }
    let last = u64::from(o.position_offset) + (seq as u64).saturating_sub(1);
    if last >= MAX_POSITION {
        return Err(Error::invalid(OP, format!("position {last} is past 2^24, where f32 stops being exact")));
    }
    Ok(())
}

/// The kernels' `STYLE` override.
fn style_override(style: RopeStyle) -> f64 {
    match style {
        RopeStyle::NeoX => 0.0,
        RopeStyle::Interleaved => 1.0,
    }
}

impl Operation for Rope {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_float(OP, &self.x)?;
        check_dtype(OP, self.x.dtype(), &self.out)?;
        check_same_device(OP, &[&self.x, &self.out])?;
        self.geometry()?;
        if self.out.shape() != self.x.shape() {
            return Err(Error::mismatch(OP, self.x.shape(), self.out.shape()));
        }
        count_u32(OP, self.x.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let g = self.geometry()?;
        let n = count_u32(OP, self.x.numel() / 2)?;
        let x = encoder.bind(&self.x)?;
        let out = encoder.bind(&self.out)?;
        let o = &self.options;
        let (log2_step, turns) = angle_steps(o, g.rotary_dim);
        let params = Params {
            n,
            half: count_u32(OP, g.head_dim / 2)?,
            rot_half: count_u32(OP, g.rotary_dim / 2)?,
            seq: count_u32(OP, g.seq)?,
            offset: o.position_offset,
            x_off: x.elem_offset(),
            out_off: out.elem_offset(),
            log2_step,
            turns,
        };
        let style = style_override(o.style);
        let workgroups = encoder.linear_grid(n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG)), ("STYLE", style)])?;
        encoder.dispatch(
            cache,
            Dispatch { kernel: &ROPE, dtype: self.x.dtype(), overrides, bindings: &[&x, &out], params, workgroups },
        )
    }
}

impl Tensor {
    /// Rotary position embedding of this `[..., seq, head_dim]` tensor into a new tensor (see
    /// [`Rope`]).
    pub fn rope(&self, options: RopeOptions) -> Result<Tensor> {
        let out = self.empty_like()?;
        self.runtime().record(&Rope::new(self, &out, options)?)?;
        Ok(out)
    }
}
