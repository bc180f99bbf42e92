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

pub(crate) static GATED: Kernel = Kernel { name: "gated", source: SOURCE, entry: "gated_main", bindings: 3 };

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
    /// `None`: `a` holds both operands, as the two halves of each row.
    b: Option<Tensor>,
    out: Tensor,
}

impl Gated {
    /// `out = act(a) * b`; `b` and `out` must have `a`'s shape and float dtype.
    pub fn new(act: GatedAct, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Self> {
        let this = Gated { act, a: a.clone(), b: Some(b.clone()), out: out.clone() };
        this.validate()?;
        Ok(this)
    }

    /// `out[.., c] = act(x[.., c]) * x[.., w + c]`: the gate and up projections computed as one
    /// matrix product, `x` of shape `[.., 2w]` and `out` `[.., w]`.
    ///
    /// ```
    /// use metallic::{kernels::gated::{GatedAct, Gated}, Runtime, Tensor};
    /// let rt = Runtime::new()?;
    /// let x = Tensor::from_slice(&rt, [2, 4], &[0.0f32, 30.0, 5.0, 2.0, 30.0, 0.0, 1.0, 7.0])?;
    /// let out = Tensor::zeros(&rt, [2, 2], metallic::DType::F32)?;
    /// rt.record(&Gated::halves(GatedAct::Silu, &x, &out)?)?;
    /// assert_eq!(out.to_vec::<f32>()?, [0.0, 60.0, 30.0, 0.0]);
    /// # Ok::<(), metallic::Error>(())
    /// ```
    pub fn halves(act: GatedAct, x: &Tensor, out: &Tensor) -> Result<Self> {
        let this = Gated { act, a: x.clone(), b: None, out: out.clone() };
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
        check_dtype(op, self.a.dtype(), &self.out)?;
        check_same_device(op, &[&self.a, &self.out])?;
        match &self.b {
            Some(b) => {
                check_dtype(op, self.a.dtype(), b)?;
                check_same_device(op, &[&self.a, b])?;
                for other in [b, &self.out] {
                    if other.shape() != self.a.shape() {
                        return Err(Error::mismatch(op, self.a.shape(), other.shape()));
                    }
                }
            }
            None => {
                let dims = self.a.dims();
                let (lead, width) = dims.split_at(dims.len().saturating_sub(1));
                let half = width.first().map_or(0, |w| w / 2);
                let want: Vec<usize> = lead.iter().copied().chain([half]).collect();
                if width.first().is_none_or(|w| !w.is_multiple_of(2) || *w == 0) || self.out.dims() != want {
                    return Err(Error::shape(
                        op,
                        format!(
                            "halves: x must be [.., 2w] and out [.., w], got {} and {}",
                            self.a.shape(),
                            self.out.shape()
                        ),
                    ));
                }
            }
        }
        count_u32(op, self.a.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let n = count_u32(self.name(), self.out.numel())?;
        let a = encoder.bind(&self.a)?;
        let b = match &self.b {
            Some(b) => encoder.bind(b)?,
            None => a.clone(),
        };
        let out = encoder.bind(&self.out)?;
        let half = match self.b {
            Some(_) => 0,
            None => count_u32(self.name(), self.out.dims().last().copied().unwrap_or(0))?,
        };
        let params = Params { n, off0: a.elem_offset(), off1: b.elem_offset(), off2: out.elem_offset(), half };
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
