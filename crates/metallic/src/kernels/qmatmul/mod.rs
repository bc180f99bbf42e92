//! Quantized weights on the GPU: a [`QuantMatrix`] keeps GGML's blocks (Q4_0 ... Q8_0, the
//! K-quants Q2_K ... Q6_K, IQ4_NL and IQ4_XS, or f32/f16/bf16) in GPU memory, and [`QMatmul`]
//! multiplies by it, decoding the blocks in registers with f32 accumulation; [`QEmbedding`]
//! gathers and decodes rows of a quantized table.
//!
//! Two matmul kernels: a GEMV for a few rows of x (`gemv.wgsl`, decode: each workgroup four
//! weight rows, its invocations on consecutive blocks of 32 weights, so each weight is read
//! once per row of x) and a tiled GEMM for many (`gemm.wgsl`, prefill: 64 x 64 output tiles,
//! W decoded into workgroup memory a 64 x 32 tile at a time). Both share the decoder in
//! `common.wgsl`. Where the adapter has cooperative matrices (tensor cores: 16 x 16 f16 with
//! f32 accumulators, 32-wide subgroups), the GEMM runs on them instead (`gemm_coop.wgsl`:
//! 128 x 128 tiles of eight subgroups, x and the decoded weights rounded to f16 in workgroup
//! memory, as llama.cpp's Vulkan prefill rounds them). The K-quants Q4_K, Q5_K, Q6_K take the word GEMV (`gemv_sb.wgsl`: a few
//! lanes per super-block reading adjacent words, x kept in registers for the workgroup's rows,
//! quants turned into f32 without conversion instructions), 3-4x the block GEMV's speed at 8B
//! shapes on an H100; so do Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (blocks of 32, one word per lane;
//! whole decode steps 9-31% faster than on the block GEMV). CPU adapters get a third, the row GEMV (`gemv_rows.wgsl`: each invocation two
//! whole rows, a block of 32 weights at a time, no workgroup memory or barrier), for up to 32
//! rows of x.
//!
//! Why a CPU needs its own: llvmpipe runs a workgroup's invocations as the SIMD lanes of one
//! thread and (Mesa 22) turns every storage load whose address differs between lanes into a
//! loop over the lanes, one bounds-checked scalar load each, and every barrier into a
//! coroutine switch. The GEMV's invocations spread over K load x and the weights scalar by
//! scalar (11 loads per 8 Q8_0 weights) and reduce through workgroup memory; the row GEMV
//! reads x as vec4s once per block for two rows and each block's scale once (about 2.5 loads
//! per 8 weights). On llvmpipe with 2 (shared) cores, Gemma 3 270M's Q8_0 output projection
//! (`[1, 640] x [262144, 640]ᵀ`) went from 1.8 s to 0.13 s, its layers' matrices from 15-20 ms
//! to 0.7-2 ms each, and a decode step from 2.9 s of CPU time to 0.42 s (0.3 tokens/s to 1.5-4.8
//! depending on the host's load).
//!
//! Measured on an H100 (Vulkan, first version): the `[1, 640] x [262144, 640]ᵀ` Q8_0 GEMV
//! (Gemma 3's output projection, 178 MB) in 206 us, about 30% of copy bandwidth and level with
//! the f32 GEMV on a matrix 3.8 times larger (228 us); `[1, 2048] x [2048, 2048]ᵀ` in 10-12 us
//! (Q8_0, Q4_K, Q6_K); shapes of a few MB are launch-bound (6-10 us, as the f32 GEMV). The
//! Q8_0 GEMM matches the f32 GEMM of the same shape (`[512, 640] x [2048, 640]ᵀ`: 118 us).
//!
//! ## GPU layout
//!
//! The matrix is `[N, K]` (N rows of K weights, GGUF's layout), uploaded as one or more
//! u32 tensors ("parts"), each a range of whole rows no larger than the adapter's storage
//! binding limit (128 MiB on lavapipe; Gemma 3's 178 MB Q8_0 embedding takes two), one
//! dispatch per part. Each row is its blocks in order, each block repacked so that every
//! field sits on a 4-byte boundary (f16 fields share a word, low half first; padding is zero):
//!
//! | type | words | order |
//! |------|-------|-------|
//! | Q4_0 | 5 | `qs[16]`, `d` |
//! | Q4_1 | 5 | `qs[16]`, `d m` |
//! | Q5_0 | 6 | `qs[16]`, `qh`, `d` |
//! | Q5_1 | 6 | `qs[16]`, `qh`, `d m` |
//! | Q8_0 | 9 | `qs[32]`, `d` |
//! | IQ4_NL | 5 | `qs[16]`, `d` |
//! | Q2_K | 21 | GGML's: `scales[16]`, `qs[64]`, `d dmin` |
//! | Q3_K | 28 | GGML's 110 bytes (`hmask[32]`, `qs[64]`, `scales[12]`, `d`) and 2 of padding |
//! | Q4_K | 36 | GGML's: `d dmin`, `scales[12]`, `qs[128]` |
//! | Q5_K | 44 | GGML's: `d dmin`, `scales[12]`, `qh[32]`, `qs[128]` |
//! | Q6_K | 53 | GGML's 210 bytes (`ql[128]`, `qh[64]`, `scales[16]`, `d`) and 2 of padding |
//! | IQ4_XS | 34 | GGML's: `d scales_h`, `scales_l[4]`, `qs[128]` |
//! | F32 | 1 per weight | |
//! | F16, BF16 | 1 per 2 weights | row padded to a whole word |
//!
//! Padding costs Q4_0 and IQ4_NL 11%, Q5_0 9%, Q8_0 6% more bytes than the file; the K-quants
//! and IQ4_XS none (Q3_K 2%, Q6_K 1%).
//!
//! ```
//! use metallic::{kernels::qmatmul::QuantMatrix, quant::QuantType, Runtime, Tensor};
//! let rt = Runtime::new()?;
//! // A 2 x 32 Q8_0 matrix: rows of one block, d = 1 (f16 0x3C00) and q = 1 ..= 32, then -1.
//! let mut bytes = vec![0x00, 0x3C];
//! bytes.extend(1..=32u8);
//! bytes.extend([0x00, 0x3C]);
//! bytes.extend([0xFFu8; 32]);
//! let w = QuantMatrix::from_bytes(&rt, QuantType::Q8_0, 2, 32, &bytes)?;
//! let x = Tensor::ones(&rt, [1, 32], metallic::DType::F32)?;
//! assert_eq!(x.qmatmul(&w)?.to_vec::<f32>()?, [528.0, -32.0]);
//! let ids = Tensor::from_slice(&rt, [1], &[1u32])?;
//! assert_eq!(w.embedding(&ids)?.to_vec::<f32>()?, vec![-1.0; 32]);
//! # Ok::<(), metallic::Error>(())
//! ```

use crate::Runtime;
use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::gated::GatedAct;
use crate::kernels::matmul::cooperative_available;
use crate::kernels::{LINEAR_WG, check_dtype, check_float, check_same_device, count_u32};
use crate::quant::QuantType;
use crate::tensor::{DType, MAX_DIMS, Shape, Tensor};

pub(crate) mod q8;
pub use q8::QuantizeQ8;

pub(crate) static GEMV: Kernel = Kernel {
    name: "qmatmul_gemv",
    source: concat!(
        include_str!("gemv.wgsl"),
        include_str!("gemv_x_common.wgsl"),
        include_str!("common.wgsl"),
        include_str!("../unary/unary_common.wgsl")
    ),
    entry: "main",
    bindings: 5,
};
pub(crate) static GEMV_SB: Kernel = Kernel {
    name: "qmatmul_gemv_sb",
    source: concat!(
        include_str!("gemv_sb.wgsl"),
        include_str!("gemv_units_common.wgsl"),
        include_str!("gemv_x_common.wgsl"),
        include_str!("common.wgsl"),
        include_str!("../unary/unary_common.wgsl")
    ),
    entry: "main",
    bindings: 5,
};
pub(crate) static ROW_GEMV: Kernel = Kernel {
    name: "qmatmul_gemv_rows",
    source: concat!(include_str!("gemv_rows.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static GEMM: Kernel = Kernel {
    name: "qmatmul_gemm",
    source: concat!(include_str!("gemm.wgsl"), include_str!("gemm_common.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 3,
};
pub(crate) static GEMM_COOP: Kernel = Kernel {
    name: "qmatmul_gemm_coop",
    source: concat!(include_str!("gemm_coop.wgsl"), include_str!("gemm_common.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 4,
};
pub(crate) static EMBED: Kernel = Kernel {
    name: "qembedding",
    source: concat!(include_str!("embed.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 3,
};

const OP: &str = "qmatmul";
const EMBED_OP: &str = "qembedding";
/// Up to this many rows of x, [`QMatmulPath::Auto`] takes the GEMV (each weight read once per
/// row of x); from there on, the GEMM.
const GEMV_MAX_M: usize = 4;
/// On a CPU adapter, up to this many rows of x [`QMatmulPath::Auto`] takes the row GEMV
/// (where it applies): it reads the weights once per row of x, but the GEMM's workgroup
/// memory and barriers cost a CPU more until x has a few dozen rows. On llvmpipe (2 cores),
/// Gemma 3 270M's layer shapes at M = 32: Q5_0 4096 x 640 45 ms (GEMM 115), Q6_K 640 x 2048
/// 49 (60), Q4_K 640 x 1024 19 (32); at M = 64 the GEMM wins on Q6_K (32 ms against 60).
const GEMV_ROWS_MAX_M: usize = 32;
/// Invocations per workgroup of the row GEMV (each two rows); 8 to 256 measured the same on
/// llvmpipe.
const GEMV_ROWS_WG: u32 = 32;
/// Output rows per GEMV workgroup (`ROWS` in `gemv.wgsl`).
const GEMV_ROWS: u32 = 4;
/// Rows of x one GEMV workgroup multiplies at most (`MAX_MB` in `gemv.wgsl`): each decoded
/// weight serves this many rows, so a batched decode step of up to 8 sequences reads the
/// weights once.
const GEMV_MAX_MB: u32 = 8;
/// Weights per GEMV work item (`UNIT` in `gemv.wgsl`): 32, a block with its scale read once and
/// eight independent loads of quants, or 8, a group (more items, less work each).
const GEMV_UNIT: u32 = 32;
/// Invocations the GEMV aims to keep busy in all: a decode step's small matrices (a few
/// thousand rows) are too few workgroups to fill a large GPU at the large matrices' size.
const GEMV_TARGET_THREADS: u32 = 1 << 16;

/// The GEMV's workgroup size for `n` rows of `per_row` work items of `unit` weights: about
/// three blocks of 32 (or ten groups of 8) per invocation where there are rows enough (on an
/// H100, Vulkan, the 262144 x 640 Q8_0 GEMV of groups of 8 ran 206 us with ten groups per
/// invocation, 238 with five, 513 with 1.25), more invocations per workgroup where there are
/// few workgroups, 32 to 256.
fn gemv_workgroup(n: u32, per_row: u32, unit: u32) -> u32 {
    let items = GEMV_ROWS * per_row;
    let by_items = (items / if unit == 8 { 10 } else { 3 }).max(1).next_power_of_two();
    let workgroups = n.div_ceil(GEMV_ROWS).max(1);
    let by_occupancy = (GEMV_TARGET_THREADS / workgroups).max(1).next_power_of_two().min(items.next_power_of_two());
    by_items.max(by_occupancy).clamp(32, 256)
}
/// Lanes per super-block of the word GEMV (`LANES` in `gemv_sb.wgsl`) for the K-quants, 4 or
/// 8, above `GEMV_SB_SMALL_N` rows: on an H100,
/// 4 were 5-10% faster than 8 on every Q4_K shape of an 8B model and the same on Q6_K
/// (docs/PERFORMANCE.md, 2026-12-06); 8 rows per workgroup instead of 4 were 1.4-1.8x slower.
const GEMV_SB_LANES: u32 = 4;

/// Up to this many rows the word GEMV runs 8 lanes per K-quant super-block and 2 rows per
/// workgroup (more workgroups for a small matrix): on an H100 the 1024 x 4096 and 2048 x 2048
/// products (an 8B model's `k` and `v`, a 1B model's attention) took 5.3-5.7 us against
/// 6.5-7.6 with 4 lanes and 4 rows; from 4096 rows on, 4 and 4 were faster.
const GEMV_SB_SMALL_N: u32 = 2048;

/// The lane counts per unit the word GEMV (`gemv_sb.wgsl`) runs weights of this type with, and
/// the weights of a unit; `None`: the type takes the block GEMV. On an H100 (2026-12-07) the
/// blocks of 32 on it made whole decode steps faster than on the block GEMV: Qwen2.5 0.5B
/// (Q5_0 and Q8_0) 540 -> 707 tokens/s, SmolLM2 (Q4_1) +9-16%, Gemma 3 (Q5_0, Q8_0) +9%.
fn gemv_sb_lanes(ty: QuantType) -> Option<(&'static [u32], u32)> {
    match ty {
        QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => Some((&[4, 8], 256)),
        QuantType::Q8_0 => Some((&[8], 32)),
        QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 => Some((&[4], 32)),
        _ => None,
    }
}

/// The word GEMV's workgroup size for rows of `supers` units of `lanes` lanes each:
/// of the multiples of 32 up to 256, one that leaves the fewest lanes idle over its passes
/// along a row, the largest of those (rows of 4096 weights: 128, one pass; of 14336: 224, two).
fn gemv_sb_workgroup(supers: u32, lanes: u32) -> u32 {
    let need = supers.saturating_mul(lanes).max(1);
    (1..=8u32).map(|i| 32 * i).min_by_key(|&wg| (need.div_ceil(wg) * wg, std::cmp::Reverse(wg))).unwrap_or(256)
}

/// A GEMV kernel and how to run it ([`QMatmul::gemv_kernel`]).
struct GemvChoice {
    kernel: &'static Kernel,
    wg: u32,
    /// Outputs per workgroup.
    rows: u32,
    /// The kernel's own overrides, the first `variants` of them.
    variant: [(&'static str, f64); 2],
    variants: usize,
}

/// Output tile of the GEMM (`BM`, `BN` in `gemm.wgsl`).
const GEMM_TILE: u32 = 64;

/// Output tiles of the cooperative GEMM (`gemm_coop.wgsl`): rows of x x weight rows, each a
/// grid of subgroups computing 64 x 32 apiece.
const COOP_TILES: [(u32, u32); 4] = [(64, 64), (64, 128), (128, 64), (128, 128)];

/// The cooperative GEMM's tile for `m` rows of x: 128 x 128, or 128 x 64 for up to 128 rows.
/// Measured on an H100 (docs/PERFORMANCE.md, 2026-12-07, session 15): at 512 rows of x the
/// 128 x 128 tile was the fastest of the four, or within 6% (128 x 64 on a Q6_K product), on
/// every product from `[512, 576] x [576, 576]ᵀ` (20 workgroups) to `[512, 4096] x [14336,
/// 4096]ᵀ`, 1.2-5x the 64 x 64 one; at 32 to 128 rows 128 x 64 was (`[32, 4096] x [4096,
/// 4096]ᵀ`: 175 us against 194 and 254). A tile's eight or four subgroups each keep 4 x 2
/// accumulators, so larger tiles hide more of each K-step's latency than they lose to rows
/// past m.
fn coop_tile(m: u32) -> (u32, u32) {
    if m > 128 { (128, 128) } else { (128, 64) }
}

/// Workgroups the cooperative GEMM's split of K aims for (an H100 has 132 SMs).
const COOP_SPLIT_TARGET: u32 = 256;
/// Fewest weights of a row one split takes (four K-steps).
const COOP_SPLIT_MIN_CHUNK: u32 = 128;
/// Most splits of K.
const COOP_SPLIT_MAX: u32 = 16;

/// Splits of K for the cooperative GEMM over `tiles` output tiles of rows of `k` weights, and
/// the weights each takes (a multiple of the K-step, 32): enough for about
/// [`COOP_SPLIT_TARGET`] workgroups, splits of at least [`COOP_SPLIT_MIN_CHUNK`] weights.
/// Profiled on an H100 (docs/PERFORMANCE.md, 2026-12-08): a 20-token prompt of SmolLM2 ran
/// its products at 20 rows of x as 9 to 48 workgroups of 58 to 43 us each — one workgroup's
/// walk along K was the whole latency.
fn coop_splits(tiles: u32, k: u32) -> (u32, u32) {
    let want = COOP_SPLIT_TARGET.div_ceil(tiles.max(1)).min(k / COOP_SPLIT_MIN_CHUNK).clamp(1, COOP_SPLIT_MAX);
    split_chunk(want, k)
}

/// `splits` splits of `k` weights: the chunk (a multiple of 32) and how many chunks that makes.
fn split_chunk(splits: u32, k: u32) -> (u32, u32) {
    let chunk = k.div_ceil(splits.max(1)).next_multiple_of(32).max(32);
    (k.div_ceil(chunk).max(1), chunk)
}

/// Words one block takes on the GPU and the byte ranges of the GGML block in GPU order (the
/// quantized types; the float types are laid out per row).
fn block_layout(ty: QuantType) -> Option<(usize, &'static [(usize, usize)])> {
    Some(match ty {
        QuantType::Q4_0 => (5, &[(2, 18), (0, 2)]),
        QuantType::Q4_1 => (5, &[(4, 20), (0, 4)]),
        QuantType::Q5_0 => (6, &[(6, 22), (2, 6), (0, 2)]),
        QuantType::Q5_1 => (6, &[(8, 24), (4, 8), (0, 4)]),
        QuantType::Q8_0 => (9, &[(2, 34), (0, 2)]),
        QuantType::IQ4NL => (5, &[(2, 18), (0, 2)]),
        QuantType::Q2K => (21, &[(0, 84)]),
        QuantType::Q3K => (28, &[(0, 110)]),
        QuantType::Q4K => (36, &[(0, 144)]),
        QuantType::Q5K => (44, &[(0, 176)]),
        QuantType::Q6K => (53, &[(0, 210)]),
        QuantType::IQ4XS => (34, &[(0, 136)]),
        _ => return None,
    })
}

/// Words a row of `cols` weights takes on the GPU.
fn row_words(ty: QuantType, cols: usize) -> Option<usize> {
    match ty {
        QuantType::F32 => Some(cols),
        QuantType::F16 | QuantType::BF16 => Some(cols.div_ceil(2)),
        _ => block_layout(ty).and_then(|(words, _)| (cols / ty.block_elems()).checked_mul(words)),
    }
}

/// Repacks `rows` (each `row_bytes` in GGML's layout) into `dst` (the same rows in the GPU
/// layout, `words` each, padding zeroed), which they must fill exactly.
fn repack<'a>(
    ty: QuantType,
    rows: impl Iterator<Item = &'a [u8]>,
    row_bytes: usize,
    mut dst: wgpu::WriteOnly<'_, [u8]>,
    words: usize,
) -> Result<()> {
    let bad = || Error::invalid("QuantMatrix", "repacking ran out of bounds");
    let (bb, layout) = (ty.block_bytes(), block_layout(ty));
    if let Some((block_words, segments)) = layout
        && segments.iter().map(|&(start, end)| end - start).sum::<usize>() > block_words * 4
    {
        return Err(bad());
    }
    for row in rows {
        let mut out = dst.split_off(..words * 4).ok_or_else(bad)?;
        match layout {
            // The GPU's blocks are GGML's (Q4_K: 144 bytes, 36 words): one copy per row.
            Some((block_words, &[(0, end)])) if end == bb && bb == block_words * 4 => {
                out.split_off(..row_bytes).ok_or_else(bad)?.copy_from_slice(row);
            }
            Some((block_words, segments)) => {
                for block in row.chunks_exact(bb) {
                    let mut out = out.split_off(..block_words * 4).ok_or_else(bad)?;
                    for &(start, end) in segments {
                        let from = block.get(start..end).ok_or_else(bad)?;
                        out.split_off(..from.len()).ok_or_else(bad)?.copy_from_slice(from);
                    }
                    out.fill(0);
                }
            }
            None => out.split_off(..row_bytes).ok_or_else(bad)?.copy_from_slice(row),
        }
        out.fill(0);
    }
    if dst.is_empty() { Ok(()) } else { Err(bad()) }
}

/// Rows `first..first + count` of a matrix whose rows lie in `pieces`, in order.
fn rows_of<'a>(
    pieces: &'a [&'a [u8]],
    row_bytes: usize,
    first: usize,
    count: usize,
) -> impl Iterator<Item = &'a [u8]> + Send + 'a {
    pieces.iter().flat_map(move |p| p.chunks_exact(row_bytes)).skip(first).take(count)
}

/// Bytes each thread repacking a part should have at least: below it, starting a thread costs
/// more than the copy it takes over.
const REPACK_BYTES_PER_THREAD: usize = 4 << 20;

/// Most threads repacking one part (memory bandwidth, not cores, bounds the copy beyond it).
const REPACK_THREADS: usize = 8;

/// Repacks rows `first..first + count` of `pieces` into `dst` ([`repack`]), on several threads
/// when the part is large (each writing its own range): loading a model is mostly this copy,
/// and one core does not reach the memory's bandwidth.
fn repack_rows(
    ty: QuantType,
    pieces: &[&[u8]],
    row_bytes: usize,
    (first, count): (usize, usize),
    dst: &Tensor,
    words: usize,
) -> Result<()> {
    let row_out = words * 4;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(REPACK_THREADS).min(count * row_out / REPACK_BYTES_PER_THREAD).max(1);
    let per_thread = count.div_ceil(threads);
    let share = |start: usize| {
        let n = per_thread.min(count - start);
        let rows = rows_of(pieces, row_bytes, first + start, n);
        dst.write_with(start * row_out..(start + n) * row_out, |out| repack(ty, rows, row_bytes, out, words))
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> =
            (per_thread..count).step_by(per_thread).map(|start| scope.spawn(move || share(start))).collect();
        // The first share on this thread.
        let first = share(0);
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(Error::invalid("QuantMatrix", "a repacking thread panicked"))))
            .chain([first])
            .collect()
    })
}

/// A range of whole rows of a [`QuantMatrix`] in one u32 tensor.
#[derive(Debug, Clone)]
struct Part {
    words: Tensor,
    row0: usize,
    rows: usize,
}

/// An `[N, K]` weight matrix of one [`QuantType`] in GPU memory, in GGML's blocks repacked to
/// word boundaries (the module documentation gives the layout), split into parts of whole rows
/// that each fit one storage binding. Cloning shares the GPU memory.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    row_words: usize,
    parts: Vec<Part>,
}

impl QuantMatrix {
    /// Uploads `rows` rows of `cols` weights of type `ty`, `bytes` in GGML's layout (a GGUF
    /// tensor's data: each row `cols / block_elems` blocks).
    ///
    /// Fails with [`Error::InvalidArgument`] for a type without kernels
    /// ([`QuantType::has_kernels`]), an empty matrix, a byte length other than the matrix's, or
    /// a row larger than one storage binding, and with [`Error::InvalidShape`] when `cols` is
    /// not a whole number of blocks.
    pub fn from_bytes(rt: &Runtime, ty: QuantType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        Self::from_pieces_split(rt, ty, rows, cols, &[bytes], usize::MAX)
    }

    /// [`from_bytes`](Self::from_bytes) for a matrix whose rows lie in several slices, in order,
    /// each a whole number of rows (one layer's q, k and v stacked into one matrix), without
    /// joining them into one copy first.
    pub fn from_pieces(rt: &Runtime, ty: QuantType, rows: usize, cols: usize, pieces: &[&[u8]]) -> Result<Self> {
        Self::from_pieces_split(rt, ty, rows, cols, pieces, usize::MAX)
    }

    /// [`from_bytes`](Self::from_bytes) with at most `max_part_rows` rows per part, to exercise
    /// the split into parts cheaply in tests.
    #[doc(hidden)]
    pub fn from_bytes_split(
        rt: &Runtime,
        ty: QuantType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        max_part_rows: usize,
    ) -> Result<Self> {
        Self::from_pieces_split(rt, ty, rows, cols, &[bytes], max_part_rows)
    }

    /// [`from_pieces`](Self::from_pieces) with at most `max_part_rows` rows per part.
    #[doc(hidden)]
    pub fn from_pieces_split(
        rt: &Runtime,
        ty: QuantType,
        rows: usize,
        cols: usize,
        pieces: &[&[u8]],
        max_part_rows: usize,
    ) -> Result<Self> {
        const WHAT: &str = "QuantMatrix";
        if !ty.has_kernels() {
            return Err(Error::invalid(WHAT, format!("no GPU kernels for {ty}")));
        }
        if rows == 0 || cols == 0 {
            return Err(Error::invalid(WHAT, format!("an empty matrix ({rows} x {cols})")));
        }
        let row_bytes = ty.bytes_for(cols).ok_or_else(|| {
            Error::shape(
                WHAT,
                format!("{cols} weights per row are not whole {ty} blocks ({} weights)", ty.block_elems()),
            )
        })?;
        let want = row_bytes.checked_mul(rows).ok_or_else(|| Error::invalid(WHAT, "the matrix size overflows"))?;
        let got: usize = pieces.iter().map(|p| p.len()).sum();
        if got != want {
            return Err(Error::invalid(WHAT, format!("{rows} x {cols} {ty} takes {want} bytes, got {got}")));
        }
        if let Some(p) = pieces.iter().find(|p| !p.len().is_multiple_of(row_bytes)) {
            return Err(Error::invalid(
                WHAT,
                format!("a piece of {} bytes is not whole rows of {row_bytes} bytes", p.len()),
            ));
        }
        count_u32(WHAT, cols)?;
        count_u32(WHAT, rows)?;
        let words = row_words(ty, cols).ok_or_else(|| Error::invalid(WHAT, format!("no GPU layout for {ty}")))?;
        let limits = &rt.context().caps().limits;
        let limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size).min(u64::from(u32::MAX));
        let row_size = words as u64 * 4;
        if row_size > limit {
            return Err(Error::invalid(
                WHAT,
                format!("a row of {row_size} bytes exceeds the {limit}-byte binding limit"),
            ));
        }
        let part_rows = usize::try_from(limit / row_size).unwrap_or(usize::MAX).min(max_part_rows).max(1);
        let mut parts = Vec::with_capacity(rows.div_ceil(part_rows));
        let mut row0 = 0;
        while row0 < rows {
            let n = part_rows.min(rows - row0);
            let part = Tensor::empty(rt, [n * words], DType::U32)?;
            repack_rows(ty, pieces, row_bytes, (row0, n), &part, words)?;
            parts.push(Part { words: part, row0, rows: n });
            row0 += n;
        }
        Ok(QuantMatrix { ty, rows, cols, row_words: words, parts })
    }

    /// The weight type.
    pub fn quant_type(&self) -> QuantType {
        self.ty
    }

    /// Rows (N: output features of a linear layer, or the vocabulary of a table).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Weights per row (K: input features, or the embedding width).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// How many parts (storage bindings) hold the rows.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Bytes of GPU memory the matrix takes.
    pub fn size_in_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.words.size_in_bytes()).sum()
    }

    /// The runtime the matrix was uploaded through.
    pub fn runtime(&self) -> Option<&Runtime> {
        self.parts.first().map(|p| p.words.runtime())
    }

    /// Groups of 8 weights per row.
    fn groups(&self) -> usize {
        self.cols.div_ceil(8)
    }

    fn words(&self) -> Vec<&Tensor> {
        self.parts.iter().map(|p| &p.words).collect()
    }

    fn overrides(&self, wg: u32) -> Result<Overrides> {
        Overrides::new(&[("WG", f64::from(wg)), ("QTYPE", f64::from(self.ty.ggml_id()))])
    }

    /// Gathers and decodes the rows at `ids` (u32, any shape) into a new f32 tensor of shape
    /// `ids.shape + [cols]`; see [`QEmbedding`].
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        self.embedding_as(ids, DType::F32)
    }

    /// [`embedding`](Self::embedding) into a tensor of the float dtype `dtype`.
    pub fn embedding_as(&self, ids: &Tensor, dtype: DType) -> Result<Tensor> {
        if self.runtime().is_some_and(|rt| !rt.same(ids.runtime())) {
            return Err(Error::invalid(EMBED_OP, "tensors belong to different runtimes"));
        }
        check_dtype(EMBED_OP, DType::U32, ids)?;
        let out = Tensor::empty(ids.runtime(), embed_shape(ids, self.cols)?, dtype)?;
        ids.runtime().record(&QEmbedding::new(self, ids, &out)?)?;
        Ok(out)
    }
}

/// Which kernel a [`QMatmul`] runs; [`QMatmulPath::Auto`] outside tests and tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QMatmulPath {
    /// The GEMV up to 4 rows of x, else the GEMM (on cooperative matrices where the adapter
    /// has them); on a CPU adapter the row GEMV up to 32 rows of x where it applies.
    #[default]
    Auto,
    /// The GEMV: each workgroup 4 outputs of one row of x, weights decoded in registers.
    Gemv,
    /// The GEMM: 64 x 64 output tiles, weights decoded into workgroup memory.
    Gemm,
    /// The GEMM on cooperative matrices (tensor cores): 128 x 128 output tiles (128 x 64 up
    /// to 128 rows of x), x and the decoded weights rounded to f16 in workgroup memory, f32
    /// accumulation. Where
    /// [`cooperative_available`] (Auto takes it there instead of [`QMatmulPath::Gemm`];
    /// `METALLIC_DISABLE=coopmat` turns it off); elsewhere recording it returns
    /// [`Error::Unsupported`].
    Cooperative,
    /// The row GEMV for CPU adapters: each invocation two whole weight rows, a block of 32
    /// weights at a time, no workgroup memory or barrier. Needs K a multiple of 32 and x
    /// starting on a 4-element boundary (a misaligned x fails with
    /// [`Error::InvalidArgument`] when this path is forced; `Auto` then takes the GEMV).
    GemvRows,
    /// Experimental, never chosen by `Auto`: x quantized to signed bytes in blocks of 32 (an
    /// f32 scale `max|x| / 127` each; [`QuantizeQ8`]) by one dispatch, then a GEMV that
    /// multiplies four weights at a time with packed integer dot products (`dot4I8Packed`).
    /// It trades x's precision (each element rounded to its block's 8-bit grid, an error of up
    /// to `max|x| / 254` per element) for a quarter of x's bytes and a quarter of the
    /// arithmetic per weight. Weights Q4_K, Q5_K, Q6_K, Q8_0, Q4_0; no gate, norm or
    /// accumulation (other types and those fail with [`Error::InvalidArgument`]). The op owns
    /// the scratch tensor of quantized x (allocated when the path is set).
    GemvQ8,
}

/// `y = x · Wᵀ` with `W` a [`QuantMatrix`] (`[N, K]`): `x` is `[.., K]` (f32 or f16), `y`
/// `[.., N]` of `x`'s dtype; the weights are decoded on the fly, products accumulate in f32.
/// `y` is only written (its old contents do not matter; [`QMatmul::accumulate`] adds to them)
/// and must not overlap `x`. [`QMatmul::rms_norm`] reads x through an RMS norm.
///
/// [`QMatmul::gated`] reads x through a gate: `y = (act(a) * b) · Wᵀ` with `a`, `b` the halves
/// of x's rows (an MLP's down projection with its gated activation fused in).
#[derive(Debug, Clone)]
pub struct QMatmul {
    x: Tensor,
    w: QuantMatrix,
    y: Tensor,
    path: QMatmulPath,
    /// Workgroup size of the GEMV; `None`: chosen from K.
    gemv_wg: Option<u32>,
    /// Weights per GEMV work item; `None`: `GEMV_UNIT`.
    gemv_unit: Option<u32>,
    /// Lanes per unit of the word GEMV; `None`: chosen from the type and N.
    gemv_lanes: Option<u32>,
    /// Outputs per workgroup of the word GEMV; `None`: chosen from N.
    gemv_rows: Option<u32>,
    /// The cooperative GEMM's tile (rows of x, weight rows); `None`: chosen from M.
    coop_tile: Option<(u32, u32)>,
    coop_splits: Option<u32>,
    /// The activation of x's first half (the gate), when x is read through one.
    gated: Option<GatedAct>,
    /// x read as `rms_norm(x) · weight`: the weight and epsilon.
    norm: Option<(Tensor, f32)>,
    /// `y +=` the product instead of `y =`.
    accumulate: bool,
    /// [`QMatmulPath::GemvQ8`]'s quantized x, allocated when the path is set (`None`: then
    /// each recording allocates its own). Clones share it: the dispatches of one pass run in
    /// order, each clone's quantizer after the previous clone's GEMV.
    q8_scratch: Option<Tensor>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemvParams {
    n: u32,
    k: u32,
    m: u32,
    row_words: u32,
    x_off: u32,
    w_off: u32,
    y_off: u32,
    ldy: u32,
    n0: u32,
    nw_off: u32,
    flags: u32,
    eps: f32,
}

/// Bits of `GemvParams::flags` (`gemv_x_common.wgsl`, `gemv_rows.wgsl`).
const NORM_X: u32 = 1;
const ACCUMULATE: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    groups: u32,
    row_words: u32,
    x_off: u32,
    w_off: u32,
    y_off: u32,
    ldy: u32,
    n0: u32,
    k_chunk: u32,
    split_stride: u32,
}

/// `dims` with the last dimension replaced by `last`.
fn with_last(dims: &[usize], last: usize) -> Result<Shape> {
    let mut out = dims.to_vec();
    match out.last_mut() {
        Some(d) => *d = last,
        None => return Err(Error::shape(OP, "x must have at least one dimension")),
    }
    Shape::new(&out)
}

/// Whether two tensors' bytes overlap in one buffer.
fn overlaps(x: &Tensor, y: &Tensor) -> bool {
    let (xs, ys) = (x.byte_offset(), y.byte_offset());
    let (xe, ye) = (xs + x.size_in_bytes() as u64, ys + y.size_in_bytes() as u64);
    x.buffer() == y.buffer() && xs < ye && ys < xe && x.numel() > 0 && y.numel() > 0
}

impl QMatmul {
    /// `y = x · wᵀ`; fails unless `x` is `[.., K]` float, `y` `[.., N]` of the same dtype,
    /// all on one device.
    pub fn new(x: &Tensor, w: &QuantMatrix, y: &Tensor) -> Result<Self> {
        let this = QMatmul {
            x: x.clone(),
            w: w.clone(),
            y: y.clone(),
            path: QMatmulPath::Auto,
            gemv_wg: None,
            gemv_unit: None,
            gemv_lanes: None,
            gemv_rows: None,
            coop_tile: None,
            coop_splits: None,
            gated: None,
            norm: None,
            accumulate: false,
            q8_scratch: None,
        };
        this.validate()?;
        Ok(this)
    }

    /// `y = (act(a) * b) · wᵀ` where each row of `x` (`[.., 2K]`) holds the gate `a` and then
    /// `b` (`[.., K]` each: a GeGLU / SwiGLU MLP's fused gate and up projections), on the GEMV,
    /// which reads `act(a) * b` as [`Gated`](crate::kernels::gated::Gated) stores it (computed in
    /// f32, rounded to x's dtype): the gated op and the down projection in one dispatch. Only
    /// the GEMV reads x this way, so the path is [`QMatmulPath::Gemv`] (forcing another fails
    /// validation); [`QMatmulPath::Auto`] would take it for up to 4 rows of x on a GPU.
    pub fn gated(act: GatedAct, x: &Tensor, w: &QuantMatrix, y: &Tensor) -> Result<Self> {
        let this = QMatmul {
            x: x.clone(),
            w: w.clone(),
            y: y.clone(),
            path: QMatmulPath::Gemv,
            gemv_wg: None,
            gemv_unit: None,
            gemv_lanes: None,
            gemv_rows: None,
            coop_tile: None,
            coop_splits: None,
            gated: Some(act),
            norm: None,
            accumulate: false,
            q8_scratch: None,
        };
        this.validate()?;
        Ok(this)
    }

    /// Reads x as `rms_norm(x) · weight`: each row times `weight` (`[K]`, x's dtype) and its
    /// `1 / sqrt(mean(x²) + eps)`, applied to the row's sums — the norm before a decoder block
    /// fused into the block's first product, with no dispatch and no tensor of its own. Every
    /// workgroup of the GEMV computes the row's sum of squares itself (K more reads from
    /// cache, cheap next to its weights while K is a few thousand). The GEMV kernels take it
    /// ([`QMatmulPath::Gemv`], [`QMatmulPath::GemvRows`]); where the path is the GEMM (more
    /// than 4 rows of x on a GPU, with `Auto`) it fails validation, as it does with a gate.
    pub fn rms_norm(mut self, weight: &Tensor, eps: f32) -> Result<Self> {
        self.norm = Some((weight.clone(), eps));
        self.validate()?;
        Ok(self)
    }

    /// `y += x · wᵀ` instead of `y = x · wᵀ`, the product rounded to y's dtype before the
    /// add (a residual add fused into a block's last product, rounded as a separate add would
    /// round it). The GEMV kernels only, as for [`rms_norm`](Self::rms_norm).
    pub fn accumulate(mut self) -> Result<Self> {
        self.accumulate = true;
        self.validate()?;
        Ok(self)
    }

    /// Forces a kernel (for tests and tuning). [`QMatmulPath::GemvQ8`] allocates its scratch
    /// tensor here (where that fails, each recording allocates one).
    pub fn path(mut self, path: QMatmulPath) -> Self {
        self.path = path;
        self.q8_scratch = None;
        if path == QMatmulPath::GemvQ8 {
            self.q8_scratch = self.new_q8_scratch().ok();
        }
        self
    }

    /// [`QMatmulPath::GemvQ8`] with its quantized x in `scratch` (u32, at least
    /// [`QuantizeQ8::words`] of x's rows and K; its first words are used) instead of a tensor of
    /// its own: a caller that records many such products (a decode step) shares one. The
    /// products sharing it must run one after another (one pass), as a step's do.
    pub fn gemv_q8_with(mut self, scratch: &Tensor) -> Result<Self> {
        let words = QuantizeQ8::words(self.rows_of_x(), self.w.cols)
            .ok_or_else(|| Error::invalid(OP, "quantized x's size overflows"))?;
        check_dtype(OP, DType::U32, scratch)?;
        if scratch.numel() < words.max(1) {
            return Err(Error::invalid(
                OP,
                format!("quantized x needs {words} words, the scratch has {}", scratch.numel()),
            ));
        }
        self.path = QMatmulPath::GemvQ8;
        self.q8_scratch = Some(scratch.reshape([scratch.numel()])?.narrow(0, words.max(1))?);
        Ok(self)
    }

    /// Whether [`QMatmulPath::GemvQ8`] takes weights of type `ty`.
    pub fn gemv_q8_supports(ty: QuantType) -> bool {
        q8::gemv_q8_supports(ty)
    }

    /// A tensor for quantized x ([`QuantizeQ8::words`]; at least one word).
    fn new_q8_scratch(&self) -> Result<Tensor> {
        let words = QuantizeQ8::words(self.rows_of_x(), self.w.cols)
            .ok_or_else(|| Error::invalid(OP, "quantized x's size overflows"))?;
        Tensor::empty(self.x.runtime(), [words.max(1)], DType::U32)
    }

    /// The GEMV's workgroup size (a power of two, 32 to 256); for tuning.
    #[doc(hidden)]
    pub fn gemv_workgroup(mut self, wg: u32) -> Self {
        self.gemv_wg = Some(wg);
        self
    }

    /// Weights per GEMV work item, 8 or 32; for tuning.
    #[doc(hidden)]
    pub fn gemv_unit(mut self, unit: u32) -> Self {
        self.gemv_unit = Some(unit);
        self
    }

    /// Lanes per unit of the word GEMV: 4 or 8 for the K-quants (Q4_K, Q5_K, Q6_K), 8 for
    /// Q8_0, 4 for Q4_0, Q4_1, Q5_0, Q5_1; for tuning. Without it, and without
    /// [`QMatmul::gemv_unit`], the K-quants' GEMV is the word GEMV, the other types' the block
    /// GEMV.
    #[doc(hidden)]
    pub fn gemv_lanes(mut self, lanes: u32) -> Self {
        self.gemv_lanes = Some(lanes);
        self
    }

    /// Outputs per workgroup of the word GEMV: 1, 2, 4 or 8; for tuning.
    #[doc(hidden)]
    pub fn gemv_rows(mut self, rows: u32) -> Self {
        self.gemv_rows = Some(rows);
        self
    }

    /// The cooperative GEMM's output tile: 64 or 128 rows of x by 64 or 128 weight rows; for
    /// tuning (other sizes fail validation).
    #[doc(hidden)]
    pub fn coop_tile(mut self, rows: u32, cols: u32) -> Self {
        self.coop_tile = Some((rows, cols));
        self
    }

    /// Experimental (not measured yet, so off by default): splits of K for the cooperative GEMM,
    /// 1 to 16, or 0 for as many as its output tiles call for ([`coop_splits`]: products of few
    /// tiles, where one workgroup's walk along K is the whole latency). Without it K is not
    /// split. Splits apply to f32 products whose weights are one part (they need a scratch of
    /// f32 partial products and write all of y's rows); a second dispatch adds the partial
    /// products in order.
    #[doc(hidden)]
    pub fn coop_splits(mut self, splits: u32) -> Self {
        self.coop_splits = Some(splits);
        self
    }

    /// The kernel [`encode`](Operation::encode) runs: never [`QMatmulPath::Auto`].
    pub fn chosen_path(&self) -> QMatmulPath {
        match self.path {
            QMatmulPath::Auto => Self::auto_path(&self.x, self.rows_of_x(), &self.w),
            path => path,
        }
    }

    /// The kernel [`QMatmulPath::Auto`] takes for `rows` rows of x on `x`'s device times `w`,
    /// without building the op (a decode step asks once per layer).
    pub fn auto_path(x: &Tensor, rows: usize, w: &QuantMatrix) -> QMatmulPath {
        let cpu = x.context().caps().cpu();
        if cpu && rows <= GEMV_ROWS_MAX_M && w.cols.is_multiple_of(32) {
            QMatmulPath::GemvRows
        } else if rows <= GEMV_MAX_M {
            QMatmulPath::Gemv
        } else if cooperative_available(x.context()) {
            QMatmulPath::Cooperative
        } else {
            QMatmulPath::Gemm
        }
    }

    /// The GEMV kernel for `n` rows of `k` weights: the word GEMV for the types it takes
    /// unless a unit of the block GEMV is asked for, else the block GEMV.
    fn gemv_kernel(&self, n: u32, k: u32) -> Result<GemvChoice> {
        let ty = self.w.ty;
        let sb = gemv_sb_lanes(ty);
        let lanes = match (self.gemv_lanes, self.gemv_unit, sb) {
            (Some(_), Some(_), _) => {
                return Err(Error::invalid(OP, "a GEMV unit and word GEMV lanes both asked for"));
            }
            (Some(l), None, Some((allowed, _))) if allowed.contains(&l) => Some(l),
            (Some(l), None, _) => {
                return Err(Error::invalid(
                    OP,
                    format!("word GEMV lanes {l} for {ty}: 4 or 8 for the K-quants, 8 for Q8_0, 4 for Q4_0 ... Q5_1"),
                ));
            }
            // By default: the K-quants with lanes by N, the blocks of 32 with their one count.
            (None, None, Some((_, 256))) => Some(if n <= GEMV_SB_SMALL_N { 8 } else { GEMV_SB_LANES }),
            (None, None, Some((allowed, _))) => allowed.first().copied(),
            (None, _, _) => None,
        };
        if let Some(lanes) = lanes {
            let wg = match self.gemv_wg {
                Some(wg) if wg.is_multiple_of(32) && wg.is_multiple_of(lanes) && (32..=256).contains(&wg) => wg,
                Some(wg) => return Err(Error::invalid(OP, format!("word GEMV workgroup size {wg}"))),
                None => gemv_sb_workgroup(k / sb.map_or(256, |(_, unit)| unit), lanes),
            };
            let rows = match self.gemv_rows {
                Some(r @ (1 | 2 | 4 | 8)) => r,
                Some(r) => return Err(Error::invalid(OP, format!("word GEMV rows {r}: 1, 2, 4 or 8"))),
                None if n <= GEMV_SB_SMALL_N => 2,
                None => GEMV_ROWS,
            };
            let variant = [("LANES", f64::from(lanes)), ("ROWS", f64::from(rows))];
            return Ok(GemvChoice { kernel: &GEMV_SB, wg, rows, variant, variants: 2 });
        }
        if self.gemv_rows.is_some() {
            return Err(Error::invalid(OP, "GEMV rows per workgroup are a knob of the word GEMV"));
        }
        let unit = self.gemv_unit.unwrap_or(GEMV_UNIT);
        if unit != 8 && unit != 32 {
            return Err(Error::invalid(OP, format!("GEMV unit {unit}: 8 or 32")));
        }
        let wg = match self.gemv_wg {
            Some(wg) if wg.is_power_of_two() && (32..=256).contains(&wg) => wg,
            Some(wg) => return Err(Error::invalid(OP, format!("GEMV workgroup size {wg}"))),
            None => gemv_workgroup(n, k.div_ceil(unit), unit),
        };
        let variant = [("UNIT", f64::from(unit)); 2];
        Ok(GemvChoice { kernel: &GEMV, wg, rows: GEMV_ROWS, variant, variants: 1 })
    }

    fn rows_of_x(&self) -> usize {
        self.x.numel() / self.x_cols().max(1)
    }

    /// Elements per row of x: K, or 2K read through a gate.
    fn x_cols(&self) -> usize {
        if self.gated.is_some() { 2 * self.w.cols } else { self.w.cols }
    }
}

impl Operation for QMatmul {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_float(OP, &self.x)?;
        check_dtype(OP, self.x.dtype(), &self.y)?;
        let mut tensors = vec![&self.x, &self.y];
        tensors.extend(self.w.words());
        check_same_device(OP, &tensors)?;
        let k = self.x.dims().last().copied().ok_or_else(|| Error::shape(OP, "x must have at least one dimension"))?;
        if k != self.x_cols() {
            if self.gated.is_some() {
                return Err(Error::shape(
                    OP,
                    format!(
                        "x read through a gate holds 2K columns: x {} against weights [{}, {}]",
                        self.x.shape(),
                        self.w.rows,
                        self.w.cols
                    ),
                ));
            }
            return Err(Error::mismatch(OP, self.x.shape(), Shape::new(&[self.w.rows, self.w.cols])?));
        }
        if self.gated.is_some() && self.path != QMatmulPath::Gemv {
            return Err(Error::invalid(OP, format!("x read through a gate takes the GEMV, not {:?}", self.path)));
        }
        let want = with_last(self.x.dims(), self.w.rows)?;
        if self.y.shape() != want {
            return Err(Error::mismatch(OP, want, self.y.shape()));
        }
        if self.path == QMatmulPath::Cooperative && !cooperative_available(self.x.context()) {
            return Err(self
                .x
                .context()
                .unsupported(OP, "EXPERIMENTAL_COOPERATIVE_MATRIX (16x16 f16, 32-wide subgroups)"));
        }
        if self.norm.is_some() || self.accumulate {
            let path = self.chosen_path();
            if !matches!(path, QMatmulPath::Gemv | QMatmulPath::GemvRows) {
                return Err(Error::invalid(OP, format!("a fused norm or accumulation takes a GEMV, not {path:?}")));
            }
        }
        if let Some((weight, eps)) = &self.norm {
            if self.gated.is_some() {
                return Err(Error::invalid(OP, "x read through a gate and through a norm"));
            }
            check_dtype(OP, self.x.dtype(), weight)?;
            check_same_device(OP, &[&self.x, weight])?;
            if weight.numel() != self.w.cols {
                return Err(Error::shape(
                    OP,
                    format!("the norm's weight has {} elements, K is {}", weight.numel(), self.w.cols),
                ));
            }
            if !eps.is_finite() || *eps < 0.0 {
                return Err(Error::invalid(OP, format!("the norm's epsilon {eps}")));
            }
        }
        if let Some(splits) = self.coop_splits
            && splits > COOP_SPLIT_MAX
        {
            return Err(Error::invalid(
                OP,
                format!("{splits} splits of K: 1 to {COOP_SPLIT_MAX}, or 0 for the tiles' choice"),
            ));
        }
        if let Some(tile) = self.coop_tile
            && !COOP_TILES.contains(&tile)
        {
            return Err(Error::invalid(OP, format!("the cooperative GEMM's tile {tile:?}: 64 or 128 by 64 or 128")));
        }
        if overlaps(&self.x, &self.y) {
            return Err(Error::invalid(OP, "the output y overlaps x"));
        }
        if self.path == QMatmulPath::GemvQ8 && !q8::gemv_q8_supports(self.w.ty) {
            return Err(Error::invalid(
                OP,
                format!("the GEMV over quantized x takes Q4_K, Q5_K, Q6_K, Q8_0 and Q4_0, not {}", self.w.ty),
            ));
        }
        if self.path == QMatmulPath::GemvRows && !self.w.cols.is_multiple_of(32) {
            return Err(Error::invalid(OP, format!("the row GEMV needs K a multiple of 32, got {k}")));
        }
        count_u32(OP, self.x.numel())?;
        count_u32(OP, self.y.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        self.validate()?;
        let w = &self.w;
        let m = count_u32(OP, self.rows_of_x())?;
        if m == 0 {
            return Ok(());
        }
        let x = encoder.bind(&self.x)?;
        let y = encoder.bind(&self.y)?;
        let max = encoder.context().caps().limits.max_compute_workgroups_per_dimension.max(1);
        let (k, groups) = (count_u32(OP, w.cols)?, count_u32(OP, w.groups())?);
        let (ldy, row_words) = (count_u32(OP, w.rows)?, count_u32(OP, w.row_words)?);
        let dtype = self.x.dtype();
        let mut path = self.chosen_path();
        if path == QMatmulPath::GemvRows && !x.elem_offset().is_multiple_of(4) {
            if self.path == QMatmulPath::GemvRows {
                return Err(Error::invalid(OP, "the row GEMV needs x to start on a 4-element boundary"));
            }
            path = if self.rows_of_x() <= GEMV_MAX_M { QMatmulPath::Gemv } else { QMatmulPath::Gemm };
            if path == QMatmulPath::Gemm && (self.norm.is_some() || self.accumulate) {
                return Err(Error::invalid(OP, "a fused norm or accumulation needs x on a 4-element boundary here"));
            }
        }
        let nw = encoder.bind(self.norm.as_ref().map_or(&self.x, |(weight, _)| weight))?;
        let flags = if self.norm.is_some() { NORM_X } else { 0 } | if self.accumulate { ACCUMULATE } else { 0 };
        // x read as vectors where its rows start on 4-element boundaries.
        let xvec = x.elem_offset().is_multiple_of(4) && k.is_multiple_of(4);
        // GemvQ8: x quantized once for every part.
        let q8 = if path == QMatmulPath::GemvQ8 {
            let scratch = match &self.q8_scratch {
                Some(t) => t.clone(),
                None => self.new_q8_scratch()?,
            };
            let q = encoder.bind(&scratch)?;
            q8::encode_quantize(encoder, cache, dtype, &x, &q, m, k)?;
            Some(q)
        } else {
            None
        };
        for part in &w.parts {
            let wb = encoder.bind(&part.words)?;
            let n = count_u32(OP, part.rows)?;
            let n0 = count_u32(OP, part.row0)?;
            let bindings = [&x, &wb, &y];
            let gemv_params = GemvParams {
                n,
                k,
                m,
                row_words,
                x_off: x.elem_offset(),
                w_off: wb.elem_offset(),
                y_off: y.elem_offset(),
                ldy,
                n0,
                nw_off: nw.elem_offset(),
                flags,
                eps: self.norm.as_ref().map_or(0.0, |(_, eps)| *eps),
            };
            match path {
                QMatmulPath::GemvRows => {
                    let workgroups = [n.div_ceil(2 * GEMV_ROWS_WG).min(max), 1, m.min(max)];
                    encoder.dispatch(
                        cache,
                        Dispatch {
                            kernel: &ROW_GEMV,
                            dtype,
                            overrides: w.overrides(GEMV_ROWS_WG)?,
                            bindings: &[&x, &wb, &y, &nw],
                            params: gemv_params,
                            workgroups,
                        },
                    )?;
                }
                QMatmulPath::Gemv | QMatmulPath::Auto | QMatmulPath::GemvQ8 => {
                    let choice = self.gemv_kernel(n, k)?;
                    let mb = m.min(GEMV_MAX_MB);
                    let workgroups = [n.div_ceil(choice.rows).min(max), 1, m.div_ceil(mb).min(max)];
                    let [a, b] = choice.variant;
                    let dispatch = if let Some(q) = &q8 {
                        if !std::ptr::eq(choice.kernel, &GEMV_SB) {
                            return Err(Error::invalid(OP, "the GEMV over quantized x has no GEMV unit knob"));
                        }
                        let items = [
                            ("WG", f64::from(choice.wg)),
                            ("QTYPE", f64::from(w.ty.ggml_id())),
                            ("MB", f64::from(mb)),
                            a,
                            b,
                        ];
                        let params = q8::Q8Params {
                            n,
                            k,
                            m,
                            row_words,
                            x_off: x.elem_offset(),
                            w_off: wb.elem_offset(),
                            y_off: y.elem_offset(),
                            ldy,
                            n0,
                            q_off: q.elem_offset(),
                            q_stride: count_u32(OP, QuantizeQ8::row_words(w.cols))?,
                        };
                        encoder.dispatch(
                            cache,
                            Dispatch {
                                kernel: &q8::GEMV_Q8,
                                dtype,
                                overrides: Overrides::new(&items)?,
                                bindings: &[&x, &wb, &y, q],
                                params,
                                workgroups,
                            },
                        )
                    } else {
                        let items = [
                            ("WG", f64::from(choice.wg)),
                            ("QTYPE", f64::from(w.ty.ggml_id())),
                            ("MB", f64::from(mb)),
                            ("GATED", if self.gated.is_some() { 1.0 } else { 0.0 }),
                            ("OP", self.gated.map_or(0.0, |act| act.unary_op().code())),
                            ("XVEC", if xvec { 1.0 } else { 0.0 }),
                            a,
                            b,
                        ];
                        let overrides = Overrides::new(items.get(..6 + choice.variants).unwrap_or(&items))?;
                        encoder.dispatch(
                            cache,
                            Dispatch {
                                kernel: choice.kernel,
                                dtype,
                                overrides,
                                bindings: &[&x, &wb, &y, &x, &nw],
                                params: gemv_params,
                                workgroups,
                            },
                        )
                    };
                    dispatch?;
                }
                QMatmulPath::Gemm | QMatmulPath::Cooperative => {
                    let params = GemmParams {
                        m,
                        n,
                        k,
                        groups,
                        row_words,
                        x_off: x.elem_offset(),
                        w_off: wb.elem_offset(),
                        y_off: y.elem_offset(),
                        ldy,
                        n0,
                        k_chunk: k,
                        split_stride: 0,
                    };
                    if path == QMatmulPath::Gemm {
                        encoder.dispatch(
                            cache,
                            Dispatch {
                                kernel: &GEMM,
                                dtype,
                                overrides: w.overrides(256)?,
                                bindings: &bindings,
                                params,
                                workgroups: [n.div_ceil(GEMM_TILE).min(max), m.div_ceil(GEMM_TILE).min(max), 1],
                            },
                        )?;
                    } else {
                        let (bm, bn) = self.coop_tile.unwrap_or_else(|| coop_tile(m));
                        // Subgroups of 32 along M and N, each computing 64 x 32 of the tile.
                        let (sgm, sgn) = (bm / 64, bn / 32);
                        let overrides = Overrides::new(&[
                            ("WG", f64::from(32 * sgm * sgn)),
                            ("QTYPE", f64::from(w.ty.ggml_id())),
                            ("SGM", f64::from(sgm)),
                            ("SGN", f64::from(sgn)),
                            ("XVEC", if xvec { 1.0 } else { 0.0 }),
                        ])?;
                        let grid = [n.div_ceil(bn).min(max), m.div_ceil(bm).min(max)];
                        // Split K where asked for and it applies (f32, one part filling y's rows):
                        // the splits' partial products go to a scratch, then add into y.
                        let applies = dtype == DType::F32 && w.parts.len() == 1 && n == ldy;
                        let (splits, chunk) = match self.coop_splits {
                            Some(0) if applies => coop_splits(grid[0] * grid[1], k),
                            Some(s) if applies => split_chunk(s, k),
                            _ => (1, k),
                        };
                        // The scratch and the outputs of one split.
                        let part = if splits > 1 {
                            let count = m.checked_mul(n).ok_or_else(|| Error::invalid(OP, "y too large"))?;
                            let total = count_u32(OP, count as usize * splits as usize)?;
                            let scratch = Tensor::empty(self.x.runtime(), [total as usize], DType::F32)?;
                            Some((encoder.bind(&scratch)?, count))
                        } else {
                            None
                        };
                        let params = match &part {
                            Some((p, count)) => GemmParams {
                                y_off: p.elem_offset(),
                                ldy: n,
                                n0: 0,
                                k_chunk: chunk,
                                split_stride: *count,
                                ..params
                            },
                            None => params,
                        };
                        let out = part.as_ref().map_or(&y, |(p, _)| p);
                        encoder.dispatch(
                            cache,
                            Dispatch {
                                kernel: &GEMM_COOP,
                                dtype,
                                overrides,
                                bindings: &[&x, &wb, out, &x],
                                params,
                                workgroups: [grid[0], grid[1], splits.min(max)],
                            },
                        )?;
                        if let Some((p, count)) = &part {
                            crate::kernels::matmul::encode_split_reduce(encoder, cache, dtype, p, &y, *count, splits)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The output shape of a lookup: `ids`'s shape with `dim` appended.
fn embed_shape(ids: &Tensor, dim: usize) -> Result<Shape> {
    let rank = ids.dims().len();
    if rank >= MAX_DIMS {
        return Err(Error::shape(
            EMBED_OP,
            format!("ids of rank {rank}: the output would exceed {MAX_DIMS} dimensions"),
        ));
    }
    Shape::new(&[ids.dims(), &[dim]].concat())
}

/// `out[.., :] = decode(table[ids[..], :])`: rows of a quantized table (`[vocab, dim]`) at
/// `ids` (u32, any shape) into `out` (`ids.shape + [dim]`, f32 or f16).
///
/// Ids `>= vocab` give rows of zeros, as [`Embedding`](crate::kernels::embedding::Embedding)
/// does (the kernel cannot report them; check ids from users before uploading).
#[derive(Debug, Clone)]
pub struct QEmbedding {
    table: QuantMatrix,
    ids: Tensor,
    out: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbedParams {
    count: u32,
    k: u32,
    groups: u32,
    row_words: u32,
    row0: u32,
    rows: u32,
    vocab: u32,
    ids_off: u32,
    w_off: u32,
    out_off: u32,
    zeros: u32,
}

impl QEmbedding {
    /// Gathers rows of `table` at `ids` into `out`; fails on a non-u32 `ids`, a non-float
    /// `out`, or an `out` shape other than `ids.shape + [table.cols()]`.
    pub fn new(table: &QuantMatrix, ids: &Tensor, out: &Tensor) -> Result<Self> {
        let this = QEmbedding { table: table.clone(), ids: ids.clone(), out: out.clone() };
        this.validate()?;
        Ok(this)
    }
}

impl Operation for QEmbedding {
    fn name(&self) -> &'static str {
        EMBED_OP
    }

    fn validate(&self) -> Result<()> {
        check_dtype(EMBED_OP, DType::U32, &self.ids)?;
        check_float(EMBED_OP, &self.out)?;
        let mut tensors = vec![&self.ids, &self.out];
        tensors.extend(self.table.words());
        check_same_device(EMBED_OP, &tensors)?;
        let want = embed_shape(&self.ids, self.table.cols)?;
        if self.out.shape() != want {
            return Err(Error::mismatch(EMBED_OP, want, self.out.shape()));
        }
        count_u32(EMBED_OP, self.out.numel())?;
        let threads = self.ids.numel().saturating_mul(self.table.groups());
        count_u32(EMBED_OP, threads).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        self.validate()?;
        let t = &self.table;
        let count = count_u32(EMBED_OP, self.ids.numel())?;
        let groups = count_u32(EMBED_OP, t.groups())?;
        let ids = encoder.bind(&self.ids)?;
        let out = encoder.bind(&self.out)?;
        let workgroups = encoder.linear_grid(self.ids.numel() * t.groups(), LINEAR_WG)?;
        for (i, part) in t.parts.iter().enumerate() {
            let wb = encoder.bind(&part.words)?;
            let params = EmbedParams {
                count,
                k: count_u32(EMBED_OP, t.cols)?,
                groups,
                row_words: count_u32(EMBED_OP, t.row_words)?,
                row0: count_u32(EMBED_OP, part.row0)?,
                rows: count_u32(EMBED_OP, part.rows)?,
                vocab: count_u32(EMBED_OP, t.rows)?,
                ids_off: ids.elem_offset(),
                w_off: wb.elem_offset(),
                out_off: out.elem_offset(),
                zeros: u32::from(i == 0),
            };
            encoder.dispatch(
                cache,
                Dispatch {
                    kernel: &EMBED,
                    dtype: self.out.dtype(),
                    overrides: t.overrides(LINEAR_WG)?,
                    bindings: &[&ids, &wb, &out],
                    params,
                    workgroups,
                },
            )?;
        }
        Ok(())
    }
}

impl Tensor {
    /// `self · wᵀ` in a new tensor: `self` is `[.., K]` (f32 or f16), `w` an `[N, K]`
    /// [`QuantMatrix`], the result `[.., N]` of `self`'s dtype; see [`QMatmul`].
    pub fn qmatmul(&self, w: &QuantMatrix) -> Result<Tensor> {
        if w.runtime().is_some_and(|rt| !rt.same(self.runtime())) {
            return Err(Error::invalid(OP, "tensors belong to different runtimes"));
        }
        check_float(OP, self)?;
        let y = Tensor::empty(self.runtime(), with_last(self.dims(), w.rows)?, self.dtype())?;
        self.runtime().record(&QMatmul::new(self, w, &y)?)?;
        Ok(y)
    }
}
