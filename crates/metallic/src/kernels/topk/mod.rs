//! The `k` largest values of each row and their indices, on the GPU: what a sampler needs
//! from a 262k-entry logits row without reading it back (greedy decoding is `k = 1`).
//!
//! A first pass keeps the top `k` of each 2048-column chunk; further passes over the
//! (value, index) candidates shrink them until one chunk remains. Scratch comes from the
//! runtime's pool when the operation is built.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::{DType, Tensor};

pub(crate) static TOPK: Kernel = Kernel { name: "topk", source: include_str!("topk.wgsl"), entry: "main", bindings: 4 };

const OP: &str = "top_k";
/// Invocations per workgroup.
const WG: usize = 256;
/// Elements one workgroup ranks (`WG` invocations × 8 in registers).
const SPAN: usize = WG * 8;

/// The most values [`TopK`] keeps per row.
pub const MAX_K: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    chunks: u32,
    vals_off: u32,
    idx_off: u32,
    out_vals_off: u32,
    out_idx_off: u32,
}

/// Writes the `k` largest values of each row of `x` (`[.., n]`, float) to `values`
/// (`[rows, k]`, f32) and their column indices to `indices` (`[rows, k]`, u32), largest first,
/// ties by smaller index first. NaN ranks as `-inf`; `-inf` comes out as `-f32::MAX`.
#[derive(Debug, Clone)]
pub struct TopK {
    x: Tensor,
    values: Tensor,
    indices: Tensor,
    k: usize,
    /// Candidate buffers between passes: (values, indices, candidates per row) per pass.
    passes: Vec<(Tensor, Tensor, usize)>,
}

impl TopK {
    /// Validates the shapes (`1 <= k <= min(n, MAX_K)`) and allocates the scratch.
    pub fn new(x: &Tensor, k: usize, values: &Tensor, indices: &Tensor) -> Result<Self> {
        let (rows, n) = check(x, k, values, indices)?;
        // Scratch for every pass but the last, which writes the outputs.
        let mut passes = Vec::new();
        let mut candidates = n;
        while candidates > SPAN {
            let chunks = candidates.div_ceil(SPAN);
            let width = chunks * k;
            let rt = x.runtime();
            passes.push((
                Tensor::empty(rt, [rows, width], DType::F32)?,
                Tensor::empty(rt, [rows, width], DType::U32)?,
                width,
            ));
            candidates = width;
        }
        Ok(TopK { x: x.clone(), values: values.clone(), indices: indices.clone(), k, passes })
    }
}

/// Checks dtypes, devices and shapes; returns (rows, n).
fn check(x: &Tensor, k: usize, values: &Tensor, indices: &Tensor) -> Result<(usize, usize)> {
    check_float(OP, x)?;
    check_dtype(OP, DType::F32, values)?;
    check_dtype(OP, DType::U32, indices)?;
    check_same_device(OP, &[x, values, indices])?;
    let (rows, n) = rows_and_cols(x)?;
    if k == 0 || k > n || k > MAX_K {
        return Err(Error::invalid(OP, format!("k = {k}; rows have {n} values and at most {MAX_K} are kept")));
    }
    for t in [values, indices] {
        if t.dims() != [rows, k] {
            return Err(Error::shape(OP, format!("outputs must be [{rows}, {k}], got {}", t.shape())));
        }
    }
    if rows > 65_535 {
        return Err(Error::invalid(OP, format!("{rows} rows exceed 65535")));
    }
    count_u32(OP, x.numel())?;
    Ok((rows, n))
}

fn rows_and_cols(x: &Tensor) -> Result<(usize, usize)> {
    let n = x.dims().last().copied().unwrap_or(1);
    if n == 0 || x.numel() == 0 {
        return Err(Error::shape(OP, format!("cannot rank an empty tensor {}", x.shape())));
    }
    Ok((x.numel() / n, n))
}

impl Operation for TopK {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check(&self.x, self.k, &self.values, &self.indices).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let (rows, n) = rows_and_cols(&self.x)?;
        let k = count_u32(OP, self.k)?;
        let rows = count_u32(OP, rows)?;
        // (input values, input indices or None, candidates per row) → outputs, pass by pass.
        let mut input: (&Tensor, Option<&Tensor>, usize) = (&self.x, None, n);
        let last = (&self.values, &self.indices);
        for step in 0..=self.passes.len() {
            let (out_v, out_i) = match self.passes.get(step) {
                Some((v, i, _)) => (v, i),
                None => last,
            };
            let chunks = count_u32(OP, input.2.div_ceil(SPAN))?;
            let vals = encoder.bind(input.0)?;
            // The first pass reads no index buffer; bind the output's in its place.
            let idx = encoder.bind(input.1.unwrap_or(out_i))?;
            let (ov, oi) = (encoder.bind(out_v)?, encoder.bind(out_i)?);
            let params = Params {
                n: count_u32(OP, input.2)?,
                chunks,
                vals_off: vals.elem_offset(),
                idx_off: idx.elem_offset(),
                out_vals_off: ov.elem_offset(),
                out_idx_off: oi.elem_offset(),
            };
            let overrides =
                Overrides::new(&[("WG", WG as f64), ("K", f64::from(k)), ("PAIRS", f64::from(u8::from(step > 0)))])?;
            encoder.dispatch(
                cache,
                Dispatch {
                    kernel: &TOPK,
                    dtype: input.0.dtype(),
                    overrides,
                    bindings: &[&vals, &idx, &ov, &oi],
                    params,
                    workgroups: [chunks, rows, 1],
                },
            )?;
            if let Some((v, i, width)) = self.passes.get(step) {
                input = (v, Some(i), *width);
            }
        }
        Ok(())
    }
}

impl Tensor {
    /// The `k` largest values of each row (last dimension) and their indices, as new
    /// `[rows, k]` tensors (f32 values, u32 indices); see [`TopK`].
    pub fn top_k(&self, k: usize) -> Result<(Tensor, Tensor)> {
        let (rows, _) = rows_and_cols(self)?;
        let values = Tensor::empty(self.runtime(), [rows, k], DType::F32)?;
        let indices = Tensor::empty(self.runtime(), [rows, k], DType::U32)?;
        self.runtime().record(&TopK::new(self, k, &values, &indices)?)?;
        Ok((values, indices))
    }

    /// The index of the largest value of each row (the first, on ties): `[rows, 1]` u32.
    pub fn argmax(&self) -> Result<Tensor> {
        Ok(self.top_k(1)?.1)
    }
}
