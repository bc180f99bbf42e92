//! Embedding lookup: gathers table rows by token id.

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{LINEAR_WG, check_dtype, check_same_device, count_u32};
use crate::tensor::{DType, MAX_DIMS, Shape, Tensor};

pub(crate) static EMBEDDING: Kernel =
    Kernel { name: "embedding", source: include_str!("embedding.wgsl"), entry: "main", bindings: 3 };

const OP: &str = "embedding";

/// `out[..., :] = table[ids[...], :]`: one table row per id.
///
/// `table` is `[vocab, dim]` (`f32`, `f16`, or `u32`), `ids` a `u32` tensor of any shape and
/// `out` has shape `ids.shape + [dim]` and the table's dtype.
///
/// **Out-of-range ids** (`id >= vocab`) produce a row of zeros: the kernel cannot report them,
/// and checking on the host would need the ids read back, which is not cheap (they normally
/// come from a sampler on the GPU). Callers that take ids from users (a tokenizer, an HTTP
/// request) check them against the vocabulary before uploading.
///
/// ```
/// use metallic::{kernels::embedding::Embedding, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let table = Tensor::from_slice(&rt, [3, 2], &[0.0f32, 1.0, 10.0, 11.0, 20.0, 21.0])?;
/// let ids = Tensor::from_slice(&rt, [3], &[2u32, 0, 7])?;
/// assert_eq!(table.embedding(&ids)?.to_vec::<f32>()?, [20.0, 21.0, 0.0, 1.0, 0.0, 0.0]);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Tensor,
    ids: Tensor,
    out: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    dim: u32,
    vocab: u32,
    table_off: u32,
    ids_off: u32,
    out_off: u32,
}

/// The output shape of a lookup: `ids`'s shape with `dim` appended.
fn out_shape(ids: &Tensor, dim: usize) -> Result<Shape> {
    let rank = ids.dims().len();
    if rank >= MAX_DIMS {
        return Err(Error::shape(OP, format!("ids of rank {rank}: the output would exceed {MAX_DIMS} dimensions")));
    }
    let mut dims = [0usize; MAX_DIMS];
    for (slot, &d) in dims.iter_mut().zip(ids.dims().iter().chain([dim].iter())) {
        *slot = d;
    }
    Shape::new(dims.get(..=rank).unwrap_or(&[]))
}

impl Embedding {
    /// Gathers rows of `table` (`[vocab, dim]`) at `ids` (u32, any shape) into `out`
    /// (`ids.shape + [dim]`, the table's dtype).
    pub fn new(table: &Tensor, ids: &Tensor, out: &Tensor) -> Result<Self> {
        let this = Embedding { table: table.clone(), ids: ids.clone(), out: out.clone() };
        this.validate()?;
        Ok(this)
    }

    fn vocab_dim(&self) -> Result<(usize, usize)> {
        match *self.table.dims() {
            [vocab, dim] => Ok((vocab, dim)),
            _ => Err(Error::shape(OP, format!("table must be [vocab, dim], got {}", self.table.shape()))),
        }
    }
}

impl Operation for Embedding {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_dtype(OP, DType::U32, &self.ids)?;
        check_dtype(OP, self.table.dtype(), &self.out)?;
        check_same_device(OP, &[&self.table, &self.ids, &self.out])?;
        let (vocab, dim) = self.vocab_dim()?;
        let want = out_shape(&self.ids, dim)?;
        if self.out.shape() != want {
            return Err(Error::mismatch(OP, want, self.out.shape()));
        }
        count_u32(OP, self.out.numel())?;
        count_u32(OP, self.table.numel())?;
        count_u32(OP, vocab).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let (vocab, dim) = self.vocab_dim()?;
        let n = count_u32(OP, self.out.numel())?;
        let table = encoder.bind(&self.table)?;
        let ids = encoder.bind(&self.ids)?;
        let out = encoder.bind(&self.out)?;
        let params = Params {
            n,
            dim: count_u32(OP, dim)?,
            vocab: count_u32(OP, vocab)?,
            table_off: table.elem_offset(),
            ids_off: ids.elem_offset(),
            out_off: out.elem_offset(),
        };
        let workgroups = encoder.linear_grid(n as usize, LINEAR_WG)?;
        let overrides = Overrides::new(&[("WG", f64::from(LINEAR_WG))])?;
        encoder.dispatch(
            cache,
            Dispatch {
                kernel: &EMBEDDING,
                dtype: self.table.dtype(),
                overrides,
                bindings: &[&table, &ids, &out],
                params,
                workgroups,
            },
        )
    }
}

impl Tensor {
    /// Looks up rows of this `[vocab, dim]` table at `ids` (u32, any shape): a new tensor of
    /// shape `ids.shape + [dim]`. Ids `>= vocab` give rows of zeros (see [`Embedding`]).
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if !self.runtime().same(ids.runtime()) {
            return Err(Error::invalid(OP, "tensors belong to different runtimes"));
        }
        check_dtype(OP, DType::U32, ids)?;
        let dim = match *self.dims() {
            [_, dim] => dim,
            _ => return Err(Error::shape(OP, format!("table must be [vocab, dim], got {}", self.shape()))),
        };
        let out = Tensor::empty(self.runtime(), out_shape(ids, dim)?, self.dtype())?;
        self.runtime().record(&Embedding::new(self, ids, &out)?)?;
        Ok(out)
    }
}
