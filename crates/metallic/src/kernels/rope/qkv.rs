//! [`QkvRope`]: a fused QKV projection split into heads, normalised, rotated and placed.

use super::{RopeOptions, angle_steps, check_options, style_override};
use crate::cache::ResourceCache;
use crate::command::{ComputeEncoder, Dispatch, Operation};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Overrides};
use crate::kernels::{check_cache_dtypes, check_dtype, check_float, check_same_device, count_u32};
use crate::tensor::{DType, Tensor};

pub(crate) static QKV: Kernel = Kernel {
    name: "qkv_rope",
    source: concat!(include_str!("qkv.wgsl"), include_str!("common.wgsl")),
    entry: "main",
    bindings: 9,
};

const OP: &str = "qkv_rope";

/// Invocations per (token, head) row.
const WG: u32 = 64;

/// The attention inputs of a decoder layer from its fused QKV projection, in one dispatch.
///
/// `x` is `[seq, (n_q + 2·n_kv) · head_dim]`: per token, `n_q` query heads, then `n_kv` key
/// heads, then `n_kv` value heads. Query heads go to `q_out` (`[n_q, seq, head_dim]`), key and
/// value heads into the caches (`[n_kv, capacity, head_dim]`) at positions
/// `options.position_offset..+seq`. Query and key heads are rotated ([`Rope`](super::Rope)'s
/// arithmetic; `rotary_dim` must be the whole head) after an optional per-head RMS norm
/// ([`with_norms`](Self::with_norms): `v / sqrt(mean(v²) + eps) · weight`, Gemma 3's and
/// Qwen 3's q/k norms). Optionally a bias is added to every row first
/// ([`with_bias`](Self::with_bias), Qwen 2's q/k/v biases) and each pair's angle is divided by a
/// per-pair factor ([`with_freq_factors`](Self::with_freq_factors), Llama 3's `rope_freqs`).
///
/// The caches may be f16 under an f32 `x` (an f16 KV cache: keys and values are rounded to
/// f16 as they are placed); otherwise every tensor has `x`'s dtype.
///
/// Batched decoding ([`batched`](Self::batched)): each row of `x` is the next token of
/// another sequence, with its own KV slot and position read from a table on the GPU; the
/// caches are then `[slots, n_kv, capacity, head_dim]` and `q_out` `[seq, n_q, head_dim]`.
/// A row's arithmetic is the same as in a one-token call at that position.
///
/// ```
/// use metallic::{kernels::rope::{QkvRope, RopeOptions}, DType, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// // One token, one query head and one key/value head of 2 elements: q, k, v.
/// let x = Tensor::from_slice(&rt, [1, 6], &[1.0f32, 0.0, 0.0, 1.0, 5.0, 6.0])?;
/// let q = Tensor::zeros(&rt, [1, 1, 2], DType::F32)?;
/// let (k, v) = (Tensor::zeros(&rt, [1, 4, 2], DType::F32)?, Tensor::zeros(&rt, [1, 4, 2], DType::F32)?);
/// let at_2 = RopeOptions { position_offset: 2, ..Default::default() };
/// rt.record(&QkvRope::new(&x, &q, &k, &v, at_2)?)?;
/// assert_eq!(v.to_vec::<f32>()?, [0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0]);
/// let q = q.to_vec::<f32>()?; // (1, 0) rotated by 2 radians
/// assert!((q[0] - 2f32.cos()).abs() < 1e-6 && (q[1] - 2f32.sin()).abs() < 1e-6);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct QkvRope {
    x: Tensor,
    norms: Option<(Tensor, Tensor, f32)>,
    bias: Option<Tensor>,
    factors: Option<Tensor>,
    rows: Option<Tensor>,
    q_out: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    options: RopeOptions,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    seq: u32,
    half: u32,
    n_q: u32,
    n_kv: u32,
    cap: u32,
    start: u32,
    x_off: u32,
    qw_off: u32,
    kw_off: u32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    bias_off: u32,
    factors_off: u32,
    table_off: u32,
    slots: u32,
    flags: u32,
    eps: f32,
    log2_step: f32,
    turns: f32,
}

/// Sizes read from the shapes, once validated.
struct Geometry {
    seq: usize,
    n_q: usize,
    n_kv: usize,
    head_dim: usize,
    capacity: usize,
    slots: usize,
}

impl QkvRope {
    /// Splits, rotates and places `x` (see the type's documentation). Errors: shapes that do
    /// not fit together or positions past the caches' capacity (`InvalidShape`), dtypes that
    /// differ or are not float (`DTypeMismatch`), an odd head, a partial `rotary_dim`, a bad
    /// base, scale or position (`InvalidArgument`).
    pub fn new(x: &Tensor, q_out: &Tensor, k_cache: &Tensor, v_cache: &Tensor, options: RopeOptions) -> Result<Self> {
        let op = QkvRope {
            x: x.clone(),
            norms: None,
            bias: None,
            factors: None,
            rows: None,
            q_out: q_out.clone(),
            k_cache: k_cache.clone(),
            v_cache: v_cache.clone(),
            options,
        };
        op.validate()?;
        Ok(op)
    }

    /// RMS-normalises each query head with `q_weight` and each key head with `k_weight`
    /// (`[head_dim]` each) before rotating them.
    pub fn with_norms(mut self, q_weight: &Tensor, k_weight: &Tensor, eps: f32) -> Result<Self> {
        self.norms = Some((q_weight.clone(), k_weight.clone(), eps));
        self.validate()?;
        Ok(self)
    }

    /// Adds `bias` (`[(n_q + 2·n_kv) · head_dim]`, one row of `x`) to every row of `x` before
    /// anything else.
    pub fn with_bias(mut self, bias: &Tensor) -> Result<Self> {
        self.bias = Some(bias.clone());
        self.validate()?;
        Ok(self)
    }

    /// Divides the angle of pair `p` by `factors[p]` (`[head_dim / 2]`, positive): the
    /// frequency scaling of Llama 3 (`rope_freqs`) and of LongRoPE.
    pub fn with_freq_factors(mut self, factors: &Tensor) -> Result<Self> {
        self.factors = Some(factors.clone());
        self.validate()?;
        Ok(self)
    }

    /// The batched form (see the type's documentation): row `s` of `x` is placed and rotated
    /// at the slot and position in row `s` of `table` (`[seq, 2]` u32: slot, position); the
    /// caches are `[slots, n_kv, capacity, head_dim]`, `q_out` is `[seq, n_q, head_dim]` and
    /// `options.position_offset` must be 0. A slot or position past the caches is clamped to
    /// the last one (the GPU cannot report it).
    pub fn batched(
        x: &Tensor,
        q_out: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        options: RopeOptions,
        table: &Tensor,
    ) -> Result<Self> {
        let op = QkvRope {
            x: x.clone(),
            norms: None,
            bias: None,
            factors: None,
            rows: Some(table.clone()),
            q_out: q_out.clone(),
            k_cache: k_cache.clone(),
            v_cache: v_cache.clone(),
            options,
        };
        op.validate()?;
        Ok(op)
    }

    fn geometry(&self) -> Result<Geometry> {
        let bad = |what: String| Error::shape(OP, what);
        let ((n_q, seq, head_dim), (slots, n_kv, capacity, kv_dim)) =
            match (&self.rows, self.q_out.dims(), self.k_cache.dims()) {
                (None, &[n_q, seq, hd], &[n_kv, cap, kv_dim]) => ((n_q, seq, hd), (1, n_kv, cap, kv_dim)),
                (Some(_), &[seq, n_q, hd], &[slots, n_kv, cap, kv_dim]) => ((n_q, seq, hd), (slots, n_kv, cap, kv_dim)),
                (None, ..) => {
                    return Err(bad(format!(
                        "q_out must be [n_q, seq, head_dim] and the caches [n_kv, capacity, head_dim], got {} and {}",
                        self.q_out.shape(),
                        self.k_cache.shape()
                    )));
                }
                (Some(_), ..) => {
                    return Err(bad(format!(
                        "with a rows table, q_out must be [seq, n_q, head_dim] and the caches [slots, n_kv, capacity, \
                     head_dim], got {} and {}",
                        self.q_out.shape(),
                        self.k_cache.shape()
                    )));
                }
            };
        if self.v_cache.shape() != self.k_cache.shape() {
            return Err(Error::mismatch(OP, self.k_cache.shape(), self.v_cache.shape()));
        }
        if kv_dim != head_dim || n_q == 0 || n_kv == 0 || head_dim == 0 {
            return Err(bad(format!(
                "q_out {} and caches {} need one non-zero head_dim and head counts",
                self.q_out.shape(),
                self.k_cache.shape()
            )));
        }
        let width = (n_q + 2 * n_kv) * head_dim;
        if self.x.dims() != [seq, width] {
            return Err(bad(format!("x must be [{seq}, {width}] for these heads, got {}", self.x.shape())));
        }
        let start = self.options.position_offset as usize;
        if let Some(table) = &self.rows {
            if table.dtype() != DType::U32 || table.dims() != [seq, 2] {
                return Err(bad(format!(
                    "the rows table must be [{seq}, 2] u32, got {} {}",
                    table.dtype(),
                    table.shape()
                )));
            }
            if start != 0 || slots == 0 || capacity == 0 {
                return Err(Error::invalid(OP, "a rows table needs position_offset 0 and non-empty caches"));
            }
        } else if start + seq > capacity {
            return Err(bad(format!("positions {start}..{} exceed the cache capacity {capacity}", start + seq)));
        }
        if !head_dim.is_multiple_of(2) {
            return Err(Error::invalid(OP, format!("head_dim {head_dim} is odd")));
        }
        if self.options.rotary_dim.is_some_and(|r| r != head_dim) {
            return Err(Error::invalid(OP, "rotary_dim must be the whole head"));
        }
        check_options(&self.options, seq)?;
        Ok(Geometry { seq, n_q, n_kv, head_dim, capacity, slots })
    }
}

impl Operation for QkvRope {
    fn name(&self) -> &'static str {
        OP
    }

    fn validate(&self) -> Result<()> {
        check_float(OP, &self.x)?;
        let dtype = self.x.dtype();
        check_cache_dtypes(OP, dtype, &self.k_cache, &self.v_cache)?;
        let mut tensors = vec![&self.x, &self.q_out];
        if let Some((qw, kw, eps)) = &self.norms {
            tensors.extend([qw, kw]);
            if !(eps.is_finite() && *eps >= 0.0) {
                return Err(Error::invalid(OP, format!("eps {eps} must be finite and non-negative")));
            }
        }
        tensors.extend(self.bias.iter().chain(&self.factors));
        for t in &tensors {
            check_dtype(OP, dtype, t)?;
        }
        if let Some(table) = &self.rows {
            check_same_device(OP, &[&self.x, table])?;
        }
        if self.x.context().caps().limits.max_storage_buffers_per_shader_stage < QKV.bindings {
            return Err(self.x.context().unsupported(OP, "9 storage buffers per shader stage"));
        }
        check_same_device(OP, &tensors)?;
        let g = self.geometry()?;
        if let Some(bias) = &self.bias {
            let width = (g.n_q + 2 * g.n_kv) * g.head_dim;
            if bias.dims() != [width] {
                return Err(Error::shape(OP, format!("bias must be [{width}], got {}", bias.shape())));
            }
        }
        if let Some(factors) = &self.factors
            && factors.dims() != [g.head_dim / 2]
        {
            return Err(Error::shape(
                OP,
                format!("freq factors must be [{}], got {}", g.head_dim / 2, factors.shape()),
            ));
        }
        if let Some((qw, kw, _)) = &self.norms {
            for w in [qw, kw] {
                if w.dims() != [g.head_dim] {
                    return Err(Error::shape(OP, format!("norm weights must be [{}], got {}", g.head_dim, w.shape())));
                }
            }
        }
        count_u32(OP, self.k_cache.numel())?;
        count_u32(OP, self.x.numel()).map(|_| ())
    }

    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()> {
        let g = self.geometry()?;
        let heads = g.n_q + 2 * g.n_kv;
        let rows = g.seq * heads;
        let x = encoder.bind(&self.x)?;
        let (qw, kw, eps) = match &self.norms {
            Some((qw, kw, eps)) => (encoder.bind(qw)?, encoder.bind(kw)?, *eps),
            None => (x.clone(), x.clone(), 0.0),
        };
        let q = encoder.bind(&self.q_out)?;
        let k = encoder.bind(&self.k_cache)?;
        let v = encoder.bind(&self.v_cache)?;
        let bias = match &self.bias {
            Some(b) => encoder.bind(b)?,
            None => x.clone(),
        };
        let factors = match &self.factors {
            Some(f) => encoder.bind(f)?,
            None => x.clone(),
        };
        let table = match &self.rows {
            Some(t) => encoder.bind(t)?,
            None => x.clone(),
        };
        let flags = u32::from(self.norms.is_some())
            | (u32::from(self.bias.is_some()) << 1)
            | (u32::from(self.factors.is_some()) << 2)
            | (u32::from(self.rows.is_some()) << 3);
        let (log2_step, turns) = angle_steps(&self.options, g.head_dim);
        let params = Params {
            rows: count_u32(OP, rows)?,
            heads: count_u32(OP, heads)?,
            seq: count_u32(OP, g.seq)?,
            half: count_u32(OP, g.head_dim / 2)?,
            n_q: count_u32(OP, g.n_q)?,
            n_kv: count_u32(OP, g.n_kv)?,
            cap: count_u32(OP, g.capacity)?,
            start: self.options.position_offset,
            x_off: x.elem_offset(),
            qw_off: qw.elem_offset(),
            kw_off: kw.elem_offset(),
            q_off: q.elem_offset(),
            k_off: k.elem_offset(),
            v_off: v.elem_offset(),
            bias_off: bias.elem_offset(),
            factors_off: factors.elem_offset(),
            table_off: table.elem_offset(),
            slots: count_u32(OP, g.slots)?,
            flags,
            eps,
            log2_step,
            turns,
        };
        let workgroups = encoder.linear_grid(rows, 1)?;
        let overrides = Overrides::new(&[("WG", f64::from(WG)), ("STYLE", style_override(self.options.style))])?;
        encoder.dispatch_with_kv(
            cache,
            Dispatch {
                kernel: &QKV,
                dtype: self.x.dtype(),
                overrides,
                bindings: &[&x, &qw, &kw, &q, &k, &v, &bias, &factors, &table],
                params,
                workgroups,
            },
            self.k_cache.dtype(),
        )
    }
}
