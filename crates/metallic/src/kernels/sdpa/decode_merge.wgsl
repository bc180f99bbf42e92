// Split-K ("flash-decoding") attention, pass 2: merges the per-chunk statistics decode.wgsl
// wrote into the output. One workgroup per output row g = bkv * R + r (batch, kv head, row of
// its R = group * seq_q rows, which is also out's row); its threads own columns t, t + WG, ...
// With M the largest chunk maximum, chunk c weighs w_c = exp2(m_c - M) (0 for a chunk with no
// visible key): out = sum_c w_c acc_c / sum_c w_c l_c, or 0 when no chunk saw a key.
// Deterministic: chunks are summed in order.

// Head dimension of v and out.
override DV: u32 = 64u;

const MASKED: f32 = -3.0e38;

struct Params {
    s_off: u32,
    out_off: u32,
    // Output rows: batch * heads * seq_q.
    rows: u32,
    // Rows per (batch, kv head): group * seq_q.
    r: u32,
    chunks: u32,
    // Where (m, l) pairs start in the scratch.
    ml_base: u32,
}

@group(0) @binding(0) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let g = wid.x + (wid.y + wid.z * nwg.y) * nwg.x;
    if g >= params.rows {
        return;
    }
    let bkv = g / params.r;
    let r = g % params.r;
    // Record of chunk c: rec0 + c * r_stride.
    let rec0 = bkv * params.chunks * params.r + r;
    let ml0 = params.s_off + params.ml_base + 2u * rec0;
    let ml_stride = 2u * params.r;

    var m_max = MASKED;
    for (var c = 0u; c < params.chunks; c += 1u) {
        m_max = max(m_max, scratch[ml0 + c * ml_stride]);
    }
    var l = 0.0;
    for (var c = 0u; c < params.chunks; c += 1u) {
        let m = scratch[ml0 + c * ml_stride];
        l += scratch[ml0 + c * ml_stride + 1u] * select(exp2(m - m_max), 0.0, m == MASKED);
    }
    let inv = select(1.0 / l, 0.0, l == 0.0);
    let acc0 = params.s_off + rec0 * DV;
    let acc_stride = params.r * DV;
    for (var d = t; d < DV; d += WG) {
        var a = 0.0;
        for (var c = 0u; c < params.chunks; c += 1u) {
            let m = scratch[ml0 + c * ml_stride];
            a += scratch[acc0 + c * acc_stride + d] * select(exp2(m - m_max), 0.0, m == MASKED);
        }
        out[params.out_off + g * DV + d] = T(a * inv);
    }
}
