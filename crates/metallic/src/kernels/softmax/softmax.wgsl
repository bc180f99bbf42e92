// Numerically stable softmax over the last dimension, one workgroup per row.
//
// x is viewed as rows of K logits; row `row` is query `row % q_len` of its plane. Each logit
// is v = x * scale (+ mask, broadcast through per-dimension strides). Keys beyond
// `q + causal_offset` (causal) and logits equal to -inf (masked) take no part and give
// exactly 0; a row with no part-taking logit gives all zeros.
//
// Pass 1: each invocation walks the row with stride WG and keeps an online (max, sum) pair,
// rescaling its sum when its max grows; `workgroup_max` / `workgroup_sum` then combine the
// pairs. Pass 2 writes exp(v - max) / sum. Computed in f32 whatever the storage type T.

// Neumaier-compensated per-invocation sums: on long rows an invocation adds thousands of
// terms, many below half an ulp of its running sum (see COMPENSATED_DEFAULT in mod.rs for the
// measurement). A compiler that reassociates float additions (fast math) may fold the
// compensation away; the long-row test checks that it still helps.
override COMPENSATED: bool = true;

struct Params {
    // Rows (all dimensions but the last, multiplied out) and their length K.
    rows: u32,
    k: u32,
    // Queries per plane (second-to-last dimension; 1 for rank 1), for the causal mask.
    q_len: u32,
    x_off: u32,
    out_off: u32,
    mask_off: u32,
    // Multiplies every logit before the mask and the max.
    scale: f32,
    // Non-zero: key k of query q takes part iff k <= q + causal_offset.
    causal: u32,
    causal_offset: u32,
    // Zero: no mask (x is bound in its place).
    has_mask: u32,
    // The row index splits into (i0, i1, i2) over sizes (-, n1, n2); the mask row starts at
    // mask_off + i0 * ms0 + i1 * ms1 + i2 * ms2 and steps ms_k per key (0: broadcast).
    n1: u32,
    n2: u32,
    ms0: u32,
    ms1: u32,
    ms2: u32,
    ms_k: u32,
    // Always 0 (see `opaque`).
    zero: u32,
}

// `v`, hidden from the optimiser: compensated summation computes (s - (s + t)) + t, which a
// compiler that reassociates float additions folds to 0. NVIDIA's Vulkan compiler did so on an
// H100 until the sum went through this runtime identity.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ params.zero);
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> mask: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

// The largest finite f32.
const F32_MAX: f32 = 0x1.fffffep+127f;
// exp of anything below this is 0 in f32. Clamping keeps -inf and NaN-prone differences away
// from exp, and keeps masked keys at exactly 0 even where a compiler drops `is_masked`.
const EXP_FLOOR: f32 = -128.0;

// Logit of key `k` of the row whose x starts at `xr` and whose mask starts at `mr`.
fn logit(xr: u32, mr: u32, k: u32) -> f32 {
    var v = f32(x[xr + k]) * params.scale;
    if params.has_mask != 0u {
        v += f32(mask[mr + k * params.ms_k]);
    }
    // Overflow of finite inputs counts as the largest finite logit, never +inf.
    if bitcast<u32>(v) == 0x7f800000u {
        v = F32_MAX;
    }
    return v;
}

// Masked logits (-inf) are found on the bits, which a fast-math compiler (Metal's default)
// may not fold away as it may a comparison with -inf.
fn is_masked(v: f32) -> bool {
    return bitcast<u32>(v) >= 0xff800000u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    // Rows beyond 65535 fold into y (and z); surplus workgroups of the grid see an empty row
    // rather than returning, so every invocation reaches the reductions.
    let row = wid.x + (wid.y + wid.z * nwg.y) * nwg.x;
    let k_len = select(0u, params.k, row < params.rows);
    var limit = k_len;
    if params.causal != 0u && k_len != 0u {
        let q = row % params.q_len;
        limit = min(k_len - 1u, q + params.causal_offset) + 1u;
    }
    let xr = params.x_off + row * params.k;
    let i2 = row % params.n2;
    let i01 = row / params.n2;
    let mr = params.mask_off + (i01 / params.n1) * params.ms0 + (i01 % params.n1) * params.ms1 + i2 * params.ms2;

    // Pass 1: this invocation's max m and sum s (+ compensation c) of exp(v - m).
    var m = -F32_MAX;
    var s = 0.0;
    var c = 0.0;
    for (var k = lanes.index; k < limit; k += WG) {
        let v = logit(xr, mr, k);
        if is_masked(v) {
            continue;
        }
        var t = 1.0;
        if v > m {
            let f = exp(max(m - v, EXP_FLOOR));
            s *= f;
            c *= f;
            m = v;
        } else {
            t = exp(max(v - m, EXP_FLOOR));
        }
        if COMPENSATED {
            let sum = opaque(s + t);
            if abs(s) >= abs(t) {
                c += (s - sum) + t;
            } else {
                c += (t - sum) + s;
            }
            s = sum;
        } else {
            s += t;
        }
    }
    let row_max = workgroup_max(m, lanes);
    var part = 0.0;
    if s > 0.0 {
        part = (s + c) * exp(max(m - row_max, EXP_FLOOR));
    }
    let total = workgroup_sum(part, lanes);

    // Pass 2. `total` is at least 1 unless nothing in the row took part.
    let inv = select(0.0, 1.0 / total, total > 0.0);
    let orow = params.out_off + row * params.k;
    for (var k = lanes.index; k < k_len; k += WG) {
        var p = 0.0;
        if k < limit && total > 0.0 {
            let v = logit(xr, mr, k);
            if !is_masked(v) {
                p = exp(max(v - row_max, EXP_FLOOR)) * inv;
            }
        }
        out[orow + k] = T(p);
    }
}
