//! Contiguous copy between tensors of one dtype and element count.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, check_dtype, check_same_device, count_u32};
use crate::tensor::Tensor;

static COPY: Kernel = Kernel { name: "copy", source: include_str!("copy.wgsl"), entry: "main", bindings: 2 };

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
        let params = Params { n, src_off: src.elem_offset(), dst_off: dst.elem_offset() };
        let workgroups = encoder.linear_grid(n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG))])?;
        encoder.dispatch(
            cache,
            Dispatch { kernel: &COPY, dtype: self.src.dtype(), overrides, bindings: &[&src, &dst], params, workgroups },
        )
    }
}
