//! Choosing the next token from a row of logits: repetition penalty, then top-k, top-p and
//! min-p on the untempered distribution, then temperature and a seeded draw — llama.cpp's
//! default order. The top-k candidates come from the GPU ([`Tensor::top_k`]), so a 262k-entry
//! row is never read back unless top-k is off.

use metallic::kernels::topk::{MAX_K, TopK};
use metallic::{DType, Tensor};

use crate::{Error, Result};

/// What the sampler does. `Default` is llama.cpp's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// Divides the logits before the draw; 0 means greedy (the most likely token).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: none).
    pub min_p: f32,
    /// Divides positive logits (multiplies negative ones) of recently seen tokens (1: off).
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalties look at.
    pub repeat_last_n: usize,
    /// Subtracted from the logit of every token among the recent ones (OpenAI's
    /// `presence_penalty`; 0: off).
    pub presence_penalty: f32,
    /// Subtracted from a recent token's logit once per time it occurs (OpenAI's
    /// `frequency_penalty`; 0: off).
    pub frequency_penalty: f32,
    /// Seed of the draw: the same seed, logits and history give the same tokens.
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0x5eed,
        }
    }
}

impl SamplingOptions {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        SamplingOptions { temperature: 0.0, ..Self::default() }
    }

    /// Checks the options: finite, in range (what `Sampler::new` checks).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature must be finite and >= 0, got {}", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!("top-p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!("repeat penalty must be finite and > 0, got {}", self.repeat_penalty));
        }
        for (name, v) in [("presence", self.presence_penalty), ("frequency", self.frequency_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} penalty must be in [-2, 2], got {v}"));
            }
        }
        Ok(())
    }
}

/// A seeded sampler; one per generated sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    options: SamplingOptions,
    state: u64,
    /// The top-k op of the last call with its outputs, reused while the logits tensor and the
    /// candidate count stay the same (a decode loop's logits live in one reused tensor): no
    /// allocation and no new bind group per token.
    top: Option<Top>,
}

/// A recorded-again-each-step top-k over one logits row.
#[derive(Debug, Clone)]
struct Top {
    row: Tensor,
    fetch: usize,
    op: TopK,
    values: Tensor,
    ids: Tensor,
}

impl Top {
    fn serves(&self, row: &Tensor, fetch: usize) -> bool {
        self.fetch == fetch
            && self.row.buffer() == row.buffer()
            && self.row.byte_offset() == row.byte_offset()
            && self.row.shape() == row.shape()
    }
}

impl Sampler {
    /// A sampler with `options` (checked: finite, in range).
    pub fn new(options: SamplingOptions) -> Result<Self> {
        options.validate()?;
        Ok(Sampler { options, state: options.seed, top: None })
    }

    /// Whether the choice is the plain argmax of the logits (temperature 0, no penalty): then
    /// it needs no host-side sampling at all.
    pub fn is_greedy(&self) -> bool {
        self.options.temperature <= 0.0 && !self.penalizes()
    }

    /// Whether any of the repetition, presence or frequency penalties is on.
    fn penalizes(&self) -> bool {
        let o = &self.options;
        o.repeat_penalty != 1.0 || o.presence_penalty != 0.0 || o.frequency_penalty != 0.0
    }

    /// The options in use.
    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// The next token from `logits` (`[vocab]`, or the last row of `[.., vocab]`), given the
    /// tokens so far (for the repetition penalty).
    pub fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32> {
        let vocab = logits.dims().last().copied().unwrap_or(0);
        if vocab == 0 {
            return Err(Error::InvalidInput(format!("no logits to sample from ({})", logits.shape())));
        }
        let row = logits.reshape([logits.numel() / vocab, vocab])?;
        let row = row.narrow(row.dims().first().copied().unwrap_or(1).saturating_sub(1), 1)?;
        let penalized = self.penalized(history);
        let keep = if self.options.temperature <= 0.0 { 1 } else { self.options.top_k };
        // Penalties move only the penalized tokens' logits (a negative presence or frequency
        // penalty raises them), so the top `keep` after them lie among the top
        // `keep + distinct penalized` before them.
        let distinct = penalized.chunk_by(|a, b| a == b).count();
        let fetch = keep.saturating_add(distinct);
        let mut candidates = if keep == 0 || fetch > MAX_K.min(vocab) {
            let values = row.to_vec_f32()?;
            (0u32..).zip(values).collect()
        } else {
            let top = match self.top.take() {
                Some(top) if top.serves(&row, fetch) => top,
                _ => {
                    let rt = row.runtime();
                    let values = Tensor::empty(rt, [1, fetch], DType::F32)?;
                    let ids = Tensor::empty(rt, [1, fetch], DType::U32)?;
                    let op = TopK::new(&row, fetch, &values, &ids)?;
                    Top { row: row.clone(), fetch, op, values, ids }
                }
            };
            let rt = row.runtime();
            rt.record(&top.op)?;
            let bytes = rt.read_tensors(&[&top.values, &top.ids])?;
            self.top = Some(top);
            let word = |b: &[u8]| -> [u8; 4] { b.try_into().unwrap_or_default() };
            let values =
                bytes.first().map(|b| b.chunks_exact(4).map(|c| f32::from_le_bytes(word(c)))).into_iter().flatten();
            let ids =
                bytes.get(1).map(|b| b.chunks_exact(4).map(|c| u32::from_le_bytes(word(c)))).into_iter().flatten();
            ids.zip(values).collect::<Vec<_>>()
        };
        check_logits(candidates.iter().map(|&(_, v)| v))?;
        Ok(self.choose(&mut candidates, &penalized))
    }

    /// The last `repeat_last_n` tokens of `history`, sorted (a token as often as it occurs
    /// there; none when every penalty is off).
    fn penalized(&self, history: &[u32]) -> Vec<u32> {
        if !self.penalizes() {
            return Vec::new();
        }
        let start = history.len().saturating_sub(self.options.repeat_last_n);
        let mut ids: Vec<u32> = history.get(start..).unwrap_or_default().to_vec();
        ids.sort_unstable();
        ids
    }

    /// The CPU half: penalties, filters, temperature and the draw over `(token, logit)`
    /// candidates (any order; at least one). `penalized` is sorted and lists a token once per
    /// recent occurrence (the frequency penalty counts them).
    pub fn choose(&mut self, candidates: &mut Vec<(u32, f32)>, penalized: &[u32]) -> u32 {
        let o = self.options;
        for (id, logit) in candidates.iter_mut() {
            let count = penalized.partition_point(|p| p <= id) - penalized.partition_point(|p| p < id);
            if count > 0 {
                *logit = if *logit > 0.0 { *logit / o.repeat_penalty } else { *logit * o.repeat_penalty };
                *logit -= count as f32 * o.frequency_penalty + o.presence_penalty;
            }
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let Some(&(best, best_logit)) = candidates.first() else { return 0 };
        if o.temperature <= 0.0 {
            return best;
        }
        if o.top_k > 0 {
            candidates.truncate(o.top_k);
        }
        let probs = softmax(candidates.iter().map(|c| c.1), 1.0);
        if o.top_p < 1.0 {
            let mut sum = 0.0;
            let keep = probs.iter().position(|&p| {
                sum += p;
                sum >= f64::from(o.top_p)
            });
            candidates.truncate(keep.map_or(candidates.len(), |i| i + 1));
        }
        if o.min_p > 0.0 {
            let floor = best_logit + o.min_p.ln();
            candidates.retain(|c| c.1 >= floor);
        }
        let probs = softmax(candidates.iter().map(|c| c.1), o.temperature);
        let mut target = self.uniform();
        for (c, p) in candidates.iter().zip(&probs) {
            if target < *p {
                return c.0;
            }
            target -= p;
        }
        candidates.last().map_or(best, |c| c.0)
    }

    /// Uniform in [0, 1) from SplitMix64.
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Fails unless the best of `logits` (all of a row, or its top candidates, where the top-k
/// kernel ranks NaN as `-f32::MAX`) is a finite number above `-f32::MAX` and none is NaN or
/// `+inf`: a model whose arithmetic broke must not print tokens as if nothing happened.
pub(crate) fn check_logits(logits: impl Iterator<Item = f32>) -> Result<()> {
    let (mut best, mut broken) = (f32::NEG_INFINITY, false);
    for v in logits {
        broken |= v.is_nan() || v == f32::INFINITY;
        best = best.max(v);
    }
    if broken || best <= -f32::MAX {
        return Err(Error::NotFinite("the logits are NaN or infinite (broken or overflowing weights)".into()));
    }
    Ok(())
}

/// Probabilities of `logits / temperature`, in f64.
fn softmax(logits: impl Iterator<Item = f32> + Clone, temperature: f32) -> Vec<f64> {
    let t = f64::from(temperature);
    let max = logits.clone().fold(f64::NEG_INFINITY, |m, l| m.max(f64::from(l) / t));
    if !max.is_finite() {
        // Every logit is -inf (or the row is empty): nothing to prefer.
        let n = logits.count().max(1);
        return vec![1.0 / n as f64; n];
    }
    let exps: Vec<f64> = logits.map(|l| (f64::from(l) / t - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}
