//! Element-wise arithmetic on tensors and the operator overloads built on it.
//!
//! Every method records a [`Binary`] into the runtime's implicit command buffer and returns
//! the output tensor at once; the GPU runs it when the buffer is submitted.

use std::ops::{Add, Div, Mul, Sub};

use super::Tensor;
use crate::error::{Error, Result};
use crate::kernels::elementwise::{Binary, BinaryOp};

impl Tensor {
    fn binary(&self, op: BinaryOp, other: &Tensor) -> Result<Tensor> {
        if !self.runtime().same(other.runtime()) {
            return Err(Error::invalid("binary", "tensors belong to different runtimes"));
        }
        let out = self.empty_like()?;
        self.runtime().record(&Binary::new(op, self, other, &out)?)?;
        Ok(out)
    }

    fn binary_scalar(&self, op: BinaryOp, value: f32) -> Result<Tensor> {
        let out = self.empty_like()?;
        self.runtime().record(&Binary::scalar(op, self, value, &out)?)?;
        Ok(out)
    }

    /// `self + other`; `other`'s shape may be a suffix of `self`'s (broadcast).
    pub fn add_elem(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, other)
    }

    /// `self - other`, broadcasting like [`add_elem`](Self::add_elem).
    pub fn sub_elem(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, other)
    }

    /// `self * other`, broadcasting like [`add_elem`](Self::add_elem).
    pub fn mul_elem(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, other)
    }

    /// `self / other`, broadcasting like [`add_elem`](Self::add_elem).
    pub fn div_elem(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, other)
    }

    /// `max(self, other)`, broadcasting like [`add_elem`](Self::add_elem).
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Maximum, other)
    }

    /// `min(self, other)`, broadcasting like [`add_elem`](Self::add_elem).
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Minimum, other)
    }

    /// `self + value`.
    pub fn add_scalar(&self, value: f32) -> Result<Tensor> {
        self.binary_scalar(BinaryOp::Add, value)
    }

    /// `self - value`.
    pub fn sub_scalar(&self, value: f32) -> Result<Tensor> {
        self.binary_scalar(BinaryOp::Sub, value)
    }

    /// `self * value`.
    pub fn mul_scalar(&self, value: f32) -> Result<Tensor> {
        self.binary_scalar(BinaryOp::Mul, value)
    }

    /// `self / value`.
    pub fn div_scalar(&self, value: f32) -> Result<Tensor> {
        self.binary_scalar(BinaryOp::Div, value)
    }

    /// `value - self`.
    pub fn rsub_scalar(&self, value: f32) -> Result<Tensor> {
        let out = self.empty_like()?;
        self.runtime().record(&Binary::scalar_first(BinaryOp::Sub, value, self, &out)?)?;
        Ok(out)
    }

    /// `max(self, value)` (a ReLU for `value = 0`).
    pub fn maximum_scalar(&self, value: f32) -> Result<Tensor> {
        self.binary_scalar(BinaryOp::Maximum, value)
    }
}

macro_rules! operator {
    ($trait:ident, $method:ident, $elem:ident, $scalar:ident) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                self.$elem(rhs)
            }
        }
        impl $trait<f32> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f32) -> Result<Tensor> {
                self.$scalar(rhs)
            }
        }
        impl $trait<&Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                self.$elem(rhs)
            }
        }
        impl $trait<f32> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f32) -> Result<Tensor> {
                self.$scalar(rhs)
            }
        }
    };
}

operator!(Add, add, add_elem, add_scalar);
operator!(Sub, sub, sub_elem, sub_scalar);
operator!(Mul, mul, mul_elem, mul_scalar);
operator!(Div, div, div_elem, div_scalar);
