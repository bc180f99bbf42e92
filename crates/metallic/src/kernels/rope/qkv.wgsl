// Places a fused QKV projection into attention heads, one workgroup per (token, head) row of
// head_dim elements. Input row s of `x` holds n_q query heads, then n_kv key heads, then n_kv
// value heads. Head j of token s (position start + s):
//
//   query  (j < n_q):         [rms_norm · qw] → rope → q_out[j, s, :]          ([n_q, seq, hd])
//   key    (j < n_q + n_kv):  [rms_norm · kw] → rope → k_cache[j - n_q, start + s, :]
//   value:                                             v_cache[j - n_q - n_kv, start + s, :]
//
// (caches are [n_kv, cap, hd]). With ROWS set, each token row is another sequence's next
// token: `rows_table[2 s]` is its slot and `rows_table[2 s + 1]` its position, the caches are
// [slots, n_kv, cap, hd] and q_out is [seq, n_q, hd] (each sequence's heads together, the layout
// the slotted decode attention reads). With BIAS set in `params.flags` the row of `bias` is added
// to x's first (Qwen 2); the per-head norms run when NORM is set (Gemma 3, Qwen 3); RoPE is
// `rope.wgsl`'s, with the same angle arithmetic, pair p's angle divided by `factors[p]` when
// FACTORS is set (Llama 3's `rope_freqs`). One pair of elements at a time per invocation, so
// each pair is rotated from values in registers.

// Bits of `params.flags`. NORM: RMS-normalise query and key heads with weights qw and kw.
const NORM: u32 = 1u;
// BIAS: add `bias` (one row of (n_q + 2 n_kv) heads) to each row of x.
const BIAS: u32 = 2u;
// FACTORS: divide pair p's angle by `factors[p]`.
const FACTORS: u32 = 4u;
// ROWS: per-token slot and position from `rows_table`.
const ROWS: u32 = 8u;

// 0: NeoX / rotate-half; 1: GPT-J / interleaved.
override STYLE: u32 = 0u;

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
    // Slots of the caches (ROWS): a slot past them is clamped to the last.
    slots: u32,
    flags: u32,
    eps: f32,
    log2_step: f32,
    turns: f32,
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> qw: array<T>;
@group(0) @binding(2) var<storage, read_write> kw: array<T>;
@group(0) @binding(3) var<storage, read_write> q_out: array<T>;
@group(0) @binding(4) var<storage, read_write> k_cache: array<KV>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<KV>;
@group(0) @binding(6) var<storage, read_write> bias: array<T>;
@group(0) @binding(7) var<storage, read_write> factors: array<T>;
@group(0) @binding(8) var<storage, read_write> rows_table: array<u32>;

// Element i of head j of token row `src` (x[src + i]), plus its bias when there is one.
fn load(src: u32, j: u32, i: u32) -> f32 {
    var v = f32(x[src + i]);
    if (params.flags & BIAS) != 0u {
        v += f32(bias[params.bias_off + j * 2u * params.half + i]);
    }
    return v;
}

// Indices of pair p's two elements within a head.
fn pair(p: u32) -> vec2<u32> {
    if STYLE == 1u {
        return vec2<u32>(2u * p, 2u * p + 1u);
    }
    return vec2<u32>(p, p + params.half);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let row = wid.x + (wid.y + wid.z * nwg.y) * nwg.x;
    if row >= params.rows {
        return;
    }
    let s = row / params.heads;
    let j = row - s * params.heads;
    let hd = 2u * params.half;
    let src = params.x_off + row * hd;
    var pos = params.start + s;
    // Element offset of the token's slot in the caches, and of its query heads in q_out.
    var slot_base = 0u;
    var q_row = j * params.seq + s;
    if (params.flags & ROWS) != 0u {
        let slot = min(rows_table[params.table_off + 2u * s], params.slots - 1u);
        pos = min(rows_table[params.table_off + 2u * s + 1u], params.cap - 1u);
        slot_base = slot * params.n_kv * params.cap * hd;
        q_row = s * params.n_q + j;
    }
    if j >= params.n_q + params.n_kv {
        let dst = params.v_off + slot_base + ((j - params.n_q - params.n_kv) * params.cap + pos) * hd;
        for (var i = lanes.index; i < hd; i += WG) {
            v_cache[dst + i] = KV(load(src, j, i));
        }
        return;
    }
    let is_q = j < params.n_q;
    var scale = 1.0;
    if (params.flags & NORM) != 0u {
        var ss = 0.0;
        for (var i = lanes.index; i < hd; i += WG) {
            let v = load(src, j, i);
            ss += v * v;
        }
        scale = inverseSqrt(workgroup_sum(ss, lanes) / f32(hd) + params.eps);
    }
    for (var p = lanes.index; p < params.half; p += WG) {
        let ab = pair(p);
        var a = load(src, j, ab.x) * scale;
        var b = load(src, j, ab.y) * scale;
        if (params.flags & NORM) != 0u {
            if is_q {
                a *= f32(qw[params.qw_off + ab.x]);
                b *= f32(qw[params.qw_off + ab.y]);
            } else {
                a *= f32(kw[params.kw_off + ab.x]);
                b *= f32(kw[params.kw_off + ab.y]);
            }
        }
        // Pair 0 multiplies by exp2(0) = 1 exactly, as in rope.wgsl.
        var t = (f32(pos) * params.turns) * exp2(f32(p) * params.log2_step);
        if (params.flags & FACTORS) != 0u {
            t /= f32(factors[params.factors_off + p]);
        }
        let sc = sincos_turns(t - round(t));
        let ra = a * sc.y - b * sc.x;
        let rb = b * sc.y + a * sc.x;
        if is_q {
            let dst = params.q_off + q_row * hd;
            q_out[dst + ab.x] = T(ra);
            q_out[dst + ab.y] = T(rb);
        } else {
            let dst = params.k_off + slot_base + ((j - params.n_q) * params.cap + pos) * hd;
            k_cache[dst + ab.x] = KV(ra);
            k_cache[dst + ab.y] = KV(rb);
        }
    }
}
