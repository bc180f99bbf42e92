// Fused scaled-dot-product attention, flash style: one pass over the keys with an online
// softmax, so the [seq_q, seq_k] score matrix is never stored. Arithmetic in f32 whatever T (q,
// out, mask) and KV (k, v: T, or an f16 cache under f32 q) are.
//
// Layouts (contiguous; a 3-D [batch, seq, dim] tensor is the one-head case):
//   q    [batch, heads,    seq_q, D]      out [batch, heads, seq_q, DV]
//   k    [batch, kv_heads, seq_k, D]      v   [batch, kv_heads, seq_k, DV]
//   mask any tensor the host describes by strides over (batch, head, query, key), 0 = broadcast.
// Query head h reads K/V head h / group (group = heads / kv_heads). The `group` heads sharing a
// K/V head form one space of group * seq_q query rows (row = h_local * seq_q + i), so each K/V
// tile is staged once for all of them (grouped-query decoding shares one tile between heads).
//
// One workgroup per (batch, kv head, block of BQ rows), in teams of LANES threads; a team owns
// two query rows. Per tile of BK keys:
//   1. K and V tiles are staged in workgroup memory as vec4 (Q was staged once, pre-multiplied
//      by scale * log2(e), so the softmax uses exp2);
//   2. scores: lane `lane` of a team computes both rows' scores of keys lane + LANES * c
//      (c < SK <= 4, one vector component each) and its partial row maxima;
//   3. each lane reads its team's partial maxima, updates the running max m, and turns its own
//      scores into probabilities in place (each exp computed once);
//   4. each lane rescales and accumulates its columns (vec4 columns lane and lane + LANES, in
//      registers: no private arrays) with p · V, and the running sums l.
// Masked scores (causal, outside the sliding window, mask <= MASKED incl. -inf, keys past seq_k) are stored as MASKED and
// contribute exactly 0; a row whose every key is masked writes 0. Every loop has a trip count
// fixed by the override constants, so compilers unroll them; results are deterministic.

// Keys per tile (at most 4 * LANES).
override BK: u32 = 32u;
// Head dimension of q and k.
override D: u32 = 64u;
// Head dimension of v and out (at most 8 * LANES).
override DV: u32 = 64u;
// Whether an additive mask is bound.
override MASK: bool = false;
// Threads per team (a team owns two query rows).
override LANES: u32 = 8u;

// The score of a masked (query, key) pair. Finite, so no inf arithmetic is needed.
const MASKED: f32 = -3.0e38;
const LOG2E: f32 = 1.4426950408889634;

// Query rows per workgroup: two per team.
override BQ: u32 = WG / LANES * 2u;
// Head dimensions in vec4s.
override D4: u32 = (D + 3u) / 4u;
override DV4: u32 = (DV + 3u) / 4u;
// Row stride of the Q and K tiles in vec4s: odd, so lanes reading different rows hit
// different banks.
override QS4: u32 = D4 | 1u;
// Row stride of the score tile.
override PS: u32 = BK + 1u;
override Q_LEN: u32 = BQ * QS4;
override K_LEN: u32 = BK * QS4;
override V_LEN: u32 = BK * DV4;
override P_LEN: u32 = BQ * PS;
override R_LEN: u32 = BQ * LANES;
// Keys per lane and row (at most 4); vec4 accumulator columns per lane and row (at most 2).
override SK: u32 = (BK + LANES - 1u) / LANES;
override OPT4: u32 = (DV4 + LANES - 1u) / LANES;
// Staging loop trip counts.
override Q_ITERS: u32 = (BQ * D4 + WG - 1u) / WG;
override K_ITERS: u32 = (BK * D4 + WG - 1u) / WG;
override V_ITERS: u32 = (BK * DV4 + WG - 1u) / WG;


// `Params` and `key_end`: flash_common.wgsl.

@group(0) @binding(0) var<storage, read_write> q: array<T>;
@group(0) @binding(1) var<storage, read_write> k: array<KV>;
@group(0) @binding(2) var<storage, read_write> v: array<KV>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<storage, read_write> mask: array<T>;

var<workgroup> q_tile: array<vec4<f32>, Q_LEN>;
var<workgroup> k_tile: array<vec4<f32>, K_LEN>;
var<workgroup> v_tile: array<vec4<f32>, V_LEN>;
// Scores, then (step 3) probabilities.
var<workgroup> p_tile: array<f32, P_LEN>;
// Per (row, lane) maxima of a tile's scores.
var<workgroup> part_max: array<f32, R_LEN>;


// Elements d..d+3 of q / k / v from index `at` (zeros past the head dimension).
fn q4(at: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if d < D { x.x = f32(q[at]); }
    if d + 1u < D { x.y = f32(q[at + 1u]); }
    if d + 2u < D { x.z = f32(q[at + 2u]); }
    if d + 3u < D { x.w = f32(q[at + 3u]); }
    return x;
}
fn k4(at: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if d < D { x.x = f32(k[at]); }
    if d + 1u < D { x.y = f32(k[at + 1u]); }
    if d + 2u < D { x.z = f32(k[at + 2u]); }
    if d + 3u < D { x.w = f32(k[at + 3u]); }
    return x;
}
fn v4(at: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if d < DV { x.x = f32(v[at]); }
    if d + 1u < DV { x.y = f32(v[at + 1u]); }
    if d + 2u < DV { x.z = f32(v[at + 2u]); }
    if d + 3u < DV { x.w = f32(v[at + 3u]); }
    return x;
}

// The score of (row, key) from its scaled dot product: mask added, masked pairs MASKED.
fn score(dot_qk: f32, b: u32, h: u32, i: u32, key: u32, start: u32, end: u32) -> f32 {
    if key < start || key >= end {
        return MASKED;
    }
    var s = dot_qk;
    if MASK {
        s += f32(mask[params.mask_off + b * params.mask_sb + h * params.mask_sh + i * params.mask_sq
            + key * params.mask_sk]) * LOG2E;
    }
    return max(s, MASKED);
}

// Writes x to out[at..at + 4] (what lies within the head dimension).
fn store_out(at: u32, d: u32, x: vec4<f32>) {
    if d < DV { out[at] = T(x.x); }
    if d + 1u < DV { out[at + 1u] = T(x.y); }
    if d + 2u < DV { out[at + 2u] = T(x.z); }
    if d + 3u < DV { out[at + 3u] = T(x.w); }
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
    for (var it = 0u; it < Q_ITERS; it += 1u) {
        let e = t + it * WG;
        if e < BQ * D4 {
            let r = e / D4;
            let d = 4u * (e % D4);
            let row = row0 + r;
            var x = vec4<f32>(0.0);
            if row < rows {
                let h = kvh * params.group + row / params.seq_q;
                let i = row % params.seq_q;
                x = q4(params.q_off + ((b * heads + h) * params.seq_q + i) * D + d, d) * params.scale;
            }
            q_tile[r * QS4 + e % D4] = x;
        }
    }

    // This thread's team, lane, rows (head, query index, visible keys; none past the end).
    let team = t / LANES;
    let lane = t % LANES;
    let r0 = 2u * team;
    let r1 = r0 + 1u;
    var head0 = 0u;
    var head1 = 0u;
    var i0 = 0u;
    var i1 = 0u;
    var start0 = 0u;
    var start1 = 0u;
    var end0 = 0u;
    var end1 = 0u;
    if row0 + r0 < rows {
        head0 = kvh * params.group + (row0 + r0) / params.seq_q;
        i0 = (row0 + r0) % params.seq_q;
        start0 = key_start(i0);
        end0 = key_end(i0);
    }
    if row0 + r1 < rows {
        head1 = kvh * params.group + (row0 + r1) / params.seq_q;
        i1 = (row0 + r1) % params.seq_q;
        start1 = key_start(i1);
        end1 = key_end(i1);
    }

    // Keys the whole block may see (uniform): the largest query index in the block decides.
    let last_row = min(row0 + BQ, rows) - 1u;
    var i_max = params.seq_q - 1u;
    if row0 / params.seq_q == last_row / params.seq_q {
        i_max = last_row % params.seq_q;
    }
    let tiles = (key_end(i_max) + BK - 1u) / BK;
    let tile0 = first_tile(row0, last_row, BK);
    let kv_row0 = (b * params.kv_heads + kvh) * params.kv_stride;

    // Online-softmax state per row: running max (log2 domain), running sum, accumulator
    // columns 4 * lane.. (acc*0) and 4 * (lane + LANES).. (acc*1).
    var m0 = MASKED;
    var m1 = MASKED;
    var l0 = 0.0;
    var l1 = 0.0;
    var acc00 = vec4<f32>(0.0);
    var acc01 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    let c0 = min(lane, DV4 - 1u);
    let c1 = min(lane + LANES, DV4 - 1u);

    for (var tile = tile0; tile < tiles; tile += 1u) {
        let key0 = tile * BK;
        // The previous tile's reads are done (on the first tile: Q is staged).
        workgroupBarrier();
        for (var it = 0u; it < K_ITERS; it += 1u) {
            let e = t + it * WG;
            if e < BK * D4 {
                let j = e / D4;
                let d = 4u * (e % D4);
                var x = vec4<f32>(0.0);
                if key0 + j < params.seq_k {
                    x = k4(params.k_off + (kv_row0 + key0 + j) * D + d, d);
                }
                k_tile[j * QS4 + e % D4] = x;
            }
        }
        for (var it = 0u; it < V_ITERS; it += 1u) {
            let e = t + it * WG;
            if e < BK * DV4 {
                let j = e / DV4;
                let d = 4u * (e % DV4);
                var x = vec4<f32>(0.0);
                if key0 + j < params.seq_k {
                    x = v4(params.v_off + (kv_row0 + key0 + j) * DV + d, d);
                }
                v_tile[e] = x;
            }
        }
        workgroupBarrier();

        // Scores of rows r0, r1 against keys lane + LANES * c, c < SK (one vector component each).
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        let kr0 = min(lane, BK - 1u) * QS4;
        let kr1 = min(lane + LANES, BK - 1u) * QS4;
        let kr2 = min(lane + 2u * LANES, BK - 1u) * QS4;
        let kr3 = min(lane + 3u * LANES, BK - 1u) * QS4;
        for (var d4 = 0u; d4 < D4; d4 += 1u) {
            let qa = q_tile[r0 * QS4 + d4];
            let qb = q_tile[r1 * QS4 + d4];
            let ka = k_tile[kr0 + d4];
            s0.x += dot(qa, ka);
            s1.x += dot(qb, ka);
            if SK > 1u {
                let kb = k_tile[kr1 + d4];
                s0.y += dot(qa, kb);
                s1.y += dot(qb, kb);
            }
            if SK > 2u {
                let kc = k_tile[kr2 + d4];
                s0.z += dot(qa, kc);
                s1.z += dot(qb, kc);
            }
            if SK > 3u {
                let kd = k_tile[kr3 + d4];
                s0.w += dot(qa, kd);
                s1.w += dot(qb, kd);
            }
        }
        var mx0 = MASKED;
        var mx1 = MASKED;
        for (var c = 0u; c < SK; c += 1u) {
            let j = lane + LANES * c;
            if j < BK {
                let a = score(s0[c], b, head0, i0, key0 + j, start0, end0);
                let z = score(s1[c], b, head1, i1, key0 + j, start1, end1);
                p_tile[r0 * PS + j] = a;
                p_tile[r1 * PS + j] = z;
                mx0 = max(mx0, a);
                mx1 = max(mx1, z);
            }
        }
        part_max[r0 * LANES + lane] = mx0;
        part_max[r1 * LANES + lane] = mx1;
        workgroupBarrier();

        // New running maxima; this lane turns its own scores into probabilities.
        var tm0 = MASKED;
        var tm1 = MASKED;
        for (var x = 0u; x < LANES; x += 1u) {
            tm0 = max(tm0, part_max[r0 * LANES + x]);
            tm1 = max(tm1, part_max[r1 * LANES + x]);
        }
        let mn0 = max(m0, tm0);
        let mn1 = max(m1, tm1);
        let alpha0 = select(exp2(m0 - mn0), 0.0, m0 == MASKED);
        let alpha1 = select(exp2(m1 - mn1), 0.0, m1 == MASKED);
        m0 = mn0;
        m1 = mn1;
        for (var c = 0u; c < SK; c += 1u) {
            let j = lane + LANES * c;
            if j < BK {
                let a = p_tile[r0 * PS + j];
                let z = p_tile[r1 * PS + j];
                p_tile[r0 * PS + j] = select(exp2(a - mn0), 0.0, a == MASKED);
                p_tile[r1 * PS + j] = select(exp2(z - mn1), 0.0, z == MASKED);
            }
        }
        workgroupBarrier();

        // Rescale to the new maxima (nothing to rescale while every key so far was masked:
        // alpha is 0 and so are l and acc), then accumulate p · V.
        l0 *= alpha0;
        l1 *= alpha1;
        acc00 *= alpha0;
        acc01 *= alpha0;
        acc10 *= alpha1;
        acc11 *= alpha1;
        for (var j = 0u; j < BK; j += 1u) {
            let p0 = p_tile[r0 * PS + j];
            let p1 = p_tile[r1 * PS + j];
            l0 += p0;
            l1 += p1;
            let va = v_tile[j * DV4 + c0];
            acc00 = fma(vec4<f32>(p0), va, acc00);
            acc10 = fma(vec4<f32>(p1), va, acc10);
            if OPT4 > 1u {
                let vb = v_tile[j * DV4 + c1];
                acc01 = fma(vec4<f32>(p0), vb, acc01);
                acc11 = fma(vec4<f32>(p1), vb, acc11);
            }
        }
    }

    // A row that saw no unmasked key has l == 0 and writes zeros.
    if row0 + r0 < rows {
        let inv = select(1.0 / l0, 0.0, l0 == 0.0);
        let base = params.out_off + ((b * heads + head0) * params.seq_q + i0) * DV;
        if lane < DV4 {
            store_out(base + 4u * lane, 4u * lane, acc00 * inv);
        }
        if OPT4 > 1u && lane + LANES < DV4 {
            store_out(base + 4u * (lane + LANES), 4u * (lane + LANES), acc01 * inv);
        }
    }
    if row0 + r1 < rows {
        let inv = select(1.0 / l1, 0.0, l1 == 0.0);
        let base = params.out_off + ((b * heads + head1) * params.seq_q + i1) * DV;
        if lane < DV4 {
            store_out(base + 4u * lane, 4u * lane, acc10 * inv);
        }
        if OPT4 > 1u && lane + LANES < DV4 {
            store_out(base + 4u * (lane + LANES), 4u * (lane + LANES), acc11 * inv);
        }
    }
}
