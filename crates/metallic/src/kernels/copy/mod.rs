//! Contiguous copy between tensors of one dtype and element count.
//!
//! Two kernels: `copy_vec4.wgsl` moves `vec4<T>` (several per invocation) when both tensors'
//! element offsets within their bound ranges are multiples of 4 and the storage offset
//! alignment is a multiple of 16 bytes; the scalar `copy.wgsl` copies the remaining `n % 4`
//! elements, or everything when the offsets do not allow vectors.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, check_dtype, check_same_device, count_u32};
use crate::tensor::Tensor;

pub(crate) static COPY: Kernel = Kernel { name: "copy", source: include_str!("copy.wgsl"), entry: "main", bindings: 2 };
pub(crate) static COPY_VEC4: Kernel =
    Kernel { name: "copy_vec4", source: include_str!("copy_vec4.wgsl"), entry: "main", bindings: 2 };

/// Elements per vector access of the vectorised kernel.
const VEC: u32 = 4;
/// Vectors each invocation of the vectorised kernel moves (`UNROLL` in `copy_vec4.wgsl`).
const UNROLL: u32 = 4;

/// `dst = src` element by element; shapes may differ if the element counts agree.
#[derive(Debug, Clone)]
pub struct Copy {
    src: Tensor,
    dst: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    src_off: u32,
    dst_off: u32,
}

impl Copy {
    /// Copies `src` into `dst`.
    pub fn new(src: &Tensor, dst: &Tensor) -> Result<Self> {
        let this = Copy { src: src.clone(), dst: dst.clone() };
        this.validate()?;
        Ok(this)
    }

    /// Whether [`encode`](Operation::encode) takes the vectorised path (`vec4<T>` loads and
    /// stores, the scalar kernel only for the last `n % 4` elements): both tensors' element
    /// offsets within their bound ranges (the byte offset modulo the device's storage offset
    /// alignment) are multiples of 4, that alignment is a multiple of 16 bytes, and there are
    /// at least 4 elements. Otherwise one scalar kernel copies element by element.
    pub fn vectorised(&self) -> bool {
        let caps = self.src.context().caps();
        let align = caps.storage_alignment();
        let size = self.src.dtype().size_in_bytes() as u64;
        let elem_offset = |t: &Tensor| t.byte_offset() % align.max(1) / size.max(1);
        vector_path(align, elem_offset(&self.src), elem_offset(&self.dst), self.src.numel() as u64)
    }
}

/// The vectorised kernel's condition, on element offsets as [`ComputeEncoder::bind`] computes them.
fn vector_path(align: u64, src_off: u64, dst_off: u64, n: u64) -> bool {
    let vec = u64::from(VEC);
    align.is_multiple_of(16) && src_off.is_multiple_of(vec) && dst_off.is_multiple_of(vec) && n >= vec
}

impl Operation for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn validate(&self) -> Result<()> {
        let op = self.name();
        check_dtype(op, self.src.dtype(), &self.dst)?;
        check_same_device(op, &[&self.src, &self.dst])?;
        if self.src.numel() != self.dst.numel() {
            return Err(Error::mismatch(op, self.src.shape(), self.dst.shape()));
        }
        count_u32(op, self.src.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let n = count_u32(self.name(), self.src.numel())?;
        let src = encoder.bind(&self.src)?;
        let dst = encoder.bind(&self.dst)?;
        let (src_off, dst_off) = (src.elem_offset(), dst.elem_offset());
        let dtype = self.src.dtype();
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG))])?;
        let align = encoder.context().caps().storage_alignment();
        // Elements the vectorised kernel moves; the scalar kernel copies the rest.
        let mut done = 0;
        if vector_path(align, u64::from(src_off), u64::from(dst_off), u64::from(n)) {
            let n4 = n / VEC;
            let params = Params { n: n4, src_off: src_off / VEC, dst_off: dst_off / VEC };
            let workgroups = encoder.linear_grid(n4.div_ceil(UNROLL) as usize, LINEAR_WG)?;
            encoder.dispatch(
                cache,
                Dispatch { kernel: &COPY_VEC4, dtype, overrides, bindings: &[&src, &dst], params, workgroups },
            )?;
            done = n4 * VEC;
        }
        let rest = n - done;
        let params = Params { n: rest, src_off: src_off + done, dst_off: dst_off + done };
        let workgroups = encoder.linear_grid(rest as usize, LINEAR_WG)?;
        encoder
            .dispatch(cache, Dispatch { kernel: &COPY, dtype, overrides, bindings: &[&src, &dst], params, workgroups })
    }
}
