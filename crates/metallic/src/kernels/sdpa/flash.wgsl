// Fused scaled-dot-product attention, flash style: one pass over the keys with an online
// softmax, so the [seq_q, seq_k] score matrix is never stored. Arithmetic in f32 whatever T is.
//
// Layouts (contiguous; a 3-D [batch, seq, dim] tensor is the one-head case):
//   q    [batch, heads,    seq_q, D]      out [batch, heads, seq_q, DV]
//   k    [batch, kv_heads, seq_k, D]      v   [batch, kv_heads, seq_k, DV]
//   mask any tensor the host describes by strides over (batch, head, query, key), 0 = broadcast.
// Query head h reads K/V head h / group (group = heads / kv_heads). The `group` heads sharing a
// K/V head form one space of group * seq_q query rows (row = h_local * seq_q + i), so K/V tiles
// are staged once for all of them (grouped-query decoding shares one tile between heads).
//
// One workgroup per (batch, kv head, block of BQ rows). Threads work in teams of LANES; a team
// owns two query rows. Per tile of BK keys:
//   1. K and V tiles are staged in workgroup memory;
//   2. scores: team lane `lane` computes both rows' scores of keys lane, lane + LANES, ...
//      (Q was staged once, pre-multiplied by scale * log2(e), so the softmax uses exp2);
//   3. each lane reads its rows' BK scores, updates the running max m and sum l, rescales its
//      accumulator columns (DV / LANES of them, in registers) and adds p · V.
// Masked scores (causal, mask <= MASKED incl. -inf, keys past seq_k) are stored as MASKED and
// contribute exactly 0; a row whose every key is masked writes 0.

// Keys per tile (a multiple of LANES, at most LANES * MAX_SK).
override BK: u32 = 32u;
// Head dimension of q and k (at most 256).
override D: u32 = 64u;
// Head dimension of v and out (at most LANES * MAX_OPT).
override DV: u32 = 64u;
// Whether an additive mask is bound.
override MASK: bool = false;

// Threads per team; a team owns two query rows.
const LANES: u32 = 8u;
// Register budget: accumulator columns per lane, scores per lane and row.
const MAX_OPT: u32 = 32u;
const MAX_SK: u32 = 4u;
// The score of a masked (query, key) pair. Finite, so no inf arithmetic is needed.
const MASKED: f32 = -3.0e38;
const LOG2E: f32 = 1.4426950408889634;

// Query rows per workgroup: two per team.
override BQ: u32 = WG / LANES * 2u;
// Row stride of the Q and K tiles: odd, so lanes reading different rows hit different banks.
override QS: u32 = D | 1u;
// Row stride of the score tile.
override PS: u32 = BK + 1u;
override Q_LEN: u32 = BQ * QS;
override K_LEN: u32 = BK * QS;
override V_LEN: u32 = BK * DV;
override P_LEN: u32 = BQ * PS;
// Scores per lane and row; accumulator columns per lane.
override SK: u32 = BK / LANES;
override OPT: u32 = (DV + LANES - 1u) / LANES;

struct Params {
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_off: u32,
    mask_off: u32,
    kv_heads: u32,
    // heads / kv_heads
    group: u32,
    seq_q: u32,
    seq_k: u32,
    // Row blocks per (batch, kv head): ceil(group * seq_q / BQ).
    blocks: u32,
    // Workgroups with work: batch * kv_heads * blocks (the grid may be folded and larger).
    total: u32,
    // 1: query i sees key j iff j <= i + offset.
    causal: u32,
    // The causal offset, an i32 (the host clamps it to [-seq_q - 1, seq_k]).
    offset: u32,
    // scale * log2(e)
    scale: f32,
    // Mask strides over (batch, head, query, key), in elements; 0 broadcasts.
    mask_sb: u32,
    mask_sh: u32,
    mask_sq: u32,
    mask_sk: u32,
}

@group(0) @binding(0) var<storage, read_write> q: array<T>;
@group(0) @binding(1) var<storage, read_write> k: array<T>;
@group(0) @binding(2) var<storage, read_write> v: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<storage, read_write> mask: array<T>;

var<workgroup> q_tile: array<f32, Q_LEN>;
var<workgroup> k_tile: array<f32, K_LEN>;
var<workgroup> v_tile: array<f32, V_LEN>;
var<workgroup> s_tile: array<f32, P_LEN>;

// Keys query `i` may see: min(seq_k, i + offset + 1) under the causal rule, else seq_k.
fn key_end(i: u32) -> u32 {
    if params.causal == 0u {
        return params.seq_k;
    }
    return u32(clamp(i32(i) + bitcast<i32>(params.offset) + 1, 0, i32(params.seq_k)));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let wg_index = wid.x + (wid.y + wid.z * nwg.y) * nwg.x;
    if wg_index >= params.total {
        return;
    }
    let bkv = wg_index / params.blocks;
    // Last blocks first: under the causal rule they have the most keys to visit.
    let block = params.blocks - 1u - wg_index % params.blocks;
    let b = bkv / params.kv_heads;
    let kvh = bkv % params.kv_heads;
    let heads = params.kv_heads * params.group;
    let rows = params.group * params.seq_q;
    let row0 = block * BQ;

    // Stage the Q block, pre-scaled; rows past the end are zeros (never written out).
    for (var e = t; e < BQ * D; e += WG) {
        let r = e / D;
        let d = e % D;
        let row = row0 + r;
        var x = 0.0;
        if row < rows {
            let h = kvh * params.group + row / params.seq_q;
            let i = row % params.seq_q;
            x = f32(q[params.q_off + ((b * heads + h) * params.seq_q + i) * D + d]) * params.scale;
        }
        q_tile[r * QS + d] = x;
    }

    // This thread's team, lane and rows.
    let team = t / LANES;
    let lane = t % LANES;
    var row_head: array<u32, 2>;
    var row_i: array<u32, 2>;
    var row_end: array<u32, 2>;
    for (var rr = 0u; rr < 2u; rr += 1u) {
        let row = row0 + 2u * team + rr;
        if row < rows {
            row_head[rr] = kvh * params.group + row / params.seq_q;
            row_i[rr] = row % params.seq_q;
            row_end[rr] = key_end(row_i[rr]);
        }
        // else row_end stays 0: every key masked, nothing written.
    }

    // Keys the whole block may see (uniform): the largest query index in the block decides.
    let last_row = min(row0 + BQ, rows) - 1u;
    var i_max = params.seq_q - 1u;
    if row0 / params.seq_q == last_row / params.seq_q {
        i_max = last_row % params.seq_q;
    }
    let block_end = key_end(i_max);
    let tiles = (block_end + BK - 1u) / BK;
    let kv_row0 = (b * params.kv_heads + kvh) * params.seq_k;

    // Online-softmax state per row: running max (log2 domain), running sum, accumulator.
    var m = array<f32, 2>(MASKED, MASKED);
    var l = array<f32, 2>(0.0, 0.0);
    var acc: array<array<f32, MAX_OPT>, 2>;

    for (var tile = 0u; tile < tiles; tile += 1u) {
        let key0 = tile * BK;
        // The previous tile's reads are done (on the first tile: Q is staged).
        workgroupBarrier();
        for (var e = t; e < BK * D; e += WG) {
            let j = e / D;
            let d = e % D;
            var x = 0.0;
            if key0 + j < params.seq_k {
                x = f32(k[params.k_off + (kv_row0 + key0 + j) * D + d]);
            }
            k_tile[j * QS + d] = x;
        }
        for (var e = t; e < BK * DV; e += WG) {
            let j = e / DV;
            var x = 0.0;
            if key0 + j < params.seq_k {
                x = f32(v[params.v_off + (kv_row0 + key0) * DV + e]);
            }
            v_tile[e] = x;
        }
        workgroupBarrier();

        // Scores of this team's two rows against keys lane, lane + LANES, ...
        var dot: array<array<f32, MAX_SK>, 2>;
        for (var d = 0u; d < D; d += 1u) {
            let q0 = q_tile[(2u * team) * QS + d];
            let q1 = q_tile[(2u * team + 1u) * QS + d];
            for (var c = 0u; c < SK; c += 1u) {
                let kx = k_tile[(lane + LANES * c) * QS + d];
                dot[0][c] = fma(q0, kx, dot[0][c]);
                dot[1][c] = fma(q1, kx, dot[1][c]);
            }
        }
        for (var rr = 0u; rr < 2u; rr += 1u) {
            for (var c = 0u; c < SK; c += 1u) {
                let j = lane + LANES * c;
                let key = key0 + j;
                var s = MASKED;
                if key < row_end[rr] {
                    s = dot[rr][c];
                    if MASK {
                        let mi = params.mask_off + b * params.mask_sb + row_head[rr] * params.mask_sh
                            + row_i[rr] * params.mask_sq + key * params.mask_sk;
                        s += f32(mask[mi]) * LOG2E;
                    }
                    // -inf (and anything below MASKED) becomes MASKED.
                    s = max(s, MASKED);
                }
                s_tile[(2u * team + rr) * PS + j] = s;
            }
        }
        workgroupBarrier();

        // Online softmax: new running max, rescale, accumulate p · V.
        var m_new: array<f32, 2>;
        for (var rr = 0u; rr < 2u; rr += 1u) {
            var tile_max = MASKED;
            for (var j = 0u; j < BK; j += 1u) {
                tile_max = max(tile_max, s_tile[(2u * team + rr) * PS + j]);
            }
            m_new[rr] = max(m[rr], tile_max);
            // While every key so far was masked there is nothing to rescale (l and acc are 0).
            let alpha = select(exp2(m[rr] - m_new[rr]), 0.0, m[rr] == MASKED);
            l[rr] *= alpha;
            for (var c = 0u; c < OPT; c += 1u) {
                acc[rr][c] *= alpha;
            }
            m[rr] = m_new[rr];
        }
        for (var j = 0u; j < BK; j += 1u) {
            let s0 = s_tile[(2u * team) * PS + j];
            let s1 = s_tile[(2u * team + 1u) * PS + j];
            let p0 = select(exp2(s0 - m_new[0]), 0.0, s0 == MASKED);
            let p1 = select(exp2(s1 - m_new[1]), 0.0, s1 == MASKED);
            l[0] += p0;
            l[1] += p1;
            for (var c = 0u; c < OPT; c += 1u) {
                let vx = v_tile[j * DV + min(lane + LANES * c, DV - 1u)];
                acc[0][c] = fma(p0, vx, acc[0][c]);
                acc[1][c] = fma(p1, vx, acc[1][c]);
            }
        }
    }

    for (var rr = 0u; rr < 2u; rr += 1u) {
        let row = row0 + 2u * team + rr;
        if row < rows {
            // A row that saw no unmasked key has l == 0 and writes zeros.
            let inv = select(1.0 / l[rr], 0.0, l[rr] == 0.0);
            let base = params.out_off + ((b * heads + row_head[rr]) * params.seq_q + row_i[rr]) * DV;
            for (var c = 0u; c < OPT; c += 1u) {
                let d = lane + LANES * c;
                if d < DV {
                    out[base + d] = T(acc[rr][c] * inv);
                }
            }
        }
    }
}
