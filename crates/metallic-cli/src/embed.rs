//! `metallic embed` and `metallic tokenize`: sentence embeddings from a model directory.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::outfile::{OutputFile, plan_output};
use crate::output::{outln, write_stdout};
use metallic::DType;
use metallic_models::{Embedder, EmbedderOptions, Error, Result};

/// How the input holds its texts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InputFormat {
    /// One text per line (a trailing `\r` is dropped).
    Lines,
    /// One JSON string per line, so a text may contain newlines.
    Jsonl,
}

/// How embeddings are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    /// One JSON array per input, in input order.
    Jsonl,
    /// One NumPy `.npy` array `[texts, dim]` of little-endian f32.
    Npy,
}

/// Storage precision of weights and activations.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Precision {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (f32 arithmetic inside the kernels).
    F16,
}

/// Arguments of `metallic embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// A sentence-transformers (or Hugging Face BERT) model directory.
    #[arg(long)]
    model: PathBuf,
    /// Read texts from this file instead of stdin.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = InputFormat::Lines)]
    input_format: InputFormat,
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    format: OutputFormat,
    /// Write to this file instead of stdout: a new file beside it is renamed onto it once every
    /// embedding is ready (a link is followed; a device or FIFO is written directly).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    dtype: Precision,
}

/// Arguments of `metallic tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// A sentence-transformers (or Hugging Face BERT) model directory, or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// GGUF models: do not prepend the BOS token.
    #[arg(long)]
    no_bos: bool,
    /// The text to tokenize.
    text: String,
}

/// Arguments of `metallic similarity`.
#[derive(Debug, Args)]
pub struct SimilarityArgs {
    /// A sentence-transformers (or Hugging Face BERT) model directory.
    #[arg(long)]
    model: PathBuf,
    /// Two or more texts.
    #[arg(num_args = 2.., required = true)]
    texts: Vec<String>,
}

/// Batches embedded per call to the model (the progress bar's step), at most [`MAX_CHUNK`]
/// texts: each call ends with one read-back, so smaller calls mean finer progress but more waits.
const CHUNK_BATCHES: usize = 8;
const MAX_CHUNK: usize = 1024;

/// How long work runs before its progress bar appears (on a terminal only). The environment
/// variable `METALLIC_PROGRESS_DELAY_MS` overrides it (the tests show the bar at once).
const PROGRESS_DELAY: Duration = Duration::from_millis(1500);

pub fn embed(args: EmbedArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(Error::InvalidInput("--batch-size must be at least 1".into()));
    }
    // Output location, input and model are all checked before any work or output. The output
    // is opened now (a temporary file beside it, or the device), so an unwritable directory
    // fails first too; dropping it on any error below removes the temporary file.
    let output = match &args.output {
        Some(path) => Some((path, open_output(path)?)),
        None => None,
    };
    let dtype = match args.dtype {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
    };
    let texts = read_texts(args.input.as_deref(), args.input_format)?;
    let progress = Progress::new(texts.len());
    let embedder =
        Embedder::load_with(&args.model, EmbedderOptions { dtype, batch_size: args.batch_size, runtime: None })?;

    let chunk_len = args.batch_size.saturating_mul(CHUNK_BATCHES).min(MAX_CHUNK).max(args.batch_size);
    let mut embeddings = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(chunk_len) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        embeddings.extend(embedder.embed(&refs)?);
        progress.inc(chunk.len());
    }
    drop(progress);
    if let Some(bad) = embeddings.iter().position(|e| e.iter().any(|v| !v.is_finite())) {
        return Err(Error::InvalidInput(format!("text {} gave a non-finite embedding", bad + 1)));
    }

    let bytes = match args.format {
        OutputFormat::Jsonl => jsonl(&embeddings),
        OutputFormat::Npy => npy(&embeddings, embedder.dim()),
    };
    match output {
        Some((path, file)) => file.write(&bytes).map_err(|e| Error::Io {
            path: path.clone(),
            source: std::io::Error::new(e.kind(), format!("writing the output: {e}")),
        }),
        None => write_stdout(&bytes),
    }
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let ids = if Embedder::is_model_dir(&args.model) {
        Embedder::load(&args.model)?.tokenize(&args.text)?
    } else if args.model.is_dir() {
        return Err(Error::Format {
            path: args.model,
            message: "neither a GGUF file nor a sentence-transformers model directory; expected a .gguf file \
                      or a directory holding config.json, tokenizer.json and model.safetensors"
                .into(),
        });
    } else {
        // A missing path or a file that is not GGUF: `open` names the path and says which.
        let file = metallic_models::gguf::GgufFile::open(&args.model)?;
        let vocab = metallic_models::vocab::Vocab::from_gguf(&file)?;
        let mut ids = vocab.encode(&args.text, true, true);
        if args.no_bos && ids.first().is_some_and(|&id| Some(id) == vocab.bos()) {
            ids.remove(0);
        }
        ids
    };
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    write_stdout(format!("[{}]\n", list.join(", ")).as_bytes())
}

pub fn similarity(args: SimilarityArgs) -> Result<()> {
    let embedder = Embedder::load(&args.model)?;
    let refs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs)?;
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let mut table = String::new();
    for (i, a) in vectors.iter().enumerate() {
        for b in &vectors {
            let cosine = a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b));
            table.push_str(&format!("{cosine:7.3}"));
        }
        table.push_str(&format!("   [{}] {}\n", i + 1, args.texts.get(i).map_or("", String::as_str)));
    }
    write_stdout(table.as_bytes())
}

fn read_texts(input: Option<&Path>, format: InputFormat) -> Result<Vec<String>> {
    let (name, bytes) = match input {
        Some(path) => {
            (path.display().to_string(), std::fs::read(path).map_err(|e| Error::Io { path: path.into(), source: e })?)
        }
        None => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map_err(|e| Error::Io { path: "<stdin>".into(), source: e })?;
            ("<stdin>".to_string(), bytes)
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes().get(..at).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) + 1;
        Error::Format { path: name.clone().into(), message: format!("invalid UTF-8 on line {line} (byte {at})") }
    })?;
    let lines = text.strip_suffix('\n').unwrap_or(&text);
    if lines.is_empty() && text.is_empty() {
        return Ok(Vec::new());
    }
    lines
        .split('\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            match format {
                InputFormat::Lines => Ok(line.to_string()),
                InputFormat::Jsonl => serde_json::from_str::<String>(line).map_err(|e| Error::Format {
                    path: name.clone().into(),
                    message: format!("line {}: expected a JSON string: {e}", i + 1),
                }),
            }
        })
        .collect()
}

/// A progress bar over the texts on stderr, shown only when stderr is a terminal and only once
/// the work (model loading included) has run for [`PROGRESS_DELAY`]; dropping it clears it.
struct Progress {
    bar: indicatif::ProgressBar,
    /// Dropping the sender tells the thread waiting to show the bar that the work is done.
    reveal: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(Some(total as u64), indicatif::ProgressDrawTarget::hidden());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed:>4} {bar:40} {pos}/{len} texts, {per_sec}, eta {eta}",
        ) {
            bar.set_style(style);
        }
        if !std::io::stderr().is_terminal() {
            return Progress { bar, reveal: None };
        }
        let delay = std::env::var("METALLIC_PROGRESS_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(PROGRESS_DELAY, Duration::from_millis);
        let (done, waiting) = mpsc::channel::<()>();
        let shown = bar.clone();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = waiting.recv_timeout(delay) {
                shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                shown.tick();
                // Ticks keep the spinner and elapsed time moving while a chunk runs.
                shown.enable_steady_tick(Duration::from_millis(250));
            }
        });
        Progress { bar, reveal: Some((done, thread)) }
    }

    fn inc(&self, texts: usize) {
        self.bar.inc(texts as u64);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // The thread is stopped first, so the bar cannot appear after it is cleared.
        if let Some((done, thread)) = self.reveal.take() {
            drop(done);
            let _ = thread.join();
        }
        self.bar.finish_and_clear();
    }
}

fn jsonl(embeddings: &[Vec<f32>]) -> Vec<u8> {
    let mut out = String::with_capacity(embeddings.iter().map(|e| e.len() * 12 + 3).sum());
    for e in embeddings {
        out.push('[');
        for (i, v) in e.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&v.to_string());
        }
        out.push_str("]\n");
    }
    out.into_bytes()
}

/// A version-1.0 `.npy` file holding `[rows, dim]` little-endian f32.
fn npy(embeddings: &[Vec<f32>], dim: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {dim}), }}", embeddings.len());
    // Magic (6) + version (2) + header length (2) + dict + padding + '\n', a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let header_len = dict.len() + 1 + (64 - unpadded % 64) % 64;
    let mut out = Vec::with_capacity(10 + header_len + embeddings.len() * dim * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(10 + header_len - 1, b' ');
    out.push(b'\n');
    for v in embeddings.iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decides how `--output PATH` is written (see [`crate::outfile`]) and opens it, before any
/// work. Errors name PATH as the user gave it.
fn open_output(path: &Path) -> Result<OutputFile> {
    let io = |e: std::io::Error| Error::Io { path: path.into(), source: e };
    let plan = plan_output(path).map_err(io)?;
    OutputFile::open(&plan).map_err(|e| io(std::io::Error::new(e.kind(), format!("cannot write the output here: {e}"))))
}

/// Arguments of `metallic bench embed`.
#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    /// A sentence-transformers model directory.
    #[arg(long)]
    model: PathBuf,
    /// One text per line (bench/embed_texts.txt).
    #[arg(long)]
    texts: PathBuf,
    /// Comma-separated batch sizes; 256 texts are embedded at batch 1, 1024 otherwise.
    #[arg(long, value_delimiter = ',', default_value = "1,32,256")]
    batches: Vec<usize>,
    /// Comma-separated precisions.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32,f16")]
    dtypes: Vec<Precision>,
    /// Timed calls per measurement (after one untimed warm-up call); the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Embed at most this many texts per call.
    #[arg(long)]
    limit: Option<usize>,
}

/// Times `Embedder::embed` over the benchmark texts: the whole call a user makes
/// (tokenisation, forward passes, pooling, read-back, normalisation), wall clock.
pub fn bench(args: EmbedBenchArgs) -> Result<()> {
    if args.repeats == 0 || args.batches.contains(&0) {
        return Err(Error::InvalidInput("--repeats and every batch size must be at least 1".into()));
    }
    let texts = read_texts(Some(&args.texts), InputFormat::Lines)?;
    let rt = metallic::Runtime::new()?;
    let device = rt.context().adapter_info().name.clone();
    for &precision in &args.dtypes {
        let dtype = match precision {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
        };
        for &batch in &args.batches {
            let options = EmbedderOptions { dtype, batch_size: batch, runtime: Some(rt.clone()) };
            let embedder = Embedder::load_with(&args.model, options)?;
            let n = if batch == 1 { 256 } else { 1024 }.min(args.limit.unwrap_or(usize::MAX)).min(texts.len());
            let refs: Vec<&str> = texts.iter().take(n).map(String::as_str).collect();
            embedder.embed(&refs)?;
            let mut times = Vec::with_capacity(args.repeats);
            let mut parts = [0.0f64; 3];
            for _ in 0..args.repeats {
                let start = std::time::Instant::now();
                let (_, t) = embedder.embed_timed(&refs)?;
                times.push(start.elapsed().as_secs_f64());
                for (sum, d) in parts.iter_mut().zip([t.tokenize, t.record, t.finish]) {
                    *sum += d.as_secs_f64() / args.repeats as f64;
                }
            }
            times.sort_by(f64::total_cmp);
            let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
            let best = times.first().copied().unwrap_or(f64::NAN);
            let name = match precision {
                Precision::F32 => "f32",
                Precision::F16 => "f16",
            };
            outln!(
                "{{\"engine\": \"metallic\", \"dtype\": \"{name}\", \"batch\": {batch}, \"sentences\": {n}, \"seconds\": {median:.6}, \"best_seconds\": {best:.6}, \"sentences_per_s\": {:.1}, \"tokenize_s\": {:.6}, \"record_s\": {:.6}, \"finish_s\": {:.6}, \"device\": {}}}",
                n as f64 / median,
                parts[0],
                parts[1],
                parts[2],
                serde_json::Value::from(device.as_str())
            );
        }
    }
    Ok(())
}
