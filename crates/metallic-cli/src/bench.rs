//! `metallic bench <what>`: times metallic's kernels on the GPU.
//!
//! Each subcommand builds its inputs on the GPU (`Tensor::random_uniform`), records `--warmup`
//! copies of the op, commits and waits, then records `--iters` copies into ONE command buffer
//! with GPU timestamps around its compute pass and reports the GPU time divided by the
//! iterations. Where the adapter has no timestamps (or `--submit per-item` is asked for), the
//! wall clock around commit + wait is used instead; the output says which (`timer`).
//!
//! Every record prints as one human line, or with `--json` as one JSON object per line with the
//! same fields; `bench/pytorch_bench.py` writes the same field names for the PyTorch peer and
//! `bench/compare.py` joins the two on `case`, `shape` and `dtype`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};

use crate::output::outln;
use metallic::kernels::copy::Copy;
use metallic::kernels::matmul::Matmul;
use metallic::kernels::norm::{LayerNorm, RmsNorm};
use metallic::kernels::qmatmul::{QMatmul, QMatmulPath, QuantMatrix};
use metallic::kernels::sdpa::{SdpaImpl, SdpaOptions, attention};
use metallic::kernels::softmax::{Softmax, SoftmaxOptions};
use metallic::quant::QuantType;
use metallic::{DType, Error, Operation, Result, Runtime, Tensor};

/// Options every benchmark takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Timed iterations (recorded into one command buffer).
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Untimed iterations committed and waited for before timing.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Element type of every tensor.
    #[arg(long, value_enum, default_value_t = Dt::F32)]
    dtype: Dt,
    /// One JSON object per line on stdout instead of the human line.
    #[arg(long)]
    json: bool,
    /// Memory bandwidth ceiling in GB/s (say, the measured copy bandwidth): adds "% of ceiling"
    /// to memory-bound figures.
    #[arg(long, value_name = "GB/S")]
    ceiling_gbs: Option<f64>,
    /// Compute ceiling in TFLOP/s: adds "% of ceiling" to compute-bound figures.
    #[arg(long, value_name = "TFLOP/S")]
    ceiling_tflops: Option<f64>,
}

/// Element types the benchmarks run in.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dt {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
}

impl From<Dt> for DType {
    fn from(dt: Dt) -> DType {
        match dt {
            Dt::F32 => DType::F32,
            Dt::F16 => DType::F16,
        }
    }
}

/// Attention implementation to time.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpaImplArg {
    /// What `scaled_dot_product_attention` picks for the shape.
    Auto,
    /// The fused single-pass kernel (`FlashAttention`).
    Fused,
    /// GEMM -> masked softmax -> GEMM (`CompositeAttention`).
    Composite,
    /// Keys split across workgroups, partial softmaxes merged (`SplitKAttention`).
    SplitK,
}

impl SdpaImplArg {
    fn engine(self) -> SdpaImpl {
        match self {
            SdpaImplArg::Auto => SdpaImpl::Auto,
            SdpaImplArg::Fused => SdpaImpl::Fused,
            SdpaImplArg::Composite => SdpaImpl::Composite,
            SdpaImplArg::SplitK => SdpaImpl::SplitK,
        }
    }
}

/// Weight types `bench qmatmul` takes.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum QuantArg {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
    /// GGML Q4_0.
    Q4_0,
    /// GGML Q4_1.
    Q4_1,
    /// GGML Q5_0.
    Q5_0,
    /// GGML Q5_1.
    Q5_1,
    /// GGML Q8_0.
    Q8_0,
    /// GGML Q2_K.
    Q2_K,
    /// GGML Q3_K.
    Q3_K,
    /// GGML Q4_K.
    Q4_K,
    /// GGML Q5_K.
    Q5_K,
    /// GGML Q6_K.
    Q6_K,
    /// GGML IQ4_NL.
    Iq4_Nl,
    /// GGML IQ4_XS.
    Iq4_Xs,
}

impl From<QuantArg> for QuantType {
    fn from(q: QuantArg) -> QuantType {
        match q {
            QuantArg::F32 => QuantType::F32,
            QuantArg::F16 => QuantType::F16,
            QuantArg::Bf16 => QuantType::BF16,
            QuantArg::Q4_0 => QuantType::Q4_0,
            QuantArg::Q4_1 => QuantType::Q4_1,
            QuantArg::Q5_0 => QuantType::Q5_0,
            QuantArg::Q5_1 => QuantType::Q5_1,
            QuantArg::Q8_0 => QuantType::Q8_0,
            QuantArg::Q2_K => QuantType::Q2K,
            QuantArg::Q3_K => QuantType::Q3K,
            QuantArg::Q4_K => QuantType::Q4K,
            QuantArg::Q5_K => QuantType::Q5K,
            QuantArg::Q6_K => QuantType::Q6K,
            QuantArg::Iq4_Nl => QuantType::IQ4NL,
            QuantArg::Iq4_Xs => QuantType::IQ4XS,
        }
    }
}

/// Kernel `bench qmatmul` runs.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum QPathArg {
    /// What `QMatmul` picks for the shape and adapter.
    Auto,
    /// The GEMV (workgroups of lanes per row group, reduced in the workgroup).
    Gemv,
    /// The row GEMV for CPU adapters (each invocation whole rows).
    GemvRows,
    /// The tiled GEMM.
    Gemm,
    /// The tiled GEMM on cooperative matrices (tensor cores; f16 operands, f32 accumulation).
    Cooperative,
    /// Experimental: x quantized to 8 bits per block of 32, then the GEMV on packed integer dot
    /// products; the timing includes the quantizing dispatch.
    GemvQ8,
}

impl From<QPathArg> for QMatmulPath {
    fn from(p: QPathArg) -> QMatmulPath {
        match p {
            QPathArg::Auto => QMatmulPath::Auto,
            QPathArg::Gemv => QMatmulPath::Gemv,
            QPathArg::GemvRows => QMatmulPath::GemvRows,
            QPathArg::Gemm => QMatmulPath::Gemm,
            QPathArg::Cooperative => QMatmulPath::Cooperative,
            QPathArg::GemvQ8 => QMatmulPath::GemvQ8,
        }
    }
}

/// How the attention batch is submitted.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitArg {
    /// The whole batch as one op per iteration, all iterations in one command buffer.
    Whole,
    /// One op per batch item, one command buffer committed per item per iteration (wall clock).
    PerItem,
}

/// What to benchmark.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Scaled-dot-product attention (defaults: the seed benchmark, [32, 1024, 64] causal f32).
    Sdpa {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: SdpaArgs,
    },
    /// Matrix product C = A · B (or A · Bᵀ).
    Gemm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: GemmArgs,
    },
    /// Matrix-vector product: x [1, K] times a weight [N, K] transposed (the decode step).
    Gemv {
        #[command(flatten)]
        common: Common,
        /// Output length N (weight rows).
        #[arg(long, default_value_t = 4096)]
        n: usize,
        /// Input length K (weight columns).
        #[arg(long, default_value_t = 4096)]
        k: usize,
    },
    /// Quantized matrix product: x [M, K] times a GGML-quantized weight [N, K] transposed
    /// (`QMatmul`; M = 1 is a decode step's GEMV). Defaults: Gemma 3 270M's output projection.
    Qmatmul {
        #[command(flatten)]
        common: Common,
        /// Weight type.
        #[arg(long = "type", value_enum, default_value_t = QuantArg::Q8_0)]
        ty: QuantArg,
        /// Rows of x.
        #[arg(long, default_value_t = 1)]
        m: usize,
        /// Output length N (weight rows).
        #[arg(long, default_value_t = 262_144)]
        n: usize,
        /// Input length K (weight columns; a whole number of the type's blocks).
        #[arg(long, default_value_t = 640)]
        k: usize,
        /// Kernel.
        #[arg(long, value_enum, default_value_t = QPathArg::Auto)]
        path: QPathArg,
        /// Weights per work item of the GEMV, 8 or 32 (default: the engine's choice); for tuning.
        #[arg(long)]
        gemv_unit: Option<u32>,
        /// Lanes per unit of the word GEMV (4 or 8 for the K-quants, 8 for Q8_0, 4 for Q4_0 ... Q5_1); for tuning.
        #[arg(long, conflicts_with = "gemv_unit")]
        gemv_lanes: Option<u32>,
        /// Workgroup size of the GEMV (default: the engine's choice); for tuning.
        #[arg(long)]
        gemv_wg: Option<u32>,
        /// Outputs per workgroup of the word GEMV: 1, 2, 4 or 8; for tuning.
        #[arg(long, conflicts_with = "gemv_unit")]
        gemv_rows: Option<u32>,
        /// Output tile of the cooperative GEMM, ROWSxCOLS: 64 or 128 rows of x by 64 or 128
        /// weight rows (default: the engine's choice for M); for tuning.
        #[arg(long, value_parser = parse_tile)]
        coop_tile: Option<(u32, u32)>,
        /// Splits of K for the cooperative GEMM, 1 to 16, or 0 for as many as its output tiles
        /// call for (default: none); experimental, for tuning.
        #[arg(long)]
        coop_splits: Option<u32>,
    },
    /// Softmax over the last dimension of [rows, cols].
    Softmax {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rows: RowArgs,
    },
    /// Layer norm (or RMS norm with --rms) over the last dimension of [rows, cols].
    Layernorm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rows: RowArgs,
        /// RMS norm instead of layer norm.
        #[arg(long)]
        rms: bool,
    },
    /// Copy between two tensors (the `Copy` kernel); bytes = read + write.
    Copy {
        #[command(flatten)]
        common: Common,
        /// Size of each tensor in MiB.
        #[arg(long, default_value_t = 1024)]
        mb: usize,
    },
}

/// Attention shape and variant.
#[derive(Args, Debug, Clone)]
pub struct SdpaArgs {
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Query heads.
    #[arg(long, default_value_t = 1)]
    heads: usize,
    /// Key/value heads (default: --heads); must divide --heads.
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Query positions.
    #[arg(long, default_value_t = 1024)]
    seq_q: usize,
    /// Key/value positions.
    #[arg(long, default_value_t = 1024)]
    seq_k: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Causal masking, bottom-right aligned (the default).
    #[arg(long, overrides_with = "no_causal")]
    causal: bool,
    /// No causal masking.
    #[arg(long, overrides_with = "causal")]
    no_causal: bool,
    /// 3-D [batch, seq, dim] tensors (the default when --heads is 1); needs one head.
    #[arg(long, conflicts_with = "rank4")]
    rank3: bool,
    /// 4-D [batch, heads, seq, dim] tensors (the default when --heads is above 1).
    #[arg(long)]
    rank4: bool,
    /// Implementation.
    #[arg(long = "impl", value_enum, default_value_t = SdpaImplArg::Auto)]
    implementation: SdpaImplArg,
    /// Submission: the whole batch per op, or one op and one commit per batch item.
    #[arg(long, value_enum, default_value_t = SubmitArg::Whole)]
    submit: SubmitArg,
    /// Keys and values in f16 under f32 queries (an f16 KV cache); needs --dtype f32.
    #[arg(long)]
    kv_f16: bool,
}

/// Matrix product shape.
#[derive(Args, Debug, Clone)]
pub struct GemmArgs {
    /// Rows of A and C.
    #[arg(long, default_value_t = 4096)]
    m: usize,
    /// Columns of B and C.
    #[arg(long, default_value_t = 4096)]
    n: usize,
    /// Columns of A, rows of B.
    #[arg(long, default_value_t = 4096)]
    k: usize,
    /// Independent products (A, B and C each get a leading batch dimension when above 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// B is stored [N, K] (the layout of linear-layer weights).
    #[arg(long)]
    transpose_b: bool,
}

/// Row-wise kernel shape.
#[derive(Args, Debug, Clone)]
pub struct RowArgs {
    /// Rows.
    #[arg(long, default_value_t = 4096)]
    rows: usize,
    /// Elements per row (the reduced dimension).
    #[arg(long, default_value_t = 4096)]
    cols: usize,
    /// Plain f32 sums instead of the default compensated (Neumaier) ones.
    #[arg(long)]
    plain: bool,
}

/// Which figure a benchmark is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Compute,
    Memory,
}

/// How the timed iterations are submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Submit {
    /// Every op of every iteration in one command buffer.
    Whole,
    /// One commit per op.
    PerOp,
}

/// A benchmark ready to run: the ops of one iteration and what they are worth.
struct Workload {
    case: &'static str,
    implementation: String,
    shape: String,
    dtype: DType,
    flops: Option<f64>,
    bytes: f64,
    bound: Bound,
    note: String,
    submit: Submit,
    ops: Vec<Box<dyn Operation>>,
}

/// What a run measured.
struct Timing {
    total: Duration,
    wall_total: Duration,
    timer: &'static str,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument { op: "bench", message: message.into() }
}

/// Runs one `metallic bench` subcommand and prints its record.
pub fn run(command: BenchCommand) -> metallic_models::Result<()> {
    let common = match &command {
        BenchCommand::Sdpa { common, .. }
        | BenchCommand::Gemm { common, .. }
        | BenchCommand::Gemv { common, .. }
        | BenchCommand::Qmatmul { common, .. }
        | BenchCommand::Softmax { common, .. }
        | BenchCommand::Layernorm { common, .. }
        | BenchCommand::Copy { common, .. } => common.clone(),
    };
    if common.iters == 0 {
        return Err(invalid("--iters must be at least 1").into());
    }
    for (flag, value) in [("--ceiling-gbs", common.ceiling_gbs), ("--ceiling-tflops", common.ceiling_tflops)] {
        if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            return Err(invalid(format!("{flag} must be a positive number")).into());
        }
    }
    let dtype = DType::from(common.dtype);
    let rt = Runtime::new()?;
    if dtype == DType::F16 && !rt.context().caps().shader_f16() {
        return Err(invalid("--dtype f16 needs an adapter with SHADER_F16, which this one lacks").into());
    }
    let workload = match command {
        BenchCommand::Sdpa { args, .. } => sdpa(&rt, dtype, &args)?,
        BenchCommand::Gemm { args, .. } => gemm(&rt, dtype, &args)?,
        BenchCommand::Gemv { n, k, .. } => gemv(&rt, dtype, n, k)?,
        BenchCommand::Qmatmul {
            ty,
            m,
            n,
            k,
            path,
            gemv_unit,
            gemv_lanes,
            gemv_wg,
            gemv_rows,
            coop_tile,
            coop_splits,
            ..
        } => {
            let tuning =
                GemvTuning { unit: gemv_unit, lanes: gemv_lanes, wg: gemv_wg, rows: gemv_rows, coop_tile, coop_splits };
            qmatmul(&rt, dtype, ty.into(), [m, n, k], path.into(), tuning)?
        }
        BenchCommand::Softmax { rows, .. } => softmax(&rt, dtype, &rows)?,
        BenchCommand::Layernorm { rows, rms, .. } => layernorm(&rt, dtype, &rows, rms)?,
        BenchCommand::Copy { mb, .. } => copy(&rt, dtype, mb)?,
    };
    let timing = measure(&rt, &workload, &common)?;
    let info = rt.context().adapter_info();
    let device = format!("{} ({:?})", info.name, info.backend);
    let record = Record::new(&workload, &timing, &common, device);
    if common.json {
        outln!("{}", record.json());
    } else {
        outln!("{}", record.human());
    }
    Ok(())
}

/// Warms up, then times `common.iters` iterations of the workload.
fn measure(rt: &Runtime, w: &Workload, common: &Common) -> Result<Timing> {
    // The inputs were generated through the runtime's implicit command buffer.
    rt.synchronize()?;
    let mut cb = rt.command_buffer()?;
    match w.submit {
        Submit::Whole => {
            for _ in 0..common.warmup {
                for op in &w.ops {
                    cb.record(op.as_ref())?;
                }
            }
            cb.commit()?;
            cb.wait()?;
            let gpu = match cb.enable_gpu_timing() {
                Ok(()) => true,
                Err(Error::Unsupported { .. }) => false,
                Err(e) => return Err(e),
            };
            for _ in 0..common.iters {
                for op in &w.ops {
                    cb.record(op.as_ref())?;
                }
            }
            let start = Instant::now();
            cb.commit()?;
            cb.wait()?;
            let wall_total = start.elapsed();
            let gpu_total = if gpu { cb.gpu_time()? } else { None };
            Ok(match gpu_total {
                Some(total) => Timing { total, wall_total, timer: "gpu" },
                None => Timing { total: wall_total, wall_total, timer: "wall" },
            })
        }
        Submit::PerOp => {
            for _ in 0..common.warmup {
                for op in &w.ops {
                    cb.record(op.as_ref())?;
                    cb.commit()?;
                }
            }
            cb.wait()?;
            let start = Instant::now();
            for _ in 0..common.iters {
                for op in &w.ops {
                    cb.record(op.as_ref())?;
                    cb.commit()?;
                }
            }
            cb.wait()?;
            let wall_total = start.elapsed();
            Ok(Timing { total: wall_total, wall_total, timer: "wall" })
        }
    }
}

/// `[a,b,c]`, the shape notation shared with `pytorch_bench.py`.
fn dims(d: &[usize]) -> String {
    let inner: Vec<String> = d.iter().map(ToString::to_string).collect();
    format!("[{}]", inner.join(","))
}

fn positive(name: &str, value: usize) -> Result<()> {
    if value == 0 { Err(invalid(format!("{name} must be at least 1"))) } else { Ok(()) }
}

fn elem(dtype: DType) -> f64 {
    dtype.size_in_bytes() as f64
}

fn sdpa(rt: &Runtime, dtype: DType, a: &SdpaArgs) -> Result<Workload> {
    for (name, v) in
        [("--batch", a.batch), ("--heads", a.heads), ("--seq-q", a.seq_q), ("--seq-k", a.seq_k), ("--dim", a.dim)]
    {
        positive(name, v)?;
    }
    let kv_heads = a.kv_heads.unwrap_or(a.heads);
    positive("--kv-heads", kv_heads)?;
    if !a.heads.is_multiple_of(kv_heads) {
        return Err(invalid(format!("--kv-heads {kv_heads} must divide --heads {}", a.heads)));
    }
    let rank3 = a.rank3 || (!a.rank4 && a.heads == 1);
    if rank3 && (a.heads != 1 || kv_heads != 1) {
        return Err(invalid("--rank3 needs --heads 1 and --kv-heads 1"));
    }
    let causal = !a.no_causal;
    let (q_dims, kv_dims) = if rank3 {
        (vec![a.batch, a.seq_q, a.dim], vec![a.batch, a.seq_k, a.dim])
    } else {
        (vec![a.batch, a.heads, a.seq_q, a.dim], vec![a.batch, kv_heads, a.seq_k, a.dim])
    };
    let kv_dtype = match (a.kv_f16, dtype) {
        (false, _) => dtype,
        (true, DType::F32) => DType::F16,
        (true, _) => return Err(invalid("--kv-f16 needs --dtype f32")),
    };
    let q = Tensor::random_uniform(rt, q_dims.as_slice(), dtype, -1.0, 1.0, 1)?;
    let k = Tensor::random_uniform(rt, kv_dims.as_slice(), kv_dtype, -1.0, 1.0, 2)?;
    let v = Tensor::random_uniform(rt, kv_dims.as_slice(), kv_dtype, -1.0, 1.0, 3)?;
    let out = Tensor::empty(rt, q_dims.as_slice(), dtype)?;
    let options = SdpaOptions { causal, ..Default::default() };
    let mut chosen = a.implementation.engine();
    let mut build = |q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor| -> Result<Box<dyn Operation>> {
        let (resolved, op) = attention(q, k, v, out, options.clone(), a.implementation.engine())?;
        chosen = resolved;
        Ok(op)
    };
    let (ops, submit) = match a.submit {
        SubmitArg::Whole => (vec![build(&q, &k, &v, &out)?], Submit::Whole),
        SubmitArg::PerItem => {
            // One-item views that keep the rank (and so the head layout).
            let mut ops = Vec::with_capacity(a.batch);
            for b in 0..a.batch {
                ops.push(build(&q.narrow(b, 1)?, &k.narrow(b, 1)?, &v.narrow(b, 1)?, &out.narrow(b, 1)?)?);
            }
            (ops, Submit::PerOp)
        }
    };
    let (b, h, sq, sk, d) = (a.batch as f64, a.heads as f64, a.seq_q as f64, a.seq_k as f64, a.dim as f64);
    let full = 4.0 * b * h * sq * sk * d;
    let flops = if causal { full / 2.0 } else { full };
    let bytes = 2.0 * b * h * sq * d * elem(dtype) + 2.0 * b * kv_heads as f64 * sk * d * elem(kv_dtype);
    let name = match chosen {
        SdpaImpl::Auto | SdpaImpl::Fused => "fused",
        SdpaImpl::Composite => "composite",
        SdpaImpl::SplitK => "splitk",
    };
    let implementation = match a.submit {
        SubmitArg::Whole => name.to_string(),
        SubmitArg::PerItem => format!("{name}/per-item"),
    };
    let mask = if causal { "causal" } else { "non-causal" };
    let mut note = String::new();
    if causal {
        note.push_str("FLOPs = 4*B*H*Sq*Sk*D halved for causal");
    }
    if a.seq_q == 1 && causal {
        note.push_str("; seq_q 1 bottom-right causal sees every key");
    }
    // Decode-like problems (few queries) are judged by bandwidth: bytes = q + k + v + out.
    let bound = if flops / bytes < 32.0 { Bound::Memory } else { Bound::Compute };
    Ok(Workload {
        case: "sdpa",
        implementation,
        shape: format!("q{} kv{} {mask}", dims(&q_dims), dims(&kv_dims)),
        dtype,
        flops: Some(flops),
        bytes,
        bound,
        note,
        submit,
        ops,
    })
}

fn gemm(rt: &Runtime, dtype: DType, g: &GemmArgs) -> Result<Workload> {
    for (name, v) in [("--m", g.m), ("--n", g.n), ("--k", g.k), ("--batch", g.batch)] {
        positive(name, v)?;
    }
    let lead = |d: [usize; 2]| -> Vec<usize> { if g.batch > 1 { vec![g.batch, d[0], d[1]] } else { d.to_vec() } };
    let a_dims = lead([g.m, g.k]);
    let b_dims = if g.transpose_b { lead([g.n, g.k]) } else { lead([g.k, g.n]) };
    let c_dims = lead([g.m, g.n]);
    let a = Tensor::random_uniform(rt, a_dims.as_slice(), dtype, -1.0, 1.0, 1)?;
    let b = Tensor::random_uniform(rt, b_dims.as_slice(), dtype, -1.0, 1.0, 2)?;
    let c = Tensor::empty(rt, c_dims.as_slice(), dtype)?;
    let op = Matmul::new(&a, &b, &c)?.transpose_b(g.transpose_b);
    op.validate()?;
    let path = format!("{:?}", op.chosen_path()?).to_lowercase();
    let (bt, m, n, k) = (g.batch as f64, g.m as f64, g.n as f64, g.k as f64);
    let t = if g.transpose_b { "^T" } else { "" };
    Ok(Workload {
        case: "gemm",
        implementation: path,
        shape: format!("{}x{}{t}", dims(&a_dims), dims(&b_dims)),
        dtype,
        flops: Some(2.0 * bt * m * n * k),
        bytes: bt * (m * k + k * n + m * n) * elem(dtype),
        bound: Bound::Compute,
        note: String::new(),
        submit: Submit::Whole,
        ops: vec![Box::new(op)],
    })
}

fn gemv(rt: &Runtime, dtype: DType, n: usize, k: usize) -> Result<Workload> {
    positive("--n", n)?;
    positive("--k", k)?;
    let x = Tensor::random_uniform(rt, [1, k], dtype, -1.0, 1.0, 1)?;
    let w = Tensor::random_uniform(rt, [n, k], dtype, -1.0, 1.0, 2)?;
    let y = Tensor::empty(rt, [1, n], dtype)?;
    let op = Matmul::new(&x, &w, &y)?.transpose_b(true);
    op.validate()?;
    let path = format!("{:?}", op.chosen_path()?).to_lowercase();
    let (nf, kf) = (n as f64, k as f64);
    Ok(Workload {
        case: "gemv",
        implementation: path,
        shape: format!("{}x{}^T", dims(&[1, k]), dims(&[n, k])),
        dtype,
        flops: Some(2.0 * nf * kf),
        bytes: (nf * kf + kf + nf) * elem(dtype),
        bound: Bound::Memory,
        note: String::new(),
        submit: Submit::Whole,
        ops: vec![Box::new(op)],
    })
}

/// The kernel knobs `bench qmatmul` passes on where given.
struct GemvTuning {
    unit: Option<u32>,
    lanes: Option<u32>,
    wg: Option<u32>,
    rows: Option<u32>,
    coop_tile: Option<(u32, u32)>,
    coop_splits: Option<u32>,
}

/// `--coop-tile ROWSxCOLS`.
fn parse_tile(s: &str) -> std::result::Result<(u32, u32), String> {
    let (r, c) = s.split_once('x').ok_or_else(|| format!("expected ROWSxCOLS, got '{s}'"))?;
    let num = |v: &str| v.parse::<u32>().map_err(|e| format!("'{v}' in '{s}': {e}"));
    Ok((num(r)?, num(c)?))
}

fn qmatmul(
    rt: &Runtime,
    dtype: DType,
    ty: QuantType,
    [m, n, k]: [usize; 3],
    path: QMatmulPath,
    tuning: GemvTuning,
) -> Result<Workload> {
    positive("--m", m)?;
    positive("--n", n)?;
    positive("--k", k)?;
    let bytes = ty
        .bytes_for(k)
        .and_then(|row| row.checked_mul(n))
        .ok_or_else(|| invalid(format!("--k {k} is not a whole number of {ty} blocks")))?;
    // Every byte 0x11: finite f16 scales (0x1111, about 6.7e-4) and mid-range quants.
    let w = QuantMatrix::from_bytes(rt, ty, n, k, &vec![0x11u8; bytes])?;
    let x = Tensor::random_uniform(rt, [m, k], dtype, -1.0, 1.0, 1)?;
    let y = Tensor::empty(rt, [m, n], dtype)?;
    let mut op = QMatmul::new(&x, &w, &y)?.path(path);
    if let Some(unit) = tuning.unit {
        op = op.gemv_unit(unit);
    }
    if let Some(lanes) = tuning.lanes {
        op = op.gemv_lanes(lanes);
    }
    if let Some(wg) = tuning.wg {
        op = op.gemv_workgroup(wg);
    }
    if let Some(rows) = tuning.rows {
        op = op.gemv_rows(rows);
    }
    if let Some((rows, cols)) = tuning.coop_tile {
        op = op.coop_tile(rows, cols);
    }
    if let Some(splits) = tuning.coop_splits {
        op = op.coop_splits(splits);
    }
    let mut path = format!("{:?}", op.chosen_path()).to_lowercase();
    if op.chosen_path() == QMatmulPath::GemvQ8 {
        // One op records both dispatches: the figure is the pair's.
        path.push_str(" (+quantize)");
    }
    if let Some((rows, cols)) = tuning.coop_tile {
        path.push_str(&format!(" tile {rows}x{cols}"));
    }
    let knobs = [
        ("unit", tuning.unit),
        ("lanes", tuning.lanes),
        ("wg", tuning.wg),
        ("rows", tuning.rows),
        ("splits of K", tuning.coop_splits),
    ];
    for (name, knob) in knobs {
        if let Some(v) = knob {
            path.push_str(&format!(" {name} {v}"));
        }
    }
    let (mf, nf, kf) = (m as f64, n as f64, k as f64);
    Ok(Workload {
        case: "qmatmul",
        implementation: path,
        shape: format!("{}x{}^T {ty}", dims(&[m, k]), dims(&[n, k])),
        dtype,
        flops: Some(2.0 * mf * nf * kf),
        bytes: w.size_in_bytes() as f64 + (mf * kf + mf * nf) * elem(dtype),
        bound: Bound::Memory,
        note: String::new(),
        submit: Submit::Whole,
        ops: vec![Box::new(op)],
    })
}

fn softmax(rt: &Runtime, dtype: DType, r: &RowArgs) -> Result<Workload> {
    positive("--rows", r.rows)?;
    positive("--cols", r.cols)?;
    let x = Tensor::random_uniform(rt, [r.rows, r.cols], dtype, -4.0, 4.0, 1)?;
    let out = x.empty_like()?;
    let op = Softmax::new(&x, &out, SoftmaxOptions::default())?.compensated(!r.plain);
    Ok(row_workload("softmax", dtype, r, 2.0 * (r.rows * r.cols) as f64 * elem(dtype), Box::new(op)))
}

fn layernorm(rt: &Runtime, dtype: DType, r: &RowArgs, rms: bool) -> Result<Workload> {
    positive("--rows", r.rows)?;
    positive("--cols", r.cols)?;
    let x = Tensor::random_uniform(rt, [r.rows, r.cols], dtype, -1.0, 1.0, 1)?;
    let weight = Tensor::random_uniform(rt, [r.cols], dtype, 0.5, 1.5, 2)?;
    let out = x.empty_like()?;
    let eps = 1e-5;
    let (case, op, params): (_, Box<dyn Operation>, usize) = if rms {
        ("rmsnorm", Box::new(RmsNorm::new(&x, Some(&weight), eps, false, &out)?.compensated(!r.plain)), 1)
    } else {
        let bias = Tensor::random_uniform(rt, [r.cols], dtype, -0.5, 0.5, 3)?;
        ("layernorm", Box::new(LayerNorm::new(&x, Some(&weight), Some(&bias), eps, &out)?.compensated(!r.plain)), 2)
    };
    let bytes = (2 * r.rows * r.cols + params * r.cols) as f64 * elem(dtype);
    Ok(row_workload(case, dtype, r, bytes, op))
}

fn row_workload(case: &'static str, dtype: DType, r: &RowArgs, bytes: f64, op: Box<dyn Operation>) -> Workload {
    Workload {
        case,
        implementation: if r.plain { "plain" } else { "compensated" }.into(),
        shape: dims(&[r.rows, r.cols]),
        dtype,
        flops: None,
        bytes,
        bound: Bound::Memory,
        note: String::new(),
        submit: Submit::Whole,
        ops: vec![op],
    }
}

fn copy(rt: &Runtime, dtype: DType, mb: usize) -> Result<Workload> {
    positive("--mb", mb)?;
    let bytes = mb.checked_mul(1 << 20).ok_or_else(|| invalid("--mb is too large"))?;
    let n = bytes / dtype.size_in_bytes();
    let src = Tensor::random_uniform(rt, [n], dtype, -1.0, 1.0, 1)?;
    let dst = src.empty_like()?;
    let op = Copy::new(&src, &dst)?;
    Ok(Workload {
        case: "copy",
        implementation: "copy".into(),
        shape: dims(&[n]),
        dtype,
        flops: None,
        bytes: 2.0 * bytes as f64,
        bound: Bound::Memory,
        note: "bytes = read + write".into(),
        submit: Submit::Whole,
        ops: vec![Box::new(op)],
    })
}

/// One result line: every field of the human line, also written as JSON.
struct Record {
    case: &'static str,
    implementation: String,
    shape: String,
    dtype: DType,
    iters: usize,
    warmup: usize,
    timer: &'static str,
    ms: f64,
    total_ms: f64,
    wall_total_ms: f64,
    flops: Option<f64>,
    bytes: f64,
    tflops: Option<f64>,
    gbs: f64,
    unit: &'static str,
    throughput: f64,
    ceiling: Option<f64>,
    pct_ceiling: Option<f64>,
    note: String,
    device: String,
}

impl Record {
    fn new(w: &Workload, t: &Timing, common: &Common, device: String) -> Record {
        let total_ms = t.total.as_secs_f64() * 1e3;
        let ms = total_ms / common.iters as f64;
        let secs = (ms / 1e3).max(f64::MIN_POSITIVE);
        let tflops = w.flops.map(|f| f / secs / 1e12);
        let gbs = w.bytes / secs / 1e9;
        let (unit, throughput, ceiling) = match (w.bound, tflops) {
            (Bound::Compute, Some(tf)) => ("TFLOP/s", tf, common.ceiling_tflops),
            _ => ("GB/s", gbs, common.ceiling_gbs),
        };
        Record {
            case: w.case,
            implementation: w.implementation.clone(),
            shape: w.shape.clone(),
            dtype: w.dtype,
            iters: common.iters,
            warmup: common.warmup,
            timer: t.timer,
            ms,
            total_ms,
            wall_total_ms: t.wall_total.as_secs_f64() * 1e3,
            flops: w.flops,
            bytes: w.bytes,
            tflops,
            gbs,
            unit,
            throughput,
            ceiling,
            pct_ceiling: ceiling.map(|c| 100.0 * throughput / c),
            note: w.note.clone(),
            device,
        }
    }

    fn human(&self) -> String {
        let mut s = format!(
            "{} [{}] {} {}: {:.4} ms/iter, {:.2} ms for {} iters ({} timer); {}",
            self.case,
            self.implementation,
            self.shape,
            self.dtype,
            self.ms,
            self.total_ms,
            self.iters,
            self.timer,
            figure(self.throughput, self.unit),
        );
        if let (Some(c), Some(p)) = (self.ceiling, self.pct_ceiling) {
            let _ = write!(s, " = {p:.1}% of ceiling {}", figure(c, self.unit));
        }
        // The other figure, for reference.
        if self.unit == "TFLOP/s" {
            let _ = write!(s, " ({})", figure(self.gbs, "GB/s"));
        } else if let Some(tf) = self.tflops {
            let _ = write!(s, " ({})", figure(tf, "TFLOP/s"));
        }
        if !self.note.is_empty() {
            let _ = write!(s, " [{}]", self.note);
        }
        let _ = write!(s, " on {}", self.device);
        s
    }

    fn json(&self) -> String {
        let mut o = JsonObject::default();
        o.str("tool", "metallic");
        o.str("case", self.case);
        o.str("impl", &self.implementation);
        o.str("shape", &self.shape);
        o.str("dtype", &self.dtype.to_string());
        o.num("iters", self.iters as f64);
        o.num("warmup", self.warmup as f64);
        o.str("timer", self.timer);
        o.num("ms", self.ms);
        o.num("total_ms", self.total_ms);
        o.num("wall_total_ms", self.wall_total_ms);
        o.opt("flops", self.flops);
        o.num("bytes", self.bytes);
        o.opt("tflops", self.tflops);
        o.num("gbs", self.gbs);
        o.str("unit", self.unit);
        o.num("throughput", self.throughput);
        o.opt("ceiling", self.ceiling);
        o.opt("pct_ceiling", self.pct_ceiling);
        o.str("note", &self.note);
        o.str("device", &self.device);
        o.finish()
    }
}

/// `12.3 GB/s` with precision that suits the size.
fn figure(value: f64, unit: &str) -> String {
    if value >= 100.0 { format!("{value:.0} {unit}") } else { format!("{value:.3} {unit}") }
}

/// A flat JSON object written by hand (strings, numbers, null).
#[derive(Default)]
struct JsonObject {
    body: String,
}

impl JsonObject {
    fn key(&mut self, key: &str) {
        if !self.body.is_empty() {
            self.body.push_str(", ");
        }
        self.body.push_str(&json_string(key));
        self.body.push_str(": ");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.body.push_str(&json_string(value));
    }

    fn num(&mut self, key: &str, value: f64) {
        self.key(key);
        if value.is_finite() {
            // `{}` prints the shortest representation that round-trips, never exponents.
            let _ = write!(self.body, "{value}");
        } else {
            self.body.push_str("null");
        }
    }

    fn opt(&mut self, key: &str, value: Option<f64>) {
        match value {
            Some(v) => self.num(key, v),
            None => {
                self.key(key);
                self.body.push_str("null");
            }
        }
    }

    fn finish(self) -> String {
        format!("{{{}}}", self.body)
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_nulls() {
        let mut o = JsonObject::default();
        o.str("a", "x\"y\\z\n\u{1}");
        o.num("b", 1.5);
        o.num("c", f64::NAN);
        o.opt("d", None);
        o.num("e", 1e20);
        assert_eq!(
            o.finish(),
            r#"{"a": "x\"y\\z\n\u0001", "b": 1.5, "c": null, "d": null, "e": 100000000000000000000}"#
        );
    }

    #[test]
    fn shape_notation() {
        assert_eq!(dims(&[32, 1024, 64]), "[32,1024,64]");
        assert_eq!(dims(&[7]), "[7]");
    }
}
