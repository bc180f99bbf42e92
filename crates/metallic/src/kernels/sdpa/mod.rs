//! Scaled-dot-product attention: `out = softmax(scale · q kᵀ + mask, causal) · v`.
//!
//! The module is built around one validated description of the problem, shared by every way of
//! computing it:
//!
//! - [`SdpaOptions`]: what the caller asks for (scale, causal rule, additive mask);
//! - [`SdpaShape`]: batch, heads, K/V heads, sequence lengths and head dimensions read off
//!   `q`, `k` and `v`, with the mask broadcasting rule;
//! - [`SdpaProblem`]: shapes, dtype, resolved scale and causal offset, and the mask with its
//!   broadcast strides — everything an implementation needs, validated once.
//!
//! [`FlashAttention`] is the fused single-pass kernel (`flash.wgsl`): online softmax over
//! key tiles staged in workgroup memory, no score matrix in memory. [`scaled_dot_product_attention`]
//! is the tensor-level entry point.
//!
//! Layouts: 4-D `[batch, heads, seq, head_dim]` tensors, `k`/`v` with `kv_heads` heads that
//! divide `heads` (grouped-query attention: query head `h` reads K/V head
//! `h / (heads / kv_heads)`, nothing is repeated in memory), or 3-D `[batch, seq, dim]`
//! tensors (one head). `v`'s head dimension may differ from `q`'s and `k`'s; `out` is shaped
//! like `q` with `v`'s head dimension last.
//!
//! ```
//! use metallic::kernels::sdpa::{scaled_dot_product_attention, SdpaOptions};
//! use metallic::{DType, Runtime, Tensor};
//! let rt = Runtime::new()?;
//! let q = Tensor::random_uniform(&rt, [1, 4, 5, 16], DType::F32, -1.0, 1.0, 1)?;
//! let k = Tensor::random_uniform(&rt, [1, 2, 9, 16], DType::F32, -1.0, 1.0, 2)?;
//! let v = Tensor::random_uniform(&rt, [1, 2, 9, 8], DType::F32, -1.0, 1.0, 3)?;
//! let options = SdpaOptions { causal: true, ..Default::default() };
//! let out = scaled_dot_product_attention(&q, &k, &v, options)?;
//! assert_eq!(out.dims(), &[1, 4, 5, 8]);
//! # Ok::<(), metallic::Error>(())
//! ```
//!
//! Errors: a rank other than 3 or 4, a zero head count or head dimension, or sequences of
//! 2^30 or more are [`Error::InvalidShape`]; shapes that disagree — batch, head dimensions of
//! `q`/`k`, `k`/`v` heads or lengths, `heads` not a multiple of `kv_heads`, `out`, a mask that
//! does not broadcast — are [`Error::ShapeMismatch`]; a non-float `q` or any other tensor of
//! another dtype is [`Error::DTypeMismatch`] (one exception: `k` and `v` may both be `f16`
//! under `f32` queries — an f16 key/value cache, which the fused and split-K kernels read and
//! widen to f32; the composite path refuses it); a non-finite scale or an `out` that overlaps
//! an input is [`Error::InvalidArgument`].

mod composite;
pub(crate) mod decode;

pub use composite::{CompositeAttention, SdpaImpl};
pub use decode::{SlotAttention, SplitKAttention};

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation, TensorBinding};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_cache_dtypes, check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::{DType, Shape, Tensor};

pub(crate) static FLASH: Kernel = Kernel {
    name: "sdpa_flash",
    source: concat!(include_str!("flash.wgsl"), include_str!("flash_common.wgsl")),
    entry: "main",
    bindings: 5,
};
pub(crate) static TILED: Kernel = Kernel {
    name: "sdpa_flash_tiled",
    source: concat!(include_str!("flash_tiled.wgsl"), include_str!("flash_common.wgsl")),
    entry: "main",
    bindings: 7,
};

/// Name used in errors from validation shared by every SDPA implementation.
const OP: &str = "sdpa";

/// Longest sequence (queries or keys) accepted: causal index arithmetic is done in `i32`.
pub const MAX_SEQ: usize = 1 << 30;

/// What the caller asks of an attention: scale, causal rule and additive mask.
#[derive(Debug, Clone, Default)]
pub struct SdpaOptions {
    /// Multiplies `q kᵀ`; `None` means `1 / sqrt(head_dim)`. Must be finite.
    pub scale: Option<f32>,
    /// Whether query `i` sees only keys `j <= i + causal_offset`.
    pub causal: bool,
    /// The causal offset (used only when `causal`); `None` means `seq_k - seq_q`, the
    /// bottom-right alignment of KV-cached decoding (the last query sees every key). With that
    /// default and `seq_q > seq_k`, the first `seq_q - seq_k` queries see no key and give 0.
    pub causal_offset: Option<u32>,
    /// An additive mask of `q`'s dtype, broadcastable (right-aligned, each dimension equal or 1)
    /// to `[batch, heads, seq_q, seq_k]` for 4-D inputs or `[batch, seq_q, seq_k]` for 3-D ones.
    /// Values of `-inf` (anything at or below `-3e38`) mask a key out entirely.
    pub mask: Option<Tensor>,
    /// A sliding window (only with `causal`): query `i` sees only the last `window` keys up to
    /// its causal limit, keys `j` with `i + offset - window < j <= i + offset`. Must be at least
    /// 1. The fused and split-K kernels apply it; the composite path refuses it.
    pub window: Option<usize>,
    /// Attend to the first `keys` positions of `k` and `v` only (1 to their length): a KV
    /// cache bound whole while it holds fewer positions. The problem's `seq_k` is `keys`; the
    /// rest of each head is never read. The fused and split-K kernels take it; the composite
    /// path refuses it.
    pub keys: Option<usize>,
}

/// The dimensions of an attention problem, read off `q`, `k` and `v` and checked for agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SdpaShape {
    /// Batch size.
    pub batch: usize,
    /// Query heads (1 for 3-D inputs).
    pub heads: usize,
    /// Key/value heads; divides `heads` (grouped-query attention when smaller).
    pub kv_heads: usize,
    /// Query positions.
    pub seq_q: usize,
    /// Key/value positions attended to.
    pub seq_k: usize,
    /// Positions between consecutive K/V heads in memory: `k`'s length, which exceeds
    /// `seq_k` when [`SdpaOptions::keys`] reads a prefix.
    pub kv_stride: usize,
    /// Head dimension of `q` and `k`.
    pub head_dim: usize,
    /// Head dimension of `v` and the output.
    pub head_dim_v: usize,
    /// Rank of the inputs: 4 (`[batch, heads, seq, dim]`) or 3 (`[batch, seq, dim]`).
    pub rank: usize,
}

impl SdpaShape {
    /// Reads the dimensions from the shapes of `q`, `k` and `v`.
    ///
    /// Ranks other than 3 or 4 (or unequal ranks), zero heads or head dimensions and sequences
    /// of [`MAX_SEQ`] or more are [`Error::InvalidShape`]; disagreeing dimensions — including
    /// `heads` not a multiple of `kv_heads` — are [`Error::ShapeMismatch`] (`q` against `k`, or
    /// `k` against `v`).
    pub fn new(q: Shape, k: Shape, v: Shape) -> Result<Self> {
        let rank = q.rank();
        if !(rank == 3 || rank == 4) {
            return Err(Error::shape(
                OP,
                format!("q has shape {q}; expected [batch, heads, seq, dim] or [batch, seq, dim]"),
            ));
        }
        if k.rank() != rank {
            return Err(Error::mismatch(OP, q, k));
        }
        if v.rank() != rank {
            return Err(Error::mismatch(OP, k, v));
        }
        // [batch, heads, seq, dim] with heads = 1 for 3-D inputs.
        let split = |s: Shape| -> [usize; 4] {
            match *s.dims() {
                [b, h, n, d] => [b, h, n, d],
                [b, n, d] => [b, 1, n, d],
                _ => [0; 4],
            }
        };
        let [batch, heads, seq_q, head_dim] = split(q);
        let [kb, kv_heads, seq_k, kd] = split(k);
        let [vb, vh, vn, head_dim_v] = split(v);
        if heads == 0 || kv_heads == 0 {
            return Err(Error::shape(OP, format!("no heads in q {q} or k {k}")));
        }
        if head_dim == 0 || head_dim_v == 0 {
            return Err(Error::shape(OP, format!("zero head dimension in q {q} or v {v}")));
        }
        if kb != batch || kd != head_dim || !heads.is_multiple_of(kv_heads) {
            return Err(Error::mismatch(OP, q, k));
        }
        if vb != kb || vh != kv_heads || vn != seq_k {
            return Err(Error::mismatch(OP, k, v));
        }
        if seq_q >= MAX_SEQ || seq_k >= MAX_SEQ {
            return Err(Error::shape(OP, format!("sequences of q {q} or k {k} reach {MAX_SEQ}")));
        }
        Ok(SdpaShape { batch, heads, kv_heads, seq_q, seq_k, kv_stride: seq_k, head_dim, head_dim_v, rank })
    }

    /// Query heads per K/V head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads.max(1)
    }

    /// The K/V head query head `head` reads.
    pub fn kv_head(&self, head: usize) -> usize {
        head / self.group().max(1)
    }

    /// The output's shape: `q`'s with `v`'s head dimension last.
    pub fn out_shape(&self) -> Result<Shape> {
        if self.rank == 3 {
            Shape::new(&[self.batch, self.seq_q, self.head_dim_v])
        } else {
            Shape::new(&[self.batch, self.heads, self.seq_q, self.head_dim_v])
        }
    }

    /// The shape of the logits a mask broadcasts to: `[batch, heads, seq_q, seq_k]`, or
    /// `[batch, seq_q, seq_k]` for 3-D inputs.
    pub fn logits_shape(&self) -> Result<Shape> {
        if self.rank == 3 {
            Shape::new(&[self.batch, self.seq_q, self.seq_k])
        } else {
            Shape::new(&[self.batch, self.heads, self.seq_q, self.seq_k])
        }
    }

    /// The causal offset `options` resolve to: theirs, or `seq_k - seq_q` by default.
    pub fn causal_offset(&self, options: &SdpaOptions) -> i64 {
        match options.causal_offset {
            Some(offset) => i64::from(offset),
            None => self.seq_k as i64 - self.seq_q as i64,
        }
    }

    /// Element strides of a mask of shape `mask` over (batch, head, query, key), 0 where it
    /// broadcasts; [`Error::ShapeMismatch`] (mask against [`logits_shape`](Self::logits_shape))
    /// unless it broadcasts right-aligned with every dimension equal or 1.
    pub fn mask_strides(&self, mask: Shape) -> Result<[usize; 4]> {
        let target = self.logits_shape()?;
        let (dims, tdims) = (mask.dims(), target.dims());
        if dims.len() > tdims.len() {
            return Err(Error::mismatch(OP, mask, target));
        }
        let strides = mask.strides();
        // Target axis -> (batch, head, query, key) slot.
        let slots: &[usize] = if self.rank == 3 { &[0, 2, 3] } else { &[0, 1, 2, 3] };
        let mut out = [0usize; 4];
        let lead = tdims.len() - dims.len();
        for (axis, (&want, &slot)) in tdims.iter().zip(slots).enumerate() {
            let Some(m) = axis.checked_sub(lead) else { continue };
            let (Some(&dim), Some(&stride)) = (dims.get(m), strides.as_slice().get(m)) else { continue };
            if dim != want && dim != 1 {
                return Err(Error::mismatch(OP, mask, target));
            }
            if let Some(s) = out.get_mut(slot) {
                *s = if dim == 1 { 0 } else { stride };
            }
        }
        Ok(out)
    }
}

/// An additive mask and how it broadcasts.
#[derive(Debug, Clone)]
pub struct SdpaMask {
    /// The mask tensor (the problem's dtype).
    pub tensor: Tensor,
    /// Element strides over (batch, head, query, key); 0 where the mask broadcasts.
    pub strides: [usize; 4],
}

/// A validated attention problem: what every implementation (fused or composite) computes.
#[derive(Debug, Clone)]
pub struct SdpaProblem {
    /// The dimensions.
    pub shape: SdpaShape,
    /// The storage dtype of `q`, `out` and the mask (a float type).
    pub dtype: DType,
    /// The storage dtype of `k` and `v`: `dtype`, or `F16` under `F32` queries.
    pub kv_dtype: DType,
    /// The resolved, finite scale.
    pub scale: f32,
    /// `Some(offset)` when causal: query `i` sees key `j` iff `j <= i + offset`.
    pub causal_offset: Option<i64>,
    /// The sliding window (with `causal_offset`): query `i` sees key `j` only if
    /// `j > i + offset - window`.
    pub window: Option<usize>,
    /// The additive mask, if any.
    pub mask: Option<SdpaMask>,
}

impl SdpaProblem {
    /// Validates `q`, `k`, `v`, `out` and `options` together (see the module docs for the
    /// errors).
    pub fn new(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, options: &SdpaOptions) -> Result<Self> {
        check_inputs(q, k, v, options)?;
        check_dtype(OP, q.dtype(), out)?;
        check_same_device(OP, &[q, out])?;
        let mut shape = SdpaShape::new(q.shape(), k.shape(), v.shape())?;
        match options.keys {
            Some(keys) if keys == 0 || keys > shape.kv_stride => {
                return Err(Error::invalid(
                    OP,
                    format!("keys {keys} outside 1..={} (k has {} positions)", shape.kv_stride, shape.kv_stride),
                ));
            }
            Some(keys) => shape.seq_k = keys,
            None => {}
        }
        let want = shape.out_shape()?;
        if out.shape() != want {
            return Err(Error::mismatch(OP, want, out.shape()));
        }
        let scale = match options.scale {
            Some(scale) => scale,
            None => (1.0 / (shape.head_dim as f64).sqrt()) as f32,
        };
        if !scale.is_finite() {
            return Err(Error::invalid(OP, format!("scale {scale} is not finite")));
        }
        let mask = match &options.mask {
            Some(m) => Some(SdpaMask { tensor: m.clone(), strides: shape.mask_strides(m.shape())? }),
            None => None,
        };
        let inputs = [Some(q), Some(k), Some(v), options.mask.as_ref()];
        if inputs.into_iter().flatten().any(|t| overlaps(t, out)) {
            return Err(Error::invalid(OP, "out overlaps an input"));
        }
        let causal_offset = options.causal.then(|| shape.causal_offset(options));
        match options.window {
            Some(0) => return Err(Error::invalid(OP, "a sliding window of 0 keys")),
            Some(_) if !options.causal => return Err(Error::invalid(OP, "a sliding window needs the causal rule")),
            _ => {}
        }
        let (dtype, kv_dtype) = (q.dtype(), k.dtype());
        Ok(SdpaProblem { shape, dtype, kv_dtype, scale, causal_offset, window: options.window, mask })
    }
}

/// What the attention kernels take of a problem besides their tensors: the mask's binding (`q`
/// bound in its place when there is none; never read then) with its strides, and the causal
/// rule, in the form of their `Params`.
struct KernelTerms {
    mask: TensorBinding,
    /// Mask strides over (batch, head, query, key); 0 where it broadcasts.
    mask_strides: [u32; 4],
    /// 1 when causal.
    causal: u32,
    /// The causal offset as the bits of an `i32`, clamped to `[-seq_q - 1, seq_k]` (offsets
    /// beyond change nothing; the clamp keeps the kernels' `i32` arithmetic in range).
    offset: u32,
    /// `scale · log2(e)`: the kernels work in base 2.
    scale_log2: f32,
    /// The first key query `i` sees is `i + start`, as the bits of an `i32` clamped like
    /// `offset`: `offset + 1 - window` under a sliding window, else `-seq_q - 1` (key 0).
    start: u32,
}

impl SdpaProblem {
    fn kernel_terms(&self, op: &'static str, encoder: &ComputeEncoder<'_>, q: &TensorBinding) -> Result<KernelTerms> {
        let (mask, strides) = match &self.mask {
            Some(m) => (encoder.bind(&m.tensor)?, m.strides),
            None => (q.clone(), [0; 4]),
        };
        let [sb, sh, sq, sk] = strides.map(|s| count_u32(op, s));
        let shape = &self.shape;
        let in_range = |x: i64| x.clamp(-(shape.seq_q as i64) - 1, shape.seq_k as i64);
        let causal = self.causal_offset.unwrap_or(0);
        let start = match self.window {
            Some(window) => causal.saturating_add(1).saturating_sub(i64::try_from(window).unwrap_or(i64::MAX)),
            None => i64::MIN,
        };
        let offset = in_range(causal);
        Ok(KernelTerms {
            mask,
            mask_strides: [sb?, sh?, sq?, sk?],
            causal: u32::from(self.causal_offset.is_some()),
            offset: (offset as i32).cast_unsigned(),
            scale_log2: self.scale * std::f32::consts::LOG2_E,
            start: (in_range(start) as i32).cast_unsigned(),
        })
    }
}

/// Dtypes and devices of the inputs: `q` a float type, the rest like it except that `k` and
/// `v` may both be f16 under f32 queries.
fn check_inputs(q: &Tensor, k: &Tensor, v: &Tensor, options: &SdpaOptions) -> Result<()> {
    check_float(OP, q)?;
    check_cache_dtypes(OP, q.dtype(), k, v)?;
    check_same_device(OP, &[q, k, v])?;
    if let Some(mask) = &options.mask {
        check_dtype(OP, q.dtype(), mask)?;
        check_same_device(OP, &[q, mask])?;
    }
    Ok(())
}

/// Whether two non-empty tensors share bytes.
fn overlaps(a: &Tensor, b: &Tensor) -> bool {
    let (a0, b0) = (a.byte_offset(), b.byte_offset());
    let (a1, b1) = (a0 + a.size_in_bytes() as u64, b0 + b.size_in_bytes() as u64);
    a.buffer() == b.buffer() && a0 < b1 && b0 < a1
}

/// The fused attention kernel: `out = softmax(scale · q kᵀ + mask, causal) · v` in one pass.
///
/// One workgroup per (batch, K/V head, block of query rows); the query rows of the heads that
/// share a K/V head are blocked together, so each K/V tile is read once for all of them. Key
/// tiles are staged in workgroup memory and folded into a running max, sum and accumulator per
/// row (online softmax, f32 arithmetic for f16 storage). Rows that see no key give 0; `-inf`
/// mask values and large logits stay finite. Results are deterministic.
///
/// Two kernels ([`FlashKernel`]): for head dimensions up to
/// [`FlashAttention::TILED_MAX_HEAD_DIM`] and at least [`FlashAttention::TILED_MIN_ROWS`] rows
/// per K/V head, the register-blocked `flash_tiled.wgsl` (64 rows × 32 keys a step, 4 × 4 scores and
/// 4 rows × 8 output columns per invocation, the next K/V tile fetched during the step; on an
/// H100 the seed shape `[32, 1024, 64]` f32 ran in 0.445 ms non-causal, 0.306 ms causal, against
/// 0.751 / 0.504 ms without the fetch and 1.004 / 0.662 ms on `flash.wgsl`); otherwise
/// `flash.wgsl`, described next.
///
/// Head dimensions up to [`FlashAttention::MAX_HEAD_DIM`]; tile sizes follow the head
/// dimensions, the rows per K/V head and the device's workgroup memory (20 KiB fits every head
/// dimension; more gives larger tiles). Short query blocks over long caches (decoding) use one
/// workgroup per (batch, K/V head); splitting the keys across workgroups is what would fill a
/// large GPU there.
#[derive(Debug, Clone)]
pub struct FlashAttention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    options: SdpaOptions,
    kernel: FlashKernel,
}

/// Which kernel [`FlashAttention`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FlashKernel {
    /// [`Tiled`](Self::Tiled) where it runs and the problem has at least
    /// [`FlashAttention::TILED_MIN_ROWS`] query rows per K/V head, else [`Rows`](Self::Rows).
    #[default]
    Auto,
    /// `flash.wgsl`: teams of invocations own two query rows each; tiles sized to the head
    /// dimensions (up to [`FlashAttention::MAX_HEAD_DIM`]) and the rows per K/V head.
    Rows,
    /// `flash_tiled.wgsl`: register-blocked — 64 query rows × 32 keys per step, a 4 × 4 block of
    /// scores and 4 rows × 8 output columns per invocation. Head dimensions up to
    /// [`FlashAttention::TILED_MAX_HEAD_DIM`].
    Tiled,
}

/// Workgroup memory `flash_tiled.wgsl` declares for head dimensions `d` and `dv`, in bytes (plus the
/// prelude's reduction scratch of 128 floats, in case a compiler keeps it).
fn tiled_bytes(d: usize, dv: usize) -> usize {
    let (d4, dv4) = (d.div_ceil(4), dv.div_ceil(4));
    let vec4s = 64 * d4 + 32 * (d4 | 1) + 32 * dv4 + 32 * 17 + 128;
    16 * vec4s + 4 * 128
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_off: u32,
    mask_off: u32,
    kv_heads: u32,
    group: u32,
    seq_q: u32,
    seq_k: u32,
    blocks: u32,
    total: u32,
    causal: u32,
    offset: u32,
    scale: f32,
    mask_sb: u32,
    mask_sh: u32,
    mask_sq: u32,
    mask_sk: u32,
    start: u32,
    kv_stride: u32,
}

/// Most threads per workgroup the kernel uses (every adapter allows 256).
const MAX_WORKGROUP: usize = 256;

/// Tile sizes of one launch of `flash.wgsl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tiles {
    /// Query rows per workgroup (two per team).
    bq: usize,
    /// Keys per tile.
    bk: usize,
    /// Threads per team: each lane accumulates two vec4 columns of `v`'s head dimension.
    lanes: usize,
}

impl Tiles {
    fn workgroup_size(self) -> usize {
        self.bq / 2 * self.lanes
    }

    /// Workgroup memory `flash.wgsl` declares for these tiles (plus the prelude's reduction
    /// scratch, in case a compiler keeps it), in bytes.
    fn bytes(self, shape: &SdpaShape) -> usize {
        let stride4 = shape.head_dim.div_ceil(4) | 1;
        let vec4s = self.bq * stride4 + self.bk * stride4 + self.bk * shape.head_dim_v.div_ceil(4);
        let floats = self.bq * (self.bk + 1) + self.bq * self.lanes + self.workgroup_size();
        16 * vec4s + 4 * floats
    }

    /// Tiles for `shape` within `limit` bytes of workgroup memory: teams of 8, 16 or 32 lanes
    /// (enough for `v`'s head dimension), as many query rows per workgroup as the problem has per
    /// K/V head up to 256 threads, then the longest key tile (32, 16 or 8) that fits. On an
    /// H100 (48 KiB) this gives 64×32 tiles for head dimension 64, 32×16 for 128, 16×8 for 256,
    /// the fastest of the configurations measured there.
    fn choose(shape: &SdpaShape, limit: usize) -> Option<Tiles> {
        let lanes = shape.head_dim_v.div_ceil(8).checked_next_power_of_two()?.max(8);
        let max_bq = 2 * MAX_WORKGROUP / lanes;
        let rows = shape.group().saturating_mul(shape.seq_q);
        let mut bq = rows.checked_next_power_of_two().unwrap_or(max_bq).clamp(2, max_bq.max(2));
        while bq >= 2 {
            for bk in [32, 16, 8] {
                let tiles = Tiles { bq, bk, lanes };
                if tiles.bytes(shape) <= limit {
                    return Some(tiles);
                }
            }
            bq /= 2;
        }
        None
    }
}

impl FlashAttention {
    /// Largest head dimension (of `q`/`k` and of `v`) the kernel takes.
    pub const MAX_HEAD_DIM: usize = 256;

    /// Largest head dimension (of `q`/`k` and of `v`) the register-blocked kernel takes.
    pub const TILED_MAX_HEAD_DIM: usize = 64;

    /// Fewest query rows per K/V head (`heads / kv_heads · seq_q`) for which
    /// [`FlashKernel::Auto`] picks the register-blocked kernel (one of its workgroups owns 64).
    pub const TILED_MIN_ROWS: usize = 64;

    /// `out = softmax(scale · q kᵀ + mask, causal) · v`; validates everything (see the module
    /// docs for the errors).
    pub fn new(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, options: SdpaOptions) -> Result<Self> {
        let this = FlashAttention {
            q: q.clone(),
            k: k.clone(),
            v: v.clone(),
            out: out.clone(),
            options,
            kernel: FlashKernel::Auto,
        };
        this.validate()?;
        Ok(this)
    }

    /// The same attention run by `kernel`; [`FlashKernel::Tiled`] fails where it cannot run
    /// (see [`supports_tiled`](Self::supports_tiled)).
    pub fn with_kernel(self, kernel: FlashKernel) -> Result<Self> {
        let this = FlashAttention { kernel, ..self };
        this.validate()?;
        Ok(this)
    }

    /// The kernel this attention runs ([`FlashKernel::Auto`] resolved).
    pub fn kernel(&self) -> Result<FlashKernel> {
        let problem = self.problem()?;
        self.resolve(&problem, self.q.context())
    }

    /// Whether the register-blocked kernel can run `problem` on `ctx`: head dimensions up to
    /// [`TILED_MAX_HEAD_DIM`](Self::TILED_MAX_HEAD_DIM) ([`Error::InvalidShape`] otherwise),
    /// enough workgroup memory and seven storage bindings per stage ([`Error::Unsupported`]
    /// otherwise).
    pub fn supports_tiled(problem: &SdpaProblem, ctx: &Context) -> Result<()> {
        let shape = &problem.shape;
        if shape.head_dim > Self::TILED_MAX_HEAD_DIM || shape.head_dim_v > Self::TILED_MAX_HEAD_DIM {
            return Err(Error::shape(
                "flash_attention",
                format!(
                    "head dimensions {} and {} exceed the tiled kernel's {}",
                    shape.head_dim,
                    shape.head_dim_v,
                    Self::TILED_MAX_HEAD_DIM
                ),
            ));
        }
        let limits = &ctx.caps().limits;
        if tiled_bytes(shape.head_dim, shape.head_dim_v) > limits.max_compute_workgroup_storage_size as usize
            || limits.max_storage_buffers_per_shader_stage < TILED.bindings
            || limits.max_compute_invocations_per_workgroup < 128
        {
            return Err(ctx.unsupported("flash_attention", "48 KiB of workgroup memory and 7 storage buffers"));
        }
        Ok(())
    }

    fn resolve(&self, problem: &SdpaProblem, ctx: &Context) -> Result<FlashKernel> {
        Ok(match self.kernel {
            FlashKernel::Auto => {
                let rows = problem.shape.group().saturating_mul(problem.shape.seq_q);
                if rows >= Self::TILED_MIN_ROWS && Self::supports_tiled(problem, ctx).is_ok() {
                    FlashKernel::Tiled
                } else {
                    FlashKernel::Rows
                }
            }
            FlashKernel::Tiled => {
                Self::supports_tiled(problem, ctx)?;
                FlashKernel::Tiled
            }
            FlashKernel::Rows => FlashKernel::Rows,
        })
    }

    /// The validated problem.
    pub fn problem(&self) -> Result<SdpaProblem> {
        SdpaProblem::new(&self.q, &self.k, &self.v, &self.out, &self.options)
    }

    /// Whether the fused kernel can run `problem` on `ctx`: head dimensions up to
    /// [`MAX_HEAD_DIM`](Self::MAX_HEAD_DIM) ([`Error::InvalidShape`] otherwise) and enough
    /// workgroup memory for its smallest tiles ([`Error::Unsupported`] otherwise).
    pub fn supports(problem: &SdpaProblem, ctx: &Context) -> Result<()> {
        Self::tiles(problem, ctx).map(|_| ())
    }

    fn tiles(problem: &SdpaProblem, ctx: &Context) -> Result<Tiles> {
        let shape = &problem.shape;
        if shape.head_dim > Self::MAX_HEAD_DIM || shape.head_dim_v > Self::MAX_HEAD_DIM {
            return Err(Error::shape(
                "flash_attention",
                format!(
                    "head dimensions {} and {} exceed the fused kernel's {}",
                    shape.head_dim,
                    shape.head_dim_v,
                    Self::MAX_HEAD_DIM
                ),
            ));
        }
        let limit = ctx.caps().limits.max_compute_workgroup_storage_size as usize;
        Tiles::choose(shape, limit)
            .ok_or_else(|| ctx.unsupported("flash_attention", "more workgroup memory for this head dimension"))
    }
}

impl Operation for FlashAttention {
    fn name(&self) -> &'static str {
        "flash_attention"
    }

    fn validate(&self) -> Result<()> {
        let problem = self.problem()?;
        Self::tiles(&problem, self.q.context())?;
        self.resolve(&problem, self.q.context())?;
        for t in [&self.q, &self.k, &self.v, &self.out] {
            count_u32(self.name(), t.numel())?;
        }
        Ok(())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let problem = self.problem()?;
        if self.resolve(&problem, encoder.context())? == FlashKernel::Tiled {
            return self.encode_tiled(&problem, encoder, cache);
        }
        self.encode_rows(&problem, encoder, cache)
    }
}

/// The bindings and parameters both fused kernels take (`flash_common.wgsl`).
struct FlashBindings {
    q: TensorBinding,
    k: TensorBinding,
    v: TensorBinding,
    out: TensorBinding,
    mask: TensorBinding,
    params: Params,
}

impl FlashAttention {
    /// Binds q, k, v, out and the mask, and fills the parameters for blocks of `block_rows`
    /// query rows per (batch, K/V head).
    fn bind_all(
        &self,
        problem: &SdpaProblem,
        encoder: &mut ComputeEncoder<'_>,
        block_rows: usize,
    ) -> Result<FlashBindings> {
        let op = self.name();
        let shape = problem.shape;
        let blocks = (shape.group() * shape.seq_q).div_ceil(block_rows);
        let total = count_u32(op, shape.batch.saturating_mul(shape.kv_heads).saturating_mul(blocks))?;
        let q = encoder.bind(&self.q)?;
        let k = encoder.bind(&self.k)?;
        let v = encoder.bind(&self.v)?;
        let out = encoder.bind(&self.out)?;
        let terms = problem.kernel_terms(op, encoder, &q)?;
        let [mask_sb, mask_sh, mask_sq, mask_sk] = terms.mask_strides;
        let params = Params {
            q_off: q.elem_offset(),
            k_off: k.elem_offset(),
            v_off: v.elem_offset(),
            out_off: out.elem_offset(),
            mask_off: terms.mask.elem_offset(),
            kv_heads: count_u32(op, shape.kv_heads)?,
            group: count_u32(op, shape.group())?,
            seq_q: count_u32(op, shape.seq_q)?,
            seq_k: count_u32(op, shape.seq_k)?,
            blocks: count_u32(op, blocks)?,
            total,
            causal: terms.causal,
            offset: terms.offset,
            scale: terms.scale_log2,
            mask_sb,
            mask_sh,
            mask_sq,
            mask_sk,
            start: terms.start,
            kv_stride: count_u32(op, shape.kv_stride)?,
        };
        Ok(FlashBindings { q, k, v, out, mask: terms.mask, params })
    }
}

impl FlashAttention {
    /// Records `flash.wgsl`.
    fn encode_rows(
        &self,
        problem: &SdpaProblem,
        encoder: &mut ComputeEncoder<'_>,
        cache: &ResourceCache,
    ) -> Result<()> {
        let tiles = Self::tiles(problem, encoder.context())?;
        let wg = tiles.workgroup_size();
        let FlashBindings { q, k, v, out, mask, params } = self.bind_all(problem, encoder, tiles.bq)?;
        let workgroups = encoder.linear_grid(params.total as usize * wg, wg as u32)?;
        let shape = problem.shape;
        let overrides = Overrides::new(&[
            ("WG", wg as f64),
            ("BK", tiles.bk as f64),
            ("D", shape.head_dim as f64),
            ("DV", shape.head_dim_v as f64),
            ("MASK", if problem.mask.is_some() { 1.0 } else { 0.0 }),
            ("LANES", tiles.lanes as f64),
        ])?;
        encoder.dispatch_with_kv(
            cache,
            Dispatch {
                kernel: &FLASH,
                dtype: problem.dtype,
                overrides,
                bindings: &[&q, &k, &v, &out, &mask],
                params,
                workgroups,
            },
            problem.kv_dtype,
        )
    }
}

impl FlashAttention {
    /// Records `flash_tiled.wgsl`: one workgroup of 128 invocations per (batch, K/V head, 64 rows).
    fn encode_tiled(
        &self,
        problem: &SdpaProblem,
        encoder: &mut ComputeEncoder<'_>,
        cache: &ResourceCache,
    ) -> Result<()> {
        let FlashBindings { q, k, v, out, mask, params } = self.bind_all(problem, encoder, 64)?;
        let workgroups = encoder.linear_grid(params.total as usize * 128, 128)?;
        let shape = problem.shape;
        // Slots 5 and 6 view K and V as vec4, and a binding must hold one: vec4 loads where
        // every vec4 lies within one row of K / V and both hold one; otherwise scalar loads, and
        // the slots take any binding that holds a vec4 (none: the problem is at most three
        // elements a tensor, and runs on the other kernel).
        let vec_bytes = 4 * problem.kv_dtype.size_in_bytes() as u64;
        let holds_vec4 = |t: &Tensor, binding: &TensorBinding| {
            u64::from(binding.elem_offset()) * t.dtype().size_in_bytes() as u64 + t.size_in_bytes() as u64 >= vec_bytes
        };
        let vec = params.k_off.is_multiple_of(4)
            && params.v_off.is_multiple_of(4)
            && shape.head_dim.is_multiple_of(4)
            && shape.head_dim_v.is_multiple_of(4)
            && holds_vec4(&self.k, &k)
            && holds_vec4(&self.v, &v);
        let spare = [(&self.k, &k), (&self.v, &v), (&self.q, &q), (&self.out, &out)]
            .into_iter()
            .find(|(t, b)| holds_vec4(t, b))
            .map(|(_, b)| b);
        let (k4, v4) = match (vec, spare) {
            (true, _) => (&k, &v),
            (false, Some(spare)) => (spare, spare),
            (false, None) => return self.encode_rows(problem, encoder, cache),
        };
        let overrides = Overrides::new(&[
            ("WG", 128.0),
            ("D", shape.head_dim as f64),
            ("DV", shape.head_dim_v as f64),
            ("MASK", if problem.mask.is_some() { 1.0 } else { 0.0 }),
            ("VEC", if vec { 1.0 } else { 0.0 }),
        ])?;
        encoder.dispatch_with_kv(
            cache,
            Dispatch {
                kernel: &TILED,
                dtype: problem.dtype,
                overrides,
                bindings: &[&q, &k, &v, &out, &mask, k4, v4],
                params,
                workgroups,
            },
            problem.kv_dtype,
        )
    }
}

/// `softmax(scale · q kᵀ + mask, causal) · v` as a new tensor shaped like `q` with `v`'s head
/// dimension last, recorded on `q`'s runtime: [`SplitKAttention`] for decoding shapes (see
/// [`SplitKAttention::preferred`]), else the fused [`FlashAttention`] kernel where it can run,
/// else [`CompositeAttention`].
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, options: SdpaOptions) -> Result<Tensor> {
    scaled_dot_product_attention_with(q, k, v, options, SdpaImpl::Auto)
}

/// [`scaled_dot_product_attention`] with the implementation chosen by the caller.
pub fn scaled_dot_product_attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    options: SdpaOptions,
    implementation: SdpaImpl,
) -> Result<Tensor> {
    check_inputs(q, k, v, &options)?;
    let shape = SdpaShape::new(q.shape(), k.shape(), v.shape())?;
    let out = Tensor::empty(q.runtime(), shape.out_shape()?, q.dtype())?;
    q.runtime().record(attention(q, k, v, &out, options, implementation)?.1.as_ref())?;
    Ok(out)
}

/// The attention operation `implementation` resolves to for these tensors, writing into `out`,
/// with the implementation it resolved to (`Auto`: split-K for short query blocks over long
/// caches, the fused kernel where it runs, the composite path otherwise).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    options: SdpaOptions,
    implementation: SdpaImpl,
) -> Result<(SdpaImpl, Box<dyn Operation + Send + Sync>)> {
    let problem = SdpaProblem::new(q, k, v, out, &options)?;
    let chosen = implementation.resolve(&problem, q);
    let op: Box<dyn Operation + Send + Sync> = match chosen {
        SdpaImpl::Composite => Box::new(CompositeAttention::new(q, k, v, out, options)?),
        SdpaImpl::SplitK => Box::new(SplitKAttention::new(q, k, v, out, options)?),
        SdpaImpl::Auto | SdpaImpl::Fused => Box::new(FlashAttention::new(q, k, v, out, options)?),
    };
    Ok((chosen, op))
}
