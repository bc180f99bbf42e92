//! Fused gated activations for GeGLU / SwiGLU MLPs: `out = act(a) * b`.
//!
//! The kernel is the `gated_main` entry point of `kernels/unary/unary.wgsl`, so the activation
//! math (erf GELU, tanh GELU, SiLU) is written once and shared with
//! [`Unary`](crate::kernels::unary::Unary).

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::unary::{Params, SOURCE, UnaryOp};
use crate::kernels::{LINEAR_WG, check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::Tensor;

static GATED: Kernel = Kernel { name: "gated", source: SOURCE, entry: "gated_main", bindings: 3 };

/// The activation a [`Gated`] applies to its first operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatedAct {
    /// The exact (erf) GELU: GeGLU.
    Gelu,
    /// The tanh approximation of GELU: GeGLU as in Gemma.
    GeluTanh,
    /// SiLU: SwiGLU (Llama, Qwen).
    Silu,
}

impl GatedAct {
    /// The same activation as a [`UnaryOp`].
    pub fn unary_op(self) -> UnaryOp {
        match self {
            GatedAct::Gelu => UnaryOp::Gelu,
            GatedAct::GeluTanh => UnaryOp::GeluTanh,
            GatedAct::Silu => UnaryOp::Silu,
        }
    }

    /// `act(a) * b` on the host in f64 (the reference the tests compare with).
    pub fn apply(self, a: f64, b: f64) -> f64 {
        self.unary_op().apply(a) * b
    }
}

/// `out = act(a) * b` element by element, in f32 arithmetic whatever the float storage dtype:
/// the gate of a GeGLU / SwiGLU MLP in one pass instead of an activation and a multiply.
///
/// `a`, `b` and `out` have one shape and dtype; `out` may be `a` or `b` (in place).
///
/// ```
/// use metallic::{kernels::gated::{GatedAct, Gated}, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let a = Tensor::from_slice(&rt, [2], &[0.0f32, 30.0])?;
/// let b = Tensor::from_slice(&rt, [2], &[5.0f32, 2.0])?;
/// let out = a.empty_like()?;
/// rt.record(&Gated::new(GatedAct::Silu, &a, &b, &out)?)?;
/// assert_eq!(out.to_vec::<f32>()?, [0.0, 60.0]);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Gated {
    act: GatedAct,
    a: Tensor,
    b: Tensor,
    out: Tensor,
}

impl Gated {
    /// `out = act(a) * b`; `b` and `out` must have `a`'s shape and float dtype.
    pub fn new(act: GatedAct, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Self> {
        let this = Gated { act, a: a.clone(), b: b.clone(), out: out.clone() };
        this.validate()?;
        Ok(this)
    }
}

impl Operation for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn validate(&self) -> Result<()> {
        let op = self.name();
        check_float(op, &self.a)?;
        check_dtype(op, self.a.dtype(), &self.b)?;
        check_dtype(op, self.a.dtype(), &self.out)?;
        check_same_device(op, &[&self.a, &self.b, &self.out])?;
        for other in [&self.b, &self.out] {
            if other.shape() != self.a.shape() {
                return Err(Error::mismatch(op, self.a.shape(), other.shape()));
            }
        }
        count_u32(op, self.a.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let n = count_u32(self.name(), self.a.numel())?;
        let a = encoder.bind(&self.a)?;
        let b = encoder.bind(&self.b)?;
        let out = encoder.bind(&self.out)?;
        let params = Params { n, off0: a.elem_offset(), off1: b.elem_offset(), off2: out.elem_offset() };
        let workgroups = encoder.linear_grid(n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG)), ("OP", self.act.unary_op().code())])?;
        encoder.dispatch(
            cache,
            Dispatch {
                kernel: &GATED,
                dtype: self.a.dtype(),
                overrides,
                bindings: &[&a, &b, &out],
                params,
                workgroups,
            },
        )
    }
}

impl Tensor {
    /// `act(self) * other` element by element (the gate of a GeGLU / SwiGLU MLP); `other` has
    /// `self`'s shape and dtype.
    pub fn gated(&self, act: GatedAct, other: &Tensor) -> Result<Tensor> {
        if !self.runtime().same(other.runtime()) {
            return Err(Error::invalid("gated", "tensors belong to different runtimes"));
        }
        let out = self.empty_like()?;
        self.runtime().record(&Gated::new(act, self, other, &out)?)?;
        Ok(out)
    }
}
