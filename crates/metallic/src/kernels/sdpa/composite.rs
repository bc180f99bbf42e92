//! The composite attention path: `QKᵀ` (GEMM) → masked softmax → `·V` (GEMM), through the
//! library's own ops, with the score matrix in a pooled scratch tensor.
//!
//! It is the fused kernel's reference twin in the tests and the fallback where the fused
//! kernel cannot run (head dimensions above [`FlashAttention::MAX_HEAD_DIM`]).
//!
//! Grouped-query attention needs no copies: the `group` query heads that share a K/V head are
//! adjacent in `q`, so `q` viewed as `[batch, kv_heads, group · seq_q, head_dim]` multiplies
//! `k` `[batch, kv_heads, seq_k, head_dim]` directly, and the product with `v` lands in
//! `out`'s memory in `out`'s layout.

use super::{FlashAttention, SdpaOptions, SdpaProblem, SplitKAttention};
use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Operation};
use crate::error::{Error, Result};
use crate::kernels::matmul::Matmul;
use crate::kernels::softmax::{Softmax, SoftmaxOptions};
use crate::tensor::{Shape, Tensor};

const OP: &str = "sdpa_composite";

/// `out = softmax(scale · q kᵀ + mask, causal) · v` as three recorded ops: a GEMM into a
/// scratch score tensor, a fused masked softmax over it, and a GEMM into `out`.
///
/// The scratch (`batch · heads · seq_q · seq_k` elements) comes from the runtime's pool and is
/// held by the op. Causal offsets must be non-negative (the fused kernel also takes negative
/// ones).
#[derive(Debug, Clone)]
pub struct CompositeAttention {
    scores_gemm: Matmul,
    softmax: Softmax,
    values_gemm: Matmul,
}

impl CompositeAttention {
    /// Validates like [`FlashAttention::new`] and allocates the score scratch.
    pub fn new(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, options: SdpaOptions) -> Result<Self> {
        let problem = SdpaProblem::new(q, k, v, out, &options)?;
        if problem.window.is_some() {
            return Err(Error::invalid(
                OP,
                "the composite path takes no sliding window; the fused and split-K kernels do",
            ));
        }
        if problem.kv_dtype != problem.dtype {
            return Err(Error::invalid(
                OP,
                format!(
                    "the composite path takes K/V of q's dtype ({} under {}); the fused and split-K kernels take it",
                    problem.kv_dtype, problem.dtype
                ),
            ));
        }
        if problem.shape.kv_stride != problem.shape.seq_k {
            return Err(Error::invalid(
                OP,
                "the composite path reads whole K/V tensors (no `keys`); the fused and split-K kernels take it",
            ));
        }
        let s = problem.shape;
        let (group, rows) = (s.group(), s.group() * s.seq_q);
        let causal = match problem.causal_offset {
            None => None,
            Some(offset) => Some(u32::try_from(offset).map_err(|_| {
                Error::invalid(OP, format!("causal offset {offset} is negative; the fused path takes it"))
            })?),
        };
        // 3-D inputs are one head: the same views with kv_heads = group = 1.
        let q_view = q.reshape(Shape::new(&[s.batch, s.kv_heads, rows, s.head_dim])?)?;
        let k_view = k.reshape(Shape::new(&[s.batch, s.kv_heads, s.seq_k, s.head_dim])?)?;
        let v_view = v.reshape(Shape::new(&[s.batch, s.kv_heads, s.seq_k, s.head_dim_v])?)?;
        let out_view = out.reshape(Shape::new(&[s.batch, s.kv_heads, rows, s.head_dim_v])?)?;
        let scores = Tensor::empty(q.runtime(), [s.batch, s.kv_heads, rows, s.seq_k], problem.dtype)?;
        // The softmax sees [batch, kv_heads, group, seq_q, seq_k] so that its query index (the
        // second-to-last dimension) is the position within seq_q.
        let planes = scores.reshape(Shape::new(&[s.batch, s.kv_heads, group, s.seq_q, s.seq_k])?)?;
        let mask = match &options.mask {
            None => None,
            Some(m) => Some(group_mask(m, s.heads, s.kv_heads, group)?),
        };
        let softmax_options = SoftmaxOptions { scale: 1.0, causal, mask };
        Ok(CompositeAttention {
            scores_gemm: Matmul::new(&q_view, &k_view, &scores)?.transpose_b(true).alpha(problem.scale),
            softmax: Softmax::new(&planes, &planes, softmax_options)?,
            values_gemm: Matmul::new(&scores, &v_view, &out_view)?,
        })
    }
}

/// The mask, broadcastable to `[batch, heads, seq_q, seq_k]`, reshaped to broadcast against
/// `[batch, kv_heads, group, seq_q, seq_k]` (a head dimension of `heads` splits in two).
fn group_mask(mask: &Tensor, heads: usize, kv_heads: usize, group: usize) -> Result<Tensor> {
    let dims = mask.dims();
    if dims.len() < 3 {
        return Ok(mask.clone());
    }
    let split = dims.len() - 3;
    let (lead, rest) = dims.split_at(split);
    let Some((&h, tail)) = rest.split_first() else { return Ok(mask.clone()) };
    let pair = if h == heads { [kv_heads, group] } else { [1, h] };
    let reshaped: Vec<usize> = lead.iter().copied().chain(pair).chain(tail.iter().copied()).collect();
    mask.reshape(Shape::new(&reshaped)?)
}

impl Operation for CompositeAttention {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        self.scores_gemm.validate()?;
        self.softmax.validate()?;
        self.values_gemm.validate()
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        self.scores_gemm.encode(encoder, cache)?;
        self.softmax.encode(encoder, cache)?;
        self.values_gemm.encode(encoder, cache)
    }
}

/// Which attention implementation [`scaled_dot_product_attention_with`](super::scaled_dot_product_attention_with) records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SdpaImpl {
    /// [`SplitKAttention`] for decoding shapes it prefers, else the fused kernel where it can
    /// run, else the composite path.
    #[default]
    Auto,
    /// [`FlashAttention`]: one pass, no score matrix in memory.
    Fused,
    /// [`CompositeAttention`]: GEMM → softmax → GEMM through a scratch score matrix.
    Composite,
    /// [`SplitKAttention`]: keys split across workgroups, then merged (decoding).
    SplitK,
}

impl SdpaImpl {
    /// The implementation `Auto` resolves to for these tensors (any other choice is kept).
    pub fn resolve(self, problem: &SdpaProblem, q: &Tensor) -> SdpaImpl {
        match self {
            SdpaImpl::Auto if SplitKAttention::preferred(problem, q.context()) => SdpaImpl::SplitK,
            SdpaImpl::Auto if FlashAttention::supports(problem, q.context()).is_ok() => SdpaImpl::Fused,
            SdpaImpl::Auto
                if problem.causal_offset.is_some_and(|o| o < 0)
                    || problem.window.is_some()
                    || problem.shape.kv_stride != problem.shape.seq_k =>
            {
                SdpaImpl::Fused
            }
            SdpaImpl::Auto => SdpaImpl::Composite,
            other => other,
        }
    }
}
