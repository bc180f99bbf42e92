//! The BERT encoder (Devlin et al., 2018) as Hugging Face's `BertModel` lays out its weights:
//! one struct per block of `config.json`, each with a `forward` on the engine's tensors.
//!
//! ```text
//! ids ─ BertEmbeddings (word + position + token type 0, LayerNorm)
//!     ─ BertLayer × num_hidden_layers:
//!         BertAttention: x + out(attention(q, k, v)) → LayerNorm
//!         BertMlp:       x + out(act(intermediate(x))) → LayerNorm
//!     → hidden states [batch, seq, hidden_size]
//! ```

use std::path::Path;

use metallic::kernels::sdpa::{SdpaOptions, scaled_dot_product_attention};
use metallic::{DType, Runtime, Tensor};
use serde::Deserialize;

use crate::weights::{SafetensorsFile, bad_value, upload};
use crate::{Error, Result};

/// The fields of a Hugging Face BERT `config.json` that the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// `"bert"` (also accepted: a missing field with a `Bert*` architecture).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Class names such as `BertModel`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Rows of the word embedding.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Longest input, in tokens.
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding (only type 0 is used: single-text inputs).
    #[serde(default = "one")]
    pub type_vocab_size: usize,
    /// The MLP's activation: `gelu` (erf form), `gelu_new` / `gelu_pytorch_tanh` (tanh form)
    /// or `relu`.
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` position embeddings are implemented.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn one() -> usize {
    1
}
fn gelu() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-12
}

/// Upper bounds on dimensions, so that a corrupt config fails with a message, not an
/// allocation attempt.
const LIMITS: [(&str, usize); 7] = [
    ("vocab_size", 1 << 22),
    ("hidden_size", 1 << 14),
    ("num_hidden_layers", 1 << 10),
    ("num_attention_heads", 1 << 10),
    ("intermediate_size", 1 << 17),
    ("max_position_embeddings", 1 << 16),
    ("type_vocab_size", 1 << 10),
];

/// The MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x Φ(x)`, erf form.
    Gelu,
    /// The tanh approximation of GELU.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => x.gelu()?,
            Activation::GeluTanh => x.gelu_tanh()?,
            Activation::Relu => x.relu()?,
        })
    }
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses and checks the text of a `config.json`; errors name `path`.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let config: BertConfig = serde_json::from_str(text).map_err(|e| Error::format(path, e.to_string()))?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let is_bert = match &self.model_type {
            Some(t) => t == "bert",
            None => self.architectures.iter().any(|a| a.starts_with("Bert")),
        };
        if !is_bert {
            let found = self.model_type.clone().unwrap_or_else(|| self.architectures.join(", "));
            return Err(Error::Unsupported { path: path.into(), what: "model_type", found, supported: "bert" });
        }
        let values = [
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ];
        for ((field, limit), value) in LIMITS.iter().zip(values) {
            if value == 0 || value > *limit {
                return Err(Error::format(path, format!("`{field}` is {value}; expected 1 to {limit}")));
            }
        }
        if self.max_position_embeddings < 2 {
            return Err(Error::format(
                path,
                format!(
                    "`max_position_embeddings` is {}; expected at least 2 (every input holds [CLS] and [SEP])",
                    self.max_position_embeddings
                ),
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::format(
                path,
                format!(
                    "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(Error::format(path, format!("`layer_norm_eps` is {}", self.layer_norm_eps)));
        }
        if let Some(kind) = &self.position_embedding_type
            && kind != "absolute"
        {
            return Err(Error::Unsupported {
                path: path.into(),
                what: "position_embedding_type",
                found: kind.clone(),
                supported: "absolute",
            });
        }
        self.activation(path)?;
        Ok(())
    }

    /// The MLP activation named by `hidden_act`.
    pub fn activation(&self, path: &Path) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::Unsupported {
                path: path.into(),
                what: "hidden_act",
                found: other.into(),
                supported: "gelu, gelu_new, gelu_pytorch_tanh, relu",
            }),
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Where the weights are read from: the file and the name prefix (`""` for checkpoints saved
/// from `BertModel`, `"bert."` for those saved from a task head such as `BertForMaskedLM`).
struct Loader<'a> {
    file: &'a SafetensorsFile,
    prefix: &'static str,
    rt: &'a Runtime,
    dtype: DType,
}

impl Loader<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.file.tensor(self.rt, &format!("{}{name}", self.prefix), shape, self.dtype)
    }

    /// Tensor `name` on the host, checked to be finite and to fit the storage dtype.
    fn host(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.file.read_as(&format!("{}{name}", self.prefix), shape, self.dtype)
    }
}

/// `y = x Wᵀ + b`, with `W` stored `[out, in]` as in PyTorch.
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(w: &Loader<'_>, name: &str, out: usize, input: usize) -> Result<Self> {
        Ok(Linear {
            weight: w.tensor(&format!("{name}.weight"), &[out, input])?,
            bias: w.tensor(&format!("{name}.bias"), &[out])?,
        })
    }

    /// Several linear layers on the same input fused into one (their outputs side by side).
    fn load_fused(w: &Loader<'_>, names: &[&str], out: usize, input: usize) -> Result<Self> {
        let mut weight = Vec::with_capacity(names.len() * out * input);
        let mut bias = Vec::with_capacity(names.len() * out);
        for name in names {
            weight.extend(w.host(&format!("{name}.weight"), &[out, input])?);
            bias.extend(w.host(&format!("{name}.bias"), &[out])?);
        }
        let rows = names.len() * out;
        Ok(Linear {
            weight: upload(w.rt, &[rows, input], &weight, w.dtype)?,
            bias: upload(w.rt, &[rows], &bias, w.dtype)?,
        })
    }

    /// `x` is `[tokens, in]`; returns `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul_t(&self.weight)?.add_elem(&self.bias)?)
    }
}

/// LayerNorm with a learned scale and shift.
#[derive(Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &Loader<'_>, name: &str, width: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.tensor(&format!("{name}.weight"), &[width])?,
            bias: w.tensor(&format!("{name}.bias"), &[width])?,
            eps: eps as f32,
        })
    }

    /// Normalises each row of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.layer_norm(Some(&self.weight), Some(&self.bias), self.eps)?)
    }
}

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Debug)]
pub struct BertEmbeddings {
    word: Tensor,
    /// Position embeddings with the token-type-0 row already added: `[max_positions, hidden]`.
    position: Tensor,
    norm: LayerNorm,
}

impl BertEmbeddings {
    fn load(w: &Loader<'_>, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let mut position = w.host("embeddings.position_embeddings.weight", &[c.max_position_embeddings, h])?;
        let types = w.host("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h])?;
        for row in position.chunks_exact_mut(h) {
            row.iter_mut().zip(&types).for_each(|(p, t)| *p += t);
        }
        // Two finite weights can still sum to a value the storage dtype cannot hold.
        let shape = [c.max_position_embeddings, h];
        if let Some(problem) = bad_value(&position, &shape, w.dtype) {
            let name = format!("{}embeddings.position_embeddings.weight", w.prefix);
            return Err(w.file.weight_error(&name, format!("plus token type 0's embedding: {problem}")));
        }
        Ok(BertEmbeddings {
            word: w.tensor("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: upload(w.rt, &[c.max_position_embeddings, h], &position, w.dtype)?,
            norm: LayerNorm::load(w, "embeddings.LayerNorm", h, c.layer_norm_eps)?,
        })
    }

    /// `ids` is `[batch, seq]` (u32); returns `[batch, seq, hidden]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let seq = ids.dims().get(1).copied().unwrap_or(0);
        let x = self.word.embedding(ids)?.add_elem(&self.position.narrow(0, seq)?)?;
        self.norm.forward(&x)
    }
}

/// Multi-head self-attention with its output projection, residual and LayerNorm.
#[derive(Debug)]
pub struct BertAttention {
    /// Query, key and value projections fused into one `[3 hidden, hidden]` layer.
    qkv: Linear,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
}

impl BertAttention {
    fn load(w: &Loader<'_>, c: &BertConfig, layer: &str) -> Result<Self> {
        let h = c.hidden_size;
        let names = ["query", "key", "value"].map(|p| format!("{layer}.attention.self.{p}"));
        Ok(BertAttention {
            qkv: Linear::load_fused(w, &names.each_ref().map(String::as_str), h, h)?,
            output: Linear::load(w, &format!("{layer}.attention.output.dense"), h, h)?,
            norm: LayerNorm::load(w, &format!("{layer}.attention.output.LayerNorm"), h, c.layer_norm_eps)?,
            heads: c.num_attention_heads,
        })
    }

    /// `x` is `[batch, seq, hidden]`; `mask` an additive `[batch, 1, 1, seq]` key mask.
    pub fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = dims3(x)?;
        let head_dim = hidden / self.heads;
        let tokens = x.reshape([batch * seq, hidden])?;
        // [tokens, 3 hidden] → [3, batch, heads, seq, head_dim]
        let qkv =
            self.qkv.forward(&tokens)?.reshape([batch, seq, 3, self.heads, head_dim])?.permute(&[2, 0, 3, 1, 4])?;
        let options = SdpaOptions { mask: Some(mask.clone()), ..SdpaOptions::default() };
        let context =
            scaled_dot_product_attention(&qkv.get_batch(0)?, &qkv.get_batch(1)?, &qkv.get_batch(2)?, options)?;
        let context = context.permute(&[0, 2, 1, 3])?.reshape([batch * seq, hidden])?;
        let y = self.output.forward(&context)?.add_elem(&tokens)?;
        self.norm.forward(&y.reshape([batch, seq, hidden])?)
    }
}

/// The feed-forward block: `intermediate`, activation, `output`, residual, LayerNorm.
#[derive(Debug)]
pub struct BertMlp {
    intermediate: Linear,
    output: Linear,
    activation: Activation,
    norm: LayerNorm,
}

impl BertMlp {
    fn load(w: &Loader<'_>, c: &BertConfig, layer: &str, activation: Activation) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(BertMlp {
            intermediate: Linear::load(w, &format!("{layer}.intermediate.dense"), i, h)?,
            output: Linear::load(w, &format!("{layer}.output.dense"), h, i)?,
            activation,
            norm: LayerNorm::load(w, &format!("{layer}.output.LayerNorm"), h, c.layer_norm_eps)?,
        })
    }

    /// `x` is `[batch, seq, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = dims3(x)?;
        let tokens = x.reshape([batch * seq, hidden])?;
        let inner = self.activation.apply(&self.intermediate.forward(&tokens)?)?;
        let y = self.output.forward(&inner)?.add_elem(&tokens)?;
        self.norm.forward(&y.reshape([batch, seq, hidden])?)
    }
}

/// `(batch, seq, hidden)` of a hidden-state tensor.
fn dims3(x: &Tensor) -> Result<(usize, usize, usize)> {
    match *x.dims() {
        [batch, seq, hidden] => Ok((batch, seq, hidden)),
        _ => Err(Error::InvalidInput(format!("hidden states must be [batch, seq, hidden], got {}", x.shape()))),
    }
}

/// One encoder layer.
#[derive(Debug)]
pub struct BertLayer {
    attention: BertAttention,
    mlp: BertMlp,
}

impl BertLayer {
    /// `x` is `[batch, seq, hidden]`; `mask` an additive `[batch, 1, 1, seq]` key mask.
    pub fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.mlp.forward(&self.attention.forward(x, mask)?)
    }
}

/// The whole encoder.
#[derive(Debug)]
pub struct BertModel {
    config: BertConfig,
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    dtype: DType,
}

impl BertModel {
    /// Loads the weights of a model described by `config` from `weights` onto `rt`, stored as
    /// `dtype` (F32 or F16; computation is f32 inside every kernel either way).
    pub fn load(config: BertConfig, weights: &SafetensorsFile, rt: &Runtime, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F16) {
            return Err(Error::InvalidInput(format!("BERT runs in f32 or f16, not {dtype:?}")));
        }
        let prefix = if weights.contains("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let w = Loader { file: weights, prefix, rt, dtype };
        let activation = config.activation(weights.path())?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let name = format!("encoder.layer.{i}");
                Ok(BertLayer {
                    attention: BertAttention::load(&w, &config, &name)?,
                    mlp: BertMlp::load(&w, &config, &name, activation)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel { embeddings: BertEmbeddings::load(&w, &config)?, layers, config, dtype })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The storage dtype of weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Hidden states `[batch, seq, hidden]` for token `ids` (`[batch, seq]`, u32) under an
    /// additive key mask `[batch, 1, 1, seq]` (0 for real tokens, `-inf` for padding).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mut x = self.embeddings.forward(ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, mask)?;
        }
        Ok(x)
    }
}
