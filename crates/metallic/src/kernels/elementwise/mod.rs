//! Element-wise binary arithmetic, tensor–tensor (with broadcasting) and tensor–scalar.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::Tensor;

pub(crate) static BINARY: Kernel =
    Kernel { name: "binary", source: include_str!("binary.wgsl"), entry: "main", bindings: 3 };

/// The arithmetic an element-wise [`Binary`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `x + y`
    Add,
    /// `x - y`
    Sub,
    /// `x * y`
    Mul,
    /// `x / y` (IEEE: division by zero gives ±inf or NaN)
    Div,
    /// `max(x, y)`
    Maximum,
    /// `min(x, y)`
    Minimum,
}

impl BinaryOp {
    fn code(self) -> f64 {
        match self {
            BinaryOp::Add => 0.0,
            BinaryOp::Sub => 1.0,
            BinaryOp::Mul => 2.0,
            BinaryOp::Div => 3.0,
            BinaryOp::Maximum => 4.0,
            BinaryOp::Minimum => 5.0,
        }
    }

    /// Applies the op on the host (the reference the tests compare with).
    pub fn apply(self, x: f64, y: f64) -> f64 {
        match self {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
        }
    }
}

/// The second operand of a [`Binary`].
#[derive(Debug, Clone)]
enum Operand {
    /// A tensor whose shape is a suffix of `a`'s, repeated over `a`'s leading dimensions.
    Tensor(Tensor),
    /// A scalar; `swapped` computes `op(scalar, a)` instead of `op(a, scalar)`.
    Scalar { value: f32, swapped: bool },
}

/// `out = op(a, b)` element by element, in f32 arithmetic whatever the storage dtype.
///
/// `b` broadcasts over `a` when its shape equals `a`'s trailing dimensions (a bias row added
/// to every row, say). `out` may be `a` itself.
#[derive(Debug, Clone)]
pub struct Binary {
    op: BinaryOp,
    a: Tensor,
    b: Operand,
    out: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    b_len: u32,
    a_off: u32,
    b_off: u32,
    out_off: u32,
    scalar: f32,
}

impl Binary {
    /// `out = op(a, b)`; `b`'s shape must be a suffix of `a`'s, `out`'s equal to `a`'s.
    pub fn new(op: BinaryOp, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Self> {
        let this = Binary { op, a: a.clone(), b: Operand::Tensor(b.clone()), out: out.clone() };
        this.validate()?;
        Ok(this)
    }

    /// `out = op(a, value)`.
    pub fn scalar(op: BinaryOp, a: &Tensor, value: f32, out: &Tensor) -> Result<Self> {
        let this = Binary { op, a: a.clone(), b: Operand::Scalar { value, swapped: false }, out: out.clone() };
        this.validate()?;
        Ok(this)
    }

    /// `out = op(value, a)` (for `value - a`, `value / a`).
    pub fn scalar_first(op: BinaryOp, value: f32, a: &Tensor, out: &Tensor) -> Result<Self> {
        let this = Binary { op, a: a.clone(), b: Operand::Scalar { value, swapped: true }, out: out.clone() };
        this.validate()?;
        Ok(this)
    }
}

impl Operation for Binary {
    fn name(&self) -> &'static str {
        "binary"
    }

    fn validate(&self) -> Result<()> {
        let op = self.name();
        check_float(op, &self.a)?;
        check_dtype(op, self.a.dtype(), &self.out)?;
        check_same_device(op, &[&self.a, &self.out])?;
        if self.out.shape() != self.a.shape() {
            return Err(Error::mismatch(op, self.a.shape(), self.out.shape()));
        }
        if let Operand::Tensor(b) = &self.b {
            check_dtype(op, self.a.dtype(), b)?;
            check_same_device(op, &[&self.a, b])?;
            if !self.a.shape().ends_with(&b.shape()) || (b.numel() == 0 && self.a.numel() != 0) {
                return Err(Error::mismatch(op, self.a.shape(), b.shape()));
            }
        }
        count_u32(op, self.a.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let n = count_u32(self.name(), self.a.numel())?;
        let a = encoder.bind(&self.a)?;
        let out = encoder.bind(&self.out)?;
        let (b, b_len, scalar, swapped) = match &self.b {
            Operand::Tensor(t) => (encoder.bind(t)?, count_u32(self.name(), t.numel())?, 0.0, false),
            // No second tensor: bind `a` in its place; the kernel reads `scalar` instead.
            Operand::Scalar { value, swapped } => (a.clone(), 0, *value, *swapped),
        };
        let params =
            Params { n, b_len, a_off: a.elem_offset(), b_off: b.elem_offset(), out_off: out.elem_offset(), scalar };
        let workgroups = encoder.linear_grid(n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[
            ("WG", f64::from(LINEAR_WG)),
            ("OP", self.op.code()),
            ("SWAP", if swapped { 1.0 } else { 0.0 }),
        ])?;
        encoder.dispatch(
            cache,
            Dispatch {
                kernel: &BINARY,
                dtype: self.a.dtype(),
                overrides,
                bindings: &[&a, &b, &out],
                params,
                workgroups,
            },
        )
    }
}
