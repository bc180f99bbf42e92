//! `out[i] = start + i * step`: constant fills and `arange`.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::Result;
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, count_u32};
use crate::tensor::Tensor;

pub(crate) static FILL: Kernel = Kernel { name: "fill", source: include_str!("fill.wgsl"), entry: "main", bindings: 1 };

/// Writes `start + i * step` (computed in f32, converted to the tensor's dtype) to element `i`.
#[derive(Debug, Clone)]
pub struct Fill {
    out: Tensor,
    start: f32,
    step: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    out_off: u32,
    start: f32,
    step: f32,
}

impl Fill {
    /// Fills `out` with `start, start + step, ...` (`step = 0` for a constant).
    pub fn new(out: &Tensor, start: f32, step: f32) -> Result<Self> {
        let this = Fill { out: out.clone(), start, step };
        this.validate()?;
        Ok(this)
    }
}

impl Operation for Fill {
    fn name(&self) -> &'static str {
        "fill"
    }

    fn validate(&self) -> Result<()> {
        count_u32(self.name(), self.out.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let n = count_u32(self.name(), self.out.numel())?;
        let out = encoder.bind(&self.out)?;
        let params = Params { n, out_off: out.elem_offset(), start: self.start, step: self.step };
        let workgroups = encoder.linear_grid(n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG))])?;
        encoder.dispatch(
            cache,
            Dispatch { kernel: &FILL, dtype: self.out.dtype(), overrides, bindings: &[&out], params, workgroups },
        )
    }
}
