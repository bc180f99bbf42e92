//! Decoder-only language models from GGUF files, written against llama.cpp's tensor names.
//! One `Decoder` serves every supported architecture; what differs between them lives in
//! [`DecoderConfig`] (Gemma 3 so far: embedding scale, q/k norms, post-norms, GeGLU, local and
//! global attention layers). Weights stay quantized on the GPU ([`QuantMatrix`]).
//!
//! ```text
//! x = embed(ids) · scale
//! per layer:  h = x + post_attn_norm(attention(attn_norm(x)))
//!             x = h + post_ffn_norm(down(act(gate(n)) · up(n))),  n = ffn_norm(h)
//! logits = output(output_norm(x))          (the embedding table when tied)
//! ```

use metallic::kernels::gated::GatedAct;
use metallic::kernels::qmatmul::QuantMatrix;
use metallic::kernels::rope::{RopeOptions, RopeStyle};
use metallic::kernels::sdpa::{SdpaOptions, scaled_dot_product_attention};
use metallic::{DType, Runtime, Tensor};

use crate::gguf::{GgufFile, TensorInfo};
use crate::{Error, Result};

/// The hyperparameters a decoder needs, read from `{arch}.*` GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// `general.architecture`.
    pub arch: String,
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
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
}

impl DecoderConfig {
    /// Reads the configuration of a supported architecture.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?.to_string();
        if arch != "gemma3" {
            return Err(Error::Unsupported {
                path: file.path().into(),
                what: "architecture",
                found: arch,
                supported: "gemma3",
            });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let usize_of = |k: &str| -> Result<usize> { Ok(file.get_u64(&key(k))? as usize) };
        let n_embd = usize_of("embedding_length")?;
        let n_head = usize_of("attention.head_count")?;
        let head_dim = match file.get(&key("attention.key_length")) {
            Some(_) => usize_of("attention.key_length")?,
            None => n_embd / n_head.max(1),
        };
        let n_head_kv = match file.get(&key("attention.head_count_kv")) {
            Some(_) => usize_of("attention.head_count_kv")?,
            None => n_head,
        };
        let vocab = file.tensor("token_embd.weight").and_then(|t| t.dims().get(1).copied()).unwrap_or(0);
        let config = DecoderConfig {
            n_embd,
            n_layer: usize_of("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: usize_of("feed_forward_length")?,
            n_ctx_train: usize_of("context_length")?,
            rms_eps: file.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base: file.get_f32(&key("rope.freq_base")).unwrap_or(1_000_000.0),
            // Gemma 3's local layers use base 10000 (llama.cpp's rope_freq_base_train_swa).
            rope_base_local: 10_000.0,
            sliding_window: Some(usize_of("attention.sliding_window")?),
            swa_period: 6,
            embed_scale: (n_embd as f32).sqrt(),
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            act: GatedAct::GeluTanh,
            vocab,
            arch,
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
        if !(self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return Err(Error::format(file.path(), format!("rms epsilon {}", self.rms_eps)));
        }
        Ok(())
    }

    /// Whether layer `il` attends only within the sliding window.
    pub fn is_local(&self, il: usize) -> bool {
        self.sliding_window.is_some() && self.swa_period > 0 && !(il + 1).is_multiple_of(self.swa_period)
    }
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

    /// An f32 vector (norm weights).
    fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        let info = self.info(name)?;
        self.check(info, &[len])?;
        let mut values = vec![0.0f32; len];
        metallic::quant::dequantize(info.ty(), self.file.tensor_data(info), &mut values)?;
        Ok(Tensor::from_slice(self.rt, [len], &values)?)
    }
}

/// One transformer block.
#[derive(Debug)]
struct Layer {
    attn_norm: Tensor,
    wq: QuantMatrix,
    wk: QuantMatrix,
    wv: QuantMatrix,
    wo: QuantMatrix,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    gate: QuantMatrix,
    up: QuantMatrix,
    down: QuantMatrix,
    post_ffn_norm: Tensor,
    local: bool,
}

/// Keys and values of every layer, preallocated for `capacity` positions:
/// `[kv_heads, capacity, head_dim]` per layer, f32.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    capacity: usize,
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
    rt: Runtime,
}

impl Decoder {
    /// Loads a model from `file` onto `rt`.
    pub fn load(file: &GgufFile, rt: &Runtime) -> Result<Self> {
        Self::load_with_progress(file, rt, |_, _| {})
    }

    /// [`load`](Self::load), calling `progress(done, total)` as layers are uploaded.
    pub fn load_with_progress(file: &GgufFile, rt: &Runtime, mut progress: impl FnMut(usize, usize)) -> Result<Self> {
        let config = DecoderConfig::from_gguf(file)?;
        let w = Loader { file, rt };
        let c = &config;
        let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let total = c.n_layer + 1;
        let layers = (0..c.n_layer)
            .map(|il| {
                progress(il, total);
                let n = |s: &str| format!("blk.{il}.{s}.weight");
                Ok(Layer {
                    attn_norm: w.vector(&n("attn_norm"), c.n_embd)?,
                    wq: w.matrix(&n("attn_q"), q_dim, c.n_embd)?,
                    wk: w.matrix(&n("attn_k"), kv_dim, c.n_embd)?,
                    wv: w.matrix(&n("attn_v"), kv_dim, c.n_embd)?,
                    wo: w.matrix(&n("attn_output"), c.n_embd, q_dim)?,
                    q_norm: w.vector(&n("attn_q_norm"), c.head_dim)?,
                    k_norm: w.vector(&n("attn_k_norm"), c.head_dim)?,
                    post_attn_norm: w.vector(&n("post_attention_norm"), c.n_embd)?,
                    ffn_norm: w.vector(&n("ffn_norm"), c.n_embd)?,
                    gate: w.matrix(&n("ffn_gate"), c.n_ff, c.n_embd)?,
                    up: w.matrix(&n("ffn_up"), c.n_ff, c.n_embd)?,
                    down: w.matrix(&n("ffn_down"), c.n_embd, c.n_ff)?,
                    post_ffn_norm: w.vector(&n("post_ffw_norm"), c.n_embd)?,
                    local: c.is_local(il),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output = match file.tensor("output.weight") {
            Some(_) => Some(w.matrix("output.weight", c.vocab, c.n_embd)?),
            None => None,
        };
        let embed = w.matrix("token_embd.weight", c.vocab, c.n_embd)?;
        progress(total, total);
        Ok(Decoder {
            embed,
            output_norm: w.vector("output_norm.weight", c.n_embd)?,
            output,
            layers,
            config,
            rt: rt.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> usize {
        let matrices = self.layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]);
        let vectors = self
            .layers
            .iter()
            .flat_map(|l| [&l.attn_norm, &l.q_norm, &l.k_norm, &l.post_attn_norm, &l.ffn_norm, &l.post_ffn_norm]);
        matrices.chain([&self.embed]).chain(self.output.as_ref()).map(QuantMatrix::size_in_bytes).sum::<usize>()
            + vectors.chain([&self.output_norm]).map(Tensor::size_in_bytes).sum::<usize>()
    }

    /// Bytes a [`KvCache`] of `capacity` positions takes.
    pub fn cache_bytes(&self, capacity: usize) -> usize {
        let c = &self.config;
        2 * c.n_layer * c.n_head_kv * capacity * c.head_dim * DType::F32.size_in_bytes()
    }

    /// A cache for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        let c = &self.config;
        if capacity == 0 {
            return Err(Error::InvalidInput("a KV cache needs room for at least one position".into()));
        }
        let shape = [c.n_head_kv, capacity, c.head_dim];
        let make = || Tensor::zeros(&self.rt, shape, DType::F32);
        Ok(KvCache {
            k: (0..c.n_layer).map(|_| make()).collect::<metallic::Result<_>>()?,
            v: (0..c.n_layer).map(|_| make()).collect::<metallic::Result<_>>()?,
            capacity,
            len: 0,
        })
    }

    /// Runs `ids` (the next tokens after what `cache` holds) through the model, appends their
    /// keys and values to `cache`, and returns the logits of the last one: `[1, vocab]`.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        let (seq, start) = (ids.len(), cache.len);
        if seq == 0 {
            return Err(Error::InvalidInput("no tokens to run".into()));
        }
        if start + seq > cache.capacity {
            return Err(Error::InvalidInput(format!(
                "{} positions exceed the context of {}",
                start + seq,
                cache.capacity
            )));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(Error::InvalidInput(format!("token id {bad} outside the vocabulary of {}", c.vocab)));
        }
        let ids_t = Tensor::from_slice(&self.rt, [seq], ids)?;
        let mut x = self.embed.embedding(&ids_t)?.mul_scalar(c.embed_scale)?; // [seq, n_embd]
        let end = start + seq;
        // A single query at the end of the cache sees every key: no mask, nothing to upload per
        // token. Local layers need their own mask only once the window cuts off older keys.
        let global_mask = if seq == 1 { None } else { Some(self.mask(start, seq, false)?) };
        let windowed = c.sliding_window.is_some_and(|w| end > w);
        let local_mask = if windowed { Some(self.mask(start, seq, true)?) } else { global_mask.clone() };
        for (il, layer) in self.layers.iter().enumerate() {
            let (k_cache, v_cache) = match (cache.k.get(il), cache.v.get(il)) {
                (Some(k), Some(v)) => (k, v),
                _ => return Err(Error::InvalidInput("the cache belongs to another model".into())),
            };
            let h = x.rms_norm(Some(&layer.attn_norm), c.rms_eps, false)?;
            let heads = |w: &QuantMatrix, n: usize, norm: &Tensor, base: f32| -> Result<Tensor> {
                let t = h.qmatmul(w)?.reshape([seq, n, c.head_dim])?;
                let t = t.rms_norm(Some(norm), c.rms_eps, false)?.permute(&[1, 0, 2])?; // [n, seq, hd]
                let rope = RopeOptions {
                    style: RopeStyle::NeoX,
                    base,
                    position_offset: start as u32,
                    ..RopeOptions::default()
                };
                Ok(t.rope(rope)?)
            };
            let base = if layer.local { c.rope_base_local } else { c.rope_base };
            let q = heads(&layer.wq, c.n_head, &layer.q_norm, base)?;
            let k = heads(&layer.wk, c.n_head_kv, &layer.k_norm, base)?;
            let v = h.qmatmul(&layer.wv)?.reshape([seq, c.n_head_kv, c.head_dim])?.permute(&[1, 0, 2])?;
            k_cache.write_slice(&k, 1, start)?;
            v_cache.write_slice(&v, 1, start)?;
            let (keys, values) = (self.visible(k_cache, end)?, self.visible(v_cache, end)?);
            let mask = if layer.local { local_mask.clone() } else { global_mask.clone() };
            let options = SdpaOptions { scale: Some(c.attn_scale), mask, ..SdpaOptions::default() };
            let q4 = q.reshape([1, c.n_head, seq, c.head_dim])?;
            let attn = scaled_dot_product_attention(&q4, &keys, &values, options)?;
            let attn = attn
                .reshape([c.n_head, seq, c.head_dim])?
                .permute(&[1, 0, 2])?
                .reshape([seq, c.n_head * c.head_dim])?;
            let o = attn.qmatmul(&layer.wo)?.rms_norm(Some(&layer.post_attn_norm), c.rms_eps, false)?;
            let h2 = x.add_elem(&o)?;
            let n = h2.rms_norm(Some(&layer.ffn_norm), c.rms_eps, false)?;
            let ff = n.qmatmul(&layer.gate)?.gated(c.act, &n.qmatmul(&layer.up)?)?.qmatmul(&layer.down)?;
            x = h2.add_elem(&ff.rms_norm(Some(&layer.post_ffn_norm), c.rms_eps, false)?)?;
        }
        cache.len = end;
        let last = x.narrow(seq - 1, 1)?.rms_norm(Some(&self.output_norm), c.rms_eps, false)?;
        Ok(last.qmatmul(self.output.as_ref().unwrap_or(&self.embed))?)
    }

    /// Keys (or values) of positions `0..end`: `[1, kv_heads, end, head_dim]`.
    fn visible(&self, cache: &Tensor, end: usize) -> Result<Tensor> {
        let c = &self.config;
        if c.n_head_kv == 1 {
            return Ok(cache
                .reshape([cache.numel() / c.head_dim, c.head_dim])?
                .narrow(0, end)?
                .reshape([1, 1, end, c.head_dim])?);
        }
        // Several K/V heads: a contiguous copy of each head's first `end` positions.
        let heads: Vec<Tensor> = (0..c.n_head_kv)
            .map(|h| cache.get_batch(h)?.narrow(0, end)?.reshape([1, end, c.head_dim]))
            .collect::<metallic::Result<_>>()?;
        let refs: Vec<&Tensor> = heads.iter().collect();
        Ok(Tensor::concat(&refs, 0)?.reshape([1, c.n_head_kv, end, c.head_dim])?)
    }

    /// The additive mask of `seq` queries at positions `start..` over keys `0..start + seq`:
    /// causal, and for local layers limited to the sliding window.
    fn mask(&self, start: usize, seq: usize, local: bool) -> Result<Tensor> {
        let end = start + seq;
        let window = if local { self.config.sliding_window } else { None };
        let mut values = vec![0.0f32; seq * end];
        for (i, row) in values.chunks_exact_mut(end).enumerate() {
            let pos = start + i;
            for (j, v) in row.iter_mut().enumerate() {
                let visible = j <= pos && window.is_none_or(|w| pos - j < w);
                if !visible {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        Ok(Tensor::from_slice(&self.rt, [1, 1, seq, end], &values)?)
    }
}
