// Split-K ("flash-decoding") attention, pass 2: merges the per-chunk statistics decode.wgsl
// wrote into the output. With M the largest chunk maximum, chunk c weighs w_c = exp2(m_c - M)
// (0 for a chunk with no visible key): out = sum_c w_c acc_c / sum_c w_c l_c, or 0 when no
// chunk saw a key.
//
// One workgroup per (output row g = bkv * R + r, block of DB columns of it); g is also out's
// row. Its threads first find M and sum_c w_c l_c over every chunk together (chunks t, t + WG,
// ...), keeping w_c in workgroup memory; then thread t sums column t % DB of the block over
// the chunks c = t / DB, t / DB + CG, ... (CG = WG / DB chunk groups, each reading a block of
// adjacent columns per chunk), and the CG partial sums are added in group order.
// Deterministic: every reduction has a fixed order on a given adapter.

// Head dimension of v and out.
override DV: u32 = 64u;
// Columns per workgroup (WG is a multiple of it).
override DB: u32 = 32u;
override CG: u32 = WG / DB;

const MASKED: f32 = -3.0e38;
// Most chunks per row (the host plans at most this many).
const MAX_CHUNKS: u32 = 256u;

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
    // Column blocks per row: ceil(DV / DB).
    blocks: u32,
}

@group(0) @binding(0) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;

var<workgroup> weights: array<f32, MAX_CHUNKS>;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lanes: Lanes,
) {
    let t = lanes.index;
    let index = wid.x + (wid.y + wid.z * nwg.y) * nwg.x;
    // Uniform across the workgroup: a workgroup past the rows returns whole.
    if index >= params.rows * params.blocks {
        return;
    }
    let g = index / params.blocks;
    let d0 = (index % params.blocks) * DB;
    let bkv = g / params.r;
    let r = g % params.r;
    // Record of chunk c: rec0 + c * r_stride.
    let rec0 = bkv * params.chunks * params.r + r;
    let ml0 = params.s_off + params.ml_base + 2u * rec0;
    let ml_stride = 2u * params.r;
    let chunks = min(params.chunks, MAX_CHUNKS);

    var m_part = MASKED;
    for (var c = t; c < chunks; c += WG) {
        m_part = max(m_part, scratch[ml0 + c * ml_stride]);
    }
    let m_max = workgroup_max(m_part, lanes);
    var l_part = 0.0;
    for (var c = t; c < chunks; c += WG) {
        let m = scratch[ml0 + c * ml_stride];
        let w = select(exp2(m - m_max), 0.0, m == MASKED);
        weights[c] = w;
        l_part += scratch[ml0 + c * ml_stride + 1u] * w;
    }
    // (The reduction's barriers also publish `weights`.)
    let l = workgroup_sum(l_part, lanes);
    let inv = select(1.0 / l, 0.0, l == 0.0);

    let acc0 = params.s_off + rec0 * DV;
    let acc_stride = params.r * DV;
    let col = t % DB;
    let d = d0 + col;
    var a = 0.0;
    if d < DV {
        for (var c = t / DB; c < chunks; c += CG) {
            a += scratch[acc0 + c * acc_stride + d] * weights[c];
        }
    }
    partial[t] = a;
    workgroupBarrier();
    if t < DB && d < DV {
        var sum = partial[col];
        for (var k = 1u; k < CG; k += 1u) {
            sum += partial[k * DB + col];
        }
        out[params.out_off + g * DV + d] = T(sum * inv);
    }
}
