// Attention of one query row per workgroup over a short key sequence (decode steps at short
// contexts), in one pass: out = softmax(scale · q kᵀ, causal, window) · v, with no scratch and
// no merge. Arithmetic in f32 whatever T (q, out) and KV (k, v) are. Layouts, the causal rule,
// the window and the slotted mode are decode.wgsl's (read it first).
//
// Workgroup w takes query row w = (b * heads + h) * seq_q + i (slotted: b * heads + h, one query
// per sequence) and the keys it sees, at most MAXK of them:
//   1. q, pre-multiplied by scale * log2(e), is staged in workgroup memory;
//   2. each thread scores keys t, t + WG, ... (one dot product of D each) into the score array
//      and keeps their maximum; the maxima are reduced in a fixed tree;
//   3. each thread turns its scores into exp2(s - m) and adds them up; the sums likewise;
//   4. P·V: KG groups of DV4 threads, thread (g, c) adds p_j · v_j over keys j = g, g + KG, ...
//      for vec4 column c (four keys at a time into four sums, added in a fixed order); the
//      groups' sums are added in order g = 0, 1, ... and divided by l.
// Every reduction has a fixed order, so results are deterministic, and a row's result depends
// only on its own keys. A row that sees no key gets zeros (as the split-K kernels give it).
//
// Slotted mode (`params.table` = 1): rows of sequences with more than `params.max_keys` keys
// are left to the split-K kernels (which skip the others); their workgroups return at once.

// (WG, the workgroup size, is the prelude's: a power of two, set by the host.)
// Head dimension of q and k.
override D: u32 = 64u;
// Head dimension of v and out.
override DV: u32 = 64u;
// Most keys a row sees: the length of the score array.
override MAXK: u32 = 512u;

const MASKED: f32 = -3.0e38;

override D4: u32 = (D + 3u) / 4u;
override DV4: u32 = (DV + 3u) / 4u;
// Key groups of the P·V pass (DV4 <= WG: the host checks).
override KG: u32 = WG / DV4;

struct Params {
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_off: u32,
    heads: u32,
    kv_heads: u32,
    seq_q: u32,
    seq_k: u32,
    // Workgroups with work: one per query row.
    rows: u32,
    // The causal rule, offset, window start and scale as in decode.wgsl.
    causal: u32,
    offset: u32,
    start: u32,
    scale: f32,
    kv_stride: u32,
    // Slotted mode: on, the table's offset, the caches' slots, the window (0: none) and the
    // most keys a sequence may have to be taken here.
    table: u32,
    table_off: u32,
    slots: u32,
    window: u32,
    max_keys: u32,
}

@group(0) @binding(0) var<storage, read_write> q: array<T>;
// Bindings 1 and 2 (k, v) and their readers k4 / v4: decode_scalar.wgsl or decode_vec.wgsl.
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<storage, read_write> table: array<u32>;

var<workgroup> q_row: array<vec4<f32>, D4>;
var<workgroup> p_row: array<f32, MAXK>;
var<workgroup> red: array<f32, WG>;
var<workgroup> part_acc: array<vec4<f32>, WG>;

// Elements d..d+3 of q from index `at` (zeros past the head dimension).
fn q4(at: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if d < D { x.x = f32(q[at]); }
    if d + 1u < D { x.y = f32(q[at + 1u]); }
    if d + 2u < D { x.z = f32(q[at + 2u]); }
    if d + 3u < D { x.w = f32(q[at + 3u]); }
    return x;
}

// The maximum (max = true) or the sum of every thread's `x`, in a fixed tree (WG a power of
// two); every thread gets it.
fn reduce(t: u32, x: f32, max_op: bool) -> f32 {
    workgroupBarrier();
    red[t] = x;
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        workgroupBarrier();
        if t < s {
            if max_op {
                red[t] = max(red[t], red[t + s]);
            } else {
                red[t] = red[t] + red[t + s];
            }
        }
    }
    workgroupBarrier();
    return red[0];
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row = wid.x + (wid.y + wid.z * nwg.y) * nwg.x;
    if row >= params.rows {
        return;
    }
    let i = row % params.seq_q;
    let bh = row / params.seq_q;
    let h = bh % params.heads;
    let b = bh / params.heads;
    let kvh = h / (params.heads / params.kv_heads);
    var kv_row0 = (b * params.kv_heads + kvh) * params.kv_stride;
    var seq_k = params.seq_k;
    var offset = bitcast<i32>(params.offset);
    var start = bitcast<i32>(params.start);
    if params.table != 0u {
        let slot = min(table[params.table_off + 2u * b], params.slots - 1u);
        seq_k = min(table[params.table_off + 2u * b + 1u], params.kv_stride - 1u) + 1u;
        if seq_k > params.max_keys {
            return;
        }
        kv_row0 = (slot * params.kv_heads + kvh) * params.kv_stride;
        offset = i32(seq_k) - 1;
        start = -2;
        if params.window != 0u {
            start = max(i32(seq_k) - i32(params.window), -2);
        }
    }
    // The keys this row sees: [lo, hi), at most MAXK (the host and the check above see to it).
    var hi = seq_k;
    if params.causal != 0u {
        hi = u32(clamp(i32(i) + offset + 1, 0, i32(seq_k)));
    }
    let lo = min(u32(clamp(i32(i) + start, 0, i32(seq_k))), hi);
    let n = min(hi - lo, MAXK);

    for (var d4 = t; d4 < D4; d4 += WG) {
        q_row[d4] = q4(params.q_off + row * D + 4u * d4, 4u * d4) * params.scale;
    }
    workgroupBarrier();
    var m = MASKED;
    for (var j = t; j < n; j += WG) {
        let at = params.k_off + (kv_row0 + lo + j) * D;
        var s = 0.0;
        for (var d4 = 0u; d4 < D4; d4 += 1u) {
            s += dot(q_row[d4], k4(at + 4u * d4, 4u * d4));
        }
        s = max(s, MASKED);
        p_row[j] = s;
        m = max(m, s);
    }
    m = reduce(t, m, true);
    var l = 0.0;
    for (var j = t; j < n; j += WG) {
        let p = exp2(p_row[j] - m);
        p_row[j] = p;
        l += p;
    }
    // (The reduction's first barrier also makes the probabilities visible.)
    l = reduce(t, l, false);

    let g = t / DV4;
    let c = t % DV4;
    var acc = vec4<f32>(0.0);
    if g < KG {
        // Four keys of the group at a time into four sums (their loads in flight together),
        // added in a fixed order.
        let at = params.v_off + (kv_row0 + lo) * DV + 4u * c;
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        var j = g;
        for (; j + 3u * KG < n; j += 4u * KG) {
            a0 = fma(vec4<f32>(p_row[j]), v4(at + j * DV, 4u * c), a0);
            a1 = fma(vec4<f32>(p_row[j + KG]), v4(at + (j + KG) * DV, 4u * c), a1);
            a2 = fma(vec4<f32>(p_row[j + 2u * KG]), v4(at + (j + 2u * KG) * DV, 4u * c), a2);
            a3 = fma(vec4<f32>(p_row[j + 3u * KG]), v4(at + (j + 3u * KG) * DV, 4u * c), a3);
        }
        for (; j < n; j += KG) {
            a0 = fma(vec4<f32>(p_row[j]), v4(at + j * DV, 4u * c), a0);
        }
        acc = (a0 + a1) + (a2 + a3);
    }
    part_acc[t] = acc;
    workgroupBarrier();
    if t < DV4 {
        var x = vec4<f32>(0.0);
        for (var gi = 0u; gi < KG; gi += 1u) {
            x += part_acc[gi * DV4 + t];
        }
        if l > 0.0 {
            x = x / l;
        }
        let d = 4u * t;
        let at = params.out_off + row * DV + d;
        if d < DV { out[at] = T(x.x); }
        if d + 1u < DV { out[at + 1u] = T(x.y); }
        if d + 2u < DV { out[at + 2u] = T(x.z); }
        if d + 3u < DV { out[at + 3u] = T(x.w); }
    }
}
