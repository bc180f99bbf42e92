//! The `metallic` command-line tool.
#![deny(unsafe_code)]

mod bench;
mod embed;
mod generate;
mod inspect;
mod outfile;
mod output;
mod serve;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// Text from a GGUF language model (Gemma 3, Llama, Mistral, Qwen 2/2.5/3, SmolLM2, Phi-3),
    /// streamed to stdout; speeds on stderr.
    Generate(generate::GenerateArgs),
    /// What a GGUF file holds (architecture, size, quantization mix, tokenizer, chat template)
    /// and whether metallic runs it; reads only the header.
    Inspect(inspect::InspectArgs),
    /// Cosine similarity between the embeddings of two or more texts, as a matrix.
    Similarity(embed::SimilarityArgs),
    /// Print the token ids a model sees for TEXT, as a JSON array.
    Tokenize(embed::TokenizeArgs),
    /// An OpenAI-compatible HTTP server (chat, completions, embeddings, metrics) over a GGUF
    /// model and/or an embedding model; see docs/SERVING.md.
    Serve(serve::ServeArgs),
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

/// The exit status when stdout is a closed pipe (`metallic info | head -1`): 141 = 128 + SIGPIPE,
/// what a shell reports for a Unix tool killed by SIGPIPE there, with nothing on stderr.
/// Rust ignores SIGPIPE, so writes fail with `BrokenPipe` instead; `main` turns that into this.
const CLOSED_PIPE_STATUS: u8 = 141;

fn main() -> ExitCode {
    let cli = parse();
    // Before any thread exists and before any GPU initialisation; removed when `main` returns.
    let _runtime_dir = runtime_dir::PrivateRuntimeDir::ensure();
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
        Command::Inspect(args) => inspect::inspect(args),
        Command::Serve(args) => serve::serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::from(CLOSED_PIPE_STATUS),
        Err(err) => {
            // Not `eprintln!`, which panics when stderr is gone too.
            let _ = writeln!(std::io::stderr(), "error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A private `XDG_RUNTIME_DIR` when the environment has no usable one. Mesa's software Vulkan
/// driver (lavapipe/llvmpipe, through libwayland) prints "error: XDG_RUNTIME_DIR is invalid or
/// not set in the environment." on every start otherwise, so a successful run would end with
/// an `error:` line on stderr.
mod runtime_dir {
    use std::path::{Path, PathBuf};

    /// The directory this process made and pointed `XDG_RUNTIME_DIR` at, removed on drop;
    /// `None` when the environment already had a usable one (or none could be made).
    pub(crate) struct PrivateRuntimeDir(Option<PathBuf>);

    impl PrivateRuntimeDir {
        /// Leaves a usable `XDG_RUNTIME_DIR` (an absolute path to an existing directory) alone;
        /// otherwise creates `metallic-runtime-<pid>-<random>` (mode 0700) in the temporary
        /// directory and sets the variable to it. Must run while the process has one thread.
        pub(crate) fn ensure() -> Self {
            if cfg!(any(not(unix), target_vendor = "apple")) || usable(std::env::var_os("XDG_RUNTIME_DIR")) {
                return PrivateRuntimeDir(None);
            }
            let Some(dir) = create_private_dir() else { return PrivateRuntimeDir(None) };
            set_runtime_dir(&dir);
            PrivateRuntimeDir(Some(dir))
        }
    }

    impl Drop for PrivateRuntimeDir {
        fn drop(&mut self) {
            if let Some(dir) = &self.0 {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn usable(value: Option<std::ffi::OsString>) -> bool {
        value.map(PathBuf::from).is_some_and(|dir| dir.is_absolute() && dir.is_dir())
    }

    #[allow(unsafe_code)]
    fn set_runtime_dir(dir: &Path) {
        // SAFETY: `set_var` is unsound only while another thread may read or write the
        // environment. `main` calls this first, after parsing the command line (which starts no
        // thread) and before anything that could start one (wgpu, Vulkan, the progress bar).
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", dir) };
    }

    /// A new directory only this user can enter, or `None` when none can be made.
    fn create_private_dir() -> Option<PathBuf> {
        use std::hash::{BuildHasher, Hasher};
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        for _ in 0..8 {
            let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
            let name = format!("metallic-runtime-{}-{random:016x}", std::process::id());
            // libwayland takes only an absolute path.
            let dir = std::path::absolute(std::env::temp_dir().join(name)).ok()?;
            match builder.create(&dir) {
                Ok(()) => return Some(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) => return None,
            }
        }
        None
    }
}

/// The command line, with negative numbers accepted as values everywhere (`--temperature -1`
/// reaches the range check instead of clap's "unexpected argument '-1'"). Usage errors exit
/// with clap's status 2.
fn parse() -> Cli {
    let mut matches = allow_negative_numbers(Cli::command()).get_matches();
    match Cli::from_arg_matches_mut(&mut matches) {
        Ok(cli) => cli,
        Err(err) => err.format(&mut Cli::command()).exit(),
    }
}

/// Sets `allow_negative_numbers` on every argument that takes a value, in `command` and all
/// its subcommands (clap 4 has it per argument only).
fn allow_negative_numbers(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| if arg.get_action().takes_values() { arg.allow_negative_numbers(true) } else { arg })
        .mut_subcommands(allow_negative_numbers)
}

/// Whether `err` is, anywhere in its chain of sources, an I/O error of kind `BrokenPipe`: the
/// reader of stdout has gone.
fn is_broken_pipe(err: &metallic_models::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
            return true;
        }
        next = e.source();
    }
    false
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
