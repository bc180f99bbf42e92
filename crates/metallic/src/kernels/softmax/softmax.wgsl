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

// Options, `Params`, masking and the compensated sums: common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> mask: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

// Logit of key `k` of the row whose x starts at `xr` and whose mask starts at `mr`.
fn logit_at(xr: u32, mr: u32, k: u32) -> f32 {
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
        let v = logit_at(xr, mr, k);
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
            let v = logit_at(xr, mr, k);
            if !is_masked(v) {
                p = exp(max(v - row_max, EXP_FLOOR)) * inv;
            }
        }
        out[orow + k] = T(p);
    }
}
