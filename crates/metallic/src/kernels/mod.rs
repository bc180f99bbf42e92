//! The kernel library: one folder per op, each a Rust [`Operation`](crate::Operation) beside
//! its `.wgsl` file.
//!
//! Adding an op: create `kernels/<op>/mod.rs` and `kernels/<op>/<op>.wgsl`, add one `pub mod`
//! line here, and add a test file under `tests/`. The naga test picks the `.wgsl` up by itself.

pub mod copy;
pub mod elementwise;
pub mod embedding;
pub mod fill;
pub mod gated;
pub mod matmul;
pub mod norm;
pub mod qmatmul;
pub mod random;
pub mod residual;
pub mod rope;
pub mod sdpa;
pub mod softmax;
pub mod strided;
pub mod topk;
pub mod unary;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Fails unless every tensor lives on the first one's device.
pub(crate) fn check_same_device(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    match tensors.split_first() {
        Some((first, rest)) if rest.iter().any(|t| !t.context().same_device(first.context())) => {
            Err(Error::invalid(op, "tensors live on different devices"))
        }
        _ => Ok(()),
    }
}

/// Fails unless `t` has `want`'s dtype.
pub(crate) fn check_dtype(op: &'static str, want: crate::DType, t: &Tensor) -> Result<()> {
    if t.dtype() == want { Ok(()) } else { Err(Error::DTypeMismatch { op, expected: want, got: t.dtype() }) }
}

/// Fails unless the key/value caches `k` and `v` fit tensors of dtype `queries`: both of
/// `queries`' dtype, or both f16 under f32 (an f16 KV cache; kernels bind it as `KV`).
pub(crate) fn check_cache_dtypes(op: &'static str, queries: crate::DType, k: &Tensor, v: &Tensor) -> Result<()> {
    use crate::DType;
    let want = if queries == DType::F32 && k.dtype() == DType::F16 { DType::F16 } else { queries };
    check_dtype(op, want, k)?;
    check_dtype(op, want, v)
}

/// Fails unless `t` has a float dtype.
pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, expected: crate::DType::F32, got: t.dtype() })
    }
}

/// Converts an element count to the `u32` kernels index with.
pub(crate) fn count_u32(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(op, format!("{n} elements exceed 32-bit indexing")))
}

/// The 1-D workgroup size of the linear kernels.
pub(crate) const LINEAR_WG: u32 = 256;
