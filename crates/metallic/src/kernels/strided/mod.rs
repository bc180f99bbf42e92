//! Strided copies: one kernel behind permute, transpose, concat and slice writes.
//!
//! [`StridedCopy`] copies an n-dimensional region whose elements sit at arbitrary element
//! strides in both the source and the destination tensor. Tensors themselves are always
//! contiguous, so the layout operations built on it materialise their results:
//! [`Tensor::permute`], [`Tensor::transpose`], [`Tensor::concat`] and [`Tensor::write_slice`]
//! (appending a token's keys and values to a KV cache, say).

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, check_dtype, check_same_device, count_u32};
use crate::tensor::{MAX_DIMS, Shape, Tensor};

pub(crate) static STRIDED: Kernel =
    Kernel { name: "strided_copy", source: include_str!("strided.wgsl"), entry: "main", bindings: 2 };

/// Most dimensions the kernel walks after merging the ones that are contiguous on both sides
/// and dropping those of size 1.
pub const MAX_STRIDED_DIMS: usize = 6;

/// Where a region's elements lie in a tensor: the element offset of its first element from the
/// tensor's first element, and the step, in elements, along each region dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strided<'a> {
    /// Elements from the tensor's first element to the region's first element.
    pub offset: usize,
    /// Element step per region dimension, outermost first (one per dimension of the region).
    pub strides: &'a [usize],
}

impl<'a> Strided<'a> {
    /// The region at `offset` with `strides`.
    pub fn new(offset: usize, strides: &'a [usize]) -> Self {
        Strided { offset, strides }
    }
}

/// The region after normalisation: dimensions ordered by destination stride (innermost first),
/// merged where contiguous on both sides, size-1 dimensions dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Plan {
    /// Elements copied.
    n: u32,
    /// Dimensions in use (1..=MAX_STRIDED_DIMS), innermost first.
    rank: usize,
    sizes: [u32; MAX_STRIDED_DIMS],
    src_strides: [u32; MAX_STRIDED_DIMS],
    dst_strides: [u32; MAX_STRIDED_DIMS],
    src_offset: u32,
    dst_offset: u32,
    /// Largest element index read in `src` / written in `dst` (relative to the tensors).
    src_last: u32,
    dst_last: u32,
}

/// `dst[region] = src[region]`: copies an n-dimensional region (up to [`MAX_DIMS`] dimensions,
/// at most [`MAX_STRIDED_DIMS`] after merging) between two tensors of one dtype, each side
/// with its own element offset and strides.
///
/// Rules, checked when the op is built:
/// - both regions must lie inside their tensors (`InvalidArgument` otherwise);
/// - the destination strides must not map two coordinates to one element
///   (`InvalidArgument`): every element is written by exactly one invocation;
/// - source and destination must not overlap in memory (`InvalidArgument`): there is no
///   in-place permutation;
/// - any dtype (`f32`, `f16`, `u32`) as long as both sides agree (`DTypeMismatch`).
///
/// The invocations follow the destination's memory order, so writes are coalesced; reads are
/// coalesced where the source's innermost stride is 1 (permutations that keep the last
/// dimension, concatenation, slice writes).
///
/// ```
/// use metallic::{kernels::strided::{Strided, StridedCopy}, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let a = Tensor::from_slice(&rt, [2, 3], &[1u32, 2, 3, 4, 5, 6])?;
/// let t = Tensor::from_slice(&rt, [3, 2], &[0u32; 6])?;
/// // t[j][i] = a[i][j]
/// rt.record(&StridedCopy::new(&a, Strided::new(0, &[1, 3]), &t, Strided::new(0, &[2, 1]), &[3, 2])?)?;
/// assert_eq!(t.to_vec::<u32>()?, [1, 4, 2, 5, 3, 6]);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StridedCopy {
    src: Tensor,
    dst: Tensor,
    plan: Plan,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    src_off: u32,
    dst_off: u32,
    sizes: [u32; MAX_STRIDED_DIMS - 1],
    src_strides: [u32; MAX_STRIDED_DIMS],
    dst_strides: [u32; MAX_STRIDED_DIMS],
}

const OP: &str = "strided_copy";

/// Largest element index of a region (`offset + Σ (size - 1) * stride`), if it fits `usize`.
fn last_index(shape: &[usize], region: Strided<'_>) -> Option<usize> {
    shape
        .iter()
        .zip(region.strides)
        .try_fold(region.offset, |acc, (&size, &stride)| size.checked_sub(1)?.checked_mul(stride)?.checked_add(acc))
}

/// The largest element index of a non-empty region, or `InvalidArgument` unless it lies in `t`.
fn last_inside(side: &str, t: &Tensor, shape: &[usize], region: Strided<'_>) -> Result<usize> {
    last_index(shape, region).filter(|&l| l < t.numel()).ok_or_else(|| {
        Error::invalid(
            OP,
            format!(
                "{side} region {shape:?} at offset {} with strides {:?} exceeds a tensor of shape {}",
                region.offset,
                region.strides,
                t.shape()
            ),
        )
    })
}

fn to_u32(n: usize) -> Result<u32> {
    count_u32(OP, n)
}

impl Plan {
    fn new(
        src: &Tensor,
        src_region: Strided<'_>,
        dst: &Tensor,
        dst_region: Strided<'_>,
        shape: &[usize],
    ) -> Result<Self> {
        if shape.len() > MAX_DIMS {
            return Err(Error::shape(OP, format!("a region of {} dimensions; at most {MAX_DIMS}", shape.len())));
        }
        if src_region.strides.len() != shape.len() || dst_region.strides.len() != shape.len() {
            return Err(Error::invalid(
                OP,
                format!(
                    "region of {} dimensions with {} source and {} destination strides",
                    shape.len(),
                    src_region.strides.len(),
                    dst_region.strides.len()
                ),
            ));
        }
        let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let n = numel.ok_or_else(|| Error::shape(OP, format!("region {shape:?} overflows")))?;
        if n == 0 {
            return Ok(Plan { rank: 1, ..Plan::default() });
        }
        // Both regions inside their tensors.
        let src_last = last_inside("source", src, shape, src_region)?;
        let dst_last = last_inside("destination", dst, shape, dst_region)?;
        // No overlap between what is read and what is written.
        if src.buffer() == dst.buffer() {
            let es = src.dtype().size_in_bytes() as u64;
            let span = |t: &Tensor, first: usize, last: usize| {
                (t.byte_offset() + first as u64 * es, t.byte_offset() + (last as u64 + 1) * es)
            };
            let (a0, a1) = span(src, src_region.offset, src_last);
            let (b0, b1) = span(dst, dst_region.offset, dst_last);
            if a0 < b1 && b0 < a1 {
                return Err(Error::invalid(OP, "source and destination regions overlap in memory"));
            }
        }
        // Dimensions of size > 1 as (size, src stride, dst stride), innermost destination first.
        let mut dims = [(0usize, 0usize, 0usize); MAX_DIMS];
        let mut count = 0;
        for ((&size, &s), &d) in shape.iter().zip(src_region.strides).zip(dst_region.strides) {
            if size > 1
                && let Some(slot) = dims.get_mut(count)
            {
                *slot = (size, s, d);
                count += 1;
            }
        }
        let dims = dims.get_mut(..count).unwrap_or(&mut []);
        // Stable: dimensions with equal destination strides keep the caller's order (and are
        // rejected just below unless the region is a single element along them).
        dims.reverse();
        dims.sort_by_key(|&(_, _, d)| d);
        // Every destination element written once: each stride exceeds the span of the inner ones.
        let mut extent = 0usize;
        for &(size, _, d) in dims.iter() {
            if d <= extent {
                return Err(Error::invalid(
                    OP,
                    format!("destination strides {:?} write some elements twice", dst_region.strides),
                ));
            }
            extent = (size - 1).checked_mul(d).and_then(|e| e.checked_add(extent)).unwrap_or(usize::MAX);
        }
        // Merge neighbours that are contiguous on both sides.
        let mut plan = Plan {
            n: to_u32(n)?,
            rank: 0,
            src_offset: to_u32(src_region.offset)?,
            dst_offset: to_u32(dst_region.offset)?,
            src_last: to_u32(src_last)?,
            dst_last: to_u32(dst_last)?,
            ..Plan::default()
        };
        let mut merged: [(usize, usize, usize); MAX_DIMS] = [(1, 0, 0); MAX_DIMS];
        let mut rank = 0usize;
        for &(size, s, d) in dims.iter() {
            let prev = rank.checked_sub(1).and_then(|r| merged.get_mut(r));
            match prev {
                Some(p) if p.0.checked_mul(p.1) == Some(s) && p.0.checked_mul(p.2) == Some(d) => p.0 *= size,
                _ => {
                    if let Some(slot) = merged.get_mut(rank) {
                        *slot = (size, s, d);
                    }
                    rank += 1;
                }
            }
        }
        if rank > MAX_STRIDED_DIMS {
            return Err(Error::shape(
                OP,
                format!("region {shape:?} needs {rank} dimensions after merging; at most {MAX_STRIDED_DIMS}"),
            ));
        }
        plan.rank = rank.max(1);
        for (k, &(size, s, d)) in merged.iter().take(MAX_STRIDED_DIMS).enumerate() {
            if let (Some(a), Some(b), Some(c)) =
                (plan.sizes.get_mut(k), plan.src_strides.get_mut(k), plan.dst_strides.get_mut(k))
            {
                *a = to_u32(size)?;
                *b = to_u32(s)?;
                *c = to_u32(d)?;
            }
        }
        Ok(plan)
    }
}

impl StridedCopy {
    /// Copies the region of `shape` (outermost dimension first) at `src_region` in `src` to
    /// `dst_region` in `dst`. Offsets and strides are in elements, relative to each tensor's
    /// first element (so views at any offset work).
    pub fn new(
        src: &Tensor,
        src_region: Strided<'_>,
        dst: &Tensor,
        dst_region: Strided<'_>,
        shape: &[usize],
    ) -> Result<Self> {
        check_dtype(OP, dst.dtype(), src)?;
        check_same_device(OP, &[src, dst])?;
        let plan = Plan::new(src, src_region, dst, dst_region, shape)?;
        Ok(StridedCopy { src: src.clone(), dst: dst.clone(), plan })
    }

    /// Copies all of the contiguous `src` into `dst` at `dst_region` (`shape` = `src`'s shape).
    pub fn into_region(src: &Tensor, dst: &Tensor, dst_region: Strided<'_>) -> Result<Self> {
        let strides = src.strides();
        Self::new(src, Strided::new(0, strides.as_slice()), dst, dst_region, src.dims())
    }
}

impl Operation for StridedCopy {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_dtype(OP, self.dst.dtype(), &self.src)?;
        check_same_device(OP, &[&self.src, &self.dst])?;
        let p = &self.plan;
        if p.n > 0 && (p.src_last as usize >= self.src.numel() || p.dst_last as usize >= self.dst.numel()) {
            return Err(Error::invalid(OP, "region outside its tensor"));
        }
        Ok(())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let p = &self.plan;
        let src = encoder.bind(&self.src)?;
        let dst = encoder.bind(&self.dst)?;
        let offset = |base: u32, extra: u32| {
            base.checked_add(extra).ok_or_else(|| Error::invalid(OP, "offset exceeds 32-bit indexing"))
        };
        let mut sizes = [0u32; MAX_STRIDED_DIMS - 1];
        for (slot, &size) in sizes.iter_mut().zip(&p.sizes) {
            *slot = size;
        }
        let params = Params {
            n: p.n,
            src_off: offset(src.elem_offset(), p.src_offset)?,
            dst_off: offset(dst.elem_offset(), p.dst_offset)?,
            sizes,
            src_strides: p.src_strides,
            dst_strides: p.dst_strides,
        };
        let workgroups = encoder.linear_grid(p.n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG)), ("RANK", p.rank as f64)])?;
        encoder.dispatch(
            cache,
            Dispatch {
                kernel: &STRIDED,
                dtype: self.dst.dtype(),
                overrides,
                bindings: &[&src, &dst],
                params,
                workgroups,
            },
        )
    }
}

fn check_runtime(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.runtime().same(b.runtime()) { Ok(()) } else { Err(Error::invalid(op, "tensors belong to different runtimes")) }
}

impl Tensor {
    /// A new contiguous tensor holding this one with its dimensions reordered: dimension `k` of
    /// the result is dimension `dims[k]` of `self` (`[b, s, h, d]` with `dims = [0, 2, 1, 3]`
    /// gives `[b, h, s, d]`). `dims` must be a permutation of `0..rank` (`InvalidArgument`).
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let op = "permute";
        let rank = self.dims().len();
        let mut seen = [false; MAX_DIMS];
        let is_permutation = dims.len() == rank
            && dims.iter().all(|&d| d < rank && seen.get_mut(d).is_some_and(|s| !std::mem::replace(s, true)));
        if !is_permutation {
            return Err(Error::invalid(
                op,
                format!("{dims:?} is not a permutation of the {rank} dimensions of {}", self.shape()),
            ));
        }
        let in_strides = self.strides();
        let mut out_dims = [0usize; MAX_DIMS];
        let mut src_strides = [0usize; MAX_DIMS];
        for ((&d, size), stride) in dims.iter().zip(out_dims.iter_mut()).zip(src_strides.iter_mut()) {
            *size = self.shape().dim(d, op)?;
            *stride = in_strides.as_slice().get(d).copied().unwrap_or(0);
        }
        let out_dims = out_dims.get(..rank).unwrap_or(&[]);
        let out = Tensor::empty(self.runtime(), out_dims, self.dtype())?;
        let out_strides = out.strides();
        let copy = StridedCopy::new(
            self,
            Strided::new(0, src_strides.get(..rank).unwrap_or(&[])),
            &out,
            Strided::new(0, out_strides.as_slice()),
            out_dims,
        )?;
        self.runtime().record(&copy)?;
        Ok(out)
    }

    /// A new contiguous tensor with dimensions `d0` and `d1` swapped (`InvalidArgument` if
    /// either is out of range).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        let rank = self.dims().len();
        if d0 >= rank || d1 >= rank {
            return Err(Error::invalid("transpose", format!("dimensions {d0} and {d1} of shape {}", self.shape())));
        }
        let mut perm = [0usize; MAX_DIMS];
        for (i, p) in perm.iter_mut().enumerate() {
            *p = if i == d0 {
                d1
            } else if i == d1 {
                d0
            } else {
                i
            };
        }
        self.permute(perm.get(..rank).unwrap_or(&[]))
    }

    /// The tensors joined along dimension `dim` into a new tensor. All must share dtype
    /// (`DTypeMismatch`), runtime, rank and every dimension but `dim` (`ShapeMismatch`);
    /// `dim` must be below the rank and the list non-empty (`InvalidArgument`).
    pub fn concat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let op = "concat";
        let Some(first) = tensors.first() else {
            return Err(Error::invalid(op, "no tensors to concatenate"));
        };
        let rank = first.dims().len();
        if dim >= rank {
            return Err(Error::invalid(op, format!("dimension {dim} of shape {}", first.shape())));
        }
        let mut total = 0usize;
        for t in tensors {
            check_runtime(op, first, t)?;
            check_dtype(op, first.dtype(), t)?;
            let same_elsewhere = t.dims().len() == rank
                && first.dims().iter().zip(t.dims()).enumerate().all(|(k, (a, b))| k == dim || a == b);
            if !same_elsewhere {
                return Err(Error::mismatch(op, first.shape(), t.shape()));
            }
            total = total
                .checked_add(t.shape().dim(dim, op)?)
                .ok_or_else(|| Error::shape(op, "concatenated size overflows"))?;
        }
        let mut out_dims = [0usize; MAX_DIMS];
        for (k, (slot, &d)) in out_dims.iter_mut().zip(first.dims()).enumerate() {
            *slot = if k == dim { total } else { d };
        }
        let out = Tensor::empty(first.runtime(), Shape::new(out_dims.get(..rank).unwrap_or(&[]))?, first.dtype())?;
        let out_strides = out.strides();
        let step = out_strides.as_slice().get(dim).copied().unwrap_or(0);
        let mut at = 0usize;
        for t in tensors {
            let len = t.shape().dim(dim, op)?;
            if t.numel() > 0 {
                let copy = StridedCopy::into_region(t, &out, Strided::new(at * step, out_strides.as_slice()))?;
                first.runtime().record(&copy)?;
            }
            at += len;
        }
        Ok(out)
    }

    /// Writes `src` into this tensor along dimension `dim` from index `start`: elements
    /// `start..start + src.dims()[dim]` of `dim` are overwritten and nothing else changes (the
    /// new token's keys `[b, h, 1, d]` into a cache `[b, h, max_seq, d]` at position `p`, say).
    ///
    /// Errors: `dim` out of range or the slice past the end (`InvalidArgument`), other
    /// dimensions that differ (`ShapeMismatch`), dtypes that differ (`DTypeMismatch`).
    pub fn write_slice(&self, src: &Tensor, dim: usize, start: usize) -> Result<()> {
        let op = "write_slice";
        check_runtime(op, self, src)?;
        check_dtype(op, self.dtype(), src)?;
        let rank = self.dims().len();
        if dim >= rank {
            return Err(Error::invalid(op, format!("dimension {dim} of shape {}", self.shape())));
        }
        let same_elsewhere = src.dims().len() == rank
            && self.dims().iter().zip(src.dims()).enumerate().all(|(k, (a, b))| k == dim || a == b);
        if !same_elsewhere {
            return Err(Error::mismatch(op, self.shape(), src.shape()));
        }
        let len = src.shape().dim(dim, op)?;
        let size = self.shape().dim(dim, op)?;
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(
                op,
                format!("indices {start}..{} of dimension {dim} of shape {}", start.saturating_add(len), self.shape()),
            ));
        }
        if src.numel() == 0 {
            return Ok(());
        }
        let strides = self.strides();
        let step = strides.as_slice().get(dim).copied().unwrap_or(0);
        let copy = StridedCopy::into_region(src, self, Strided::new(start * step, strides.as_slice()))?;
        self.runtime().record(&copy)
    }
}
