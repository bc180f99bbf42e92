//! Batched matrix multiplication, `C = alpha * op(A) · op(B) + beta * C` (MPS-like), in f32 or
//! f16 storage with f32 accumulation.
//!
//! Four kernels: a register-blocked GEMM for large products (`gemm_wide.wgsl`: 128 x 128 tiles,
//! 8 x 8 outputs per invocation, double-buffered K-steps), a GEMM with 64 x 64 or 32 x 32 tiles
//! for smaller ones (`gemm.wgsl`), a GEMM on cooperative matrices (tensor cores) for f16 where
//! the adapter offers them (`gemm_coop.wgsl`), and, for a single row (`M == 1`, the decode step
//! of a language model), a GEMV that reduces along K inside each workgroup (`gemv.wgsl`), for
//! both layouts of B. Products with few output tiles and a long K (linear layers over a few
//! dozen tokens) split K over workgroups in any of the three GEMMs, which write f32 partial
//! sums to a scratch tensor that `splitk_reduce.wgsl` adds up. The GEMM kernels are compiled without wgpu's runtime
//! checks (their sources say why that is safe); [`Matmul::checked`] turns them back on.
//!
//! ```
//! use metallic::{Runtime, Tensor};
//! let rt = Runtime::new()?;
//! let a = Tensor::from_slice(&rt, [2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! let b = Tensor::from_slice(&rt, [3, 2], &[7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0])?;
//! assert_eq!(a.matmul(&b)?.to_vec::<f32>()?, [58.0, 64.0, 139.0, 154.0]);
//! // A · Bᵀ with B stored [N, K], the layout of linear-layer weights:
//! let w = Tensor::from_slice(&rt, [1, 3], &[1.0f32, 0.0, -1.0])?;
//! assert_eq!(a.matmul_t(&w)?.to_vec::<f32>()?, [-2.0, -2.0]);
//! # Ok::<(), metallic::Error>(())
//! ```

use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation, TensorBinding};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::{DType, Shape, Tensor};

pub(crate) static GEMM: Kernel = Kernel {
    name: "gemm",
    source: concat!(include_str!("gemm.wgsl"), include_str!("gemm_common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static GEMM_WIDE: Kernel = Kernel {
    name: "gemm_wide",
    source: concat!(include_str!("gemm_wide.wgsl"), include_str!("gemm_common.wgsl")),
    entry: "main",
    bindings: 6,
};
pub(crate) static SPLITK_REDUCE: Kernel =
    Kernel { name: "splitk_reduce", source: include_str!("splitk_reduce.wgsl"), entry: "main", bindings: 2 };
pub(crate) static GEMM_COOP: Kernel = Kernel {
    name: "gemm_coop",
    source: concat!(include_str!("gemm_coop.wgsl"), include_str!("gemm_common.wgsl")),
    entry: "main",
    bindings: 6,
};
// The same sources compiled with wgpu's runtime checks ([`Matmul::checked`]): a leading newline
// moves the trusted marker off the first line.
pub(crate) static GEMM_CHECKED: Kernel = Kernel {
    name: "gemm",
    source: concat!("\n", include_str!("gemm.wgsl"), include_str!("gemm_common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static GEMM_WIDE_CHECKED: Kernel = Kernel {
    name: "gemm_wide",
    source: concat!("\n", include_str!("gemm_wide.wgsl"), include_str!("gemm_common.wgsl")),
    entry: "main",
    bindings: 6,
};
pub(crate) static GEMV_NK: Kernel =
    Kernel { name: "gemv_nk", source: include_str!("gemv.wgsl"), entry: "gemv_nk", bindings: 3 };
pub(crate) static GEMV_KN: Kernel =
    Kernel { name: "gemv_kn", source: include_str!("gemv.wgsl"), entry: "gemv_kn", bindings: 3 };

/// Rows and columns each GEMM invocation computes (`TM`, `TN` in `gemm.wgsl`).
const GEMM_BLOCK: u32 = 4;
/// K-step of the GEMM tiles.
const GEMM_BK: u32 = 16;
/// Workgroup size of the `[K, N]` GEMV.
const GEMV_KN_WG: u32 = 256;
/// Below this many 64 x 64 output tiles, the GEMM takes 32 x 32 tiles (more workgroups for a
/// GPU with many cores to share).
const LARGE_TILE_MIN_TILES: u64 = 64;
/// From this many 128 x 128 output tiles (batch included), GEMM takes the register-blocked
/// kernel. Measured on an H100 (Vulkan): at 48-64 tiles (2048 x 384 x 1536 batched, 1024³,
/// 256 x 4096 x 4096) it already matches or beats the 64 x 64 kernel.
const WIDE_MIN_TILES: u64 = 48;
/// Split-K aims at about this many workgroups (output tiles x batch x K slices) ...
const SPLIT_TARGET_WGS: u64 = 256;
/// ... or this many below `SPLIT_FEW_TILES` output tiles. Measured on an H100 (132 SMs): 128
/// ran 15-20% faster than 256 for 40 rows (3-12 tiles), 256 faster than 128 for 30-48 tiles.
const SPLIT_TARGET_FEW: u64 = 128;
const SPLIT_FEW_TILES: u64 = 16;
/// Auto splits K only below this many 128 x 128 output tiles (batch included; at 90 tiles, 3
/// slices ran 10% slower than none on an H100) ...
const SPLIT_MAX_TILES: u64 = 64;
/// ... and for K of at least this much, into slices of at least `SPLIT_MIN_CHUNK`.
const SPLIT_MIN_K: u32 = 256;
const SPLIT_MIN_CHUNK: u32 = 32;
/// Split-K over 64 x 64 tiles ([`MatmulPath::SplitK64`]) aims at about this many workgroups
/// (on an H100, 512 beat 256 and 1024 by 5-20%).
const SPLIT64_TARGET_WGS: u64 = 512;
/// Below this K, Auto splits over 64 x 64 tiles rather than 128 x 128 ones (where the
/// cooperative kernel does not run). Measured on an H100, f32, B transposed: at K = 384 the
/// 64-tile split ran 1.05-1.25x faster ([40 | 1280, 384] x [384 | 1152, 384]ᵀ), at K = 1536
/// 0.95-1.02x (M = 40 to 2048, N = 384).
const SPLIT64_MAX_K: u32 = 1024;
/// Workgroup size of the split-K reduction.
const SPLIT_REDUCE_WG: u32 = 256;
/// K-step of the cooperative kernel (its K slices are multiples of it).
const COOP_BK: u32 = 32;
/// Workgroup memory the cooperative kernel declares (tiles, staging, the prelude's scratch).
const COOP_SHARED_BYTES: u32 = 2 * 128 * 40 * 2 + 8 * 256 * 4 + 256 * 4;
/// Smallest M and N (after folding the batch into M) for which f16 GEMM takes the cooperative
/// kernel where it is available.
const COOP_MIN_DIM: u32 = 64;

/// Which kernel a [`Matmul`] runs. [`MatmulPath::Auto`] is the right choice outside tests and
/// tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MatmulPath {
    /// GEMV where the product has one row (after folding a batch of rows against a shared B
    /// into M), split-K where there are few output tiles and a long K, else GEMM with tiles
    /// sized by the output.
    #[default]
    Auto,
    /// GEMM with 32 x 32 output tiles per workgroup (64 invocations).
    Gemm32,
    /// GEMM with 64 x 64 output tiles per workgroup (256 invocations).
    Gemm64,
    /// GEMV; needs `M == 1`.
    Gemv,
    /// Register-blocked GEMM: 128 x 128 output tiles per workgroup (256 invocations, 8 x 8
    /// outputs each), double-buffered K-steps of 8 (18 KiB of workgroup memory).
    Gemm128,
    /// GEMM on cooperative matrices (tensor cores): f16 operands, f32 accumulation, 128 x 128
    /// tiles. Needs f16 tensors and an adapter with `EXPERIMENTAL_COOPERATIVE_MATRIX` through
    /// Vulkan with 32-wide subgroups (16 x 16 f16 matrices with f32 accumulators, which NVIDIA
    /// and AMD drivers offer); elsewhere recording it returns [`Error::Unsupported`].
    Cooperative,
    /// Split-K: the register-blocked kernel of [`MatmulPath::Gemm128`] (or, for f16 products
    /// that Auto would give the cooperative kernel — M and N of at least 64 on an adapter that
    /// has it — [`MatmulPath::Cooperative`]'s) with K cut into slices that separate workgroups
    /// multiply, writing f32 partial products to a scratch tensor, then a second kernel that
    /// adds the slices up (and applies alpha and beta). For products with few output tiles
    /// and a long K (a linear layer over a few dozen tokens). Runs the unsplit kernel where K
    /// is too short to split.
    SplitK,
    /// Split-K as [`MatmulPath::SplitK`], over the 64 x 64 tiles of [`MatmulPath::Gemm64`]
    /// (smaller workgroups, several resident per core).
    SplitK64,
}

/// Whether the cooperative-matrix GEMM can run on this adapter (see
/// [`MatmulPath::Cooperative`]).
///
/// The kernel uses 16 x 16 f16 matrices with f32 accumulators, one subgroup of 32 per
/// matrix. wgpu enables the feature when the driver offers any configuration, and the context
/// does not keep the list (`wgpu::Adapter::cooperative_matrix_properties`), so this asks for
/// the Vulkan backend (where NVIDIA and AMD offer 16 x 16 x 16 f16 -> f32; Metal has 8 x 8
/// only) and subgroups of exactly 32.
pub fn cooperative_available(ctx: &crate::Context) -> bool {
    let caps = ctx.caps();
    caps.cooperative_matrix()
        && caps.subgroups()
        && caps.adapter.backend == wgpu::Backend::Vulkan
        && caps.adapter.subgroup_min_size == 32
        && caps.adapter.subgroup_max_size == 32
        && caps.limits.max_compute_workgroup_storage_size >= COOP_SHARED_BYTES
}

/// Workgroup memory of the register-blocked kernel with K-step `bk`.
fn wide_shared_bytes(bk: u32, transpose_a: bool, transpose_b: bool) -> u32 {
    let rows = 2 * 32 + u32::from(!transpose_a) + u32::from(transpose_b);
    2 * bk * rows * 16 + 256 * 4
}

/// `C = alpha * op(A) · op(B) + beta * C` for every batch item, where `op(X)` is `X` or `Xᵀ`.
///
/// Shapes: `A` is `[..batch, M, K]` (`[..batch, K, M]` with [`transpose_a`](Self::transpose_a)),
/// `B` is `[..batch, K, N]` (`[..batch, N, K]` with [`transpose_b`](Self::transpose_b)), `C` is
/// `[..batch, M, N]`. The batch dimensions of `A` and of `B` each either equal `C`'s (leading
/// ones aside) or hold a single matrix (absent or all ones), which then serves every batch
/// item — a rank-2 weight against a batch of activations, say. All three share one float
/// dtype; products accumulate in f32. With `beta == 0` (the default) `C` is only written, so
/// its old contents (even NaN) do not matter. `C` must not overlap `A` or `B`.
///
/// [`new`](Self::new) checks what the options cannot change (ranks, dtypes, devices); the
/// shape agreement, which depends on the transposes, is checked by
/// [`validate`](Operation::validate), which recording runs.
///
/// ```
/// use metallic::{kernels::matmul::Matmul, Operation, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let a = Tensor::from_slice(&rt, [2, 2], &[1.0f32, 2.0, 3.0, 4.0])?;
/// let c = Tensor::from_slice(&rt, [2, 2], &[1.0f32, 1.0, 1.0, 1.0])?;
/// // c = 2 * aᵀ · a + c
/// let op = Matmul::new(&a, &a, &c)?.transpose_a(true).alpha(2.0).beta(1.0);
/// op.validate()?;
/// rt.record(&op)?;
/// assert_eq!(c.to_vec::<f32>()?, [21.0, 29.0, 29.0, 41.0]);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Matmul {
    a: Tensor,
    b: Tensor,
    c: Tensor,
    transpose_a: bool,
    transpose_b: bool,
    alpha: f32,
    beta: f32,
    path: MatmulPath,
    checked: bool,
    /// K-step of the register-blocked kernel; `None`: 8 (on an H100, 8 ran 1.6x faster than 16
    /// at 4096³, which needs twice the workgroup memory and eight more registers).
    wide_bk: Option<u32>,
    /// Whether the register-blocked kernel may load aligned operands as vec4.
    vector_loads: bool,
    /// K slices of [`MatmulPath::SplitK`]; `None`: chosen by shape.
    splits: Option<u32>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_batch: u32,
    b_batch: u32,
    c_batch: u32,
    alpha: f32,
    beta: f32,
    /// K slices (split-K; 1 otherwise) and their length (k otherwise).
    splits: u32,
    k_chunk: u32,
    /// First element of the split-K partial sums in their scratch binding.
    part_off: u32,
}

/// Records the split-K reduction: `c[c_off + i] = sum_s part[part_off + s * count + i]` for the
/// `count` contiguous elements of `c` from `splits` f32 partial products (the quantized
/// cooperative GEMM's second pass).
pub(crate) fn encode_split_reduce(
    encoder: &mut ComputeEncoder<'_>,
    cache: &ResourceCache,
    dtype: DType,
    part: &TensorBinding,
    c: &TensorBinding,
    count: u32,
    splits: u32,
) -> Result<()> {
    let params =
        ReduceParams { count, splits, part_off: part.elem_offset(), c_off: c.elem_offset(), alpha: 1.0, beta: 0.0 };
    dispatch_reduce(encoder, cache, dtype, part, c, params)
}

fn dispatch_reduce(
    encoder: &mut ComputeEncoder<'_>,
    cache: &ResourceCache,
    dtype: DType,
    part: &TensorBinding,
    c: &TensorBinding,
    params: ReduceParams,
) -> Result<()> {
    let workgroups = encoder.linear_grid(params.count as usize, SPLIT_REDUCE_WG)?;
    let overrides = Overrides::new(&[("WG", f64::from(SPLIT_REDUCE_WG))])?;
    encoder.dispatch(
        cache,
        Dispatch { kernel: &SPLITK_REDUCE, dtype, overrides, bindings: &[part, c], params, workgroups },
    )
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    count: u32,
    splits: u32,
    part_off: u32,
    c_off: u32,
    alpha: f32,
    beta: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemvParams {
    n: u32,
    k: u32,
    batch: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    ldb: u32,
    a_batch: u32,
    b_batch: u32,
    c_batch: u32,
    alpha: f32,
    beta: f32,
}

/// The sizes and strides (in elements) of one multiplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    lda: u32,
    ldb: u32,
    a_batch: u32,
    b_batch: u32,
}

impl Plan {
    /// With `B` shared by every batch item and untransposed `A` batched and contiguous, the
    /// batch is one tall matrix: `[batch * M, K] · B`, one GEMM with fuller tiles.
    fn folded(self, transpose_a: bool) -> Plan {
        let fold = !transpose_a && self.batch > 1 && self.b_batch == 0 && self.a_batch != 0;
        match self.m.checked_mul(self.batch) {
            Some(m) if fold => Plan { m, batch: 1, a_batch: 0, ..self },
            _ => self,
        }
    }
}

/// The dimensions before the last two.
fn batch_dims(t: &Tensor) -> &[usize] {
    let dims = t.dims();
    dims.get(..dims.len().saturating_sub(2)).unwrap_or(&[])
}

/// The dimensions without their leading ones.
fn strip_ones(dims: &[usize]) -> &[usize] {
    let first = dims.iter().position(|&d| d != 1).unwrap_or(dims.len());
    dims.get(first..).unwrap_or(&[])
}

/// The last two dimensions (rank >= 2 checked by the caller).
fn matrix_dims(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    match t.dims() {
        [.., rows, cols] => Ok((*rows, *cols)),
        _ => Err(Error::shape(op, format!("needs a matrix (rank >= 2), got shape {}", t.shape()))),
    }
}

/// Whether two tensors' bytes overlap in one buffer.
fn overlaps(x: &Tensor, y: &Tensor) -> bool {
    let (xs, ys) = (x.byte_offset(), y.byte_offset());
    let (xe, ye) = (xs + x.size_in_bytes() as u64, ys + y.size_in_bytes() as u64);
    x.buffer() == y.buffer() && xs < ye && ys < xe && x.numel() > 0 && y.numel() > 0
}

impl Matmul {
    /// `c = a · b` (no transposes, `alpha = 1`, `beta = 0`); adjust with the builder methods.
    /// Fails on a rank below 2, dtypes that differ or are not float, or tensors on different
    /// devices.
    pub fn new(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Self> {
        let this = Matmul {
            a: a.clone(),
            b: b.clone(),
            c: c.clone(),
            transpose_a: false,
            transpose_b: false,
            alpha: 1.0,
            beta: 0.0,
            path: MatmulPath::Auto,
            checked: false,
            wide_bk: None,
            vector_loads: true,
            splits: None,
        };
        this.check_operands()?;
        Ok(this)
    }

    /// Use `Aᵀ`: `A` is stored `[..batch, K, M]`.
    pub fn transpose_a(mut self, transpose: bool) -> Self {
        self.transpose_a = transpose;
        self
    }

    /// Use `Bᵀ`: `B` is stored `[..batch, N, K]` (a linear layer's `[out, in]` weight).
    pub fn transpose_b(mut self, transpose: bool) -> Self {
        self.transpose_b = transpose;
        self
    }

    /// Scales the product (default 1); must be finite.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// Scales the old `C` added to the product (default 0: `C` is not read); must be finite.
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }

    /// Forces a kernel (for tests and tuning); [`MatmulPath::Auto`] by default.
    pub fn path(mut self, path: MatmulPath) -> Self {
        self.path = path;
        self
    }

    /// Compiles the GEMM kernels with wgpu's runtime checks (bounds checks on every access,
    /// bounded loops), which they are normally compiled without; for measuring what the checks
    /// cost. Default `false`.
    pub fn checked(mut self, checked: bool) -> Self {
        self.checked = checked;
        self
    }

    /// The K-step of [`MatmulPath::Gemm128`] (8, the default, or 16); for tests and tuning.
    /// Other values fail validation.
    #[doc(hidden)]
    pub fn wide_k_step(mut self, bk: u32) -> Self {
        self.wide_bk = Some(bk);
        self
    }

    /// Whether [`MatmulPath::Gemm128`] may load operands whose offset and strides are
    /// multiples of 4 as vec4 (default `true`); for tuning.
    #[doc(hidden)]
    pub fn vector_loads(mut self, on: bool) -> Self {
        self.vector_loads = on;
        self
    }

    /// The number of K slices of [`MatmulPath::SplitK`] (0 counts as 1; fewer where K is
    /// short: slices are whole K-steps); by default chosen from the shape. For tests and tuning.
    #[doc(hidden)]
    pub fn split_k(mut self, splits: u32) -> Self {
        self.splits = Some(splits);
        self
    }

    /// Whether this (folded) product of f16 runs on the cooperative kernel, split or not.
    fn on_coop(&self, plan: Plan) -> bool {
        self.a.dtype() == DType::F16
            && plan.m >= COOP_MIN_DIM
            && plan.n >= COOP_MIN_DIM
            && cooperative_available(self.a.context())
    }

    /// K slices and their length for split-K over `path`'s kernel (`(1, k)`: no split).
    fn split_plan(&self, plan: Plan, path: MatmulPath) -> (u32, u32) {
        let tile64 = path == MatmulPath::SplitK64;
        let bk = if tile64 {
            GEMM_BK
        } else if self.on_coop(plan) {
            COOP_BK
        } else {
            self.wide_step().0
        }
        .max(1);
        let want = match self.splits {
            Some(s) => s.max(1),
            None => {
                let side = if tile64 { 64 } else { 128 };
                let tiles = u64::from(plan.m.div_ceil(side)) * u64::from(plan.n.div_ceil(side)) * u64::from(plan.batch);
                let target = if tile64 {
                    SPLIT64_TARGET_WGS
                } else if tiles < SPLIT_FEW_TILES {
                    SPLIT_TARGET_FEW
                } else {
                    SPLIT_TARGET_WGS
                };
                let want = target.div_ceil(tiles.max(1));
                let by_k = u64::from(plan.k / SPLIT_MIN_CHUNK.max(bk)).max(1);
                u32::try_from(want.min(by_k)).unwrap_or(1)
            }
        };
        let chunk = plan.k.div_ceil(want).next_multiple_of(bk).max(bk);
        let splits = plan.k.div_ceil(chunk).max(1);
        if splits == 1 { (1, plan.k) } else { (splits, chunk) }
    }

    /// The register-blocked kernel's K-step and the workgroup memory it needs.
    fn wide_step(&self) -> (u32, u32) {
        let need = |bk| wide_shared_bytes(bk, self.transpose_a, self.transpose_b);
        let bk = self.wide_bk.unwrap_or(8);
        (bk, need(bk))
    }

    /// The kernel [`encode`](Operation::encode) will run: never [`MatmulPath::Auto`].
    pub fn chosen_path(&self) -> Result<MatmulPath> {
        let plan = self.plan()?;
        Ok(self.choose(plan).0)
    }

    fn check_operands(&self) -> Result<()> {
        let op = self.name();
        for t in [&self.a, &self.b, &self.c] {
            matrix_dims(op, t)?;
        }
        check_float(op, &self.a)?;
        check_dtype(op, self.a.dtype(), &self.b)?;
        check_dtype(op, self.a.dtype(), &self.c)?;
        check_same_device(op, &[&self.a, &self.b, &self.c])
    }

    /// The batch stride of an operand holding `matrix` elements per item, or an error when
    /// its batch dimensions fit neither `C`'s nor a single matrix.
    fn batch_stride(&self, t: &Tensor, matrix: usize) -> Result<usize> {
        let dims = batch_dims(t);
        if dims.iter().product::<usize>() == 1 {
            Ok(0)
        } else if strip_ones(dims) == strip_ones(batch_dims(&self.c)) {
            Ok(matrix)
        } else {
            Err(Error::mismatch(self.name(), t.shape(), self.c.shape()))
        }
    }

    /// Checks everything and works out sizes and strides.
    fn plan(&self) -> Result<Plan> {
        let op = self.name();
        self.check_operands()?;
        for (name, value) in [("alpha", self.alpha), ("beta", self.beta)] {
            if !value.is_finite() {
                return Err(Error::invalid(op, format!("{name} must be finite, got {value}")));
            }
        }
        let (ar, ac) = matrix_dims(op, &self.a)?;
        let (br, bc) = matrix_dims(op, &self.b)?;
        let (m, k) = if self.transpose_a { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if self.transpose_b { (bc, br) } else { (br, bc) };
        if k != kb {
            return Err(Error::mismatch(op, self.a.shape(), self.b.shape()));
        }
        let c_batch = batch_dims(&self.c);
        let want = Shape::new(&[c_batch, &[m, n]].concat())?;
        if self.c.shape() != want {
            return Err(Error::mismatch(op, want, self.c.shape()));
        }
        let a_batch = self.batch_stride(&self.a, m * k)?;
        let b_batch = self.batch_stride(&self.b, k * n)?;
        if overlaps(&self.c, &self.a) || overlaps(&self.c, &self.b) {
            return Err(Error::invalid(op, "the output C overlaps an input"));
        }
        for t in [&self.a, &self.b, &self.c] {
            count_u32(op, t.numel())?;
        }
        Ok(Plan {
            m: count_u32(op, m)?,
            n: count_u32(op, n)?,
            k: count_u32(op, k)?,
            batch: count_u32(op, c_batch.iter().product())?,
            lda: count_u32(op, ac)?,
            ldb: count_u32(op, bc)?,
            a_batch: count_u32(op, a_batch)?,
            b_batch: count_u32(op, b_batch)?,
        })
    }

    /// The kernel and the plan it runs (folded for GEMM).
    fn choose(&self, plan: Plan) -> (MatmulPath, Plan) {
        let folded = plan.folded(self.transpose_a);
        match self.path {
            MatmulPath::Gemv => (MatmulPath::Gemv, plan),
            MatmulPath::Gemm32
            | MatmulPath::Gemm64
            | MatmulPath::Gemm128
            | MatmulPath::Cooperative
            | MatmulPath::SplitK
            | MatmulPath::SplitK64 => (self.path, folded),
            MatmulPath::Auto => {
                if folded.m == 1 {
                    return (MatmulPath::Gemv, folded);
                }
                let ctx = self.a.context();
                let fits = ctx.caps().limits.max_compute_workgroup_storage_size >= self.wide_step().1;
                let wide = u64::from(folded.m.div_ceil(128)) * u64::from(folded.n.div_ceil(128));
                let coop = self.on_coop(folded);
                if (fits || coop)
                    && wide * u64::from(folded.batch) < SPLIT_MAX_TILES
                    && folded.k >= SPLIT_MIN_K
                    && self.split_plan(folded, MatmulPath::SplitK).0 > 1
                {
                    let path =
                        if !coop && folded.k < SPLIT64_MAX_K { MatmulPath::SplitK64 } else { MatmulPath::SplitK };
                    return (path, folded);
                }
                if coop {
                    return (MatmulPath::Cooperative, folded);
                }
                if fits && wide * u64::from(folded.batch) >= WIDE_MIN_TILES {
                    return (MatmulPath::Gemm128, folded);
                }
                let tiles = u64::from(folded.m.div_ceil(64)) * u64::from(folded.n.div_ceil(64));
                if tiles * u64::from(folded.batch) >= LARGE_TILE_MIN_TILES {
                    (MatmulPath::Gemm64, folded)
                } else {
                    (MatmulPath::Gemm32, folded)
                }
            }
        }
    }

    /// Checks that the chosen kernel can run these operands on this adapter.
    fn check_path(&self, path: MatmulPath, plan: Plan) -> Result<()> {
        let op = self.name();
        let ctx = self.a.context();
        match path {
            MatmulPath::Gemv if plan.m != 1 => {
                Err(Error::invalid(op, format!("the GEMV path needs M == 1, got M = {}", plan.m)))
            }
            MatmulPath::SplitK if self.on_coop(plan) => Ok(()),
            MatmulPath::Gemm128 | MatmulPath::SplitK => {
                let (bk, need) = self.wide_step();
                if bk != 8 && bk != 16 {
                    return Err(Error::invalid(op, format!("the K-step must be 8 or 16, got {bk}")));
                }
                if ctx.caps().limits.max_compute_workgroup_storage_size < need {
                    return Err(ctx.unsupported(op, "workgroup storage for the 128 x 128 GEMM's K-step"));
                }
                Ok(())
            }
            MatmulPath::Cooperative => {
                if self.a.dtype() != DType::F16 {
                    return Err(Error::invalid(
                        op,
                        format!("the cooperative-matrix path takes f16 operands, got {}", self.a.dtype()),
                    ));
                }
                if !cooperative_available(ctx) {
                    return Err(ctx.unsupported(op, "EXPERIMENTAL_COOPERATIVE_MATRIX (16x16 f16, 32-wide subgroups)"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Operation for Matmul {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn validate(&self) -> Result<()> {
        let (path, plan) = self.choose(self.plan()?);
        self.check_path(path, plan)
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let (path, plan) = self.choose(self.plan()?);
        self.check_path(path, plan)?;
        let a = encoder.bind(&self.a)?;
        let b = encoder.bind(&self.b)?;
        let c = encoder.bind(&self.c)?;
        let max = encoder.context().caps().limits.max_compute_workgroups_per_dimension.max(1);
        let dtype = self.a.dtype();
        let c_batch = plan.m * plan.n;
        let trans = |t: bool| if t { 1.0 } else { 0.0 };
        let tile = match path {
            MatmulPath::Gemv => {
                if plan.m != 1 {
                    return Err(Error::invalid(self.name(), format!("the GEMV path needs M == 1, got M = {}", plan.m)));
                }
                let params = GemvParams {
                    n: plan.n,
                    k: plan.k,
                    batch: plan.batch,
                    a_off: a.elem_offset(),
                    b_off: b.elem_offset(),
                    c_off: c.elem_offset(),
                    ldb: plan.ldb,
                    a_batch: plan.a_batch,
                    b_batch: plan.b_batch,
                    c_batch,
                    alpha: self.alpha,
                    beta: self.beta,
                };
                // Sizes measured on an H100 (Vulkan): about 16 elements of K per invocation for
                // the [N, K] layout; for [K, N], 32 columns a workgroup where that still gives
                // a thousand workgroups, else 16.
                let (kernel, wg, cols, groups) = if self.transpose_b {
                    let wg = (plan.k / 16).next_power_of_two().clamp(64, 256);
                    (&GEMV_NK, wg, 4, plan.n.div_ceil(4))
                } else {
                    let cols = if plan.n / 32 >= 1024 { 32 } else { 16 };
                    (&GEMV_KN, GEMV_KN_WG, cols, plan.n.div_ceil(cols))
                };
                let overrides = Overrides::new(&[("WG", f64::from(wg)), ("KN_COLS", f64::from(cols))])?;
                let workgroups = [groups.min(max), 1, plan.batch.min(max)];
                return encoder.dispatch(
                    cache,
                    Dispatch { kernel, dtype, overrides, bindings: &[&a, &b, &c], params, workgroups },
                );
            }
            MatmulPath::Gemm32 => 32u32,
            MatmulPath::Gemm64 | MatmulPath::SplitK64 | MatmulPath::Auto => 64u32,
            MatmulPath::Gemm128 | MatmulPath::Cooperative | MatmulPath::SplitK => 128u32,
        };
        let split_path = matches!(path, MatmulPath::SplitK | MatmulPath::SplitK64);
        let (splits, k_chunk) = if split_path { self.split_plan(plan, path) } else { (1, plan.k) };
        let params = GemmParams {
            m: plan.m,
            n: plan.n,
            k: plan.k,
            batch: plan.batch,
            a_off: a.elem_offset(),
            b_off: b.elem_offset(),
            c_off: c.elem_offset(),
            lda: plan.lda,
            ldb: plan.ldb,
            ldc: plan.n,
            a_batch: plan.a_batch,
            b_batch: plan.b_batch,
            c_batch,
            alpha: self.alpha,
            beta: self.beta,
            splits,
            k_chunk,
            part_off: 0,
        };
        // Slots 3 and 4 of the register-blocked and cooperative kernels view A and B as vec4,
        // and a binding must hold one: an operand smaller than a vec4 loads as scalars and
        // lends its slot another operand's binding; where all three are that small (three
        // elements at most), the product runs on the 64-tile kernel.
        let bytes = |t: &Tensor, binding: &TensorBinding| {
            u64::from(binding.elem_offset()) * dtype.size_in_bytes() as u64 + t.size_in_bytes() as u64
        };
        let sizes = [bytes(&self.a, &a), bytes(&self.b, &b), bytes(&self.c, &c)];
        let vec_bytes = 4 * dtype.size_in_bytes() as u64;
        let spare = [&a, &b, &c].into_iter().zip(sizes).find(|&(_, n)| n >= vec_bytes).map(|(t, _)| t);
        let coop = path == MatmulPath::Cooperative || (path == MatmulPath::SplitK && self.on_coop(plan));
        let (path, tile) = match (path, spare) {
            (MatmulPath::Gemm128 | MatmulPath::Cooperative | MatmulPath::SplitK, None) => (MatmulPath::Gemm64, 64),
            (MatmulPath::SplitK, Some(_)) if splits == 1 && coop => (MatmulPath::Cooperative, tile),
            (MatmulPath::SplitK, Some(_)) if splits == 1 => (MatmulPath::Gemm128, tile),
            (MatmulPath::SplitK64, _) if splits == 1 => (MatmulPath::Gemm64, tile),
            _ => (path, tile),
        };
        let split_path = matches!(path, MatmulPath::SplitK | MatmulPath::SplitK64);
        let split = if split_path { 1.0 } else { 0.0 };
        let a4 = if sizes[0] >= vec_bytes { &a } else { spare.unwrap_or(&a) };
        let b4 = if sizes[1] >= vec_bytes { &b } else { spare.unwrap_or(&b) };
        // vec4 loads where the operand's offset and strides are multiples of 4 — except for a
        // transposed B: on an H100 its vec4 loads (along K, stored transposed) ran 10-30% slower
        // than scalar ones, while A's (also along K) and B's along N ran up to 12% faster.
        let vec = |off: u32, ld: u32, batch: u32, bytes: u64| {
            let on = self.vector_loads && [off, ld, batch].iter().all(|v| v.is_multiple_of(4)) && bytes >= vec_bytes;
            if on { 1.0 } else { 0.0 }
        };
        let transposes = [("TRANS_A", trans(self.transpose_a)), ("TRANS_B", trans(self.transpose_b))];
        let (kernel, overrides) = match path {
            MatmulPath::Cooperative | MatmulPath::SplitK if coop => {
                let a_vec = vec(params.a_off, plan.lda, plan.a_batch, sizes[0]);
                let b_vec = vec(params.b_off, plan.ldb, plan.b_batch, sizes[1]);
                let both = if a_vec > 0.0 && b_vec > 0.0 { 1.0 } else { 0.0 };
                (&GEMM_COOP, Overrides::new(&[transposes[0], transposes[1], ("VEC", both), ("SPLIT", split)])?)
            }
            MatmulPath::Gemm128 | MatmulPath::SplitK => {
                let overrides = Overrides::new(&[
                    ("SPLIT", split),
                    transposes[0],
                    transposes[1],
                    ("BK", f64::from(self.wide_step().0)),
                    ("VEC_A", vec(params.a_off, plan.lda, plan.a_batch, sizes[0])),
                    ("VEC_B", if self.transpose_b { 0.0 } else { vec(params.b_off, plan.ldb, plan.b_batch, sizes[1]) }),
                ])?;
                (if self.checked { &GEMM_WIDE_CHECKED } else { &GEMM_WIDE }, overrides)
            }
            _ => {
                let wg = (tile / GEMM_BLOCK) * (tile / GEMM_BLOCK);
                let overrides = Overrides::new(&[
                    ("WG", f64::from(wg)),
                    ("BM", f64::from(tile)),
                    ("BK", f64::from(GEMM_BK)),
                    transposes[0],
                    transposes[1],
                    ("SPLIT", split),
                ])?;
                (if self.checked { &GEMM_CHECKED } else { &GEMM }, overrides)
            }
        };
        let items = plan.batch.checked_mul(if split_path { splits } else { 1 });
        let items = items.ok_or_else(|| Error::invalid(self.name(), "too many K slices"))?;
        let workgroups = [plan.n.div_ceil(tile).min(max), plan.m.div_ceil(tile).min(max), items.min(max)];
        match path {
            MatmulPath::SplitK | MatmulPath::SplitK64 => {
                let count = count_u32(self.name(), (plan.batch as usize) * (c_batch as usize))?;
                let total = (count as usize).checked_mul(splits as usize);
                let total = total.ok_or_else(|| Error::invalid(self.name(), "split-K scratch too large"))?;
                count_u32(self.name(), total)?;
                let scratch = Tensor::empty(self.a.runtime(), [total.max(1)], DType::F32)?;
                let part = encoder.bind(&scratch)?;
                let params = GemmParams { part_off: part.elem_offset(), ..params };
                let six = [&a, &b, &c, a4, b4, &part];
                let four = [&a, &b, &c, &part];
                let bindings = if path == MatmulPath::SplitK64 { &four[..] } else { &six[..] };
                encoder.dispatch(cache, Dispatch { kernel, dtype, overrides, bindings, params, workgroups })?;
                let reduce = ReduceParams {
                    count,
                    splits,
                    part_off: part.elem_offset(),
                    c_off: c.elem_offset(),
                    alpha: self.alpha,
                    beta: self.beta,
                };
                dispatch_reduce(encoder, cache, dtype, &part, &c, reduce)
            }
            MatmulPath::Gemm128 | MatmulPath::Cooperative => {
                // The partial-sum slot is not accessed without SPLIT: C fills it.
                let bindings = [&a, &b, &c, a4, b4, &c];
                encoder.dispatch(cache, Dispatch { kernel, dtype, overrides, bindings: &bindings, params, workgroups })
            }
            _ => encoder.dispatch(
                cache,
                Dispatch { kernel, dtype, overrides, bindings: &[&a, &b, &c, &c], params, workgroups },
            ),
        }
    }
}

impl Tensor {
    fn matmul_with(&self, other: &Tensor, transpose_b: bool) -> Result<Tensor> {
        const OP: &str = "matmul";
        if !self.runtime().same(other.runtime()) {
            return Err(Error::invalid(OP, "tensors belong to different runtimes"));
        }
        let (m, _) = matrix_dims(OP, self)?;
        let (br, bc) = matrix_dims(OP, other)?;
        let n = if transpose_b { br } else { bc };
        let (a_batch, b_batch) = (batch_dims(self), batch_dims(other));
        let single = |dims: &[usize]| dims.iter().product::<usize>() == 1;
        let longer = if a_batch.len() >= b_batch.len() { a_batch } else { b_batch };
        let batch = match (single(a_batch), single(b_batch)) {
            (true, true) => longer,
            (true, false) => b_batch,
            (false, true) => a_batch,
            (false, false) if strip_ones(a_batch) == strip_ones(b_batch) => longer,
            (false, false) => return Err(Error::mismatch(OP, self.shape(), other.shape())),
        };
        let out = Tensor::empty(self.runtime(), [batch, &[m, n]].concat(), self.dtype())?;
        self.runtime().record(&Matmul::new(self, other, &out)?.transpose_b(transpose_b))?;
        Ok(out)
    }

    /// The matrix product `self · other` in a new tensor: `self` is `[..batch, M, K]`, `other`
    /// `[..batch, K, N]`, the result `[..batch, M, N]`. Either operand may hold a single
    /// matrix (rank 2, or batch dimensions all ones) that multiplies every batch item of the
    /// other. Float dtypes only, the same for both; f32 accumulation.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.matmul_with(other, false)
    }

    /// `self · otherᵀ` in a new tensor, with `other` stored `[..batch, N, K]` (a linear layer's
    /// `[out_features, in_features]` weight); otherwise like [`matmul`](Self::matmul).
    pub fn matmul_t(&self, other: &Tensor) -> Result<Tensor> {
        self.matmul_with(other, true)
    }
}
