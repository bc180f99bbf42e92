//! The `metallic` command-line tool.

mod bench;
mod embed;
mod generate;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::outln;
use metallic::{
    DType, Graph, Runtime, Tensor,
    kernels::elementwise::{Binary, BinaryOp},
};

#[derive(Parser)]
#[command(name = "metallic", version, about = "GPU inference engine on wgpu (Metal, Vulkan, DX12)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters and show the one metallic picks: backend, features, limits.
    Info,
    /// Run a small end-to-end computation on the GPU and check it against the CPU.
    Demo {
        /// Elements per tensor.
        #[arg(long, default_value_t = 1 << 20)]
        n: usize,
    },
    /// Time one of metallic's kernels (GPU timestamps; see `bench/README.md`).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Sentence embeddings for texts (one per line on stdin or --input) with a
    /// sentence-transformers model directory (see `scripts/fetch-model.sh`).
    Embed(embed::EmbedArgs),
    /// Text from a GGUF language model (Gemma 3), streamed to stdout; speeds on stderr.
    Generate(generate::GenerateArgs),
    /// Cosine similarity between the embeddings of two or more texts, as a matrix.
    Similarity(embed::SimilarityArgs),
    /// Print the token ids a model sees for TEXT, as a JSON array.
    Tokenize(embed::TokenizeArgs),
}

#[derive(Subcommand)]
enum BenchWhat {
    #[command(flatten)]
    Kernel(bench::BenchCommand),
    /// Sentences per second of `metallic embed`'s library call on bench/embed_texts.txt (the
    /// peer is bench/embed_bench.py).
    Embed(embed::EmbedBenchArgs),
    /// Prefill and decode tokens/s of a GGUF language model (`metallic generate`'s library path).
    Generate(generate::GenerateBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: metallic_models::Result<()> = match cli.command {
        Command::Info => info(),
        Command::Demo { n } => demo(n),
        Command::Bench { what: BenchWhat::Kernel(what) } => bench::run(what),
        Command::Bench { what: BenchWhat::Embed(args) } => embed::bench(args),
        Command::Bench { what: BenchWhat::Generate(args) } => generate::bench(args),
        Command::Embed(args) => embed::embed(args),
        Command::Tokenize(args) => embed::tokenize(args),
        Command::Similarity(args) => embed::similarity(args),
        Command::Generate(args) => generate::generate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> metallic_models::Result<()> {
    let all = metallic::adapters(metallic::wgpu::Backends::all());
    outln!("adapters found: {}", all.len());
    for (i, a) in all.iter().enumerate() {
        outln!("  [{i}] {} ({:?}, {:?}, driver {} {})", a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    let ctx = metallic::Context::new()?;
    let caps = ctx.caps();
    let info = ctx.adapter_info();
    outln!("chosen: {} ({:?}, {:?})", info.name, info.backend, info.device_type);
    outln!("  subgroups:          {} (size {}..{})", caps.subgroups(), info.subgroup_min_size, info.subgroup_max_size);
    outln!("  shader f16:         {}", caps.shader_f16());
    outln!("  parameters via:     {:?}", caps.params);
    outln!("  timestamps:         {}", caps.timestamps());
    outln!("  cooperative matrix: {}", caps.cooperative_matrix());
    outln!("  unified memory:     {}", caps.unified_memory);
    let l = &caps.limits;
    outln!("  max buffer size:              {} MiB", l.max_buffer_size >> 20);
    outln!("  max storage binding size:     {} MiB", l.max_storage_buffer_binding_size >> 20);
    outln!("  storage offset alignment:     {} bytes", l.min_storage_buffer_offset_alignment);
    outln!("  workgroup storage:            {} KiB", l.max_compute_workgroup_storage_size >> 10);
    outln!("  invocations per workgroup:    {}", l.max_compute_invocations_per_workgroup);
    outln!("  workgroups per dimension:     {}", l.max_compute_workgroups_per_dimension);
    outln!("  immediate (push constant) size: {} bytes", l.max_immediate_size);
    outln!("  all features: {:?}", caps.features);
    Ok(())
}

fn demo(n: usize) -> metallic_models::Result<()> {
    let rt = Runtime::new()?;
    outln!("device: {} ({:?})", rt.context().adapter_info().name, rt.context().adapter_info().backend);
    // y = (x * w + 1) over a graph, x random on the GPU, w broadcast over rows of 256.
    let cols = 256.min(n.max(1));
    let rows = n.div_ceil(cols);
    let x = Tensor::random_uniform(&rt, [rows, cols], DType::F32, -1.0, 1.0, 7)?;
    let w = Tensor::arange(&rt, 0.0, cols as f32, 1.0, DType::F32)?;
    let mut graph = Graph::new(&rt);
    let gx = graph.input("x", [rows, cols], DType::F32)?;
    let gy = gx.empty_like()?;
    graph.push(Binary::new(BinaryOp::Mul, &gx, &w, &gy)?)?;
    graph.push(Binary::scalar(BinaryOp::Add, &gy, 1.0, &gy)?)?;
    graph.output("y", &gy)?;
    let start = std::time::Instant::now();
    let y = graph.forward(&[("x", &x)])?;
    let y = y.get("y").ok_or_else(|| metallic::Error::InvalidArgument { op: "demo", message: "no output".into() })?;
    let got = y.to_vec::<f32>()?;
    let elapsed = start.elapsed();
    let xs = x.to_vec::<f32>()?;
    let worst = xs
        .iter()
        .zip(&got)
        .enumerate()
        .map(|(i, (&xv, &yv))| (f64::from(xv) * (i % cols) as f64 + 1.0 - f64::from(yv)).abs())
        .fold(0.0f64, f64::max);
    outln!(
        "graph y = x * w + 1 over [{rows}, {cols}] in {:.2} ms; max |error| vs CPU = {worst:.2e}",
        elapsed.as_secs_f64() * 1e3
    );
    outln!("pool: {:?}", rt.pool().stats());
    outln!("cache: {:?}", rt.cache().stats());
    if worst > 1e-4 {
        return Err(metallic::Error::InvalidArgument {
            op: "demo",
            message: format!("GPU result differs from the CPU by {worst}"),
        }
        .into());
    }
    outln!("ok");
    Ok(())
}
