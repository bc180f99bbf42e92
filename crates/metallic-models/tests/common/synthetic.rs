//! Synthetic GGUF files for tests: a little-endian GGUF v3 writer (u32, f32 and string
//! metadata; f32 tensors), and a tiny Gemma 3 with seeded random weights together with an exact
//! float64 forward pass of it — the independent check of the decoder on shapes no real file
//! here has (several K/V heads, a sliding window shorter than the prompt).
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing, clippy::needless_range_loop)]

/// A GGUF metadata value: u32, f32, string, or an array of strings, f32s or i32s.
#[derive(Clone)]
pub enum Value<'a> {
    U32(u32),
    F32(f32),
    Str(&'a str),
    Strs(Vec<String>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

/// A GGUF v3 file of `metadata` and f32 `tensors` (name, dims innermost first, values; an
/// empty slice writes zeros).
pub fn gguf(metadata: &[(&str, Value)], tensors: &[(&str, &[u64], &[f32])]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut out, key);
        match value {
            Value::U32(v) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::F32(v) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Str(v) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                string(&mut out, v);
            }
            Value::Strs(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    string(&mut out, item);
                }
            }
            Value::F32s(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
            Value::I32s(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
        }
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for (name, dims, _) in tensors {
        string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&0u32.to_le_bytes()); // F32
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset += (dims.iter().product::<u64>() * 4).next_multiple_of(32);
    }
    out.resize(out.len().next_multiple_of(32), 0);
    let data_start = out.len();
    out.resize(data_start + offset as usize, 0);
    for ((_, _, values), at) in tensors.iter().zip(offsets) {
        for (i, v) in values.iter().enumerate() {
            let p = data_start + at as usize + 4 * i;
            out[p..p + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// The shape of a tiny Gemma 3.
#[derive(Clone, Copy, Debug)]
pub struct TinyGemma {
    pub layers: usize,
    pub n_embd: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab: usize,
    pub window: usize,
    pub context: usize,
}

/// One layer's weights, row-major `[rows][cols]` matrices.
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub q_norm: Vec<f32>,
    pub k_norm: Vec<f32>,
    pub wo: Vec<f32>,
    pub post_attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub down: Vec<f32>,
    pub post_ffn_norm: Vec<f32>,
}

/// A tiny Gemma 3's weights (the embedding table is also the output projection).
pub struct TinyWeights {
    pub shape: TinyGemma,
    pub embed: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
}

/// xorshift64*, uniform in `[lo, hi)`.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
                lo + (hi - lo) * u
            })
            .collect()
    }
}

impl TinyGemma {
    /// Seeded random weights of this shape: matrices scaled by 1/√fan-in, norms near 1.
    pub fn weights(self, seed: u64) -> TinyWeights {
        let mut rng = Rng(seed.wrapping_mul(2_654_435_761).max(1));
        let (e, q, kv, ff) = (self.n_embd, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.n_ff);
        let mut matrix = |rows: usize, cols: usize| {
            let a = 1.0 / (cols as f32).sqrt();
            rng.uniform(rows * cols, -a, a)
        };
        let layers = (0..self.layers)
            .map(|_| LayerWeights {
                wq: matrix(q, e),
                wk: matrix(kv, e),
                wv: matrix(kv, e),
                wo: matrix(e, q),
                gate: matrix(ff, e),
                up: matrix(ff, e),
                down: matrix(e, ff),
                attn_norm: Vec::new(),
                q_norm: Vec::new(),
                k_norm: Vec::new(),
                post_attn_norm: Vec::new(),
                ffn_norm: Vec::new(),
                post_ffn_norm: Vec::new(),
            })
            .collect::<Vec<_>>();
        let embed = matrix(self.vocab, e).iter().map(|x| x * 8.0).collect();
        let mut norm = |n: usize| rng.uniform(n, 0.5, 1.5);
        let layers = layers
            .into_iter()
            .map(|l| LayerWeights {
                attn_norm: norm(e),
                q_norm: norm(self.head_dim),
                k_norm: norm(self.head_dim),
                post_attn_norm: norm(e),
                ffn_norm: norm(e),
                post_ffn_norm: norm(e),
                ..l
            })
            .collect();
        TinyWeights { shape: self, embed, layers, output_norm: norm(e) }
    }
}

impl TinyWeights {
    /// The model as a GGUF image (architecture `gemma3`, llama.cpp's tensor names).
    pub fn gguf(&self) -> Vec<u8> {
        self.gguf_with(|_| {})
    }

    /// A SentencePiece vocabulary of `n` tokens for the model: `<unk>`, `<s>`, `</s>`, then
    /// single characters (normal tokens, score by order).
    pub fn vocabulary(n: usize) -> Vec<(&'static str, Value<'static>)> {
        let tokens: Vec<String> = ["<unk>", "<s>", "</s>"]
            .into_iter()
            .map(String::from)
            .chain((0..).map(|i| char::from_u32(0x21 + i).unwrap().to_string()))
            .take(n)
            .collect();
        let types = (0..n).map(|i| if i < 3 { 3 } else { 1 }).collect();
        vec![
            ("tokenizer.ggml.model", Value::Str("llama")),
            ("tokenizer.ggml.scores", Value::F32s((0..n).map(|i| -(i as f32)).collect())),
            ("tokenizer.ggml.token_type", Value::I32s(types)),
            ("tokenizer.ggml.tokens", Value::Strs(tokens)),
        ]
    }

    /// [`gguf`](Self::gguf) with its metadata (a list of key and value) changed by `edit` first.
    pub fn gguf_with(&self, edit: impl FnOnce(&mut Vec<(&str, Value)>)) -> Vec<u8> {
        let s = self.shape;
        let mut metadata = vec![
            ("general.architecture", Value::Str("gemma3")),
            ("gemma3.embedding_length", Value::U32(s.n_embd as u32)),
            ("gemma3.block_count", Value::U32(s.layers as u32)),
            ("gemma3.attention.head_count", Value::U32(s.heads as u32)),
            ("gemma3.attention.head_count_kv", Value::U32(s.kv_heads as u32)),
            ("gemma3.attention.key_length", Value::U32(s.head_dim as u32)),
            ("gemma3.feed_forward_length", Value::U32(s.n_ff as u32)),
            ("gemma3.context_length", Value::U32(s.context as u32)),
            ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
            ("gemma3.attention.sliding_window", Value::U32(s.window as u32)),
            ("gemma3.rope.freq_base", Value::F32(1_000_000.0)),
        ];
        edit(&mut metadata);
        let (e, q, kv, ff, hd) = (
            s.n_embd as u64,
            (s.heads * s.head_dim) as u64,
            (s.kv_heads * s.head_dim) as u64,
            s.n_ff as u64,
            s.head_dim as u64,
        );
        let mut names = Vec::new();
        let mut tensors: Vec<(usize, Vec<u64>, &[f32])> = Vec::new();
        for (il, l) in self.layers.iter().enumerate() {
            let parts: [(&str, Vec<u64>, &[f32]); 13] = [
                ("attn_norm", vec![e], &l.attn_norm),
                ("attn_q", vec![e, q], &l.wq),
                ("attn_k", vec![e, kv], &l.wk),
                ("attn_v", vec![e, kv], &l.wv),
                ("attn_q_norm", vec![hd], &l.q_norm),
                ("attn_k_norm", vec![hd], &l.k_norm),
                ("attn_output", vec![q, e], &l.wo),
                ("post_attention_norm", vec![e], &l.post_attn_norm),
                ("ffn_norm", vec![e], &l.ffn_norm),
                ("ffn_gate", vec![e, ff], &l.gate),
                ("ffn_up", vec![e, ff], &l.up),
                ("ffn_down", vec![ff, e], &l.down),
                ("post_ffw_norm", vec![e], &l.post_ffn_norm),
            ];
            for (name, dims, values) in parts {
                names.push(format!("blk.{il}.{name}.weight"));
                tensors.push((names.len() - 1, dims, values));
            }
        }
        names.push("token_embd.weight".into());
        tensors.push((names.len() - 1, vec![e, s.vocab as u64], &self.embed));
        names.push("output_norm.weight".into());
        tensors.push((names.len() - 1, vec![e], &self.output_norm));
        let list: Vec<(&str, &[u64], &[f32])> =
            tensors.iter().map(|(i, dims, values)| (names[*i].as_str(), dims.as_slice(), *values)).collect();
        gguf(&metadata, &list)
    }

    /// The exact (float64) logits after each of `ids`' positions in `rows` (Gemma 3: scaled
    /// embeddings, RMS norms with post-norms, q/k norms, NeoX RoPE with base 10⁴ on local layers
    /// and 10⁶ on global ones, causal attention within the sliding window on local layers — every
    /// sixth layer is global — GeGLU with tanh GELU, tied output).
    pub fn exact_logits(&self, ids: &[u32], rows: &[usize]) -> Vec<Vec<f64>> {
        let s = self.shape;
        let (e, hd) = (s.n_embd, s.head_dim);
        let n = ids.len();
        let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let rms = |x: &[f64], w: &[f32]| -> Vec<f64> {
            let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
            let r = 1.0 / (ms + 1e-6).sqrt();
            x.iter().zip(w).map(|(v, &w)| v * r * f64::from(w)).collect()
        };
        let matvec = |w: &[f32], cols: usize, x: &[f64]| -> Vec<f64> {
            w.chunks_exact(cols).map(|row| row.iter().zip(x).map(|(&a, b)| f64::from(a) * b).sum()).collect()
        };
        let rope = |x: &mut [f64], pos: usize, base: f64| {
            let half = hd / 2;
            for i in 0..half {
                let theta = pos as f64 * base.powf(-2.0 * i as f64 / hd as f64);
                let (c, sn) = (theta.cos(), theta.sin());
                let (a, b) = (x[i], x[i + half]);
                x[i] = a * c - b * sn;
                x[i + half] = a * sn + b * c;
            }
        };
        let scale = (e as f64).sqrt();
        let mut x: Vec<Vec<f64>> =
            ids.iter().map(|&id| f(&self.embed[id as usize * e..][..e]).iter().map(|v| v * scale).collect()).collect();
        for (il, l) in self.layers.iter().enumerate() {
            let local = (il + 1) % 6 != 0;
            let base = if local { 10_000.0 } else { 1_000_000.0 };
            let mut q = Vec::with_capacity(n);
            let mut k = Vec::with_capacity(n);
            let mut v = Vec::with_capacity(n);
            for (pos, xi) in x.iter().enumerate() {
                let h = rms(xi, &l.attn_norm);
                let heads = |w: &[f32], count: usize, norm: Option<&[f32]>| -> Vec<Vec<f64>> {
                    let y = matvec(w, e, &h);
                    (0..count)
                        .map(|j| {
                            let head = &y[j * hd..][..hd];
                            match norm {
                                Some(w) => {
                                    let mut head = rms(head, w);
                                    rope(&mut head, pos, base);
                                    head
                                }
                                None => head.to_vec(),
                            }
                        })
                        .collect()
                };
                q.push(heads(&l.wq, s.heads, Some(&l.q_norm)));
                k.push(heads(&l.wk, s.kv_heads, Some(&l.k_norm)));
                v.push(heads(&l.wv, s.kv_heads, None));
            }
            let group = s.heads / s.kv_heads;
            for pos in 0..n {
                let first = if local { (pos + 1).saturating_sub(s.window) } else { 0 };
                let mut attn = Vec::with_capacity(s.heads * hd);
                for h in 0..s.heads {
                    let kh = h / group;
                    let scores: Vec<f64> = (first..=pos)
                        .map(|j| q[pos][h].iter().zip(&k[j][kh]).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let sum: f64 = p.iter().sum();
                    for d in 0..hd {
                        attn.push((first..=pos).zip(&p).map(|(j, p)| p * v[j][kh][d]).sum::<f64>() / sum);
                    }
                }
                let o = rms(&matvec(&l.wo, s.heads * hd, &attn), &l.post_attn_norm);
                let xi = &mut x[pos];
                for (a, b) in xi.iter_mut().zip(&o) {
                    *a += b;
                }
                let h = rms(xi, &l.ffn_norm);
                let (gate, up) = (matvec(&l.gate, e, &h), matvec(&l.up, e, &h));
                let act: Vec<f64> = gate
                    .iter()
                    .zip(&up)
                    .map(|(&g, &u)| {
                        let c = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * g * (1.0 + (c * (g + 0.044715 * g * g * g)).tanh()) * u
                    })
                    .collect();
                let d = rms(&matvec(&l.down, s.n_ff, &act), &l.post_ffn_norm);
                for (a, b) in xi.iter_mut().zip(&d) {
                    *a += b;
                }
            }
        }
        rows.iter().map(|&r| matvec(&self.embed, e, &rms(&x[r], &self.output_norm))).collect()
    }
}
