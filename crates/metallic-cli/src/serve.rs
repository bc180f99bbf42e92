//! `metallic serve`: the OpenAI-compatible server (`metallic-serve`) with its models loaded
//! from the command line.
//!
//! The listener is bound first, so `/health` answers 503 `loading` while the models load;
//! then `listening on http://HOST:PORT` goes to stderr; that URL is the chat page too, unless
//! `--no-webui`. Ctrl-C or SIGTERM stops accepting, lets requests in flight finish for
//! `--shutdown-grace` seconds, cancels the rest and exits 0; a second signal exits at once.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use metallic::Runtime;
use metallic_models::decoder::PREFILL_CHUNK;
use metallic_models::{Embedder, EmbedderOptions, Error, Llm, Result};
use metallic_serve::engine::{Engine, EngineConfig};
use metallic_serve::{EmbeddingModel, LanguageModel, Models, Server, ServerOptions};

/// The context per sequence when `--ctx-size` is not given, unless the model's is smaller.
const DEFAULT_CTX: usize = 4096;

/// Arguments of `metallic serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A GGUF language model for /v1/chat/completions and /v1/completions.
    #[arg(long, required_unless_present = "embedding_model")]
    model: Option<PathBuf>,
    /// A sentence-transformers model directory for /v1/embeddings.
    #[arg(long)]
    embedding_model: Option<PathBuf>,
    /// Address to listen on (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the one taken is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded together; each holds a KV cache of --ctx-size positions.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Positions per sequence (prompt and generated tokens together). Default: 4096, or the
    /// model's trained context when smaller.
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Element type of the KV caches. Default: f16 where the device has f16 shaders, else f32.
    #[arg(long, value_enum)]
    cache_type: Option<crate::generate::CacheType>,
    /// Require `Authorization: Bearer KEY` on /v1/* (/health and /metrics stay open).
    #[arg(long, env = "METALLIC_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests that may wait for a free sequence; beyond it they are answered 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Seconds a shutdown lets requests in flight finish before cancelling them.
    #[arg(long, default_value_t = 20)]
    shutdown_grace: u64,
    /// Do not serve the chat page at / (the API is the same either way).
    #[arg(long)]
    no_webui: bool,
    /// Keep every sequence's arithmetic bit-identical to a solo run at any number of
    /// concurrent sequences. By default, steps of more than 8 sequences run the wide
    /// products (MLP, output) on the tensor cores where the GPU has cooperative matrices,
    /// with x and the weights rounded to f16: faster under load, and a greedy stream may then
    /// differ from its solo run where two tokens are nearly tied.
    #[arg(long)]
    exact_batches: bool,
    /// Skip the warm-up before listening (short prompts and steps of up to eight sequences,
    /// which compile the GPU pipelines requests need): a faster start, slower first requests.
    #[arg(long)]
    no_warmup: bool,
    /// Experimental: products of few output tiles on the tensor cores split K across
    /// workgroups (`bench generate --coop-split-k`).
    #[arg(long, hide = true)]
    coop_split_k: bool,
    /// Experimental: pipelined greedy steps in flight at once, 1 to 4
    /// (`EngineConfig::pipeline_depth`).
    #[arg(long, hide = true, default_value_t = 1)]
    pipeline_depth: usize,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    // Wrong whatever the models: fail before loading them.
    if args.parallel == 0 || args.max_queue == 0 || args.ctx_size == Some(0) {
        return Err(Error::InvalidInput("--parallel, --max-queue and --ctx-size must be at least 1".into()));
    }
    if args.api_key.as_deref() == Some("") {
        return Err(Error::InvalidInput("--api-key (or METALLIC_API_KEY) must not be empty".into()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("metallic-http")
        .build()
        .map_err(|e| Error::Io { path: "<tokio runtime>".into(), source: e })?;
    let result = runtime.block_on(run(args));
    // Blocking work still running (an embedding batch whose client went away) may hold up the
    // exit this long at most.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn run(args: ServeArgs) -> Result<()> {
    let options = ServerOptions {
        api_key: args.api_key.clone(),
        max_embedding_queue: args.max_queue,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        webui: !args.no_webui,
        ..ServerOptions::default()
    };
    let shown = format!("{}:{}", args.host, args.port);
    let server = Server::bind((args.host.as_str(), args.port), options)
        .await
        .map_err(|e| Error::Io { path: shown.clone().into(), source: e })?;
    let addr = server.local_addr().map_err(|e| Error::Io { path: shown.into(), source: e })?;
    let handle = server.handle();
    note(format_args!("bound http://{addr}; loading (/health answers 503 until ready)"));
    let grace = args.shutdown_grace;
    let mut serving = tokio::spawn(server.run(shutdown_signal(grace)));

    // A plain thread, not the blocking pool: a signal during loading returns at once instead
    // of waiting for the load to end.
    let (loaded, models) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("metallic-load".into())
        .spawn(move || {
            let _ = loaded.send(load(&args));
        })
        .map_err(|e| Error::Io { path: "<loading thread>".into(), source: e })?;
    tokio::select! {
        models = models => {
            let models = models.map_err(|_| Error::InvalidInput("the loading thread stopped".into()))??;
            handle.ready(models);
            note(format_args!("listening on http://{addr}"));
        }
        served = &mut serving => return finished(served),
    }
    finished(serving.await)
}

/// The server task's end as the command's result.
fn finished(served: std::result::Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<()> {
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Io { path: "<listener>".into(), source: e }),
        Err(e) => Err(Error::InvalidInput(format!("the server task failed: {e}"))),
    }
}

/// Loads what the arguments name, on one GPU runtime (the embedding model gets its own
/// command stream on the same device).
fn load(args: &ServeArgs) -> Result<Models> {
    let rt = Runtime::new()?;
    let mut models = Models::default();
    if let Some(path) = &args.model {
        models.language = Some(load_language(path, args, &rt)?);
    }
    if let Some(dir) = &args.embedding_model {
        let start = Instant::now();
        note(format_args!("loading {}", dir.display()));
        let options =
            EmbedderOptions { runtime: Some(Runtime::with_context(rt.context())?), ..EmbedderOptions::default() };
        let embedder = Embedder::load_with(dir, options)?;
        note(format_args!(
            "loaded {} in {:.2} s: {} dimensions, at most {} tokens per text",
            dir.display(),
            start.elapsed().as_secs_f64(),
            embedder.dim(),
            embedder.max_seq_length()
        ));
        models.embedding = Some(EmbeddingModel { id: model_id(dir), embedder });
    }
    Ok(models)
}

fn load_language(path: &Path, args: &ServeArgs, rt: &Runtime) -> Result<LanguageModel> {
    let start = Instant::now();
    note(format_args!("loading {}", path.display()));
    // The pipelines the last server on this model used build on every core while it loads.
    let scope = crate::generate::pipeline_scope("serve", path);
    let precompiling = metallic::pipelines::precompile_saved(rt, &scope);
    let bar = progress_bar("loading {bar:40} {pos}/{len} layers");
    let mut llm = Llm::load_with_progress(path, rt, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    crate::generate::CacheType::apply(args.cache_type, &mut llm)?;
    llm.set_exact_batches(args.exact_batches);
    llm.set_coop_split_k(args.coop_split_k);
    let trained = llm.decoder().config().n_ctx_train;
    let (ctx_size, why) = match args.ctx_size {
        Some(n) if n > trained => (n, format!("--ctx-size; beyond the model's trained context of {trained}")),
        Some(n) => (n, "--ctx-size".to_string()),
        None if llm.context_size() < DEFAULT_CTX => (llm.context_size(), "the model's context".to_string()),
        None => (DEFAULT_CTX, "the default".to_string()),
    };
    let per_sequence = llm.decoder().cache_bytes(ctx_size);
    let cache_dtype = llm.decoder().cache_dtype();
    let weights = llm.decoder().weight_bytes();
    let config = EngineConfig {
        parallel: args.parallel,
        ctx_size,
        max_queue: args.max_queue,
        prefill_chunk: PREFILL_CHUNK,
        warm_up: !args.no_warmup,
        pipeline_depth: args.pipeline_depth,
    };
    let loaded = start.elapsed();
    precompiling.join();
    let engine = Engine::start(Arc::new(llm), config)?;
    let warm_up = start.elapsed().saturating_sub(loaded);
    // The warm-up built what serving needs: remembered for the next start.
    crate::generate::save_pipelines(rt, &scope);
    let mib = |b: usize| b as f64 / f64::from(1u32 << 20);
    note(format_args!(
        "loaded {} in {:.2} s (warm-up {:.2} s): {:.0} MiB of weights on {}; {} sequences of {ctx_size} \
         positions ({why}), KV cache {:.1} MiB each ({cache_dtype})",
        path.display(),
        start.elapsed().as_secs_f64(),
        warm_up.as_secs_f64(),
        mib(weights),
        rt.context().adapter_info().name,
        args.parallel,
        mib(per_sequence),
    ));
    Ok(LanguageModel { id: model_id(path), engine })
}

/// The name clients see: the file's or directory's name without a `.gguf` extension.
fn model_id(path: &Path) -> String {
    let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy();
    name.strip_suffix(".gguf").unwrap_or(&name).to_string()
}

/// Completes at the first Ctrl-C or SIGTERM; a second one exits the process at once.
async fn shutdown_signal(grace: u64) {
    signal().await;
    note(format_args!("stopping: no new connections; requests in flight get up to {grace} s to finish"));
    tokio::spawn(async {
        signal().await;
        note(format_args!("second signal: exiting now"));
        std::process::exit(1);
    });
}

/// The next Ctrl-C or SIGTERM (never, for one whose handler cannot be installed).
async fn signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// A line on stderr (ignored if stderr is gone: the server goes on).
fn note(line: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A progress bar on stderr when it is a terminal (hidden otherwise), drawn with `template`.
fn progress_bar(template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(1);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
