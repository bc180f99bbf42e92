//! `metallic embed` and `metallic tokenize`: sentence embeddings from a model directory.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

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
    /// Write to this file (replaced only once every embedding is ready) instead of stdout.
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

/// Texts embedded per call to the model (the progress bar's step).
const CHUNK: usize = 1024;

pub fn embed(args: EmbedArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(Error::InvalidInput("--batch-size must be at least 1".into()));
    }
    // Model and input are both checked before anything is written.
    let dtype = match args.dtype {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
    };
    let texts = read_texts(args.input.as_deref(), args.input_format)?;
    let embedder =
        Embedder::load_with(&args.model, EmbedderOptions { dtype, batch_size: args.batch_size, runtime: None })?;

    let progress = progress_bar(texts.len());
    let mut embeddings = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        embeddings.extend(embedder.embed(&refs)?);
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    if let Some(bad) = embeddings.iter().position(|e| e.iter().any(|v| !v.is_finite())) {
        return Err(Error::InvalidInput(format!("text {} gave a non-finite embedding", bad + 1)));
    }

    let bytes = match args.format {
        OutputFormat::Jsonl => jsonl(&embeddings),
        OutputFormat::Npy => npy(&embeddings, embedder.dim()),
    };
    match &args.output {
        Some(path) => write_atomically(path, &bytes),
        None => write_stdout(&bytes),
    }
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let ids = if args.model.is_file() {
        let file = metallic_models::gguf::GgufFile::open(&args.model)?;
        let vocab = metallic_models::vocab::Vocab::from_gguf(&file)?;
        let mut ids = vocab.encode(&args.text, true, true);
        if args.no_bos && ids.first().is_some_and(|&id| Some(id) == vocab.bos()) {
            ids.remove(0);
        }
        ids
    } else {
        Embedder::load(&args.model)?.tokenize(&args.text)?
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

fn progress_bar(total: usize) -> indicatif::ProgressBar {
    if total <= CHUNK || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} texts, {per_sec}, eta {eta}") {
        bar.set_style(style);
    }
    bar
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

/// Writes `bytes` next to `path` and renames over it, so a failure never leaves a partial file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| Error::Io { path: path.into(), source: e };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, path).map_err(io)
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
