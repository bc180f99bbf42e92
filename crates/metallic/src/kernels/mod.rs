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
use crate::kernel::Kernel;
use crate::tensor::Tensor;

/// Every kernel of the library: where a saved list of pipelines names a kernel
/// ([`PipelineKey::from_line`](crate::PipelineKey::from_line)), it is looked up here. A new
/// kernel is added to this list (a test checks that every `.wgsl` kernel file is in it).
pub static ALL: &[&Kernel] = &[
    &copy::COPY,
    &copy::COPY_VEC4,
    &elementwise::BINARY,
    &embedding::EMBEDDING,
    &fill::FILL,
    &gated::GATED,
    &matmul::GEMM,
    &matmul::GEMM_CHECKED,
    &matmul::GEMM_COOP,
    &matmul::GEMM_WIDE,
    &matmul::GEMM_WIDE_CHECKED,
    &matmul::GEMV_KN,
    &matmul::GEMV_NK,
    &matmul::SPLITK_REDUCE,
    &norm::LAYER_NORM,
    &norm::LAYER_NORM_ROWS,
    &norm::LAYER_NORM_ROWS_SCALAR,
    &norm::RMS_NORM,
    &norm::RMS_NORM_ROWS,
    &norm::RMS_NORM_ROWS_SCALAR,
    &qmatmul::EMBED,
    &qmatmul::GEMM,
    &qmatmul::GEMM_COOP,
    &qmatmul::GEMV,
    &qmatmul::GEMV_SB,
    &qmatmul::ROW_GEMV,
    &qmatmul::q8::GEMV_Q8,
    &qmatmul::q8::QUANTIZE,
    &random::RANDOM,
    &residual::RESIDUAL,
    &rope::ROPE,
    &rope::qkv::QKV,
    &sdpa::FLASH,
    &sdpa::TILED,
    &sdpa::decode::MERGE,
    &sdpa::decode::PARTIAL,
    &sdpa::decode::PARTIAL_VEC,
    &sdpa::decode::SHORT,
    &sdpa::decode::SHORT_VEC,
    &softmax::SOFTMAX,
    &softmax::SOFTMAX_ROWS,
    &softmax::SOFTMAX_ROWS_SCALAR,
    &strided::STRIDED,
    &topk::TOPK,
    &unary::UNARY,
];

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    /// Every kernel file (not a shared piece) is the start of some kernel in [`super::ALL`]:
    /// a saved pipeline list can name every kernel.
    #[test]
    fn every_kernel_file_is_listed() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() && !path.ends_with("prelude") {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "wgsl") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels"), &mut files);
        // Shared pieces, appended to kernels rather than kernels of their own.
        let piece =
            |name: &str| name.ends_with("common.wgsl") || name == "decode_scalar.wgsl" || name == "decode_vec.wgsl";
        let mut kernels = 0;
        for file in files {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap().to_owned();
            if piece(&name) {
                continue;
            }
            kernels += 1;
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                super::ALL.iter().any(|k| k.source.trim_start_matches('\n').starts_with(&text)),
                "{} is in no kernel of kernels::ALL",
                file.display()
            );
        }
        assert!(kernels >= 30, "{kernels} kernel files");
    }
}
