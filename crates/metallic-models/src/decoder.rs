//! Decoder-only language models from GGUF files, written against llama.cpp's tensor names.
//! One `Decoder` serves every supported architecture; what differs between them lives in
//! [`DecoderConfig`]: the embedding scale, GeGLU or SwiGLU, the RoPE layout and frequency
//! factors, per-head q/k norms, Gemma's post-norms, local (sliding-window) layers. Which
//! optional tensors a layer has (q/k/v biases, a fused `attn_qkv`, a fused gate/up in
//! `ffn_up`) is read off the file. Weights stay quantized on the GPU ([`QuantMatrix`]).
//!
//! ```text
//! x = embed(ids) · scale
//! per layer:  h = x + post_attn_norm(attention(attn_norm(x)))      (post-norms: Gemma 3 only)
//!             x = h + post_ffn_norm(down(act(gate(n)) · up(n))),  n = ffn_norm(h)
//! logits = output(output_norm(x))          (the embedding table when tied)
//! ```
//!
//! | `general.architecture` | families | what sets it apart |
//! |---|---|---|
//! | `gemma3` | Gemma 3 | √n_embd embedding scale, GeGLU (tanh), q/k norms, post-norms, 5 local layers of 6 |
//! | `llama` | Llama 2 / 3.x, TinyLlama, SmolLM2, Mistral | interleaved RoPE, `rope_freqs` (Llama 3), optional q/k/v biases |
//! | `qwen2` | Qwen 2 / 2.5 | q/k/v biases |
//! | `qwen3` | Qwen 3 | q/k norms |
//! | `phi3` | Phi-3 | fused `attn_qkv` and gate/up; LongRoPE factors |
//!
//! A decode step (one token, or one per sequence of a batched step) of a model without
//! post-norms runs each norm inside the products that read it and each residual add inside
//! the product that makes it ([`QMatmul::rms_norm`], [`QMatmul::accumulate`]): per layer the
//! QKV products, attention, `wo` (added to x), gate/up, down (added to x) — no norm kernel;
//! the final norm keeps its dispatch (in the output product, each of a vocabulary's worth of
//! workgroups would sum x's squares again: slower, measured).
//!
//! As in llama.cpp, `attention.sliding_window` is honoured for Gemma 3 only (llama.cpp ignores
//! it for `llama` and disables it for `phi3`), so Mistral and Phi-3 attend to the whole context.

use metallic::kernels::copy::Copy;
use metallic::kernels::elementwise::{Binary, BinaryOp};
use metallic::kernels::gated::{Gated, GatedAct};
use metallic::kernels::matmul::cooperative_available;
use metallic::kernels::norm::RmsNorm;
use metallic::kernels::qmatmul::{QEmbedding, QMatmul, QMatmulPath, QuantMatrix, QuantizeQ8};
use metallic::kernels::residual::ResidualRmsNorm;
use metallic::kernels::rope::{QkvRope, RopeOptions, RopeStyle};
use metallic::kernels::sdpa::{SdpaImpl, SdpaOptions, SlotAttention, SplitKAttention, attention};
use metallic::kernels::strided::{Strided, StridedCopy};
use metallic::{DType, Runtime, Tensor};

use crate::gguf::{GgufFile, TensorInfo};
use crate::{Error, Result};

/// The `general.architecture` values [`Decoder`] runs.
pub const SUPPORTED_ARCHITECTURES: &str = "gemma3, llama, qwen2, qwen3, phi3";

/// A supported architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `gemma3`.
    Gemma3,
    /// `llama` (Llama, TinyLlama, SmolLM2, Mistral).
    Llama,
    /// `qwen2` (Qwen 2 and 2.5).
    Qwen2,
    /// `qwen3`.
    Qwen3,
    /// `phi3`.
    Phi3,
}

impl Family {
    /// The family of a `general.architecture` value, if supported.
    pub fn from_arch(arch: &str) -> Option<Self> {
        Some(match arch {
            "gemma3" => Family::Gemma3,
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "phi3" => Family::Phi3,
            _ => return None,
        })
    }
}

/// The hyperparameters a decoder needs, read from `{arch}.*` GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// `general.architecture`.
    pub arch: String,
    /// The architecture, parsed.
    pub family: Family,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the MLP.
    pub n_ff: usize,
    /// Longest context the model was trained for.
    pub n_ctx_train: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base of global layers.
    pub rope_base: f32,
    /// RoPE base of local (sliding-window) layers.
    pub rope_base_local: f32,
    /// Which elements of a head RoPE pairs: interleaved for `llama` (llama.cpp's converter
    /// permutes its q/k rows to Meta's layout), rotate-half for the others.
    pub rope_style: RopeStyle,
    /// Linear RoPE position scaling (`1 / rope.scaling.factor`; 1 for none).
    pub rope_freq_scale: f32,
    /// LongRoPE: the context beyond which the `rope_factors_long` table applies
    /// (`rope.scaling.original_context_length`, else the training context).
    pub rope_long_from: usize,
    /// Keys a local layer sees (itself included).
    pub sliding_window: Option<usize>,
    /// Every `swa_period`-th layer (1-based) is global, the others local; 0: all global.
    pub swa_period: usize,
    /// Multiplies the embeddings (Gemma: √n_embd).
    pub embed_scale: f32,
    /// Multiplies `q kᵀ`.
    pub attn_scale: f32,
    /// The MLP's gate activation.
    pub act: GatedAct,
    /// RMS norms of each query and key head before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norms: bool,
    /// Norms of each block's output before the residual add (`post_attention_norm`,
    /// `post_ffw_norm`).
    pub post_norms: bool,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
}

impl DecoderConfig {
    /// Reads the configuration of a supported architecture.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?.to_string();
        let Some(family) = Family::from_arch(&arch) else {
            return Err(Error::Unsupported {
                path: file.path().into(),
                what: "architecture",
                found: arch,
                supported: SUPPORTED_ARCHITECTURES,
            });
        };
        let key = |k: &str| format!("{arch}.{k}");
        let usize_of = |k: &str| -> Result<usize> { Ok(file.get_u64(&key(k))? as usize) };
        let usize_or = |k: &str, default: usize| -> Result<usize> {
            match file.get(&key(k)) {
                Some(_) => usize_of(k),
                None => Ok(default),
            }
        };
        let f32_or = |k: &str, default: f32| -> Result<f32> {
            match file.get(&key(k)) {
                Some(_) => Ok(file.get_f32(&key(k))?),
                None => Ok(default),
            }
        };
        let n_embd = usize_of("embedding_length")?;
        let n_head = usize_of("attention.head_count")?;
        let head_dim = usize_or("attention.key_length", n_embd / n_head.max(1))?;
        let path = file.path();
        for (k, what) in [("attention.value_length", "value heads"), ("rope.dimension_count", "rotated dimensions")] {
            let found = usize_or(k, head_dim)?;
            if found != head_dim {
                return Err(Error::format(
                    path,
                    format!(
                        "`{arch}.{k}` is {found}: {what} narrower than the {head_dim}-wide key heads are not supported"
                    ),
                ));
            }
        }
        let n_head_kv = usize_or("attention.head_count_kv", n_head)?;
        let vocab = file.tensor("token_embd.weight").and_then(|t| t.dims().get(1).copied()).unwrap_or(0);
        let n_ctx_train = usize_of("context_length")?;
        let scaling = match file.get(&key("rope.scaling.type")) {
            Some(_) => file.get_str(&key("rope.scaling.type"))?.to_string(),
            None => "linear".into(),
        };
        if !matches!(scaling.as_str(), "none" | "linear" | "longrope") {
            return Err(Error::Unsupported {
                path: path.into(),
                what: "RoPE scaling",
                found: scaling,
                supported: "none, linear, longrope",
            });
        }
        let factor = match file.get(&key("rope.scaling.factor")) {
            Some(_) => file.get_f32(&key("rope.scaling.factor"))?,
            None => f32_or("rope.scale_linear", 0.0)?,
        };
        // llama.cpp multiplies each rotated q and k by the attention factor: q·k by its square.
        let attn_factor = f32_or("rope.scaling.attn_factor", 1.0)?;
        let gemma = family == Family::Gemma3;
        let n_layer = usize_of("block_count")?;
        // 1/√head_dim, except Gemma 3 27B (62 layers): 1/√(n_embd / n_head), as llama.cpp has
        // it. `attention.scale` is not read: llama.cpp ignores it for these architectures.
        let attn_scale = match gemma && n_layer == 62 {
            true => 1.0 / ((n_embd / n_head.max(1)) as f32).sqrt(),
            false => 1.0 / (head_dim as f32).sqrt(),
        };
        let config = DecoderConfig {
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: usize_of("feed_forward_length")?,
            n_ctx_train,
            rms_eps: file.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            // Absent: Gemma 3's global base, llama.cpp's 10000 for the others; present, it must
            // be an f32 (checked below).
            rope_base: f32_or("rope.freq_base", if gemma { 1_000_000.0 } else { 10_000.0 })?,
            // Gemma 3's local layers use base 10000 (llama.cpp's rope_freq_base_train_swa).
            rope_base_local: 10_000.0,
            rope_style: if family == Family::Llama { RopeStyle::Interleaved } else { RopeStyle::NeoX },
            // An explicit `none` ignores the factor (llama.cpp); absent, the type is linear.
            rope_freq_scale: if factor == 0.0 || scaling == "none" { 1.0 } else { 1.0 / factor },
            rope_long_from: usize_or("rope.scaling.original_context_length", n_ctx_train)?,
            sliding_window: if gemma { Some(usize_of("attention.sliding_window")?) } else { None },
            swa_period: if gemma { 6 } else { 0 },
            embed_scale: if gemma { (n_embd as f32).sqrt() } else { 1.0 },
            attn_scale: attn_scale * attn_factor * attn_factor,
            act: if gemma { GatedAct::GeluTanh } else { GatedAct::Silu },
            qk_norms: matches!(family, Family::Gemma3 | Family::Qwen3),
            post_norms: gemma,
            vocab,
            arch,
            family,
        };
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &GgufFile) -> Result<()> {
        let fields = [
            ("embedding_length", self.n_embd, 1 << 16),
            ("block_count", self.n_layer, 1 << 10),
            ("attention.head_count", self.n_head, 1 << 10),
            ("attention.head_count_kv", self.n_head_kv, 1 << 10),
            ("attention.key_length", self.head_dim, 1 << 12),
            ("feed_forward_length", self.n_ff, 1 << 18),
            ("vocabulary (token_embd rows)", self.vocab, 1 << 22),
        ];
        for (name, value, limit) in fields {
            if value == 0 || value > limit {
                return Err(Error::format(
                    file.path(),
                    format!("`{}.{name}` is {value}; expected 1 to {limit}", self.arch),
                ));
            }
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(Error::format(file.path(), "attention.head_count is not a multiple of head_count_kv"));
        }
        let (arch, path) = (&self.arch, file.path());
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::format(
                path,
                format!("`{arch}` heads of {} elements: RoPE needs an even width", self.head_dim),
            ));
        }
        if self.n_ctx_train == 0 {
            return Err(Error::format(path, format!("`{arch}.context_length` is 0; expected at least 1")));
        }
        if self.sliding_window == Some(0) {
            return Err(Error::format(path, format!("`{arch}.attention.sliding_window` is 0; expected at least 1")));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return Err(Error::format(
                path,
                format!("`{arch}.attention.layer_norm_rms_epsilon` is {}; expected a finite value ≥ 0", self.rms_eps),
            ));
        }
        let base = self.rope_base;
        if !(base.is_finite() && base > 1.0) {
            return Err(Error::format(path, format!("`{arch}.rope.freq_base` is {base}; expected a finite value > 1")));
        }
        let scale = self.rope_freq_scale;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::format(
                path,
                format!("`{arch}.rope.scaling.factor` gives a position scale of {scale}; expected a finite factor > 0"),
            ));
        }
        if !(self.attn_scale.is_finite() && self.attn_scale > 0.0) {
            return Err(Error::format(
                path,
                format!(
                    "`{arch}.rope.scaling.attn_factor` gives an attention scale of {}; expected a finite value > 0",
                    self.attn_scale
                ),
            ));
        }
        Ok(())
    }

    /// Whether layer `il` attends only within the sliding window.
    pub fn is_local(&self, il: usize) -> bool {
        self.sliding_window.is_some() && self.swa_period > 0 && !(il + 1).is_multiple_of(self.swa_period)
    }
}

/// Fails when the file's tensors cannot fit in what `rt`'s pool may still allocate (its
/// `limit_bytes` less what is in use). The GPU layout is a few percent larger than the file's
/// (blocks padded to whole words), so this catches what cannot fit, before half of it is
/// uploaded; running out of device memory while uploading is still an `OutOfMemory` error.
fn check_room(file: &GgufFile, rt: &Runtime) -> Result<()> {
    let need: u64 = file.tensors().iter().map(|t| t.size_bytes() as u64).sum();
    let pool = rt.pool();
    let limit = pool.config().limit_bytes;
    let left = limit.saturating_sub(pool.stats().used_bytes);
    if need > left {
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        return Err(Error::InvalidInput(format!(
            "{}: the weights need {:.0} MiB of GPU memory; the runtime's pool may allocate {:.0} MiB more (limit {:.0} MiB)",
            file.path().display(),
            mib(need),
            mib(left),
            mib(limit)
        )));
    }
    Ok(())
}

/// Uploads GGUF tensors with their shapes checked.
struct Loader<'a> {
    file: &'a GgufFile,
    rt: &'a Runtime,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.file.tensor(name).ok_or_else(|| Error::Weight {
            path: self.file.path().into(),
            name: name.into(),
            message: "missing from the file".into(),
        })
    }

    fn check(&self, info: &TensorInfo, dims: &[usize]) -> Result<()> {
        if info.dims() != dims {
            return Err(Error::Weight {
                path: self.file.path().into(),
                name: info.name().into(),
                message: format!("dims {:?} (innermost first), expected {dims:?}", info.dims()),
            });
        }
        Ok(())
    }

    /// A weight matrix stored `[cols, rows]` innermost first: `rows` outputs of `cols` inputs.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<QuantMatrix> {
        let info = self.info(name)?;
        self.check(info, &[cols, rows])?;
        Ok(QuantMatrix::from_bytes(self.rt, info.ty(), rows, cols, self.file.tensor_data(info))?)
    }

    /// The row-wise concatenation of `parts` (`(name, rows)`, each `cols` wide), one matrix
    /// per run of consecutive parts that share a weight type (one GEMV for each run instead of
    /// one per part: q and k of a Q4_K_M file are Q4_K, its v often Q6_K).
    fn stacked(&self, parts: &[(&str, usize)], cols: usize) -> Result<Vec<QuantMatrix>> {
        // Each run: its type, rows and the parts' bytes.
        let mut runs: Vec<(metallic::quant::QuantType, usize, Vec<&[u8]>)> = Vec::new();
        for &(name, rows) in parts {
            let info = self.info(name)?;
            self.check(info, &[cols, rows])?;
            let data = self.file.tensor_data(info);
            match runs.last_mut() {
                Some((ty, n, datas)) if *ty == info.ty() => {
                    *n += rows;
                    datas.push(data);
                }
                _ => runs.push((info.ty(), rows, vec![data])),
            }
        }
        runs.into_iter()
            .map(|(ty, rows, datas)| Ok(QuantMatrix::from_pieces(self.rt, ty, rows, cols, &datas)?))
            .collect()
    }

    /// An f32 vector (norm weights).
    fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        Ok(Tensor::from_slice(self.rt, [len], &self.values(name, len)?)?)
    }

    fn values(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        self.check(info, &[len])?;
        let mut values = vec![0.0f32; len];
        metallic::quant::dequantize(info.ty(), self.file.tensor_data(info), &mut values)?;
        Ok(values)
    }

    /// The concatenation of the bias vectors `parts` (`(name, len)`) as one f32 vector; `None`
    /// when the file has none of them (those missing among others count as zeros).
    fn biases(&self, parts: &[(String, usize)]) -> Result<Option<Tensor>> {
        if parts.iter().all(|(name, _)| self.file.tensor(name).is_none()) {
            return Ok(None);
        }
        let mut all = Vec::with_capacity(parts.iter().map(|p| p.1).sum());
        for (name, len) in parts {
            match self.file.tensor(name) {
                Some(_) => all.extend(self.values(name, *len)?),
                None => all.resize(all.len() + len, 0.0),
            }
        }
        Ok(Some(Tensor::from_slice(self.rt, [all.len()], &all)?))
    }
}

/// Projections of one input whose outputs sit side by side (q, k and v; an MLP's gate and up):
/// one matrix with their rows stacked when their weight types agree (one GEMV), else one
/// matrix per run of parts of one type.
#[derive(Debug)]
enum Stacked {
    Fused(QuantMatrix),
    Split(Vec<QuantMatrix>),
}

impl Stacked {
    fn load(w: &Loader<'_>, parts: &[(String, usize)], cols: usize) -> Result<Self> {
        let named: Vec<(&str, usize)> = parts.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        let mut runs = w.stacked(&named, cols)?;
        if runs.len() > 1 {
            return Ok(Stacked::Split(runs));
        }
        runs.pop().map(Stacked::Fused).ok_or_else(|| Error::InvalidInput("a stacked projection of no parts".into()))
    }

    fn matrices(&self) -> Vec<&QuantMatrix> {
        match self {
            Stacked::Fused(m) => vec![m],
            Stacked::Split(ms) => ms.iter().collect(),
        }
    }
}

/// One transformer block.
#[derive(Debug)]
struct Layer {
    attn_norm: Tensor,
    /// `[q_dim + 2 kv_dim]` outputs: q, k, v.
    qkv: Stacked,
    /// Added to the q/k/v projections (`[q_dim + 2 kv_dim]`), when the file has biases.
    qkv_bias: Option<Tensor>,
    wo: QuantMatrix,
    /// Per-head RMS norm weights of queries and keys (`[head_dim]` each).
    qk_norms: Option<(Tensor, Tensor)>,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    /// `[2 n_ff]` outputs: gate, up.
    gate_up: Stacked,
    down: QuantMatrix,
    post_ffn_norm: Option<Tensor>,
    local: bool,
}

impl Layer {
    fn load(w: &Loader<'_>, c: &DecoderConfig, il: usize) -> Result<Self> {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let bias = |s: &str| format!("blk.{il}.{s}.bias");
        let has = |name: &str| w.file.tensor(name).is_some();
        let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        for name in [bias("attn_output"), bias("ffn_gate"), bias("ffn_up"), bias("ffn_down")] {
            if has(&name) {
                return Err(Error::Weight {
                    path: w.file.path().into(),
                    name,
                    message: "output and MLP biases are not supported".into(),
                });
            }
        }
        // In the block's order, so the first tensor missing from a file is the one named.
        let attn_norm = w.vector(&n("attn_norm"), c.n_embd)?;
        // q, k and v: one fused matrix (Phi-3) or three; biases fused or three (Qwen 2).
        let (qkv, qkv_bias) = if has(&n("attn_qkv")) {
            let qkv = Stacked::Fused(w.matrix(&n("attn_qkv"), q_dim + 2 * kv_dim, c.n_embd)?);
            (qkv, w.biases(&[(bias("attn_qkv"), q_dim + 2 * kv_dim)])?)
        } else {
            let parts = [(n("attn_q"), q_dim), (n("attn_k"), kv_dim), (n("attn_v"), kv_dim)];
            let biases = [(bias("attn_q"), q_dim), (bias("attn_k"), kv_dim), (bias("attn_v"), kv_dim)];
            (Stacked::load(w, &parts, c.n_embd)?, w.biases(&biases)?)
        };
        // Gate and up: two matrices, or one `ffn_up` of both (Phi-3: gate rows first).
        let gate_up = if has(&n("ffn_gate")) {
            Stacked::load(w, &[(n("ffn_gate"), c.n_ff), (n("ffn_up"), c.n_ff)], c.n_embd)?
        } else {
            Stacked::Fused(w.matrix(&n("ffn_up"), 2 * c.n_ff, c.n_embd)?)
        };
        let qk_norms = match c.qk_norms {
            true => Some((w.vector(&n("attn_q_norm"), c.head_dim)?, w.vector(&n("attn_k_norm"), c.head_dim)?)),
            false => None,
        };
        let post = |name: &str| c.post_norms.then(|| w.vector(&n(name), c.n_embd)).transpose();
        Ok(Layer {
            attn_norm,
            qkv,
            qkv_bias,
            wo: w.matrix(&n("attn_output"), c.n_embd, q_dim)?,
            qk_norms,
            post_attn_norm: post("post_attention_norm")?,
            ffn_norm: w.vector(&n("ffn_norm"), c.n_embd)?,
            gate_up,
            down: w.matrix(&n("ffn_down"), c.n_embd, c.n_ff)?,
            post_ffn_norm: post("post_ffw_norm")?,
            local: c.is_local(il),
        })
    }

    fn vectors(&self) -> impl Iterator<Item = &Tensor> {
        let norms = self.qk_norms.iter().flat_map(|(q, k)| [q, k]);
        [&self.attn_norm, &self.ffn_norm]
            .into_iter()
            .chain(norms)
            .chain(&self.qkv_bias)
            .chain(&self.post_attn_norm)
            .chain(&self.post_ffn_norm)
    }
}

/// Query positions one pass of [`Decoder::prefill`] runs at most (longer prompts go in chunks):
/// enough rows to keep a large GPU's matrix kernels busy, few enough that a chunk's activations
/// stay small.
pub const PREFILL_CHUNK: usize = 512;

/// Keys and values of every layer, preallocated for `capacity` positions:
/// `[kv_heads, capacity, head_dim]` per layer, of the decoder's
/// [`cache_dtype`](Decoder::cache_dtype) (f16 by default, f32 as an option).
///
/// It also holds the activations of one-token decode steps, allocated on the first step and
/// reused by every later one: a decode step allocates nothing and binds the same buffers each
/// time (so its bind groups are built once). Passes of several tokens work in views of one
/// set of row buffers, grown to the longest chunk run so far (see [`Decoder::prefill`]).
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    capacity: usize,
    len: usize,
    step: Option<Activations>,
    rows: Option<Activations>,
}

/// The working tensors of a forward pass over `seq` tokens.
#[derive(Debug)]
struct Activations {
    /// Token ids, `[seq]` u32.
    ids: Tensor,
    /// The residual stream, `[seq, n_embd]` (updated in place).
    x: Tensor,
    /// The normalised input of the next block, `[seq, n_embd]`.
    n: Tensor,
    /// The q/k/v projections, `[seq, q_dim + 2 kv_dim]`.
    qkv: Tensor,
    /// Rotated queries, `[1, n_head, seq, head_dim]`.
    q: Tensor,
    /// Attention output, `[1, n_head, seq, head_dim]`.
    attn: Tensor,
    /// Output of a block before its norm, `[seq, n_embd]`.
    o: Tensor,
    /// The MLP's gate and up projections side by side, `[seq, 2 n_ff]`.
    gate_up: Tensor,
    /// The gated activation, `[seq, n_ff]`.
    act: Tensor,
    /// Logits of the last token, `[1, vocab]`.
    logits: Tensor,
    /// Split-K attention scratch for keys up to the cache's capacity (one-token steps).
    sdpa_scratch: Option<Tensor>,
    /// The attention output row by row, `[seq, n_head · head_dim]` (passes of several tokens).
    heads: Option<Tensor>,
    /// Split projections' outputs before they take their columns, `[seq · widest]` (passes of
    /// several tokens of a model with split projections).
    part: Option<Tensor>,
}

/// One sequence's tokens in a pass over several ([`Decoder::record_sequences`]): its cache
/// and how many rows, which follow the previous sequence's.
struct Rows<'c> {
    cache: &'c mut KvCache,
    len: usize,
}

impl KvCache {
    /// Positions held so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (the memory is kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps the first `len` positions and forgets the rest (a prefix shared with the next
    /// prompt is reused rather than computed again). A `len` beyond [`len`](Self::len) changes
    /// nothing.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Keys and values of `slots` sequences decoded together (batched decoding, a server's
/// requests): per layer `[slots, kv_heads, capacity, head_dim]` (the decoder's
/// [`cache_dtype`](Decoder::cache_dtype)), each slot with its own
/// length. A slot's prompt runs with [`Decoder::prefill_slot`]; [`Decoder::step`] then
/// advances any set of slots by one token each in one pass.
#[derive(Debug)]
pub struct KvSlots {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    capacity: usize,
    lens: Vec<usize>,
    /// Step activations by row count (index `rows - 1`), allocated on first use.
    steps: Vec<Option<StepActivations>>,
    /// The row buffers every slot's prompt chunks run in (see [`KvCache`]).
    rows: Option<Activations>,
    /// The one-token activations every slot's chunks of one token run in (a prompt whose
    /// cached prefix leaves its last token): one set, so their logits are one tensor.
    one: Option<Activations>,
    /// The last rows' logits of prompts run together ([`Decoder::prefill_slots`]), `[n,
    /// vocab]` for the most prompts run together so far.
    prompt_logits: Option<Tensor>,
}

/// The residual-stream tensors of a pass (`[rows, ..]`), one-sequence or batched.
struct Stream<'a> {
    x: &'a Tensor,
    n: &'a Tensor,
    o: &'a Tensor,
    gate_up: &'a Tensor,
    act: &'a Tensor,
    /// Norms read through by the products after them, residual adds made by the products
    /// before them (see [`Decoder::fuses_norms`]): `n` and `o` are not used.
    fused: bool,
}

impl<'a> Stream<'a> {
    /// The input of a block's first products: `x` read through the norm `weight` when the
    /// norms are fused, else the norm's output `n`.
    fn input(&self, weight: &'a Tensor) -> Input<'a> {
        if self.fused { Input { x: self.x, norm: Some(weight), add: false } } else { Input::plain(self.n) }
    }
}

/// What a product reads and how it writes: x, read through an RMS norm with this weight (a
/// fused norm), the product added to its output (a fused residual add) or stored.
#[derive(Clone, Copy)]
struct Input<'a> {
    x: &'a Tensor,
    norm: Option<&'a Tensor>,
    add: bool,
}

impl<'a> Input<'a> {
    fn plain(x: &'a Tensor) -> Self {
        Input { x, norm: None, add: false }
    }

    fn added_to(self) -> Self {
        Input { add: true, ..self }
    }
}

/// Widest residual stream whose decode steps fuse the norms into the products by default. Each
/// workgroup of a product with a fused norm sums the squares of the whole row again: on an
/// H100 that paid at 576 and 896 (SmolLM2 +9%, Qwen2.5 0.5B even), while Llama-3.1-8B's shape
/// (4096) spent about 2.2 ms more per token in its products to save the 0.97 ms of its norm
/// dispatches (its gate/up product 64 -> 100 us: 7168 workgroups each summing 4096 squares).
/// 2048 (1B) is unmeasured and left unfused.
const FUSED_NORMS_MAX_WIDTH: usize = 1024;

/// Narrowest residual stream whose one-token passes multiply x rounded to 8-bit blocks on the
/// integer-dot GEMV by default on GPUs ([`Decoder::set_q8_products`]). Measured on an H100
/// (docs/PERFORMANCE.md, 2026-12-08): the GEMV on such x read Q4_K / Q6_K / Q8_0 weights at
/// 1.1-1.6 / 2.0-2.4 / 1.0-1.3x the f32 GEMV's rate at 8B shapes (its quantize dispatch
/// included), decode went 150 -> 186 tokens/s on Llama-3.1-8B Q4_K_M and 544 -> 569 on
/// Llama-3.2-1B. Narrower models keep their norms fused into the products (which the 8-bit
/// path cannot read through) and are bound by dispatches, not by weight reads.
const Q8_PRODUCTS_MIN_WIDTH: usize = 2048;

/// Whether a model `n_embd` wide takes the 8-bit products by default: on GPUs, from
/// [`Q8_PRODUCTS_MIN_WIDTH`]. Not on CPU adapters, where the integer dot product is emulated
/// (lavapipe: about 10x slower).
fn q8_products_by_default(cpu: bool, n_embd: usize) -> bool {
    !cpu && n_embd >= Q8_PRODUCTS_MIN_WIDTH
}

/// Up to this many sequences a batched step runs every product on the one-row GEMV, which
/// reads each weight once for up to 8 rows of x: bit-identical to solo steps.
pub const EXACT_STEP_ROWS: usize = 8;

/// Weight rows from which a batched step of more than [`EXACT_STEP_ROWS`] sequences runs a
/// product on the tensor cores (see [`tensor_core_product`]). On an H100 at 32 rows of x
/// (docs/PERFORMANCE.md, 2026-12-07, session 17): `[32, 576] x [3072, 576]ᵀ` (SmolLM2's
/// gate/up) 29 us against the GEMV's 82, the 49152-row output 150 against 957; at 576 rows
/// they tied (28 / 29), and on `[32, 4864] x [896, 4864]ᵀ` (9 workgroups of the GEMM's tile)
/// the GEMV won, 141 against 212.
const WIDE_STEP_PRODUCT: usize = 2048;

/// Whether a batched step of `rows` sequences runs its product by a matrix of `w_rows` rows on
/// the cooperative-matrix GEMM: on a GPU that has it (`coop`), unless the decoder keeps batches
/// exact, above [`EXACT_STEP_ROWS`] sequences, for matrices of [`WIDE_STEP_PRODUCT`] rows or
/// more. Such a product rounds x and the decoded weights to f16 (f32 accumulation): each
/// output within 2 · 2⁻¹¹ · Σₖ |xₖ wₖ| of the f32 GEMV's (one rounding of each factor), and
/// independent of how many rows run with it (`gemm_coop.wgsl`) — so a sequence's logits do not
/// depend on the batch while it has more than 8 companions, and differ from a solo step's by
/// that rounding: greedy tokens agree except on near-ties.
fn tensor_core_product(cpu: bool, coop: bool, exact: bool, rows: usize, w_rows: usize) -> bool {
    !cpu && coop && !exact && rows > EXACT_STEP_ROWS && w_rows >= WIDE_STEP_PRODUCT
}

/// Whether a model's norms and residual adds can run inside its products: not where a layer
/// has post-norms (Gemma 3's normalise a block's output before the residual add, so the add is
/// not a product's).
fn norms_fusable(layers: &[Layer]) -> bool {
    layers.iter().all(|l| l.post_attn_norm.is_none() && l.post_ffn_norm.is_none())
}

/// Which kernels a pass's quantized products take.
#[derive(Clone, Copy)]
enum Products<'a> {
    /// `QMatmul`'s choice for the row count; split projections of several rows placed through
    /// `part` where given (else each into a tensor of its own).
    Auto { part: Option<&'a Tensor> },
    /// The one-row kernel whatever the row count (batched steps: each row's arithmetic as in
    /// a solo step), split projections placed through `part`.
    OneRow { part: &'a Tensor },
}

/// [`Products::Auto`] without a `part`: passes with no split projections of several rows.
const AUTO: Products<'static> = Products::Auto { part: None };

/// Where a batched step's token ids come from.
#[derive(Clone, Copy)]
enum StepIds<'a> {
    Host(&'a [u32]),
    Gpu(&'a Tensor),
}

/// The working tensors of a batched step of `rows` sequences.
#[derive(Debug)]
struct StepActivations {
    /// Token ids `[rows]` and (slot, position) pairs `[rows, 2]`, u32.
    ids: Tensor,
    table: Tensor,
    x: Tensor,
    n: Tensor,
    qkv: Tensor,
    /// Queries and attention output, `[rows, n_head, head_dim]`.
    q: Tensor,
    attn: Tensor,
    o: Tensor,
    gate_up: Tensor,
    act: Tensor,
    /// One split projection's output before it is placed, `[rows · widest part]`.
    part: Tensor,
    logits: Tensor,
    scratch: Tensor,
}

impl KvSlots {
    /// Sequences it holds.
    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    /// Positions of each slot.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions held by `slot` (0 for a slot that does not exist).
    pub fn len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }

    /// Keeps the first `len` positions of `slot` (a prefix shared with its next prompt).
    pub fn truncate(&mut self, slot: usize, len: usize) {
        if let Some(l) = self.lens.get_mut(slot) {
            *l = (*l).min(len);
        }
    }

    /// `slot`'s caches as a one-sequence [`KvCache`] view (same memory).
    fn view(&self, slot: usize) -> Result<KvCache> {
        let one = |t: &Tensor| -> Result<Tensor> {
            let dims = t.dims();
            Ok(t.narrow(slot, 1)?.reshape(dims.get(1..).unwrap_or_default())?)
        };
        Ok(KvCache {
            k: self.k.iter().map(one).collect::<Result<_>>()?,
            v: self.v.iter().map(one).collect::<Result<_>>()?,
            capacity: self.capacity,
            len: self.len(slot),
            step: None,
            rows: None,
        })
    }
}

/// Per-pair RoPE frequency divisors (`[head_dim / 2]`) a file may carry.
#[derive(Debug)]
struct RopeFactors {
    /// `rope_freqs` (Llama 3's frequency scaling): always applied.
    freqs: Option<Tensor>,
    /// LongRoPE's `rope_factors_long`: for contexts beyond `rope_long_from`.
    long: Option<Tensor>,
    /// LongRoPE's `rope_factors_short`: for shorter contexts.
    short: Option<Tensor>,
}

impl RopeFactors {
    /// The factors for a cache of `capacity` positions (llama.cpp picks the LongRoPE table by
    /// the context size in the same way).
    fn for_context(&self, capacity: usize, long_from: usize) -> Option<&Tensor> {
        match &self.freqs {
            Some(f) => Some(f),
            None if capacity > long_from => self.long.as_ref(),
            None => self.short.as_ref(),
        }
    }

    fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.freqs.iter().chain(&self.long).chain(&self.short)
    }
}

/// A decoder-only language model on the GPU.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    embed: QuantMatrix,
    output_norm: Tensor,
    /// `None`: the output projection is the embedding table (tied).
    output: Option<QuantMatrix>,
    layers: Vec<Layer>,
    rope_factors: RopeFactors,
    /// The element type of new KV caches.
    cache_dtype: DType,
    /// Whether one-token and batched steps fuse the norms and residual adds into the
    /// products (see [`fuses_norms`](Self::fuses_norms)).
    fuse_norms: bool,
    /// Whether batched steps of more than [`EXACT_STEP_ROWS`] sequences keep every product on
    /// the one-row kernel (see [`set_exact_batches`](Self::set_exact_batches)).
    exact_batches: bool,
    /// Where one-token passes multiply x rounded to 8-bit blocks on the integer-dot GEMV
    /// ([`set_q8_products`](Self::set_q8_products)): the scratch x is quantized into.
    q8_scratch: Option<Tensor>,
    /// Experimental ([`set_coop_split_k`](Self::set_coop_split_k)).
    coop_split_k: bool,
    rt: Runtime,
}

impl Decoder {
    /// Loads a model from `file` onto `rt`.
    pub fn load(file: &GgufFile, rt: &Runtime) -> Result<Self> {
        Self::load_with_progress(file, rt, |_, _| {})
    }

    /// [`load`](Self::load), calling `progress(done, total)` as layers are uploaded.
    ///
    /// A model larger than what the runtime's memory pool may still hold fails before anything
    /// is uploaded, saying how much it needs.
    pub fn load_with_progress(file: &GgufFile, rt: &Runtime, mut progress: impl FnMut(usize, usize)) -> Result<Self> {
        let config = DecoderConfig::from_gguf(file)?;
        check_room(file, rt)?;
        let w = Loader { file, rt };
        let c = &config;
        let total = c.n_layer + 1;
        let layers = (0..c.n_layer)
            .map(|il| {
                progress(il, total);
                Layer::load(&w, c, il)
            })
            .collect::<Result<Vec<_>>>()?;
        let output = match file.tensor("output.weight") {
            Some(_) => Some(w.matrix("output.weight", c.vocab, c.n_embd)?),
            None => None,
        };
        if file.tensor("output.bias").is_some() || file.tensor("output_norm.bias").is_some() {
            return Err(Error::Weight {
                path: file.path().into(),
                name: "output.bias".into(),
                message: "output biases are not supported".into(),
            });
        }
        let factor = |name: &str| file.tensor(name).map(|_| w.vector(name, c.head_dim / 2)).transpose();
        let rope_factors = RopeFactors {
            freqs: factor("rope_freqs.weight")?,
            long: factor("rope_factors_long.weight")?,
            short: factor("rope_factors_short.weight")?,
        };
        let embed = w.matrix("token_embd.weight", c.vocab, c.n_embd)?;
        progress(total, total);
        let fuse_norms = norms_fusable(&layers) && c.n_embd <= FUSED_NORMS_MAX_WIDTH;
        let q8 = q8_products_by_default(rt.context().caps().cpu(), c.n_embd);
        let mut decoder = Decoder {
            fuse_norms,
            exact_batches: false,
            q8_scratch: None,
            coop_split_k: false,
            embed,
            output_norm: w.vector("output_norm.weight", c.n_embd)?,
            output,
            layers,
            rope_factors,
            config,
            cache_dtype: Self::default_cache_dtype(rt),
            rt: rt.clone(),
        };
        decoder.set_q8_products(q8)?;
        Ok(decoder)
    }

    /// f16 where the device has f16 shaders (half the memory and the attention reads of f32;
    /// llama.cpp's default too), else f32.
    fn default_cache_dtype(rt: &Runtime) -> DType {
        if rt.context().caps().shader_f16() { DType::F16 } else { DType::F32 }
    }

    /// The element type of the KV caches [`new_cache`](Self::new_cache) and
    /// [`new_slots`](Self::new_slots) make: f16 by default where the device has f16 shaders
    /// (keys and values are rounded to f16 as they are stored; attention reads them back in
    /// f32), else f32.
    pub fn cache_dtype(&self) -> DType {
        self.cache_dtype
    }

    /// Sets [`cache_dtype`](Self::cache_dtype) for caches made from now on: `F16` (a device
    /// without f16 shaders is [`Error::InvalidInput`]) or `F32`. Caches made before keep theirs
    /// and still work.
    pub fn set_cache_dtype(&mut self, dtype: DType) -> Result<()> {
        match dtype {
            DType::F32 => {}
            DType::F16 if self.rt.context().caps().shader_f16() => {}
            DType::F16 => {
                return Err(Error::InvalidInput("an f16 KV cache needs f16 shaders, which this device lacks".into()));
            }
            other => return Err(Error::InvalidInput(format!("a KV cache of {other}: f16 or f32"))),
        }
        self.cache_dtype = dtype;
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Every layer's weight matrices.
    fn layer_matrices(&self) -> impl Iterator<Item = &QuantMatrix> {
        self.layers
            .iter()
            .flat_map(|l| l.qkv.matrices().into_iter().chain(l.gate_up.matrices()).chain([&l.wo, &l.down]))
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> usize {
        let matrices = self.layer_matrices();
        let vectors = self.layers.iter().flat_map(Layer::vectors).chain(self.rope_factors.tensors());
        matrices.chain([&self.embed]).chain(self.output.as_ref()).map(QuantMatrix::size_in_bytes).sum::<usize>()
            + vectors.chain([&self.output_norm]).map(Tensor::size_in_bytes).sum::<usize>()
    }

    /// Bytes a [`KvCache`] of `capacity` positions takes.
    pub fn cache_bytes(&self, capacity: usize) -> usize {
        let c = &self.config;
        2 * c.n_layer * c.n_head_kv * capacity * c.head_dim * self.cache_dtype.size_in_bytes()
    }

    /// The most positions a [`KvCache`] can hold on this runtime: one layer's keys must fit in
    /// one storage binding of the device, and the whole cache in what the runtime's memory pool
    /// may still allocate.
    pub fn max_context(&self) -> usize {
        let c = &self.config;
        let limits = &self.rt.context().caps().limits;
        let binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let layer_position = (c.n_head_kv * c.head_dim * self.cache_dtype.size_in_bytes()).max(1) as u64;
        let pool = self.rt.pool();
        let left = pool.config().limit_bytes.saturating_sub(pool.stats().used_bytes);
        let by_binding = binding / layer_position;
        let by_pool = left / (self.cache_bytes(1).max(1) as u64);
        usize::try_from(by_binding.min(by_pool)).unwrap_or(usize::MAX)
    }

    /// A cache for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        let c = &self.config;
        if capacity == 0 {
            return Err(Error::InvalidInput("a KV cache needs room for at least one position".into()));
        }
        let shape = [c.n_head_kv, capacity, c.head_dim];
        let make = || Tensor::zeros(&self.rt, shape, self.cache_dtype);
        Ok(KvCache {
            k: (0..c.n_layer).map(|_| make()).collect::<metallic::Result<_>>()?,
            v: (0..c.n_layer).map(|_| make()).collect::<metallic::Result<_>>()?,
            capacity,
            len: 0,
            step: None,
            rows: None,
        })
    }

    /// Caches for `slots` sequences of `capacity` positions each (see [`KvSlots`]).
    pub fn new_slots(&self, slots: usize, capacity: usize) -> Result<KvSlots> {
        let c = &self.config;
        if capacity == 0 || slots == 0 {
            return Err(Error::InvalidInput("KV slots need at least one slot of one position".into()));
        }
        let shape = [slots, c.n_head_kv, capacity, c.head_dim];
        let make = || Tensor::zeros(&self.rt, shape, self.cache_dtype);
        Ok(KvSlots {
            k: (0..c.n_layer).map(|_| make()).collect::<metallic::Result<_>>()?,
            v: (0..c.n_layer).map(|_| make()).collect::<metallic::Result<_>>()?,
            capacity,
            lens: vec![0; slots],
            steps: (0..slots).map(|_| None).collect(),
            rows: None,
            one: None,
            prompt_logits: None,
        })
    }

    /// [`prefill`](Self::prefill) into one slot of `kv`: runs `ids` after what `slot` holds
    /// and returns the logits of the last one, `[1, vocab]` (computed as for a [`KvCache`]).
    /// The logits of a prompt of several tokens live in `kv`'s row buffers: read them (or
    /// record what reads them) before the next prompt runs.
    pub fn prefill_slot(&self, ids: &[u32], kv: &mut KvSlots, slot: usize, chunk: usize) -> Result<Tensor> {
        if slot >= kv.slots() {
            return Err(Error::InvalidInput(format!("slot {slot} of {}", kv.slots())));
        }
        let mut view = kv.view(slot)?;
        // Every slot's prompts run in the same row buffers (one-token chunks in the same
        // one-token activations): a burst of prompts allocates nothing and rebinds what the
        // previous prompts bound.
        view.rows = kv.rows.take();
        view.step = kv.one.take();
        let logits = self.prefill(ids, &mut view, 1, chunk, &mut |_, _| {});
        kv.rows = view.rows.take();
        kv.one = view.step.take();
        let logits = logits?;
        if let Some(len) = kv.lens.get_mut(slot) {
            *len = view.len;
        }
        Ok(logits)
    }

    /// Runs several slots' next tokens in one pass — `prompts[i]` = (slot, tokens), each slot
    /// at most once, `chunk` as for [`prefill_slot`](Self::prefill_slot) (the row buffers grow
    /// to it, or to the rows given when more) — and returns the logits of each one's last
    /// token, `[prompts, vocab]`, live in `kv` until the next such pass.
    ///
    /// The quantized products run once over every prompt's rows (a burst of short prompts
    /// fills the GPU's matrix kernels where one alone leaves most of it idle); each prompt's
    /// RoPE, attention and cache writes are its own, with the kernels a
    /// [`prefill_slot`](Self::prefill_slot) of it alone takes. Where
    /// [`prefills_together`](Self::prefills_together) holds for every prompt's length, its
    /// logits and cached keys and values are bit-identical to running it alone.
    pub fn prefill_slots(&self, prompts: &[(usize, &[u32])], kv: &mut KvSlots, chunk: usize) -> Result<Tensor> {
        let c = &self.config;
        if prompts.is_empty() || chunk == 0 {
            return Err(Error::InvalidInput("a pass of no prompts, or a chunk of 0 tokens".into()));
        }
        let mut views = Vec::with_capacity(prompts.len());
        for (i, &(slot, ids)) in prompts.iter().enumerate() {
            if slot >= kv.slots() || prompts.iter().take(i).any(|&(s, _)| s == slot) {
                return Err(Error::InvalidInput(format!("slot {slot} of {}, or twice in one pass", kv.slots())));
            }
            if ids.is_empty() {
                return Err(Error::InvalidInput(format!("no tokens to run in slot {slot}")));
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= c.vocab) {
                return Err(Error::InvalidInput(format!("token id {bad} outside the vocabulary of {}", c.vocab)));
            }
            let view = kv.view(slot)?;
            self.check_cache(&view, ids.len())?;
            views.push(view);
        }
        let total: usize = prompts.iter().map(|(_, ids)| ids.len()).sum();
        let logits = match kv.prompt_logits.take() {
            Some(t) if t.dims().first().is_some_and(|&n| n >= prompts.len()) => t,
            _ => Tensor::empty(&self.rt, [prompts.len().next_power_of_two(), c.vocab], DType::F32)?,
        };
        let buffers = self.row_buffers(kv.rows.take(), total, chunk, kv.capacity)?;
        let mut run = || -> Result<Tensor> {
            let a = self.first_rows(&buffers, total)?;
            let ids: Vec<u32> = prompts.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
            a.ids.write(&ids)?;
            let mut seqs: Vec<Rows<'_>> =
                views.iter_mut().zip(prompts).map(|(cache, (_, ids))| Rows { cache, len: ids.len() }).collect();
            self.record_sequences(&a.ids, &a, &mut seqs)?;
            // Each prompt's last row alone, as its own pass would take it.
            let mut last = 0;
            for (i, (_, ids)) in prompts.iter().enumerate() {
                last += ids.len();
                self.record_logits(&a, last - 1, 1, &logits.narrow(i, 1)?)?;
            }
            Ok(logits.narrow(0, prompts.len())?)
        };
        let result = run();
        kv.rows = Some(buffers);
        kv.prompt_logits = Some(logits);
        let result = result?;
        for (&(slot, _), view) in prompts.iter().zip(&views) {
            if let Some(len) = kv.lens.get_mut(slot) {
                *len = view.len;
            }
        }
        Ok(result)
    }

    /// Whether a prompt chunk of `rows` tokens run with others in
    /// [`prefill_slots`](Self::prefill_slots) gives the bits it gives alone: when every
    /// product of `rows` rows takes the kernel a pass of any more rows takes (the GEMMs, whose
    /// rows do not depend on each other) — more than 4 rows on GPUs, more than 32 on CPU
    /// adapters (where up to 32 take the row GEMV) — and more than one row (a one-token pass
    /// takes the decode step's kernels); never with the experimental split of K
    /// ([`set_coop_split_k`](Self::set_coop_split_k)), whose splits follow the pass's rows.
    pub fn prefills_together(&self, rows: usize) -> bool {
        let x = &self.output_norm;
        // A split of K follows the pass's output tiles: its order of sums depends on the rows.
        rows > 1
            && !self.coop_split_k
            && self.layer_matrices().all(|w| QMatmul::auto_path(x, rows, w) == QMatmul::auto_path(x, usize::MAX / 2, w))
    }

    /// Copies the first `len` positions of slot `from` into slot `to` and sets `to`'s length to
    /// `len`: a prefix two sequences share (a system prompt) is computed once.
    pub fn copy_prefix(&self, kv: &mut KvSlots, from: usize, to: usize, len: usize) -> Result<()> {
        let c = &self.config;
        if from == to || to >= kv.slots() || len > kv.len(from) {
            return Err(Error::InvalidInput(format!(
                "copying {len} positions from slot {from} (holding {}) to slot {to} of {}",
                kv.len(from),
                kv.slots()
            )));
        }
        if len > 0 {
            let rows = kv.slots() * c.n_head_kv * kv.capacity;
            for t in kv.k.iter().chain(&kv.v) {
                let flat = t.reshape([rows, c.head_dim])?;
                for h in 0..c.n_head_kv {
                    let at = |slot: usize| (slot * c.n_head_kv + h) * kv.capacity;
                    let src = flat.narrow(at(from), len)?;
                    self.rt.record(&Copy::new(&src, &flat.narrow(at(to), len)?)?)?;
                }
            }
        }
        if let Some(l) = kv.lens.get_mut(to) {
            *l = len;
        }
        Ok(())
    }

    /// One decode step of several sequences together: `rows[i]` = (slot, token) feeds
    /// `token` to the sequence in `slot` (each slot at most once) and returns the logits
    /// `[rows, vocab]` (row `i` predicts what follows `rows[i]`'s token). Up to
    /// [`EXACT_STEP_ROWS`] sequences (at any count with
    /// [`set_exact_batches`](Self::set_exact_batches), and on adapters without cooperative
    /// matrices), each sequence's logits are bit-identical to a one-token
    /// [`forward`](Self::forward) on a [`KvCache`] holding the same positions: every kernel
    /// does a row's arithmetic the same way whatever the other rows (the projections take the
    /// kernel a one-row step takes, the attention plans each sequence's key chunks from its
    /// own length). Above that, the wide products run on the tensor cores with x and the
    /// weights rounded to f16: still independent of the other rows, and each product's
    /// outputs within one f16 rounding of each factor of a solo step's (greedy tokens agree
    /// except on near-ties).
    ///
    /// The logits live in `kv`'s step activations for this row count: read them before the
    /// next step of as many rows.
    pub fn step(&self, rows: &[(usize, u32)], kv: &mut KvSlots) -> Result<Tensor> {
        let c = &self.config;
        if let Some(&(_, bad)) = rows.iter().find(|&&(_, t)| t as usize >= c.vocab) {
            return Err(Error::InvalidInput(format!("token id {bad} outside the vocabulary of {}", c.vocab)));
        }
        let slots: Vec<usize> = rows.iter().map(|&(slot, _)| slot).collect();
        let ids: Vec<u32> = rows.iter().map(|&(_, token)| token).collect();
        self.step_with(&slots, StepIds::Host(&ids), kv)
    }

    /// [`step`](Self::step) with the tokens already on the GPU (`ids`: one u32 per slot, e.g.
    /// the argmax of the previous step's logits): the next step is recorded before this one's
    /// tokens are read back (pipelined greedy decoding). An id outside the vocabulary embeds
    /// as zeros (the GPU cannot report it); ids from this model's own logits are inside.
    pub fn step_on_gpu(&self, slots: &[usize], ids: &Tensor, kv: &mut KvSlots) -> Result<Tensor> {
        if ids.dtype() != DType::U32 || ids.numel() != slots.len() {
            return Err(Error::InvalidInput(format!(
                "{} GPU token ids for {} slots must be u32, got {} {}",
                ids.numel(),
                slots.len(),
                ids.dtype(),
                ids.shape()
            )));
        }
        self.step_with(slots, StepIds::Gpu(ids), kv)
    }

    fn step_with(&self, slots: &[usize], ids: StepIds<'_>, kv: &mut KvSlots) -> Result<Tensor> {
        let c = &self.config;
        let m = slots.len();
        if m == 0 {
            return Err(Error::InvalidInput("a step of no sequences".into()));
        }
        let mut table = Vec::with_capacity(2 * m);
        for (i, &slot) in slots.iter().enumerate() {
            let len = kv
                .lens
                .get(slot)
                .copied()
                .ok_or_else(|| Error::InvalidInput(format!("slot {slot} of {}", kv.slots())))?;
            if slots.iter().take(i).any(|&s| s == slot) {
                return Err(Error::InvalidInput(format!("slot {slot} twice in one step")));
            }
            if len >= kv.capacity {
                return Err(Error::InvalidInput(format!("slot {slot} is full ({} positions)", kv.capacity)));
            }
            table.extend([slot as u32, len as u32]);
        }
        if kv.k.len() != c.n_layer
            || kv.k.first().is_some_and(|k| k.dims().get(1..) != Some(&[c.n_head_kv, kv.capacity, c.head_dim][..]))
        {
            return Err(Error::InvalidInput("the KV slots belong to another model".into()));
        }
        let a = match kv.steps.get_mut(m - 1).and_then(Option::take) {
            Some(a) => a,
            None => self.step_activations(m)?,
        };
        let result = self.record_step(ids, &table, &a, kv);
        if let Some(place) = kv.steps.get_mut(m - 1) {
            *place = Some(a);
        }
        let logits = result?;
        for &slot in slots {
            if let Some(l) = kv.lens.get_mut(slot) {
                *l += 1;
            }
        }
        Ok(logits)
    }

    /// Rows of the widest matrix of a stacked projection.
    fn widest_projection(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.qkv.matrices().into_iter().chain(l.gate_up.matrices()))
            .map(QuantMatrix::rows)
            .max()
            .unwrap_or(1)
    }

    /// Rows of the widest matrix of a split projection (q/k/v or gate/up as separate products,
    /// their matrices differing in type); `None` where every projection is one product.
    fn widest_split(&self) -> Option<usize> {
        let split = |s: &Stacked| match s {
            Stacked::Split(parts) => parts.iter().map(QuantMatrix::rows).max(),
            Stacked::Fused(_) => None,
        };
        self.layers.iter().flat_map(|l| [split(&l.qkv), split(&l.gate_up)]).flatten().max()
    }

    fn step_activations(&self, m: usize) -> Result<StepActivations> {
        let c = &self.config;
        let rt = &self.rt;
        let f32s = |dims: &[usize]| Tensor::empty(rt, dims, DType::F32);
        let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let widest = self.widest_projection();
        let scratch = SlotAttention::scratch_len(rt.context(), m, c.n_head, c.n_head_kv, c.head_dim)?;
        Ok(StepActivations {
            ids: Tensor::empty(rt, [m], DType::U32)?,
            table: Tensor::empty(rt, [m, 2], DType::U32)?,
            x: f32s(&[m, c.n_embd])?,
            n: f32s(&[m, c.n_embd])?,
            qkv: f32s(&[m, q_dim + 2 * kv_dim])?,
            q: f32s(&[m, c.n_head, c.head_dim])?,
            attn: f32s(&[m, c.n_head, c.head_dim])?,
            o: f32s(&[m, c.n_embd])?,
            gate_up: f32s(&[m, 2 * c.n_ff])?,
            act: f32s(&[m, c.n_ff])?,
            part: f32s(&[m * widest])?,
            logits: f32s(&[m, c.vocab])?,
            scratch: f32s(&[scratch])?,
        })
    }

    /// Whether a pass of `rows` rows fuses each block's norm into the products that read it
    /// and each residual add into the product that makes it ([`QMatmul::rms_norm`],
    /// [`QMatmul::accumulate`]: two dispatches fewer per layer, which is what a decode step of
    /// a small model is short of): where every product takes a GEMV — one-token passes and
    /// batched steps — and the model has no post-norms.
    fn fuses_norms(&self, products: Products<'_>, rows: usize) -> bool {
        match products {
            // A step whose wide products take the tensor cores reads its norms' outputs (the
            // cooperative GEMM has no norm or add of its own).
            Products::OneRow { .. } => self.fuse_norms && !self.step_on_tensor_cores(rows),
            Products::Auto { .. } => self.fuse_norms && rows == 1 && self.q8_scratch.is_none(),
        }
    }

    /// Keeps every product of a batched step on the one-row kernel, whatever the row count:
    /// each sequence's logits bit-identical to a solo step's (`true`), or lets steps of more
    /// than [`EXACT_STEP_ROWS`] sequences run their wide products on the tensor cores where
    /// the adapter has cooperative matrices (`false`, the default; see [`step`](Self::step)).
    pub fn set_exact_batches(&mut self, exact: bool) {
        self.exact_batches = exact;
    }

    /// Whether batched steps are bit-identical to solo ones at every row count (see
    /// [`set_exact_batches`](Self::set_exact_batches)).
    pub fn exact_batches(&self) -> bool {
        self.exact_batches
    }

    /// Whether a batched step of `rows` sequences runs its wide products on the tensor cores
    /// (and so is not bit-identical to solo steps; see [`step`](Self::step)).
    pub fn step_on_tensor_cores(&self, rows: usize) -> bool {
        self.on_tensor_cores(rows, WIDE_STEP_PRODUCT)
    }

    /// Whether a batched step of `rows` sequences runs its product by a matrix of `w_rows`
    /// rows on the tensor cores (see [`tensor_core_product`]).
    fn on_tensor_cores(&self, rows: usize, w_rows: usize) -> bool {
        let ctx = self.rt.context();
        tensor_core_product(ctx.caps().cpu(), cooperative_available(ctx), self.exact_batches, rows, w_rows)
    }

    /// One-token passes (solo decode) run their products by Q4_K, Q5_K, Q6_K, Q8_0 and Q4_0
    /// matrices on the integer-dot GEMV over x rounded to 8-bit blocks of 32
    /// ([`QMatmulPath::GemvQ8`], as llama.cpp's GPU back-ends round x for their quantized
    /// GEMVs), the norms and the MLP's gate as separate kernels (`true`); or on the f32 GEMV
    /// (`false`). x's rounding moves the logits slightly (0.3% of their spread on Qwen2.5
    /// 0.5B; greedy tokens agree with llama.cpp's up to its near-ties). On by default on GPUs
    /// for models 2048 or more wide, where decode is bound by reading the weights; off on
    /// narrower models and CPU adapters. Batched steps are not affected.
    pub fn set_q8_products(&mut self, on: bool) -> Result<()> {
        self.q8_scratch = None;
        if on {
            let c = &self.config;
            let widest = [c.n_embd, c.n_ff, c.n_head * c.head_dim].into_iter().max().unwrap_or(c.n_embd);
            let words = QuantizeQ8::words(1, widest.next_multiple_of(32))
                .ok_or_else(|| Error::InvalidInput("the model is too wide for the 8-bit GEMV".into()))?;
            self.q8_scratch = Some(Tensor::empty(&self.rt, [words], DType::U32)?);
        }
        Ok(())
    }

    /// Whether one-token passes take the 8-bit products ([`set_q8_products`](Self::set_q8_products)).
    pub fn q8_products(&self) -> bool {
        self.q8_scratch.is_some()
    }

    /// The scratch of [`set_q8_products`](Self::set_q8_products) where a one-row product by
    /// `w` of plain input takes the integer-dot GEMV.
    fn q8_product(&self, rows: usize, w: &QuantMatrix) -> Option<&Tensor> {
        self.q8_scratch.as_ref().filter(|_| rows == 1 && QMatmul::gemv_q8_supports(w.quant_type()))
    }

    /// Experimental, not measured yet: products on the cooperative GEMM split K across
    /// workgroups where their output tiles are few (short prompts, batched steps of 9 to 128
    /// sequences: [`QMatmul::coop_splits`]), a second dispatch adding the partial products. The
    /// sum runs in another order, so the numbers move by f32 rounding; prompts and steps of a
    /// given row count still give each row the same bits whatever the others.
    #[doc(hidden)]
    pub fn set_coop_split_k(&mut self, on: bool) {
        self.coop_split_k = on;
    }

    /// Turns the fused norms and residual adds of [`fuses_norms`](Self::fuses_norms) off (or
    /// on where the model's layers allow them, whatever its width): for tests comparing the
    /// two and for measuring.
    #[doc(hidden)]
    pub fn set_fused_norms(&mut self, on: bool) {
        self.fuse_norms = on && norms_fusable(&self.layers);
    }

    /// Whether decode steps fuse the norms and residual adds (see
    /// [`set_fused_norms`](Self::set_fused_norms)).
    #[doc(hidden)]
    pub fn fused_norms(&self) -> bool {
        self.fuse_norms
    }

    /// The product of `input` and `w` into `out` on the kernel `products` says, with the
    /// input's norm and add.
    fn product(&self, input: &Input<'_>, w: &QuantMatrix, out: &Tensor, products: Products<'_>) -> Result<QMatmul> {
        let mut op = QMatmul::new(input.x, w, out)?;
        let rows = input.x.dims().first().copied().unwrap_or(1);
        if let (Products::Auto { .. }, Some(scratch)) = (products, self.q8_product(rows, w))
            && input.norm.is_none()
            && !input.add
        {
            return op.gemv_q8_with(scratch).map_err(Into::into);
        }
        if let Products::OneRow { .. } = products {
            let plain = input.norm.is_none() && !input.add;
            op = op.path(if plain && self.on_tensor_cores(rows, w.rows()) {
                QMatmulPath::Cooperative
            } else {
                self.row_path(w)
            });
        }
        if let Some(weight) = input.norm {
            op = op.rms_norm(weight, self.config.rms_eps)?;
        }
        if input.add {
            op = op.accumulate()?;
        }
        if self.coop_split_k {
            op = op.coop_splits(0);
        }
        Ok(op)
    }

    /// The kernel a one-row product takes, for every row count (see [`step`](Self::step)).
    fn row_path(&self, w: &QuantMatrix) -> QMatmulPath {
        if self.rt.context().caps().cpu() && w.cols().is_multiple_of(32) {
            QMatmulPath::GemvRows
        } else {
            QMatmulPath::Gemv
        }
    }

    /// [`project`](Self::project) for a batched step: every part with the one-row kernel.
    fn project_rows(&self, stacked: &Stacked, input: &Input<'_>, out: &Tensor, part: &Tensor) -> Result<()> {
        let one_row = Products::OneRow { part };
        let parts = match stacked {
            Stacked::Fused(m) => return self.matmul_with(input, m, out, one_row),
            Stacked::Split(parts) => parts,
        };
        self.project_parts(parts, input, out, part, one_row)
    }

    /// Each of `parts` (a split projection of several rows) into `part` (flat, room for the
    /// widest), then into its columns of `out`, on the kernels `products` says.
    fn project_parts(
        &self,
        parts: &[QuantMatrix],
        input: &Input<'_>,
        out: &Tensor,
        part: &Tensor,
        products: Products<'_>,
    ) -> Result<()> {
        let m = input.x.dims().first().copied().unwrap_or(1);
        let mut at = 0;
        for w in parts {
            let tmp = part.narrow(0, m * w.rows())?.reshape([m, w.rows()])?;
            self.matmul_with(input, w, &tmp, products)?;
            out.write_slice(&tmp, 1, at)?;
            at += w.rows();
        }
        Ok(())
    }

    /// Records a batched step (see [`step`](Self::step)) and returns its logits.
    fn record_step(&self, ids: StepIds<'_>, table: &[u32], a: &StepActivations, kv: &KvSlots) -> Result<Tensor> {
        let c = &self.config;
        let rt = &self.rt;
        a.table.write(table)?;
        match ids {
            StepIds::Host(ids) => a.ids.write(ids)?,
            StepIds::Gpu(ids) => rt.record(&Copy::new(ids, &a.ids)?)?,
        }
        let products = Products::OneRow { part: &a.part };
        let fused = self.fuses_norms(products, table.len() / 2);
        let stream = Stream { x: &a.x, n: &a.n, o: &a.o, gate_up: &a.gate_up, act: &a.act, fused };
        self.record_embedding(&a.ids, &stream)?;
        // Every slot has the same capacity, so LongRoPE picks one table for all.
        let rope_factors = self.rope_factors.for_context(kv.capacity, c.rope_long_from);
        let m = table.len() / 2;
        // Each row's key count: its position + 1.
        let keys: Vec<usize> = table.chunks_exact(2).map(|p| p.get(1).map_or(1, |&pos| pos as usize + 1)).collect();
        for (il, layer) in self.layers.iter().enumerate() {
            let (k_cache, v_cache) = match (kv.k.get(il), kv.v.get(il)) {
                (Some(k), Some(v)) => (k, v),
                _ => return Err(Error::InvalidInput("the KV slots belong to another model".into())),
            };
            self.project_with(&layer.qkv, &stream.input(&layer.attn_norm), &a.qkv, products)?;
            let rope = self.rope_options(layer, 0);
            let qkv_rope = QkvRope::batched(&a.qkv, &a.q, k_cache, v_cache, rope, &a.table)?;
            rt.record(&self.with_layer_extras(qkv_rope, layer, rope_factors)?)?;
            let window = if layer.local { c.sliding_window } else { None };
            rt.record(&SlotAttention::new(
                &a.q,
                k_cache,
                v_cache,
                &a.attn,
                &a.table,
                &keys,
                c.attn_scale,
                window,
                &a.scratch,
            )?)?;
            let heads = a.attn.reshape([m, c.n_head * c.head_dim])?;
            self.record_block_rest(il, layer, &heads, &stream, products)?;
        }
        let output = self.output.as_ref().unwrap_or(&self.embed);
        self.record_final_norm(&a.x, &a.n, fused)?;
        self.matmul_with(&Input::plain(&a.n), output, &a.logits, products)?;
        Ok(a.logits.clone())
    }

    /// The token embeddings of `ids` (scaled) into `s.x`, and the first block's norm of them
    /// into `s.n`.
    fn record_embedding(&self, ids: &Tensor, s: &Stream<'_>) -> Result<()> {
        let c = &self.config;
        let rt = &self.rt;
        rt.record(&QEmbedding::new(&self.embed, ids, s.x)?)?;
        if c.embed_scale != 1.0 {
            rt.record(&Binary::scalar(BinaryOp::Mul, s.x, c.embed_scale, s.x)?)?;
        }
        if s.fused {
            return Ok(());
        }
        let first_norm = self.layers.first().map_or(&self.output_norm, |l| &l.attn_norm);
        Ok(rt.record(&RmsNorm::new(s.x, Some(first_norm), c.rms_eps, false, s.n)?)?)
    }

    /// `layer`'s RoPE settings, positions from `start`.
    fn rope_options(&self, layer: &Layer, start: u32) -> RopeOptions {
        let c = &self.config;
        RopeOptions {
            style: c.rope_style,
            base: if layer.local { c.rope_base_local } else { c.rope_base },
            position_offset: start,
            rotary_dim: None,
            freq_scale: c.rope_freq_scale,
        }
    }

    /// `op` with what `layer` adds to it: q/k norms, q/k/v biases, RoPE frequency factors.
    fn with_layer_extras(&self, mut op: QkvRope, layer: &Layer, factors: Option<&Tensor>) -> Result<QkvRope> {
        if let Some((q_norm, k_norm)) = &layer.qk_norms {
            op = op.with_norms(q_norm, k_norm, self.config.rms_eps)?;
        }
        if let Some(bias) = &layer.qkv_bias {
            op = op.with_bias(bias)?;
        }
        if let Some(factors) = factors {
            op = op.with_freq_factors(factors)?;
        }
        Ok(op)
    }

    /// The rest of block `il` after attention (`heads`: its output, `[rows, n_head · head_dim]`):
    /// output projection, residual and norm, MLP, residual and the next block's norm.
    fn record_block_rest(
        &self,
        il: usize,
        layer: &Layer,
        heads: &Tensor,
        s: &Stream<'_>,
        products: Products<'_>,
    ) -> Result<()> {
        let c = &self.config;
        let rt = &self.rt;
        if s.fused {
            // x += wo · heads; x += down(act(gate) · up) with the norm read through.
            self.matmul_with(&Input::plain(heads).added_to(), &layer.wo, s.x, products)?;
            self.project_with(&layer.gate_up, &s.input(&layer.ffn_norm), s.gate_up, products)?;
            return self.record_down(layer, s, products);
        }
        self.matmul_with(&Input::plain(heads), &layer.wo, s.o, products)?;
        rt.record(&ResidualRmsNorm::new(
            s.x,
            s.o,
            layer.post_attn_norm.as_ref(),
            &layer.ffn_norm,
            c.rms_eps,
            s.x,
            s.n,
        )?)?;
        self.project_with(&layer.gate_up, &Input::plain(s.n), s.gate_up, products)?;
        self.record_down(layer, s, products)?;
        let next_norm = self.layers.get(il + 1).map_or(&self.output_norm, |l| &l.attn_norm);
        Ok(rt.record(&ResidualRmsNorm::new(s.x, s.o, layer.post_ffn_norm.as_ref(), next_norm, c.rms_eps, s.x, s.n)?)?)
    }

    /// The MLP's down projection of `act(gate) * up` into `s.o`: where the product takes the
    /// GEMV (decode steps on a GPU) the GEMV reads the gate through, one dispatch; else the
    /// gated op into `s.act`, then the product.
    fn record_down(&self, layer: &Layer, s: &Stream<'_>, products: Products<'_>) -> Result<()> {
        let act = self.config.act;
        let gemv = match products {
            Products::Auto { .. } => {
                let rows = s.act.numel() / layer.down.cols().max(1);
                QMatmul::auto_path(s.act, rows, &layer.down) == QMatmulPath::Gemv
                    && self.q8_product(rows, &layer.down).is_none()
            }
            Products::OneRow { .. } => self.row_path(&layer.down) == QMatmulPath::Gemv,
        };
        // Fused: added to the residual stream, not stored for the residual norm.
        let out = if s.fused { s.x } else { s.o };
        if gemv {
            let op = QMatmul::gated(act, s.gate_up, &layer.down, out)?;
            return Ok(self.rt.record(&if s.fused { op.accumulate()? } else { op })?);
        }
        self.rt.record(&Gated::halves(act, s.gate_up, s.act)?)?;
        let input = Input { add: s.fused, ..Input::plain(s.act) };
        self.matmul_with(&input, &layer.down, out, products)
    }

    /// `out = x · wᵀ` (or `+=`, through a norm: see [`Input`]), on the kernel `products` says.
    fn matmul_with(&self, input: &Input<'_>, w: &QuantMatrix, out: &Tensor, products: Products<'_>) -> Result<()> {
        Ok(self.rt.record(&self.product(input, w, out, products)?)?)
    }

    /// The stacked projections of `input` into `out`, on the kernels `products` says.
    fn project_with(&self, stacked: &Stacked, input: &Input<'_>, out: &Tensor, products: Products<'_>) -> Result<()> {
        match products {
            Products::Auto { part } => self.project(stacked, input, out, part),
            Products::OneRow { part } => self.project_rows(stacked, input, out, part),
        }
    }

    fn activations(&self, seq: usize, capacity: usize) -> Result<Activations> {
        let c = &self.config;
        let rt = &self.rt;
        let f32s = |dims: &[usize]| Tensor::empty(rt, dims, DType::F32);
        let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let q = f32s(&[1, c.n_head, seq, c.head_dim])?;
        let attn = f32s(&[1, c.n_head, seq, c.head_dim])?;
        let sdpa_scratch = if seq == 1 {
            // Sized for the longest key range a step can see: the whole cache.
            let keys = f32s(&[1, c.n_head_kv, capacity, c.head_dim])?;
            let options = SdpaOptions { scale: Some(c.attn_scale), ..SdpaOptions::default() };
            let len = SplitKAttention::scratch_len(&q, &keys, &keys, &attn, &options)?;
            Some(f32s(&[len])?)
        } else {
            None
        };
        Ok(Activations {
            ids: Tensor::empty(rt, [seq], DType::U32)?,
            x: f32s(&[seq, c.n_embd])?,
            n: f32s(&[seq, c.n_embd])?,
            qkv: f32s(&[seq, q_dim + 2 * kv_dim])?,
            q,
            attn,
            o: f32s(&[seq, c.n_embd])?,
            gate_up: f32s(&[seq, 2 * c.n_ff])?,
            act: f32s(&[seq, c.n_ff])?,
            logits: f32s(&[1, c.vocab])?,
            sdpa_scratch,
            heads: if seq > 1 { Some(f32s(&[seq, q_dim])?) } else { None },
            part: match self.widest_split() {
                Some(widest) if seq > 1 => Some(f32s(&[seq * widest])?),
                _ => None,
            },
        })
    }

    /// Runs `ids` (the next tokens after what `cache` holds) through the model, appends their
    /// keys and values to `cache`, and returns the logits of the last one: `[1, vocab]`.
    ///
    /// Prompts longer than [`PREFILL_CHUNK`] tokens run in chunks (see [`prefill`](Self::prefill)),
    /// so memory grows linearly with the prompt. A one-token step works in `cache`'s reusable
    /// activations: the logits it returns are overwritten by the next one-token step on the same
    /// cache (read or copy them first).
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        self.prefill(ids, cache, 1, PREFILL_CHUNK, &mut |_, _| {})
    }

    /// A one-token step whose token id is already on the GPU (`id`: one u32, e.g. the argmax
    /// of the previous step's logits): nothing goes through the host, so the next step can be
    /// recorded before this one's token is read back. An id outside the vocabulary embeds as
    /// zeros (the GPU cannot report it); ids from this model's own logits are always inside.
    pub fn forward_token_on_gpu(&self, id: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        if id.dtype() != DType::U32 || id.numel() != 1 {
            return Err(Error::InvalidInput(format!("a GPU token id is one u32, got {} {}", id.dtype(), id.shape())));
        }
        self.check_cache(cache, 1)?;
        let ids = id.reshape([1])?;
        self.with_step(cache, |a, cache| {
            self.record_layers(&ids, a, cache, 1)?;
            self.record_logits(a, 0, 1, &a.logits)?;
            Ok(a.logits.clone())
        })
    }

    /// Runs `f` with the cache's one-token activations (allocated on the first step).
    fn with_step<T>(&self, cache: &mut KvCache, f: impl FnOnce(&Activations, &mut KvCache) -> Result<T>) -> Result<T> {
        let a = match cache.step.take() {
            Some(a) => a,
            None => self.activations(1, cache.capacity)?,
        };
        let result = f(&a, cache);
        cache.step = Some(a);
        result
    }

    /// Runs `f` with activations for `seq` tokens: views of the first rows of the cache's row
    /// buffers, which grow (to the next power of two rows, at most `chunk`) when `seq` does not
    /// fit. Prompts of any length up to the buffers' rows then bind the same buffer ranges (a
    /// binding covers its whole allocation), so a server's burst of prompts builds no bind
    /// groups and allocates nothing after the first.
    fn with_rows<T>(
        &self,
        cache: &mut KvCache,
        seq: usize,
        chunk: usize,
        f: impl FnOnce(&Activations, &mut KvCache) -> Result<T>,
    ) -> Result<T> {
        let buffers = self.row_buffers(cache.rows.take(), seq, chunk, cache.capacity)?;
        let result = self.first_rows(&buffers, seq).and_then(|a| f(&a, cache));
        cache.rows = Some(buffers);
        result
    }

    /// `held` if it has `seq` rows, else row buffers grown to the next power of two rows (at
    /// least 16, at most `chunk` unless `seq` is more).
    fn row_buffers(&self, held: Option<Activations>, seq: usize, chunk: usize, capacity: usize) -> Result<Activations> {
        match held {
            Some(a) if a.x.dims().first().is_some_and(|&rows| rows >= seq) => Ok(a),
            _ => self.activations(seq.next_power_of_two().max(16).min(chunk).max(seq), capacity),
        }
    }

    /// Views of the first `seq` rows of `a` (a pass over more than one token).
    fn first_rows(&self, a: &Activations, seq: usize) -> Result<Activations> {
        let c = &self.config;
        // Queries and attention outputs are head-major: the first `seq` rows of every head
        // are a prefix of the flat buffer in the layout of a `seq`-token pass.
        let heads = |t: &Tensor| -> Result<Tensor> {
            let len = c.n_head * seq * c.head_dim;
            Ok(t.reshape([t.numel()])?.narrow(0, len)?.reshape([1, c.n_head, seq, c.head_dim])?)
        };
        Ok(Activations {
            ids: a.ids.narrow(0, seq)?,
            x: a.x.narrow(0, seq)?,
            n: a.n.narrow(0, seq)?,
            qkv: a.qkv.narrow(0, seq)?,
            q: heads(&a.q)?,
            attn: heads(&a.attn)?,
            o: a.o.narrow(0, seq)?,
            gate_up: a.gate_up.narrow(0, seq)?,
            act: a.act.narrow(0, seq)?,
            logits: a.logits.clone(),
            sdpa_scratch: None,
            heads: a.heads.as_ref().map(|t| t.narrow(0, seq)).transpose()?,
            part: match (&a.part, a.x.dims().first()) {
                (Some(part), Some(&rows)) => Some(part.narrow(0, seq * (part.numel() / rows.max(1)))?),
                _ => None,
            },
        })
    }

    /// Records the logits of rows `from..from + n` of `a`'s final norm into `out` (`[n, vocab]`);
    /// where the pass fused its norms, the final norm first.
    fn record_logits(&self, a: &Activations, from: usize, n: usize, out: &Tensor) -> Result<()> {
        let output = self.output.as_ref().unwrap_or(&self.embed);
        let rows = a.x.dims().first().copied().unwrap_or(1);
        let normed = a.n.narrow(from, n)?;
        self.record_final_norm(&a.x.narrow(from, n)?, &normed, self.fuses_norms(AUTO, rows))?;
        self.matmul_with(&Input::plain(&normed), output, out, AUTO)
    }

    /// The final norm of `x` into `n` where a pass fused its other norms (the layers left it
    /// to the output product's input). It keeps a dispatch of its own: in the output product,
    /// each of a vocabulary's worth of workgroups would sum the squares of x again.
    fn record_final_norm(&self, x: &Tensor, n: &Tensor, fused: bool) -> Result<()> {
        if !fused {
            return Ok(());
        }
        Ok(self.rt.record(&RmsNorm::new(x, Some(&self.output_norm), self.config.rms_eps, false, n)?)?)
    }

    /// [`forward`](Self::forward), returning the logits of the last `rows` tokens: `[rows,
    /// vocab]` (row `i` predicts the token after `ids[ids.len() - rows + i]`). What checking a
    /// whole continuation against a reference in one pass needs (feed the reference tokens,
    /// compare each row's argmax).
    pub fn forward_last(&self, ids: &[u32], rows: usize, cache: &mut KvCache) -> Result<Tensor> {
        self.prefill(ids, cache, rows, PREFILL_CHUNK, &mut |_, _| {})
    }

    /// Runs `ids` through the model in chunks of at most `chunk` tokens — each chunk's queries
    /// attend to the cache so far, with the causal rule and sliding windows applied inside the
    /// attention kernels, so no mask is built and memory is linear in the prompt length — and
    /// returns the logits of the last `rows` tokens, `[rows, vocab]`.
    ///
    /// Every chunk but the last is waited for, then `progress(tokens done, tokens in all)` is
    /// called; the last one is recorded and left running (read the logits to wait for it).
    pub fn prefill(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        rows: usize,
        chunk: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let c = &self.config;
        let total = ids.len();
        if total == 0 {
            return Err(Error::InvalidInput("no tokens to run".into()));
        }
        if rows == 0 || rows > total {
            return Err(Error::InvalidInput(format!("logits of {rows} rows asked of {total} tokens")));
        }
        if chunk == 0 {
            return Err(Error::InvalidInput("a prefill chunk of 0 tokens".into()));
        }
        self.check_cache(cache, total)?;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(Error::InvalidInput(format!("token id {bad} outside the vocabulary of {}", c.vocab)));
        }
        // Rows `first_row..total` of the prompt give logits: `[rows, vocab]` when several (they
        // may span chunks), else the last chunk's `[1, vocab]`.
        let first_row = total - rows;
        let all = if rows > 1 { Some(Tensor::empty(&self.rt, [rows, c.vocab], DType::F32)?) } else { None };
        let mut done = 0;
        for part in ids.chunks(chunk) {
            let seq = part.len();
            // This chunk's rows that give logits, and where they go.
            let from = first_row.max(done);
            let n = (done + seq).saturating_sub(from);
            let run = |a: &Activations, cache: &mut KvCache| -> Result<Option<Tensor>> {
                a.ids.write(part)?;
                self.record_layers(&a.ids, a, cache, seq)?;
                if n == 0 {
                    return Ok(None);
                }
                let out = match &all {
                    Some(all) => all.narrow(from - first_row, n)?,
                    None => a.logits.clone(),
                };
                self.record_logits(a, from - done, n, &out)?;
                Ok(Some(out))
            };
            let logits = if seq == 1 { self.with_step(cache, run)? } else { self.with_rows(cache, seq, chunk, run)? };
            done += seq;
            if done == total {
                return match (all, logits) {
                    (Some(all), _) => Ok(all),
                    (None, Some(last)) => Ok(last),
                    (None, None) => Err(Error::InvalidInput("the last chunk gave no logits".into())),
                };
            }
            // The next chunk reuses these activations (its ids are written from the host), and
            // waiting releases this chunk's temporaries.
            self.rt.synchronize()?;
            progress(done, total);
        }
        Err(Error::InvalidInput("no tokens to run".into()))
    }

    /// Fails unless `cache` belongs to this model and has room for `seq` more positions.
    fn check_cache(&self, cache: &KvCache, seq: usize) -> Result<()> {
        let c = &self.config;
        let end = cache.len.saturating_add(seq);
        if end > cache.capacity {
            return Err(Error::InvalidInput(format!("{end} positions exceed the context of {}", cache.capacity)));
        }
        if cache.k.len() != c.n_layer
            || cache.v.len() != c.n_layer
            || cache.k.first().is_some_and(|k| k.dims() != [c.n_head_kv, cache.capacity, c.head_dim])
        {
            return Err(Error::InvalidInput("the cache belongs to another model".into()));
        }
        Ok(())
    }

    /// Records `seq` tokens (`ids`, on the GPU) through every layer after what `cache` holds:
    /// their keys and values go to `cache`, the final norm of their residual stream to `a.n`.
    fn record_layers(&self, ids: &Tensor, a: &Activations, cache: &mut KvCache, seq: usize) -> Result<()> {
        self.record_sequences(ids, a, &mut [Rows { cache, len: seq }])
    }

    /// [`record_layers`](Self::record_layers) for several sequences' tokens in one pass: `ids`
    /// (and `a`'s rows) hold each sequence's tokens in turn, `seqs` says whose and how many.
    /// The products run once over every row; each sequence's RoPE, attention and cache writes
    /// are its own, the same kernels on the same shapes as when it runs alone — so a row's
    /// arithmetic is a one-sequence pass's wherever its products take the same kernel (see
    /// [`prefills_together`](Self::prefills_together)).
    fn record_sequences(&self, ids: &Tensor, a: &Activations, seqs: &mut [Rows<'_>]) -> Result<()> {
        let c = &self.config;
        let rt = &self.rt;
        let total: usize = seqs.iter().map(|s| s.len).sum();
        let products = Products::Auto { part: a.part.as_ref() };
        let fused = self.fuses_norms(products, total);
        let stream = Stream { x: &a.x, n: &a.n, o: &a.o, gate_up: &a.gate_up, act: &a.act, fused };
        self.record_embedding(ids, &stream)?;
        // Each sequence's queries and attention output, head-major (`[1, n_head, len, hd]`),
        // one after another in `a.q` and `a.attn`.
        let hd = c.head_dim;
        let head_major = |t: &Tensor, row0: usize, len: usize| -> Result<Tensor> {
            Ok(t.reshape([t.numel()])?
                .narrow(c.n_head * row0 * hd, c.n_head * len * hd)?
                .reshape([1, c.n_head, len, hd])?)
        };
        for (il, layer) in self.layers.iter().enumerate() {
            self.project_with(&layer.qkv, &stream.input(&layer.attn_norm), &a.qkv, products)?;
            let window = if layer.local { c.sliding_window } else { None };
            let mut row0 = 0;
            for s in seqs.iter() {
                let cache = &*s.cache;
                let (k_cache, v_cache) = match (cache.k.get(il), cache.v.get(il)) {
                    (Some(k), Some(v)) => (k, v),
                    _ => return Err(Error::InvalidInput("the cache belongs to another model".into())),
                };
                let (seq, start, capacity) = (s.len, cache.len, cache.capacity);
                let end = start + seq;
                let (q, attn) = (head_major(&a.q, row0, seq)?, head_major(&a.attn, row0, seq)?);
                let qkv = a.qkv.narrow(row0, seq)?;
                let q_heads = q.reshape([c.n_head, seq, hd])?;
                let qkv_rope = QkvRope::new(&qkv, &q_heads, k_cache, v_cache, self.rope_options(layer, start as u32))?;
                let factors = self.rope_factors.for_context(capacity, c.rope_long_from);
                rt.record(&self.with_layer_extras(qkv_rope, layer, factors)?)?;
                // Queries at start..end see keys up to their own position (the first `end` of
                // the cache are read, the cache is bound whole); a local layer's only the last
                // `window`.
                let whole = |t: &Tensor| t.reshape([1, c.n_head_kv, capacity, hd]);
                let (keys, values) = (whole(k_cache)?, whole(v_cache)?);
                let options = SdpaOptions {
                    scale: Some(c.attn_scale),
                    causal: true,
                    window,
                    keys: Some(end),
                    ..SdpaOptions::default()
                };
                match &a.sdpa_scratch {
                    Some(scratch) => {
                        rt.record(&SplitKAttention::with_scratch(&q, &keys, &values, &attn, options, scratch)?)?
                    }
                    None => rt.record(attention(&q, &keys, &values, &attn, options, SdpaImpl::Auto)?.1.as_ref())?,
                }
                // [n_head, seq, hd] → the sequence's rows of [rows, n_head · hd].
                if let Some(heads) = &a.heads {
                    let rows = heads.narrow(row0, seq)?.reshape([seq, c.n_head, hd])?;
                    let (src_strides, dst_strides) = ([hd, seq * hd, 1], [c.n_head * hd, hd, 1]);
                    let (src, dst) = (Strided::new(0, &src_strides), Strided::new(0, &dst_strides));
                    let attn_rows = attn.reshape([c.n_head, seq, hd])?;
                    rt.record(&StridedCopy::new(&attn_rows, src, &rows, dst, rows.dims())?)?;
                }
                row0 += seq;
            }
            // One token: its attention output is already a row.
            let heads = match &a.heads {
                Some(heads) => heads.clone(),
                None => a.attn.reshape([total, c.n_head * hd])?,
            };
            self.record_block_rest(il, layer, &heads, &stream, products)?;
        }
        for s in seqs.iter_mut() {
            s.cache.len += s.len;
        }
        Ok(())
    }

    /// The stacked projections of `input` (`[seq, n_embd]`) into `out` (`[seq, total rows]`);
    /// split ones of several rows through `part` where given.
    fn project(&self, stacked: &Stacked, input: &Input<'_>, out: &Tensor, part: Option<&Tensor>) -> Result<()> {
        let parts = match stacked {
            Stacked::Fused(m) => return self.matmul_with(input, m, out, AUTO),
            Stacked::Split(parts) => parts,
        };
        let seq = input.x.dims().first().copied().unwrap_or(1);
        if seq > 1 {
            if input.norm.is_some() || input.add {
                return Err(Error::InvalidInput("a fused norm on a split projection of several rows".into()));
            }
            let part =
                part.ok_or_else(|| Error::InvalidInput("a split projection of several rows without room".into()))?;
            return self.project_parts(parts, input, out, part, AUTO);
        }
        // One row: each projection is a contiguous slice of it.
        let mut at = 0;
        for m in parts {
            let slice = out.reshape([out.numel()])?.narrow(at, m.rows())?.reshape([1, m.rows()])?;
            self.matmul_with(input, m, &slice, AUTO)?;
            at += m.rows();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{
        EXACT_STEP_ROWS, Q8_PRODUCTS_MIN_WIDTH, WIDE_STEP_PRODUCT, q8_products_by_default, tensor_core_product,
    };

    #[test]
    fn only_wide_models_on_gpus_take_the_8_bit_products_by_default() {
        assert!(q8_products_by_default(false, Q8_PRODUCTS_MIN_WIDTH), "Llama-3.2-1B's width");
        assert!(q8_products_by_default(false, 4096), "Llama-3.1-8B's");
        assert!(!q8_products_by_default(false, 896), "Qwen2.5 0.5B keeps its fused norms");
        assert!(!q8_products_by_default(false, 640), "Gemma 3 270M");
        assert!(!q8_products_by_default(true, 4096), "a CPU adapter emulates the integer dot product");
    }

    #[test]
    fn only_wide_products_of_large_inexact_steps_on_gpus_with_cooperative_matrices_take_the_tensor_cores() {
        let (rows, wide) = (EXACT_STEP_ROWS + 1, WIDE_STEP_PRODUCT);
        assert!(tensor_core_product(false, true, false, rows, wide));
        assert!(tensor_core_product(false, true, false, 32, 151_936));
        // Any one condition missing keeps the one-row kernel.
        assert!(!tensor_core_product(true, true, false, rows, wide), "a CPU adapter");
        assert!(!tensor_core_product(false, false, false, rows, wide), "no cooperative matrices");
        assert!(!tensor_core_product(false, true, true, rows, wide), "exact batches asked for");
        assert!(!tensor_core_product(false, true, false, EXACT_STEP_ROWS, wide), "8 sequences");
        assert!(!tensor_core_product(false, true, false, rows, wide - 1), "a narrow matrix");
    }
}
