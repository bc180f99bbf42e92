//! Element-wise unary math and activations: `out = f(x)`.
//!
//! `unary_common.wgsl` holds the activation math once for this op, for
//! [`Gated`](crate::kernels::gated::Gated) (`act(a) * b`, a second entry point of `unary.wgsl`)
//! and for the quantized GEMV's gated input ([`QMatmul::gated`](crate::kernels::qmatmul::QMatmul::gated)).
//! The op is an override constant: one source, one pipeline per op and dtype.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::Tensor;

/// The WGSL of both [`Unary`] and [`Gated`](crate::kernels::gated::Gated).
pub(crate) const SOURCE: &str = concat!(include_str!("unary.wgsl"), include_str!("unary_common.wgsl"));

pub(crate) static UNARY: Kernel = Kernel { name: "unary", source: SOURCE, entry: "unary_main", bindings: 2 };

/// The function an element-wise [`Unary`] applies.
///
/// `Log`, `Sqrt` and `Rsqrt` are defined for positive inputs; what zero or negative inputs
/// give on the GPU is up to the device (IEEE `-inf`, `NaN`, `inf` on most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `e^x`
    Exp,
    /// `ln x`
    Log,
    /// `√x`
    Sqrt,
    /// `1 / √x`
    Rsqrt,
    /// `tanh x`, finite for every finite `x`.
    Tanh,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `max(x, 0)` (NaN stays NaN)
    Relu,
    /// `x Φ(x) = x (1 + erf(x / √2)) / 2`: the exact GELU (BERT).
    Gelu,
    /// `x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2`: the tanh approximation of GELU (GPT-2,
    /// Gemma).
    GeluTanh,
    /// `x / (1 + e^-x)` (SiLU, swish).
    Silu,
    /// `x²`
    Square,
}

impl UnaryOp {
    /// Every op, in kernel-code order.
    pub const ALL: [UnaryOp; 13] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::Square,
    ];

    /// The value of the kernel's `OP` override constant.
    pub(crate) fn code(self) -> f64 {
        match self {
            UnaryOp::Neg => 0.0,
            UnaryOp::Abs => 1.0,
            UnaryOp::Exp => 2.0,
            UnaryOp::Log => 3.0,
            UnaryOp::Sqrt => 4.0,
            UnaryOp::Rsqrt => 5.0,
            UnaryOp::Tanh => 6.0,
            UnaryOp::Sigmoid => 7.0,
            UnaryOp::Relu => 8.0,
            UnaryOp::Gelu => 9.0,
            UnaryOp::GeluTanh => 10.0,
            UnaryOp::Silu => 11.0,
            UnaryOp::Square => 12.0,
        }
    }

    /// Applies the op on the host in f64 (the reference the tests compare with).
    pub fn apply(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Gelu => 0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2),
            UnaryOp::GeluTanh => {
                // x (1 + tanh u) / 2 = x / (1 + e^(-2u)): the second form keeps its relative
                // precision for negative x, where 1 + tanh u cancels.
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                x / (1.0 + (-2.0 * u).exp())
            }
            UnaryOp::Silu => x / (1.0 + (-x).exp()),
            UnaryOp::Square => x * x,
        }
    }
}

/// `2/√π e^(-x²) Σ 2ⁿ x^(2n+1) / (1·3···(2n+1))`: erf for `0 <= x`, every term positive (no
/// cancellation); used below 2, where it needs fewer than 60 terms.
fn erf_series(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= 2.0 * x * x / f64::from(2 * n + 1);
        sum += term;
        if term <= sum * 1e-17 {
            break;
        }
    }
    std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp() * sum
}

/// erfc for `x >= 2` by its continued fraction
/// `e^(-x²) / √π / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))`, evaluated bottom up
/// (100 levels: relative error ~2e-16 at `x = 2`, better beyond).
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut f = x;
    for k in (1..=100).rev() {
        f = x + f64::from(k) / 2.0 / f;
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

/// The error function in f64 (absolute error ~1e-15).
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.0 { erf_series(a) } else { 1.0 - erfc_continued_fraction(a) };
    r.copysign(x)
}

/// The complementary error function `1 - erf(x)` in f64, with relative precision (~1e-14) in
/// the tail where `erf` rounds to 1.
fn erfc(x: f64) -> f64 {
    if x >= 2.0 { erfc_continued_fraction(x) } else { 1.0 - erf(x) }
}

/// The kernel's parameters, shared with [`Gated`](crate::kernels::gated::Gated): element
/// count and the element offsets of bindings 0, 1 and 2.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) n: u32,
    pub(crate) off0: u32,
    pub(crate) off1: u32,
    pub(crate) off2: u32,
    /// `gated_main` over halves of rows: the width of a half (0: separate `a` and `b`).
    pub(crate) half: u32,
}

/// `out = op(x)` element by element, in f32 arithmetic whatever the float storage dtype.
///
/// `out` has `x`'s shape and dtype and may be `x` itself (in place).
///
/// ```
/// use metallic::{kernels::unary::{Unary, UnaryOp}, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let x = Tensor::from_slice(&rt, [3], &[-1.0f32, 0.0, 4.0])?;
/// rt.record(&Unary::new(UnaryOp::Relu, &x, &x)?)?;
/// assert_eq!(x.to_vec::<f32>()?, [0.0, 0.0, 4.0]);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Unary {
    op: UnaryOp,
    x: Tensor,
    out: Tensor,
}

impl Unary {
    /// `out = op(x)`; `out` must have `x`'s shape and float dtype.
    pub fn new(op: UnaryOp, x: &Tensor, out: &Tensor) -> Result<Self> {
        let this = Unary { op, x: x.clone(), out: out.clone() };
        this.validate()?;
        Ok(this)
    }
}

impl Operation for Unary {
    fn name(&self) -> &'static str {
        "unary"
    }

    fn validate(&self) -> Result<()> {
        let op = self.name();
        check_float(op, &self.x)?;
        check_dtype(op, self.x.dtype(), &self.out)?;
        check_same_device(op, &[&self.x, &self.out])?;
        if self.out.shape() != self.x.shape() {
            return Err(Error::mismatch(op, self.x.shape(), self.out.shape()));
        }
        count_u32(op, self.x.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let n = count_u32(self.name(), self.x.numel())?;
        let x = encoder.bind(&self.x)?;
        let out = encoder.bind(&self.out)?;
        let params = Params { n, off0: x.elem_offset(), off1: out.elem_offset(), off2: 0, half: 0 };
        let workgroups = encoder.linear_grid(n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG)), ("OP", self.op.code())])?;
        encoder.dispatch(
            cache,
            Dispatch { kernel: &UNARY, dtype: self.x.dtype(), overrides, bindings: &[&x, &out], params, workgroups },
        )
    }
}

/// Records `op(x)` into a new tensor on `x`'s runtime.
fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let out = x.empty_like()?;
    x.runtime().record(&Unary::new(op, x, &out)?)?;
    Ok(out)
}

impl Tensor {
    /// `-self`.
    pub fn neg(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Neg)
    }

    /// `|self|`.
    pub fn abs(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Abs)
    }

    /// `e^self`.
    pub fn exp(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Exp)
    }

    /// `ln self` (for positive elements).
    pub fn log(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Log)
    }

    /// `√self` (for non-negative elements).
    pub fn sqrt(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sqrt)
    }

    /// `1 / √self` (for positive elements).
    pub fn rsqrt(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Rsqrt)
    }

    /// `tanh self`.
    pub fn tanh(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Tanh)
    }

    /// `1 / (1 + e^-self)`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sigmoid)
    }

    /// `max(self, 0)`.
    pub fn relu(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Relu)
    }

    /// The exact (erf) GELU, `x Φ(x)`.
    pub fn gelu(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Gelu)
    }

    /// The tanh approximation of GELU.
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        unary(self, UnaryOp::GeluTanh)
    }

    /// `x σ(x)` (SiLU, swish).
    pub fn silu(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Silu)
    }

    /// `self²`.
    pub fn square(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Square)
    }
}
