// Split-K ("flash-decoding") attention, pass 1: partial softmax statistics per key chunk.
// Arithmetic in f32 whatever T (q, out, mask) and KV (k, v: T, or f16 caches under f32 q) are.
//
// Layouts as in flash.wgsl (a 3-D [batch, seq, dim] tensor is the one-head case). The `group`
// query heads sharing a K/V head form R = group * seq_q rows (row = h_local * seq_q + i), which
// sit contiguously in q and out: row r of (batch, kv head) `bkv` is q row bkv * R + r.
//
// One workgroup per (bkv, chunk of CHUNK keys) takes all R rows of its K/V head against its
// chunk, in tiles of BK keys:
//   1. K and V tiles are staged in workgroup memory as vec4 (Q was staged once, pre-multiplied
//      by scale * log2(e), so the softmax uses exp2);
//   2. the R * BK scores are spread over the workgroup (adjacent threads, adjacent keys);
//   3. SP threads per row fold its scores into the running max m and sum l (online softmax),
//      each over BK / SP keys, partial maxima and sums combined through workgroup memory, and
//      turn them into probabilities in place;
//   4. every thread rescales and accumulates the vec4 output columns it owns (element
//      e = t + WG * o of the R x DV4 accumulator, o < OPT <= 4) with p . V; where the
//      accumulator is small (KG > 1), KG threads share an element, each over every KG-th key of
//      the tile, and their partial sums are added in a fixed order at the end.
// The chunk's m, l and unnormalised accumulator of every row go to the f32 scratch: record
// rec = (bkv * chunks + chunk) * R + r holds acc at s_off + rec * DV and (m, l) at
// s_off + ml_base + 2 * rec. decode_merge.wgsl combines the chunks. Masked scores (causal,
// outside the sliding window, mask <= MASKED incl. -inf, keys past the chunk or seq_k) are MASKED and contribute exactly
// 0; a chunk a row sees no key of records m = MASKED, l = 0, acc = 0. Results are
// deterministic.
//
// Slotted mode (`params.table` = 1, batched decoding): batch b is one sequence's next token
// (seq_q = 1) whose keys and values sit in slot `table[2 b]` of caches laid out as
// [slots, kv_heads, kv_stride, D], at positions 0 ..= `table[2 b + 1]` (its own). Its chunk
// length is computed here from its own key count exactly as the host computes it for a
// one-sequence call (`params.chunk` chunks at most), so a sequence's result does not depend on
// the others in the batch; chunks past its keys record no key. A sequence of at most
// `params.short_keys` keys records no key at all: decode_short.wgsl, dispatched after the
// merge, writes its rows.

// Keys per tile.
override BK: u32 = 32u;
// Head dimension of q and k.
override D: u32 = 64u;
// Head dimension of v and out.
override DV: u32 = 64u;
// Whether an additive mask is bound.
override MASK: bool = false;
// Query rows per K/V head: group * seq_q.
override R: u32 = 1u;

const MASKED: f32 = -3.0e38;
const LOG2E: f32 = 1.4426950408889634;

override D4: u32 = (D + 3u) / 4u;
override DV4: u32 = (DV + 3u) / 4u;
// Row stride of the K tile in vec4s: odd, so threads reading different keys hit different banks.
override KS4: u32 = D4 | 1u;
// Row stride of the score tile.
override PS: u32 = BK + 1u;
override Q_LEN: u32 = R * D4;
override K_LEN: u32 = BK * KS4;
override V_LEN: u32 = BK * DV4;
override P_LEN: u32 = R * PS;
// Accumulator vec4s per thread (at most 4).
override OPT: u32 = (R * DV4 + WG - 1u) / WG;
override Q_ITERS: u32 = (R * D4 + WG - 1u) / WG;
override K_ITERS: u32 = (BK * D4 + WG - 1u) / WG;
override V_ITERS: u32 = (BK * DV4 + WG - 1u) / WG;
override S_ITERS: u32 = (R * BK + WG - 1u) / WG;
// Threads per row in the softmax (a power of two dividing BK, R * SP <= WG; set by the host).
override SP: u32 = 1u;
// Threads per accumulator element (KG > 1 only when R * DV4 * KG <= WG; set by the host).
override KG: u32 = 1u;
override SPR: u32 = R * SP;
override KGE: u32 = R * DV4 * KG;

struct Params {
    q_off: u32,
    k_off: u32,
    v_off: u32,
    s_off: u32,
    mask_off: u32,
    kv_heads: u32,
    // heads / kv_heads
    group: u32,
    seq_q: u32,
    seq_k: u32,
    // Keys per chunk (a multiple of BK) and chunks per (batch, kv head).
    chunk: u32,
    chunks: u32,
    // Workgroups with work: batch * kv_heads * chunks (the grid may be folded and larger).
    total: u32,
    // Where (m, l) pairs start in the scratch: records * DV.
    ml_base: u32,
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
    // The first key query i sees is clamp(i + start, 0, seq_k), an i32 (the host clamps it to
    // [-seq_q - 1, seq_k]): under a sliding window of w keys, offset + 1 - w; else -seq_q - 1.
    start: u32,
    // Rows between consecutive K/V heads: seq_k, or more when only a prefix of a cache is read.
    kv_stride: u32,
    // Slotted mode (see above): 1 when on, the table's offset, the slots of the caches, and
    // the sliding window in keys (0: none).
    table: u32,
    table_off: u32,
    slots: u32,
    window: u32,
    // Slotted mode: sequences of at most this many keys are left to decode_short.wgsl (they
    // record no key here).
    short_keys: u32,
}

@group(0) @binding(0) var<storage, read_write> q: array<T>;
// Bindings 1 and 2 (k, v) and their readers k4 / v4 come from decode_scalar.wgsl (any layout)
// or decode_vec.wgsl (vec4 loads: head dimensions and offsets multiples of 4).
@group(0) @binding(3) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(4) var<storage, read_write> mask: array<T>;
@group(0) @binding(5) var<storage, read_write> table: array<u32>;

var<workgroup> q_tile: array<vec4<f32>, Q_LEN>;
var<workgroup> k_tile: array<vec4<f32>, K_LEN>;
var<workgroup> v_tile: array<vec4<f32>, V_LEN>;
// Scores, then (step 3) probabilities.
var<workgroup> p_tile: array<f32, P_LEN>;
// Per row: running max, running sum, and the latest tile's rescaling factor.
var<workgroup> row_m: array<f32, R>;
var<workgroup> row_l: array<f32, R>;
var<workgroup> row_alpha: array<f32, R>;
// The softmax's partial maxima and sums (thread r * SP + i of row r).
var<workgroup> part_m: array<f32, SPR>;
var<workgroup> part_l: array<f32, SPR>;
// The KG partial accumulators of each element (KG > 1): group g of element e at g * R * DV4 + e.
var<workgroup> part_acc: array<vec4<f32>, KGE>;

// This workgroup's keys, causal offset and window start: the params', or in slotted mode its
// sequence's (set once at the start of `main`).
var<private> seq_k: u32;
var<private> offset: i32;
var<private> start: i32;

// Keys query `i` may see: min(seq_k, i + offset + 1) under the causal rule, else seq_k.
fn key_end(i: u32) -> u32 {
    if params.causal == 0u {
        return seq_k;
    }
    return u32(clamp(i32(i) + offset + 1, 0, i32(seq_k)));
}

// The first key query `i` may see: 0, or under a sliding window the oldest key of the window
// that ends at key_end(i).
fn key_start(i: u32) -> u32 {
    return u32(clamp(i32(i) + start, 0, i32(seq_k)));
}

// Elements d..d+3 of q from index `at` (zeros past the head dimension); k4 / v4 likewise.
fn q4(at: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if d < D { x.x = f32(q[at]); }
    if d + 1u < D { x.y = f32(q[at + 1u]); }
    if d + 2u < D { x.z = f32(q[at + 2u]); }
    if d + 3u < D { x.w = f32(q[at + 3u]); }
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

// Rescales the accumulator element `e` (row e / DV4, vec4 column e % DV4) to the tile's new
// maximum and adds the tile's p . V over keys first, first + step, ... (thread t's share: all
// keys, or with KG > 1 every KG-th from its group t / (R * DV4)).
fn accumulate(e: u32, first: u32, step: u32, a: vec4<f32>) -> vec4<f32> {
    if e >= R * DV4 {
        return a;
    }
    let r = e / DV4;
    let c = e % DV4;
    var x = a * row_alpha[r];
    for (var j = first; j < BK; j += step) {
        x = fma(vec4<f32>(p_tile[r * PS + j]), v_tile[j * DV4 + c], x);
    }
    return x;
}

// Writes accumulator element `e` of workgroup `wg_index` to the scratch.
fn store_acc(wg_index: u32, e: u32, x: vec4<f32>) {
    if e >= R * DV4 {
        return;
    }
    let r = e / DV4;
    let d = 4u * (e % DV4);
    let at = params.s_off + (wg_index * R + r) * DV + d;
    if d < DV { scratch[at] = x.x; }
    if d + 1u < DV { scratch[at + 1u] = x.y; }
    if d + 2u < DV { scratch[at + 2u] = x.z; }
    if d + 3u < DV { scratch[at + 3u] = x.w; }
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
    let bkv = wg_index / params.chunks;
    let chunk = wg_index % params.chunks;
    let b = bkv / params.kv_heads;
    let kvh = bkv % params.kv_heads;
    var kv_row0 = bkv * params.kv_stride;
    var chunk_len = params.chunk;
    seq_k = params.seq_k;
    offset = bitcast<i32>(params.offset);
    start = bitcast<i32>(params.start);
    if params.table != 0u {
        let slot = min(table[params.table_off + 2u * b], params.slots - 1u);
        seq_k = min(table[params.table_off + 2u * b + 1u], params.kv_stride - 1u) + 1u;
        if seq_k <= params.short_keys {
            seq_k = 0u;
        }
        kv_row0 = (slot * params.kv_heads + kvh) * params.kv_stride;
        // As the host plans a one-sequence call: whole tiles, at most `params.chunk` chunks (the
        // split target; the grid holds `params.chunks`, what the longest row needs).
        chunk_len = ((seq_k + params.chunk - 1u) / params.chunk + BK - 1u) / BK * BK;
        // The query is the last position: offset seq_k - 1; a window of w keys starts at
        // seq_k - w (clamped as the host clamps it).
        offset = i32(seq_k) - 1;
        start = -2;
        if params.window != 0u {
            start = max(i32(seq_k) - i32(params.window), -2);
        }
    }
    // Keys of this chunk that some row may see (uniform): the last query sees the most.
    // (The first query sees the oldest keys: chunks wholly before its window have no tiles.)
    let key_begin = max(chunk * chunk_len, key_start(0u));
    let key_stop = min(min(chunk * chunk_len + chunk_len, seq_k), key_end(params.seq_q - 1u));
    var tiles = 0u;
    if key_stop > key_begin {
        tiles = (key_stop - key_begin + BK - 1u) / BK;
    }

    // Stage the Q rows, pre-scaled.
    for (var it = 0u; it < Q_ITERS; it += 1u) {
        let e = t + it * WG;
        if e < R * D4 {
            let r = e / D4;
            let d = 4u * (e % D4);
            q_tile[e] = q4(params.q_off + (bkv * R + r) * D + d, d) * params.scale;
        }
    }
    if t < R {
        row_m[t] = MASKED;
        row_l[t] = 0.0;
    }
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var tile = 0u; tile < tiles; tile += 1u) {
        let key0 = key_begin + tile * BK;
        // The previous tile's reads are done (on the first tile: Q is staged).
        workgroupBarrier();
        for (var it = 0u; it < K_ITERS; it += 1u) {
            let e = t + it * WG;
            if e < BK * D4 {
                let j = e / D4;
                let d4 = e % D4;
                var x = vec4<f32>(0.0);
                if key0 + j < key_stop {
                    x = k4(params.k_off + (kv_row0 + key0 + j) * D + 4u * d4, 4u * d4);
                }
                k_tile[j * KS4 + d4] = x;
            }
        }
        for (var it = 0u; it < V_ITERS; it += 1u) {
            let e = t + it * WG;
            if e < BK * DV4 {
                let j = e / DV4;
                let d = 4u * (e % DV4);
                var x = vec4<f32>(0.0);
                if key0 + j < key_stop {
                    x = v4(params.v_off + (kv_row0 + key0 + j) * DV + d, d);
                }
                v_tile[e] = x;
            }
        }
        workgroupBarrier();

        // Scores: pair p = (row p / BK, key p % BK).
        for (var it = 0u; it < S_ITERS; it += 1u) {
            let p = t + it * WG;
            if p < R * BK {
                let r = p / BK;
                let j = p % BK;
                var s = 0.0;
                for (var d4 = 0u; d4 < D4; d4 += 1u) {
                    s += dot(q_tile[r * D4 + d4], k_tile[j * KS4 + d4]);
                }
                let i = r % params.seq_q;
                let h = kvh * params.group + r / params.seq_q;
                p_tile[r * PS + j] = score(s, b, h, i, key0 + j, key_start(i), min(key_stop, key_end(i)));
            }
        }
        workgroupBarrier();

        // Online softmax per row, SP threads a row (thread t: row t / SP, keys of span t % SP):
        // partial maxima, then the row's new maximum, probabilities in place and partial sums,
        // then the running statistics (by the row's first thread).
        let span = BK / SP;
        let sr = t / SP;
        let base = sr * PS + (t % SP) * span;
        if t < SPR {
            var m = MASKED;
            for (var j = 0u; j < span; j += 1u) {
                m = max(m, p_tile[base + j]);
            }
            part_m[t] = m;
        }
        workgroupBarrier();
        var m_old = MASKED;
        var m_new = MASKED;
        if t < SPR {
            m_old = row_m[sr];
            m_new = m_old;
            for (var i = 0u; i < SP; i += 1u) {
                m_new = max(m_new, part_m[sr * SP + i]);
            }
            var sum = 0.0;
            for (var j = 0u; j < span; j += 1u) {
                let s = p_tile[base + j];
                let p = select(exp2(s - m_new), 0.0, s == MASKED);
                p_tile[base + j] = p;
                sum += p;
            }
            part_l[t] = sum;
        }
        workgroupBarrier();
        if t < SPR && t % SP == 0u {
            var sum = 0.0;
            for (var i = 0u; i < SP; i += 1u) {
                sum += part_l[t + i];
            }
            // Nothing to rescale while every key so far was masked (l and acc are 0).
            let alpha = select(exp2(m_old - m_new), 0.0, m_old == MASKED);
            row_alpha[sr] = alpha;
            row_m[sr] = m_new;
            row_l[sr] = row_l[sr] * alpha + sum;
        }
        workgroupBarrier();

        if KG > 1u {
            if t < KGE {
                acc0 = accumulate(t % (R * DV4), t / (R * DV4), KG, acc0);
            }
        } else {
            acc0 = accumulate(t, 0u, 1u, acc0);
            if OPT > 1u {
                acc1 = accumulate(t + WG, 0u, 1u, acc1);
            }
            if OPT > 2u {
                acc2 = accumulate(t + 2u * WG, 0u, 1u, acc2);
            }
            if OPT > 3u {
                acc3 = accumulate(t + 3u * WG, 0u, 1u, acc3);
            }
        }
    }

    if KG > 1u {
        // Each element's KG partial sums, added in group order.
        if t < KGE {
            part_acc[t] = acc0;
        }
        workgroupBarrier();
        if t < R * DV4 {
            var x = part_acc[t];
            for (var g = 1u; g < KG; g += 1u) {
                x += part_acc[g * R * DV4 + t];
            }
            acc0 = x;
        }
    }
    store_acc(wg_index, t, acc0);
    if OPT > 1u {
        store_acc(wg_index, t + WG, acc1);
    }
    if OPT > 2u {
        store_acc(wg_index, t + 2u * WG, acc2);
    }
    if OPT > 3u {
        store_acc(wg_index, t + 3u * WG, acc3);
    }
    // Row t's statistics were last written by this thread.
    if t < R {
        let at = params.s_off + params.ml_base + 2u * (wg_index * R + t);
        scratch[at] = row_m[t];
        scratch[at + 1u] = row_l[t];
    }
}
