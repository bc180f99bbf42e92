//! Split-K ("flash-decoding") attention for short query blocks over long key/value caches.
//!
//! The fused kernel gives one workgroup to each (batch, K/V head, block of query rows); when
//! decoding (one to a few queries per head, thousands of cached keys) that is a handful of
//! workgroups on a GPU with over a hundred cores. [`SplitKAttention`] also splits the keys:
//!
//! 1. `decode.wgsl`: one workgroup per (batch, K/V head, chunk of keys) takes every query row of
//!    its K/V head (`group · seq_q` of them) against its chunk — online softmax over key tiles
//!    in workgroup memory — and writes each row's chunk maximum `m`, sum `l` and unnormalised
//!    accumulator `acc` to an f32 scratch tensor;
//! 2. `decode_merge.wgsl`: one workgroup per block of 32 columns of an output row merges the
//!    chunks (their statistics reduced by the whole workgroup, each column's sum split over
//!    chunk groups),
//!    `out = Σ w_c acc_c / Σ w_c l_c` with `w_c = exp(m_c − max m)`, or 0 where no key is seen.
//!
//! Both dispatches are recorded by one `encode`; the scratch comes from the runtime's pool and
//! is held by the op.
//!
//! Up to [`SHORT_MAX_KEYS`] keys (a decode step at a short context) one pass does it instead
//! (`decode_short.wgsl`): one workgroup per query row scores every key it sees in parallel,
//! reduces the maximum and the sum in fixed trees and adds p · V in a fixed order, with no
//! scratch and no merge. Where a step's attention is a few microseconds of work, the split
//! passes' serial key tiles and second dispatch were most of its cost.

use super::{SdpaOptions, SdpaProblem};
use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation, TensorBinding};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_cache_dtypes, check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::{DType, Tensor};

pub(crate) static PARTIAL: Kernel = Kernel {
    name: "sdpa_decode_partial",
    source: concat!(include_str!("decode.wgsl"), include_str!("decode_scalar.wgsl")),
    entry: "main",
    bindings: 6,
};
/// The same pass reading K and V as vec4s (see [`vec4_loads`]).
pub(crate) static PARTIAL_VEC: Kernel = Kernel {
    name: "sdpa_decode_partial_vec",
    source: concat!(include_str!("decode.wgsl"), include_str!("decode_vec.wgsl")),
    entry: "main",
    bindings: 6,
};
pub(crate) static MERGE: Kernel =
    Kernel { name: "sdpa_decode_merge", source: include_str!("decode_merge.wgsl"), entry: "main", bindings: 2 };
pub(crate) static SHORT: Kernel = Kernel {
    name: "sdpa_decode_short",
    source: concat!(include_str!("decode_short.wgsl"), include_str!("decode_scalar.wgsl")),
    entry: "main",
    bindings: 5,
};
/// The one-pass kernel reading K and V as vec4s (see [`vec4_loads`]).
pub(crate) static SHORT_VEC: Kernel = Kernel {
    name: "sdpa_decode_short_vec",
    source: concat!(include_str!("decode_short.wgsl"), include_str!("decode_vec.wgsl")),
    entry: "main",
    bindings: 5,
};

const NAME: &str = "split_k_attention";

/// Threads per workgroup of the partial pass.
const PARTIAL_WG: usize = 256;
/// Threads per workgroup of the merge pass.
const MERGE_WG: usize = 256;
/// Output columns per workgroup of the merge pass (it divides `MERGE_WG`).
const MERGE_COLUMNS: usize = 32;
/// Most chunks per row `decode_merge.wgsl` takes (`MAX_CHUNKS` there); the plans stay within
/// `TARGET_WORKGROUPS`.
const MERGE_MAX_CHUNKS: usize = 256;
/// Accumulator vec4s one thread of the partial pass holds at most.
const MAX_ACC_PER_THREAD: usize = 4;
/// Partial-pass workgroups the chunk length aims for (a few per core of a large GPU).
const TARGET_WORKGROUPS: usize = 256;
/// Shortest key sequence [`SdpaImpl::Auto`](super::SdpaImpl::Auto) sends here.
const AUTO_MIN_SEQ_K: usize = 256;
/// Threads per workgroup of the one-pass kernel for short key sequences (a power of two).
const SHORT_WG: usize = 128;
/// Most keys a row may see for the one-pass kernel (`MAXK` in `decode_short.wgsl`): up to
/// here one workgroup per query row reads every key once, with no scratch and no merge.
const SHORT_MAX_KEYS: usize = 512;
/// Widest heads the one-pass kernel takes (see [`short_heads`]).
const SHORT_MAX_HEAD_DIM: usize = 128;

/// How one problem is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Query rows per (batch, K/V head): `group · seq_q`.
    rows: usize,
    /// Keys per tile staged in workgroup memory.
    bk: usize,
    /// Keys per chunk (a multiple of `bk`).
    chunk: usize,
    /// Chunks per (batch, K/V head).
    chunks: usize,
    /// Scratch records: one per (batch, K/V head, chunk, row).
    records: usize,
}

impl Plan {
    /// f32 elements of scratch: an accumulator of `head_dim_v` and an (m, l) pair per record.
    fn scratch_len(&self, head_dim_v: usize) -> usize {
        self.records.saturating_mul(head_dim_v.saturating_add(2))
    }
}

/// How `decode.wgsl` spreads its softmax and accumulation over the workgroup for `rows` rows,
/// `bk`-key tiles and `head_dim_v`: (SP, KG) — threads per row in the softmax (a power of two
/// up to 8 that divides `bk`, `rows · SP` within the workgroup) and threads per accumulator
/// element (up to 8 while the `rows · head_dim_v / 4` elements fit the workgroup that many
/// times; 1 otherwise).
fn spread(rows: usize, bk: usize, head_dim_v: usize) -> (usize, usize) {
    let sp = [8, 4, 2, 1].into_iter().find(|&sp| rows * sp <= PARTIAL_WG && bk.is_multiple_of(sp)).unwrap_or(1);
    let elements = (rows * head_dim_v.div_ceil(4)).max(1);
    (sp, (PARTIAL_WG / elements).clamp(1, 8))
}

/// Workgroup memory `decode.wgsl` declares for `rows` rows and `bk`-key tiles (plus the
/// prelude's reduction scratch, in case a compiler keeps it), in bytes.
fn tile_bytes(rows: usize, bk: usize, head_dim: usize, head_dim_v: usize) -> usize {
    let (d4, dv4) = (head_dim.div_ceil(4), head_dim_v.div_ceil(4));
    let (sp, kg) = spread(rows, bk, head_dim_v);
    let vec4s = rows * d4 + bk * (d4 | 1) + bk * dv4 + rows * dv4 * kg;
    let floats = rows * (bk + 1) + 3 * rows + 2 * rows * sp + PARTIAL_WG;
    16 * vec4s + 4 * floats
}

/// Split-K attention: `out = softmax(scale · q kᵀ + mask, causal) · v` in two passes, the keys
/// split into chunks across workgroups.
///
/// Pass 1: one workgroup per (batch, K/V head, chunk of keys) takes every query row of its K/V
/// head (`heads / kv_heads · seq_q` rows) against its chunk — online softmax over key tiles in
/// workgroup memory — and writes each row's chunk maximum, sum and unnormalised accumulator to
/// an f32 scratch tensor (from the runtime's pool, held by the op). Pass 2: one workgroup per
/// output row merges the chunks with the usual rescaling. Chunks are whole key tiles, as short
/// as gives about 256 pass-1 workgroups.
///
/// Takes every problem [`FlashAttention`](super::FlashAttention) takes (scale, causal rule with
/// any offset, broadcast masks, grouped-query heads, 3-D and 4-D inputs, `v`'s head dimension
/// differing, f32 and f16) within these bounds, checked by [`supports`](Self::supports): head
/// dimensions up to [`MAX_HEAD_DIM`](Self::MAX_HEAD_DIM), at most [`MAX_ROWS`](Self::MAX_ROWS)
/// query rows per K/V head (`heads / kv_heads · seq_q`), with `rows · head_dim_v` at most 4096.
/// Rows that see no key give 0; results are deterministic. Without a mask, up to 512 keys and
/// head dimensions up to 128 take the one-pass kernel (see the module documentation); the
/// scratch is then not used.
#[derive(Debug, Clone)]
pub struct SplitKAttention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    options: SdpaOptions,
    scratch: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PartialParams {
    q_off: u32,
    k_off: u32,
    v_off: u32,
    s_off: u32,
    mask_off: u32,
    kv_heads: u32,
    group: u32,
    seq_q: u32,
    seq_k: u32,
    chunk: u32,
    chunks: u32,
    total: u32,
    ml_base: u32,
    causal: u32,
    offset: u32,
    scale: f32,
    mask_sb: u32,
    mask_sh: u32,
    mask_sq: u32,
    mask_sk: u32,
    start: u32,
    kv_stride: u32,
    table: u32,
    table_off: u32,
    slots: u32,
    window: u32,
    short_keys: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ShortParams {
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_off: u32,
    heads: u32,
    kv_heads: u32,
    seq_q: u32,
    seq_k: u32,
    rows: u32,
    causal: u32,
    offset: u32,
    start: u32,
    scale: f32,
    kv_stride: u32,
    table: u32,
    table_off: u32,
    slots: u32,
    window: u32,
    max_keys: u32,
}

/// Whether the one-pass kernel takes heads of these dimensions (q/k and v): up to
/// [`SHORT_MAX_HEAD_DIM`]. Wider heads leave it too few key groups for P·V (one vec4 column
/// of v per thread of a group): on an H100, Gemma 3's heads of 256 decoded 14% slower on it
/// than on the split-K passes, where SmolLM2's and Qwen2.5's of 64 decoded 7% faster.
fn short_heads(head_dim: usize, head_dim_v: usize) -> bool {
    head_dim <= SHORT_MAX_HEAD_DIM && head_dim_v <= SHORT_MAX_HEAD_DIM
}

/// Records the one-pass kernel over `rows` query rows (see `decode_short.wgsl`).
fn record_short(
    encoder: &mut ComputeEncoder<'_>,
    cache: &ResourceCache,
    dtype: DType,
    kv_dtype: DType,
    bindings: [&TensorBinding; 5],
    params: ShortParams,
    dims: (usize, usize),
) -> Result<()> {
    let (head_dim, head_dim_v) = dims;
    let overrides = Overrides::new(&[
        ("WG", SHORT_WG as f64),
        ("D", head_dim as f64),
        ("DV", head_dim_v as f64),
        ("MAXK", SHORT_MAX_KEYS as f64),
    ])?;
    let [_, k, v, _, _] = bindings;
    let kernel = vec4_loads([&SHORT, &SHORT_VEC], head_dim, head_dim_v, k, v);
    let workgroups = encoder.linear_grid((params.rows as usize).saturating_mul(SHORT_WG), SHORT_WG as u32)?;
    encoder.dispatch_with_kv(
        cache,
        Dispatch { kernel, dtype, overrides, bindings: &bindings, params, workgroups },
        kv_dtype,
    )
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MergeParams {
    s_off: u32,
    out_off: u32,
    rows: u32,
    r: u32,
    chunks: u32,
    ml_base: u32,
    blocks: u32,
}

impl SplitKAttention {
    /// Largest head dimension (of `q`/`k` and of `v`) the kernels take.
    pub const MAX_HEAD_DIM: usize = 256;
    /// Most query rows per K/V head (`heads / kv_heads · seq_q`) one workgroup takes.
    pub const MAX_ROWS: usize = 64;

    /// `out = softmax(scale · q kᵀ + mask, causal) · v`; validates like
    /// [`FlashAttention::new`](super::FlashAttention::new), checks [`supports`](Self::supports)
    /// and allocates the f32 scratch from `q`'s runtime pool.
    pub fn new(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, options: SdpaOptions) -> Result<Self> {
        let problem = SdpaProblem::new(q, k, v, out, &options)?;
        let plan = Self::plan(&problem, q.context())?;
        let len = plan.scratch_len(problem.shape.head_dim_v).max(1);
        let scratch = Tensor::empty(q.runtime(), [len], DType::F32)?;
        let this = SplitKAttention { q: q.clone(), k: k.clone(), v: v.clone(), out: out.clone(), options, scratch };
        this.validate()?;
        Ok(this)
    }

    /// [`new`](Self::new) with a caller-owned f32 `scratch` of at least
    /// [`scratch_len`](Self::scratch_len) elements, so that a decode loop allocates nothing per
    /// step and binds the same memory every time.
    pub fn with_scratch(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        options: SdpaOptions,
        scratch: &Tensor,
    ) -> Result<Self> {
        let this = SplitKAttention {
            q: q.clone(),
            k: k.clone(),
            v: v.clone(),
            out: out.clone(),
            options,
            scratch: scratch.clone(),
        };
        this.validate()?;
        Ok(this)
    }

    /// f32 elements of scratch the problem of these tensors needs (it grows with the keys).
    pub fn scratch_len(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, options: &SdpaOptions) -> Result<usize> {
        let problem = SdpaProblem::new(q, k, v, out, options)?;
        let plan = Self::plan(&problem, q.context())?;
        Ok(plan.scratch_len(problem.shape.head_dim_v).max(1))
    }

    /// The validated problem.
    pub fn problem(&self) -> Result<SdpaProblem> {
        SdpaProblem::new(&self.q, &self.k, &self.v, &self.out, &self.options)
    }

    /// Whether the split-K kernels can run `problem` on `ctx`: head dimensions up to
    /// [`MAX_HEAD_DIM`](Self::MAX_HEAD_DIM), at most [`MAX_ROWS`](Self::MAX_ROWS) rows per K/V
    /// head with `rows · head_dim_v <= 4096`, and a scratch within one storage binding
    /// ([`Error::InvalidShape`] otherwise); enough workgroup memory for the rows and head
    /// dimensions ([`Error::Unsupported`] otherwise).
    pub fn supports(problem: &SdpaProblem, ctx: &Context) -> Result<()> {
        Self::plan(problem, ctx).map(|_| ())
    }

    /// Whether [`SdpaImpl::Auto`](super::SdpaImpl::Auto) picks this path: decoding shapes
    /// (at most [`MAX_ROWS`](Self::MAX_ROWS) rows per K/V head against 256 keys or more) that
    /// the kernels [`support`](Self::supports).
    pub fn preferred(problem: &SdpaProblem, ctx: &Context) -> bool {
        problem.shape.seq_k >= AUTO_MIN_SEQ_K && Self::supports(problem, ctx).is_ok()
    }

    fn plan(problem: &SdpaProblem, ctx: &Context) -> Result<Plan> {
        let s = &problem.shape;
        if s.head_dim > Self::MAX_HEAD_DIM || s.head_dim_v > Self::MAX_HEAD_DIM {
            return Err(Error::shape(
                NAME,
                format!(
                    "head dimensions {} and {} exceed the split-K kernels' {}",
                    s.head_dim,
                    s.head_dim_v,
                    Self::MAX_HEAD_DIM
                ),
            ));
        }
        let rows = s.group().saturating_mul(s.seq_q);
        if rows > Self::MAX_ROWS || rows * s.head_dim_v.div_ceil(4) > MAX_ACC_PER_THREAD * PARTIAL_WG {
            return Err(Error::shape(
                NAME,
                format!(
                    "{rows} query rows per K/V head (heads / kv_heads · seq_q) with head dimension {} exceed \
                     the split-K kernels' {} rows and {} accumulator elements",
                    s.head_dim_v,
                    Self::MAX_ROWS,
                    4 * MAX_ACC_PER_THREAD * PARTIAL_WG
                ),
            ));
        }
        let limit = ctx.caps().limits.max_compute_workgroup_storage_size as usize;
        let bk = [64, 32, 16, 8]
            .into_iter()
            .find(|&bk| tile_bytes(rows, bk, s.head_dim, s.head_dim_v) <= limit)
            .ok_or_else(|| ctx.unsupported(NAME, "more workgroup memory for these rows and head dimensions"))?;
        let pairs = s.batch.saturating_mul(s.kv_heads).max(1);
        let wanted = TARGET_WORKGROUPS.div_ceil(pairs);
        // Whole tiles; one tile per workgroup until the keys fill the target grid (a decode
        // step over a short cache is latency-bound: many short chunks beat a few long ones).
        let chunk = s.seq_k.div_ceil(wanted).max(1).next_multiple_of(bk);
        let chunks = s.seq_k.div_ceil(chunk).max(1);
        let records = s.batch.saturating_mul(s.kv_heads).saturating_mul(chunks).saturating_mul(rows);
        let plan = Plan { rows, bk, chunk, chunks, records };
        let bytes = plan.scratch_len(s.head_dim_v).saturating_mul(4);
        if bytes as u64 > ctx.caps().limits.max_storage_buffer_binding_size || bytes / 4 > u32::MAX as usize {
            return Err(Error::shape(NAME, format!("the split-K scratch ({bytes} bytes) exceeds one storage binding")));
        }
        Ok(plan)
    }
}

impl Operation for SplitKAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate(&self) -> Result<()> {
        let problem = self.problem()?;
        let plan = Self::plan(&problem, self.q.context())?;
        for t in [&self.q, &self.k, &self.v, &self.out] {
            count_u32(NAME, t.numel())?;
        }
        if self.scratch.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch { op: NAME, expected: DType::F32, got: self.scratch.dtype() });
        }
        if !self.scratch.context().same_device(self.q.context()) {
            return Err(Error::invalid(NAME, "the scratch lives on another device"));
        }
        if self.scratch.numel() < plan.scratch_len(problem.shape.head_dim_v) {
            return Err(Error::invalid(NAME, "the scratch is smaller than the problem needs"));
        }
        Ok(())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let problem = self.problem()?;
        let plan = Self::plan(&problem, encoder.context())?;
        let shape = problem.shape;
        if self.out.numel() == 0 {
            return Ok(());
        }
        let pairs = shape.batch * shape.kv_heads;
        let total = count_u32(NAME, pairs.saturating_mul(plan.chunks))?;
        let ml_base = count_u32(NAME, plan.records.saturating_mul(shape.head_dim_v))?;

        let q = encoder.bind(&self.q)?;
        let k = encoder.bind(&self.k)?;
        let v = encoder.bind(&self.v)?;
        let scratch = encoder.bind(&self.scratch)?;
        let out = encoder.bind(&self.out)?;
        let terms = problem.kernel_terms(NAME, encoder, &q)?;
        if problem.mask.is_none() && shape.seq_k <= SHORT_MAX_KEYS && short_heads(shape.head_dim, shape.head_dim_v) {
            let rows = shape.batch.saturating_mul(shape.heads).saturating_mul(shape.seq_q);
            let params = ShortParams {
                q_off: q.elem_offset(),
                k_off: k.elem_offset(),
                v_off: v.elem_offset(),
                out_off: out.elem_offset(),
                heads: count_u32(NAME, shape.heads)?,
                kv_heads: count_u32(NAME, shape.kv_heads)?,
                seq_q: count_u32(NAME, shape.seq_q)?,
                seq_k: count_u32(NAME, shape.seq_k)?,
                rows: count_u32(NAME, rows)?,
                causal: terms.causal,
                offset: terms.offset,
                start: terms.start,
                scale: terms.scale_log2,
                kv_stride: count_u32(NAME, shape.kv_stride)?,
                table: 0,
                table_off: 0,
                slots: 1,
                window: 0,
                max_keys: count_u32(NAME, SHORT_MAX_KEYS)?,
            };
            let bindings = [&q, &k, &v, &out, &q];
            let dims = (shape.head_dim, shape.head_dim_v);
            return record_short(encoder, cache, problem.dtype, problem.kv_dtype, bindings, params, dims);
        }
        let [mask_sb, mask_sh, mask_sq, mask_sk] = terms.mask_strides;
        let params = PartialParams {
            q_off: q.elem_offset(),
            k_off: k.elem_offset(),
            v_off: v.elem_offset(),
            s_off: scratch.elem_offset(),
            mask_off: terms.mask.elem_offset(),
            kv_heads: count_u32(NAME, shape.kv_heads)?,
            group: count_u32(NAME, shape.group())?,
            seq_q: count_u32(NAME, shape.seq_q)?,
            seq_k: count_u32(NAME, shape.seq_k)?,
            chunk: count_u32(NAME, plan.chunk)?,
            chunks: count_u32(NAME, plan.chunks)?,
            total,
            ml_base,
            causal: terms.causal,
            offset: terms.offset,
            scale: terms.scale_log2,
            mask_sb,
            mask_sh,
            mask_sq,
            mask_sk,
            start: terms.start,
            kv_stride: count_u32(NAME, shape.kv_stride)?,
            table: 0,
            table_off: 0,
            slots: 1,
            window: 0,
            short_keys: 0,
        };
        let (sp, kg) = spread(plan.rows, plan.bk, shape.head_dim_v);
        let overrides = Overrides::new(&[
            ("WG", PARTIAL_WG as f64),
            ("BK", plan.bk as f64),
            ("D", shape.head_dim as f64),
            ("DV", shape.head_dim_v as f64),
            ("MASK", if problem.mask.is_some() { 1.0 } else { 0.0 }),
            ("R", plan.rows as f64),
            ("SP", sp as f64),
            ("KG", kg as f64),
        ])?;
        let workgroups = encoder.linear_grid(total as usize * PARTIAL_WG, PARTIAL_WG as u32)?;
        encoder.dispatch_with_kv(
            cache,
            Dispatch {
                kernel: vec4_loads([&PARTIAL, &PARTIAL_VEC], shape.head_dim, shape.head_dim_v, &k, &v),
                dtype: problem.dtype,
                overrides,
                bindings: &[&q, &k, &v, &scratch, &terms.mask, &q],
                params,
                workgroups,
            },
            problem.kv_dtype,
        )?;
        merge(encoder, cache, problem.dtype, &scratch, &out, pairs, &plan, shape.head_dim_v)
    }
}

/// Of a kernel's two variants (`[scalar, vec4]`), the one for these bindings: the vec4 one (one
/// load per four elements of K and V) where both head dimensions and both element offsets are
/// multiples of 4, so that every K/V row starts on a vec4.
fn vec4_loads(
    variants: [&'static Kernel; 2],
    head_dim: usize,
    head_dim_v: usize,
    k: &TensorBinding,
    v: &TensorBinding,
) -> &'static Kernel {
    let aligned = head_dim.is_multiple_of(4)
        && head_dim_v.is_multiple_of(4)
        && k.elem_offset().is_multiple_of(4)
        && v.elem_offset().is_multiple_of(4);
    let [scalar, vec4] = variants;
    if aligned { vec4 } else { scalar }
}

/// Records the merge pass over `pairs` (batch, K/V head) pairs of `plan`.
#[allow(clippy::too_many_arguments)]
fn merge(
    encoder: &mut ComputeEncoder<'_>,
    cache: &ResourceCache,
    dtype: DType,
    scratch: &TensorBinding,
    out: &TensorBinding,
    pairs: usize,
    plan: &Plan,
    head_dim_v: usize,
) -> Result<()> {
    let rows = count_u32(NAME, pairs.saturating_mul(plan.rows))?;
    if plan.chunks > MERGE_MAX_CHUNKS {
        return Err(Error::invalid(NAME, format!("{} key chunks exceed the merge's {MERGE_MAX_CHUNKS}", plan.chunks)));
    }
    let blocks = head_dim_v.div_ceil(MERGE_COLUMNS);
    let params = MergeParams {
        s_off: scratch.elem_offset(),
        out_off: out.elem_offset(),
        rows,
        r: count_u32(NAME, plan.rows)?,
        chunks: count_u32(NAME, plan.chunks)?,
        ml_base: count_u32(NAME, plan.records.saturating_mul(head_dim_v))?,
        blocks: count_u32(NAME, blocks)?,
    };
    let overrides =
        Overrides::new(&[("WG", MERGE_WG as f64), ("DV", head_dim_v as f64), ("DB", MERGE_COLUMNS as f64)])?;
    let groups = (rows as usize).saturating_mul(blocks);
    let workgroups = encoder.linear_grid(groups.saturating_mul(MERGE_WG), MERGE_WG as u32)?;
    encoder
        .dispatch(cache, Dispatch { kernel: &MERGE, dtype, overrides, bindings: &[scratch, out], params, workgroups })
}

const SLOT_NAME: &str = "slot_attention";

/// One decode step of many sequences at once over a slotted KV cache (batched decoding): row
/// `b` of `q` is sequence `b`'s next query, its keys and values are positions `0 ..= pos` of
/// slot `slot` of the caches, with `(slot, pos)` = row `b` of `table` on the GPU.
///
/// Shapes: `q` and `out` `[rows, heads, head_dim]`, `k` and `v` `[slots, kv_heads, capacity,
/// head_dim]`, `table` `[rows, 2]` u32. The kernels of [`SplitKAttention`] do the work: each
/// sequence takes the one-pass kernel or the split-K passes by its own key count, and its key
/// chunks are planned from that count exactly as a one-sequence [`SplitKAttention`] plans
/// them (causal, over a cache prefix), so a sequence's output is bit-identical to that call's,
/// whatever else is in the batch. `window` limits each query to
/// its last `window` keys (a sliding-window layer). A slot or position past the caches is
/// clamped to the last one (the GPU cannot report it).
#[derive(Debug, Clone)]
pub struct SlotAttention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    table: Tensor,
    scale: f32,
    window: Option<usize>,
    /// Each row's key count (its position + 1), as the table says: the grid holds the most
    /// chunks any row needs.
    keys: Vec<usize>,
    scratch: Tensor,
}

/// Sizes of a slotted problem.
struct SlotShape {
    rows: usize,
    heads: usize,
    head_dim: usize,
    slots: usize,
    kv_heads: usize,
    capacity: usize,
}

impl SlotAttention {
    /// The step (see the type's documentation), with a caller-owned f32 `scratch` of at least
    /// [`scratch_len`](Self::scratch_len) elements. `keys` repeats on the host each row's key
    /// count (its position in `table` + 1): the dispatch holds as many key chunks as the longest
    /// row needs, not the most a slot could need.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        table: &Tensor,
        keys: &[usize],
        scale: f32,
        window: Option<usize>,
        scratch: &Tensor,
    ) -> Result<Self> {
        let this = SlotAttention {
            q: q.clone(),
            k: k.clone(),
            v: v.clone(),
            out: out.clone(),
            table: table.clone(),
            scale,
            window,
            keys: keys.to_vec(),
            scratch: scratch.clone(),
        };
        this.validate()?;
        Ok(this)
    }

    /// f32 elements of scratch a step of `rows` sequences needs (`heads` query heads over
    /// `kv_heads` K/V heads of `head_dim`).
    pub fn scratch_len(ctx: &Context, rows: usize, heads: usize, kv_heads: usize, head_dim: usize) -> Result<usize> {
        let plan = Self::plan(ctx, rows, heads, kv_heads, head_dim)?;
        Ok(plan.scratch_len(head_dim).max(1))
    }

    fn shape(&self) -> Result<SlotShape> {
        let bad = |m: String| Error::shape(SLOT_NAME, m);
        let (&[rows, heads, head_dim], &[slots, kv_heads, capacity, kv_dim]) = (self.q.dims(), self.k.dims()) else {
            return Err(bad(format!(
                "q must be [rows, heads, head_dim] and k [slots, kv_heads, capacity, head_dim], got {} and {}",
                self.q.shape(),
                self.k.shape()
            )));
        };
        if self.v.shape() != self.k.shape() || self.out.shape() != self.q.shape() {
            return Err(bad(format!(
                "v must be shaped as k and out as q, got {} and {}",
                self.v.shape(),
                self.out.shape()
            )));
        }
        if kv_dim != head_dim || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || slots == 0 || capacity == 0 {
            return Err(bad(format!("q {} does not fit caches {}", self.q.shape(), self.k.shape())));
        }
        if self.table.dtype() != DType::U32 || self.table.dims() != [rows, 2] {
            return Err(bad(format!(
                "the table must be [{rows}, 2] u32, got {} {}",
                self.table.dtype(),
                self.table.shape()
            )));
        }
        Ok(SlotShape { rows, heads, head_dim, slots, kv_heads, capacity })
    }

    /// The plan of a one-sequence [`SplitKAttention`] step (its tile and chunk count), for
    /// `rows` sequences.
    fn plan(ctx: &Context, rows: usize, heads: usize, kv_heads: usize, head_dim: usize) -> Result<Plan> {
        let group = heads / kv_heads.max(1);
        if head_dim > SplitKAttention::MAX_HEAD_DIM
            || group > SplitKAttention::MAX_ROWS
            || group * head_dim.div_ceil(4) > MAX_ACC_PER_THREAD * PARTIAL_WG
        {
            return Err(Error::shape(
                SLOT_NAME,
                format!("{group} query heads per K/V head of {head_dim} exceed the split-K kernels' bounds"),
            ));
        }
        let limit = ctx.caps().limits.max_compute_workgroup_storage_size as usize;
        let bk = [64, 32, 16, 8]
            .into_iter()
            .find(|&bk| tile_bytes(group, bk, head_dim, head_dim) <= limit)
            .ok_or_else(|| ctx.unsupported(SLOT_NAME, "more workgroup memory for these heads"))?;
        let chunks = TARGET_WORKGROUPS.div_ceil(kv_heads.max(1));
        let records = rows.saturating_mul(kv_heads).saturating_mul(chunks).saturating_mul(group);
        let plan = Plan { rows: group, bk, chunk: bk, chunks, records };
        let bytes = plan.scratch_len(head_dim).saturating_mul(4);
        if bytes as u64 > ctx.caps().limits.max_storage_buffer_binding_size || bytes / 4 > u32::MAX as usize {
            return Err(Error::shape(SLOT_NAME, format!("the scratch ({bytes} bytes) exceeds one storage binding")));
        }
        Ok(plan)
    }
}

impl Operation for SlotAttention {
    fn name(&self) -> &'static str {
        SLOT_NAME
    }

    fn validate(&self) -> Result<()> {
        check_float(SLOT_NAME, &self.q)?;
        check_dtype(SLOT_NAME, self.q.dtype(), &self.out)?;
        check_cache_dtypes(SLOT_NAME, self.q.dtype(), &self.k, &self.v)?;
        check_dtype(SLOT_NAME, DType::F32, &self.scratch)?;
        check_same_device(SLOT_NAME, &[&self.q, &self.k, &self.v, &self.out, &self.table, &self.scratch])?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::invalid(SLOT_NAME, format!("scale {} must be finite and positive", self.scale)));
        }
        if self.window == Some(0) {
            return Err(Error::invalid(SLOT_NAME, "a sliding window of 0 keys"));
        }
        let s = self.shape()?;
        if self.keys.len() != s.rows || self.keys.iter().any(|&n| n == 0 || n > s.capacity) {
            return Err(Error::invalid(
                SLOT_NAME,
                format!("{} key counts for {} rows, each 1 to {}", self.keys.len(), s.rows, s.capacity),
            ));
        }
        let plan = Self::plan(self.q.context(), s.rows, s.heads, s.kv_heads, s.head_dim)?;
        if self.scratch.numel() < plan.scratch_len(s.head_dim) {
            return Err(Error::invalid(SLOT_NAME, "the scratch is smaller than the step needs"));
        }
        for t in [&self.q, &self.k, &self.v, &self.out] {
            count_u32(SLOT_NAME, t.numel())?;
        }
        Ok(())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let s = self.shape()?;
        let planned = Self::plan(encoder.context(), s.rows, s.heads, s.kv_heads, s.head_dim)?;
        if s.rows == 0 {
            return Ok(());
        }
        // Rows of at most SHORT_MAX_KEYS keys take the one-pass kernel, as a one-sequence call
        // does; the split-K kernels take the others (and record no key for these).
        let short = short_heads(s.head_dim, s.head_dim);
        let short_keys = if short { SHORT_MAX_KEYS } else { 0 };
        if self.keys.iter().any(|&n| n > short_keys) {
            self.record_split(encoder, cache, &s, planned, short_keys)?;
        }
        if short && self.keys.iter().any(|&n| n <= short_keys) {
            let q = encoder.bind(&self.q)?;
            let k = encoder.bind(&self.k)?;
            let v = encoder.bind(&self.v)?;
            let out = encoder.bind(&self.out)?;
            let table = encoder.bind(&self.table)?;
            let params = ShortParams {
                q_off: q.elem_offset(),
                k_off: k.elem_offset(),
                v_off: v.elem_offset(),
                out_off: out.elem_offset(),
                heads: count_u32(SLOT_NAME, s.heads)?,
                kv_heads: count_u32(SLOT_NAME, s.kv_heads)?,
                seq_q: 1,
                seq_k: count_u32(SLOT_NAME, s.capacity)?,
                rows: count_u32(SLOT_NAME, s.rows.saturating_mul(s.heads))?,
                causal: 1,
                offset: 0,
                start: 0,
                scale: self.scale * std::f32::consts::LOG2_E,
                kv_stride: count_u32(SLOT_NAME, s.capacity)?,
                table: 1,
                table_off: table.elem_offset(),
                slots: count_u32(SLOT_NAME, s.slots)?,
                window: count_u32(SLOT_NAME, self.window.unwrap_or(0))?,
                max_keys: count_u32(SLOT_NAME, short_keys)?,
            };
            let bindings = [&q, &k, &v, &out, &table];
            record_short(encoder, cache, self.q.dtype(), self.k.dtype(), bindings, params, (s.head_dim, s.head_dim))?;
        }
        Ok(())
    }
}

impl SlotAttention {
    /// The split-K passes for the rows of more than `short_keys` keys (the others record no
    /// key and are written after by the one-pass kernel).
    fn record_split(
        &self,
        encoder: &mut ComputeEncoder<'_>,
        cache: &ResourceCache,
        s: &SlotShape,
        planned: Plan,
        short_keys: usize,
    ) -> Result<()> {
        // Each row splits its keys into at most `planned.chunks` (a one-sequence call's target);
        // the grid holds as many chunks as the longest split needs.
        let wanted = planned.chunks;
        let needed = self
            .keys
            .iter()
            .filter(|&&n| n > short_keys)
            .map(|&n| n.div_ceil(n.div_ceil(wanted).next_multiple_of(planned.bk)))
            .max()
            .unwrap_or(1)
            .max(1);
        let records = s.rows.saturating_mul(s.kv_heads).saturating_mul(needed).saturating_mul(planned.rows);
        let plan = Plan { chunks: needed, records, ..planned };
        let pairs = s.rows * s.kv_heads;
        let total = count_u32(SLOT_NAME, pairs.saturating_mul(plan.chunks))?;
        let q = encoder.bind(&self.q)?;
        let k = encoder.bind(&self.k)?;
        let v = encoder.bind(&self.v)?;
        let scratch = encoder.bind(&self.scratch)?;
        let out = encoder.bind(&self.out)?;
        let table = encoder.bind(&self.table)?;
        let params = PartialParams {
            q_off: q.elem_offset(),
            k_off: k.elem_offset(),
            v_off: v.elem_offset(),
            s_off: scratch.elem_offset(),
            mask_off: 0,
            kv_heads: count_u32(SLOT_NAME, s.kv_heads)?,
            group: count_u32(SLOT_NAME, plan.rows)?,
            seq_q: 1,
            seq_k: count_u32(SLOT_NAME, s.capacity)?,
            // In slotted mode `chunk` carries the split target, `chunks` the grid's chunks.
            chunk: count_u32(SLOT_NAME, wanted)?,
            chunks: count_u32(SLOT_NAME, plan.chunks)?,
            total,
            ml_base: count_u32(SLOT_NAME, plan.records.saturating_mul(s.head_dim))?,
            causal: 1,
            offset: 0,
            scale: self.scale * std::f32::consts::LOG2_E,
            mask_sb: 0,
            mask_sh: 0,
            mask_sq: 0,
            mask_sk: 0,
            start: 0,
            kv_stride: count_u32(SLOT_NAME, s.capacity)?,
            table: 1,
            table_off: table.elem_offset(),
            slots: count_u32(SLOT_NAME, s.slots)?,
            window: count_u32(SLOT_NAME, self.window.unwrap_or(0))?,
            short_keys: count_u32(SLOT_NAME, short_keys)?,
        };
        let (sp, kg) = spread(plan.rows, plan.bk, s.head_dim);
        let overrides = Overrides::new(&[
            ("WG", PARTIAL_WG as f64),
            ("BK", plan.bk as f64),
            ("D", s.head_dim as f64),
            ("DV", s.head_dim as f64),
            ("MASK", 0.0),
            ("R", plan.rows as f64),
            ("SP", sp as f64),
            ("KG", kg as f64),
        ])?;
        let workgroups = encoder.linear_grid(total as usize * PARTIAL_WG, PARTIAL_WG as u32)?;
        let dtype = self.q.dtype();
        encoder.dispatch_with_kv(
            cache,
            Dispatch {
                kernel: vec4_loads([&PARTIAL, &PARTIAL_VEC], s.head_dim, s.head_dim, &k, &v),
                dtype,
                overrides,
                bindings: &[&q, &k, &v, &scratch, &q, &table],
                params,
                workgroups,
            },
            self.k.dtype(),
        )?;
        merge(encoder, cache, dtype, &scratch, &out, pairs, &plan, s.head_dim)
    }
}
