//! Sentence embeddings from a sentence-transformers model directory: tokenize, encode with
//! BERT, pool over the real tokens, normalise — the modules `modules.json` lists, in order.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use metallic::kernels::matmul::Matmul;
use metallic::{DType, Runtime, Tensor};
use serde::Deserialize;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::bert::{BertConfig, BertModel};
use crate::weights::{SafetensorsFile, upload};
use crate::{Error, Result};

/// How token states become one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over real (non-padding) tokens.
    Mean,
    /// The sum over real tokens divided by the square root of their count.
    MeanSqrtLen,
    /// The first token's state (`[CLS]`).
    Cls,
}

impl Pooling {
    /// The weight of each of `len` real tokens (`None` for tokens that do not take part).
    fn weight(self, position: usize, len: usize) -> Option<f32> {
        match self {
            Pooling::Mean => Some(1.0 / len as f32),
            Pooling::MeanSqrtLen => Some(1.0 / (len as f32).sqrt()),
            Pooling::Cls => (position == 0).then_some(1.0),
        }
    }
}

/// Where the time of one [`Embedder::embed_timed`] call went (wall clock).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbedTimings {
    /// Tokenising every text.
    pub tokenize: Duration,
    /// Recording every batch's forward pass on the CPU (the GPU starts on the first
    /// submissions meanwhile).
    pub record: Duration,
    /// Waiting for the GPU, reading the results back and normalising them.
    pub finish: Duration,
}

/// Choices made when loading an [`Embedder`].
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Storage dtype of weights and activations: `F32` (default) or `F16`.
    pub dtype: DType,
    /// Texts per forward pass (default 32).
    pub batch_size: usize,
    /// The runtime to run on; `None` makes one on the default adapter.
    pub runtime: Option<Runtime>,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions { dtype: DType::F32, batch_size: 32, runtime: None }
    }
}

/// A sentence-embedding model loaded onto the GPU: `Embedder::load(dir)?.embed(&texts)?`.
///
/// `dir` is a sentence-transformers model directory (`modules.json` naming a Transformer,
/// a Pooling and optionally a Normalize module) or a plain Hugging Face BERT directory
/// (`config.json`, `model.safetensors`, `tokenizer.json`; mean pooling, no normalisation).
#[derive(Debug)]
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    max_seq_length: usize,
    batch_size: usize,
    pad_id: u32,
    rt: Runtime,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, e.to_string()))
}

/// The pipeline `modules.json` describes.
struct Pipeline {
    transformer: PathBuf,
    pooling: Pooling,
    normalize: bool,
}

impl Pipeline {
    fn read(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        if !modules_path.exists() {
            return Ok(Pipeline { transformer: dir.into(), pooling: Pooling::Mean, normalize: false });
        }
        let modules: Vec<Module> = read_json(&modules_path)?;
        let (mut transformer, mut pooling, mut normalize) = (None, None, false);
        for module in &modules {
            let name = module.kind.rsplit('.').next().unwrap_or_default();
            match name {
                "Transformer" if transformer.is_none() && pooling.is_none() => {
                    transformer = Some(dir.join(&module.path));
                }
                "Pooling" if transformer.is_some() && pooling.is_none() => {
                    pooling = Some(Self::pooling(&dir.join(&module.path).join("config.json"))?);
                }
                "Normalize" if pooling.is_some() && !normalize => normalize = true,
                _ => {
                    return Err(Error::Unsupported {
                        path: modules_path,
                        what: "module (or module order)",
                        found: module.kind.clone(),
                        supported: "Transformer, then Pooling, then optionally Normalize",
                    });
                }
            }
        }
        match (transformer, pooling) {
            (Some(transformer), Some(pooling)) => Ok(Pipeline { transformer, pooling, normalize }),
            _ => Err(Error::format(modules_path, "needs a Transformer and a Pooling module")),
        }
    }

    fn pooling(path: &Path) -> Result<Pooling> {
        let c: PoolingConfig = read_json(path)?;
        let modes = [
            (c.pooling_mode_mean_tokens, Some(Pooling::Mean), "mean_tokens"),
            (c.pooling_mode_mean_sqrt_len_tokens, Some(Pooling::MeanSqrtLen), "mean_sqrt_len_tokens"),
            (c.pooling_mode_cls_token, Some(Pooling::Cls), "cls_token"),
            (c.pooling_mode_max_tokens, None, "max_tokens"),
        ];
        let chosen: Vec<_> = modes.iter().filter(|(on, ..)| *on).collect();
        match chosen.as_slice() {
            [(_, Some(pooling), _)] => Ok(*pooling),
            [(_, None, name)] => Err(Error::Unsupported {
                path: path.into(),
                what: "pooling mode",
                found: (*name).into(),
                supported: "mean_tokens, mean_sqrt_len_tokens, cls_token",
            }),
            _ => Err(Error::format(path, "exactly one pooling_mode_* must be true")),
        }
    }
}

impl Embedder {
    /// Loads the model in `dir` in f32 onto the default adapter.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, EmbedderOptions::default())
    }

    /// Loads the model in `dir` with `options`.
    pub fn load_with(dir: impl AsRef<Path>, options: EmbedderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        check_model_dir(dir)?;
        if options.batch_size == 0 {
            return Err(Error::InvalidInput("batch size must be at least 1".into()));
        }
        let pipeline = Pipeline::read(dir)?;
        let root = &pipeline.transformer;
        // `config.json` checks its own fields (`max_position_embeddings` at least 2 among them);
        // `sentence_bert_config.json` may only shorten the input further.
        let config = BertConfig::load(&root.join("config.json"))?;
        let bert_config = root.join("sentence_bert_config.json");
        let configured =
            if bert_config.exists() { read_json::<SentenceBertConfig>(&bert_config)?.max_seq_length } else { None };
        if let Some(length) = configured
            && length < 2
        {
            return Err(Error::format(
                bert_config,
                format!("`max_seq_length` is {length}; expected at least 2 (every input holds [CLS] and [SEP])"),
            ));
        }
        let max_seq_length = configured.unwrap_or(512).min(config.max_position_embeddings);

        let tokenizer = load_tokenizer(&root.join("tokenizer.json"), max_seq_length)?;
        let pad_id = tokenizer.get_padding().map(|p| p.pad_id).or_else(|| tokenizer.token_to_id("[PAD]")).unwrap_or(0);
        let mut tokenizer = tokenizer;
        tokenizer.with_padding(None::<PaddingParams>);

        let rt = match options.runtime {
            Some(rt) => rt,
            None => Runtime::new()?,
        };
        let weights = SafetensorsFile::open(root.join("model.safetensors"))?;
        let model = BertModel::load(config, &weights, &rt, options.dtype)?;
        Ok(Embedder {
            model,
            tokenizer,
            pooling: pipeline.pooling,
            normalize: pipeline.normalize,
            max_seq_length,
            batch_size: options.batch_size,
            pad_id,
            rt,
        })
    }

    /// Whether `dir` looks like a model [`load`](Self::load) reads: a directory holding
    /// `modules.json` (sentence-transformers) or `config.json` (Hugging Face). Nothing is
    /// parsed, so loading it can still fail.
    pub fn is_model_dir(dir: impl AsRef<Path>) -> bool {
        let dir = dir.as_ref();
        dir.is_dir() && (dir.join("modules.json").is_file() || dir.join("config.json").is_file())
    }

    /// Width of an embedding.
    pub fn dim(&self) -> usize {
        self.model.config().hidden_size
    }

    /// Longest input in tokens (special tokens included); longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The pooling the model uses.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether embeddings are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The runtime the model runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The token ids the model sees for `text`: special tokens added, truncated to
    /// [`max_seq_length`](Self::max_seq_length).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        self.checked_ids(encoding.get_ids())
    }

    /// [`tokenize`](Self::tokenize) for many texts at once (on several CPU threads).
    pub fn tokenize_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        encodings.iter().map(|e| self.checked_ids(e.get_ids())).collect()
    }

    /// `ids` as a vector, or an error if one lies outside the embedding table (which the
    /// lookup kernel would silently turn into a row of zeros).
    fn checked_ids(&self, ids: &[u32]) -> Result<Vec<u32>> {
        let vocab = self.model.config().vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::Tokenizer(format!("token id {bad} is outside the model's vocabulary of {vocab}")));
        }
        Ok(ids.to_vec())
    }

    /// One embedding per text, in order. Texts are batched by length (longest first) to
    /// keep padding small; every batch is recorded before any result is read back.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_timed(texts)?.0)
    }

    /// [`embed`](Self::embed), with where the time went.
    pub fn embed_timed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, EmbedTimings)> {
        self.embed_batched(texts, self.batch_size)
    }

    /// [`embed_timed`](Self::embed_timed) with `batch_size` texts per forward pass instead of
    /// the [`EmbedderOptions::batch_size`] chosen at load (the Python binding's per-call
    /// `batch_size`).
    pub fn embed_batched(&self, texts: &[&str], batch_size: usize) -> Result<(Vec<Vec<f32>>, EmbedTimings)> {
        if batch_size == 0 {
            return Err(Error::InvalidInput("batch size must be at least 1".into()));
        }
        let start = Instant::now();
        let tokens = self.tokenize_batch(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens.get(i).map_or(0, Vec::len)));
        let tokenized = Instant::now();

        // Every batch pools into its rows of one tensor (in sorted order), read back once.
        let dim = self.dim();
        let pooled = Tensor::empty(&self.rt, [texts.len().max(1), 1, dim], self.model.dtype())?;
        let mut row = 0;
        for chunk in order.chunks(batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().filter_map(|&i| tokens.get(i).map(Vec::as_slice)).collect();
            self.pool_into(&batch, &pooled.narrow(row, chunk.len())?)?;
            row += chunk.len();
        }
        let recorded = Instant::now();

        let values = if texts.is_empty() { Vec::new() } else { pooled.to_vec_f32()? };
        let mut out = vec![Vec::new(); texts.len()];
        for (&i, row) in order.iter().zip(values.chunks_exact(dim)) {
            let mut row = row.to_vec();
            if self.normalize {
                l2_normalize(&mut row);
            }
            if let Some(slot) = out.get_mut(i) {
                *slot = row;
            }
        }
        let timings =
            EmbedTimings { tokenize: tokenized - start, record: recorded - tokenized, finish: recorded.elapsed() };
        Ok((out, timings))
    }

    /// Records the forward pass of one batch and its pooling into `out` (`[batch, 1, hidden]`).
    fn pool_into(&self, batch: &[&[u32]], out: &Tensor) -> Result<()> {
        let (rows, seq) = (batch.len(), batch.iter().map(|t| t.len()).max().unwrap_or(0).max(1));
        let mut ids = vec![self.pad_id; rows * seq];
        let mut mask = vec![f32::NEG_INFINITY; rows * seq];
        let mut weights = vec![0.0f32; rows * seq];
        for (r, tokens) in batch.iter().enumerate() {
            let at = r * seq;
            for (j, &id) in tokens.iter().enumerate() {
                if let (Some(i), Some(m), Some(w)) =
                    (ids.get_mut(at + j), mask.get_mut(at + j), weights.get_mut(at + j))
                {
                    *i = id;
                    *m = 0.0;
                    *w = self.pooling.weight(j, tokens.len()).unwrap_or(0.0);
                }
            }
        }
        let dtype = self.model.dtype();
        let ids = Tensor::from_slice(&self.rt, [rows, seq], &ids)?;
        let mask = upload(&self.rt, &[rows, 1, 1, seq], &mask, dtype)?;
        let weights = upload(&self.rt, &[rows, 1, seq], &weights, dtype)?;
        let hidden = self.model.forward(&ids, &mask)?;
        // Pooling is a batched product: [batch, 1, seq] token weights times the states.
        self.rt.record(&Matmul::new(&weights, &hidden, out)?)?;
        Ok(())
    }
}

/// What [`Embedder::load`] expects, for error messages.
const EXPECTED_DIR: &str = "expected a sentence-transformers (or Hugging Face BERT) model directory \
holding config.json, tokenizer.json and model.safetensors";

/// An error naming `dir` and what was expected unless [`Embedder::is_model_dir`] holds.
fn check_model_dir(dir: &Path) -> Result<()> {
    let problem = match std::fs::metadata(dir) {
        Err(_) => "not a model directory".to_string(),
        Ok(m) if m.is_dir() && Embedder::is_model_dir(dir) => return Ok(()),
        Ok(m) if m.is_dir() => format!("not a model directory (no config.json or modules.json); {EXPECTED_DIR}"),
        Ok(_) => {
            let mut magic = [0u8; 4];
            let gguf = std::fs::File::open(dir).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
                && &magic == b"GGUF";
            let hint = if gguf { " (a GGUF language model: use it with `generate` or `tokenize`)" } else { "" };
            format!("not a model directory but a file{hint}; {EXPECTED_DIR}")
        }
    };
    Err(Error::format(dir, problem))
}

fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| Error::format(path, e.to_string()))?;
    tokenizer
        .with_truncation(Some(TruncationParams { max_length, ..TruncationParams::default() }))
        .map_err(|e| Error::format(path, e.to_string()))?;
    Ok(tokenizer)
}

/// `v / max(‖v‖₂, 1e-12)`, as sentence-transformers' Normalize module computes it (what
/// [`Embedder::embed`] applies when the model lists that module).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
}
