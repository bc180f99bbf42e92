//! Uniform random fill from a seed, on the GPU.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, check_float, count_u32};
use crate::tensor::Tensor;

pub(crate) static RANDOM: Kernel =
    Kernel { name: "random_uniform", source: include_str!("random.wgsl"), entry: "main", bindings: 1 };

/// Fills a tensor with uniform values in `[low, high)` from a counter-based hash of
/// `(seed, index)`: deterministic, and independent of how the work is split.
#[derive(Debug, Clone)]
pub struct RandomUniform {
    out: Tensor,
    low: f32,
    high: f32,
    seed: u64,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    out_off: u32,
    seed_lo: u32,
    seed_hi: u32,
    low: f32,
    high: f32,
}

impl RandomUniform {
    /// Fills `out` with values in `[low, high)`.
    pub fn new(out: &Tensor, low: f32, high: f32, seed: u64) -> Result<Self> {
        let this = RandomUniform { out: out.clone(), low, high, seed };
        this.validate()?;
        Ok(this)
    }

    /// The host twin of the kernel: element `i` of a tensor filled with this seed, in f64.
    pub fn reference(seed: u64, low: f32, high: f32, i: u32) -> f64 {
        fn pcg_hash(v: u32) -> u32 {
            let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
            let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
            (word >> 22) ^ word
        }
        let key = pcg_hash(seed as u32 ^ pcg_hash((seed >> 32) as u32));
        let u = f64::from(pcg_hash(i ^ key) >> 8) / 16_777_216.0;
        f64::from(low) + (f64::from(high) - f64::from(low)) * u
    }
}

impl Operation for RandomUniform {
    fn name(&self) -> &'static str {
        "random_uniform"
    }

    fn validate(&self) -> Result<()> {
        check_float(self.name(), &self.out)?;
        if !(self.low.is_finite() && self.high.is_finite() && self.low <= self.high) {
            return Err(Error::invalid(
                self.name(),
                format!("bounds [{}, {}) are not a finite range", self.low, self.high),
            ));
        }
        count_u32(self.name(), self.out.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let n = count_u32(self.name(), self.out.numel())?;
        let out = encoder.bind(&self.out)?;
        let params = Params {
            n,
            out_off: out.elem_offset(),
            seed_lo: self.seed as u32,
            seed_hi: (self.seed >> 32) as u32,
            low: self.low,
            high: self.high,
        };
        let workgroups = encoder.linear_grid(n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG))])?;
        encoder.dispatch(
            cache,
            Dispatch { kernel: &RANDOM, dtype: self.out.dtype(), overrides, bindings: &[&out], params, workgroups },
        )
    }
}
