// metallic: trusted
// (Compiled without wgpu's runtime checks. Storage reads: q only for rows < group * seq_q and
// d < D; k and v only for keys < seq_k and d < D / DV; the mask only for a row < rows and a key
// below that row's end (<= seq_k), at indices the Rust side validated as a broadcast of the
// logits' shape; the vec4 reads through k4 / v4 only with VEC, which the Rust side sets only
// where offsets and head dimensions are multiples of 4 (so a vec4 lies inside the matrix row).
// Writes: out only for rows < rows and d < DV. Workgroup-memory indices come from t < WG = 128
// and the tile constants (clamped with min where a column could pass the head dimension).
// Loops are bounded by the override constants and the tile count. Runtime divisors — blocks,
// kv_heads, seq_q — are non-zero wherever a division by them is reached: a workgroup returns
// before any when total = 0, and total > 0 implies blocks, kv_heads and seq_q > 0.)
//
// Fused scaled-dot-product attention with register blocking (head dimensions up to 64): one
// pass over the keys with an online softmax; the score matrix never leaves the workgroup.
// Arithmetic in f32 whatever T is.
//
// Layouts and the row space are those of flash.wgsl: the `group` query heads sharing a K/V head
// form group * seq_q rows (row = h_local * seq_q + i); masks are described by strides.
//
// A workgroup of 128 invocations owns BQ = 64 rows; invocation t = 8 * ty + tx owns rows
// 4 ty .. 4 ty + 3 (local). Per tile of BK = 32 keys:
//   1. K and V tiles are staged in workgroup memory as vec4 rows (Q was staged once, scaled by
//      scale * log2(e), so the softmax works in base 2 with exp2); the next tile's K and V are
//      fetched into registers at the start of a step and stored once this one's are read
//      (K after the scores, V after P · V), so global latency overlaps the arithmetic and a
//      step needs three barriers;
//   2. scores: a 4 x 4 block per invocation, its rows against keys tx + 8 c (c < 4), in
//      registers; masked pairs (causal, outside the window, mask <= MASKED, keys past seq_k) become MASKED;
//   3. row maxima: the 8 invocations sharing rows exchange their partial maxima through
//      workgroup memory; each turns its scores into probabilities (exp2 once per score) and
//      stores them key-major (p_tile[key][4 rows]);
//   4. P · V: each invocation rescales and accumulates its rows' output columns 4 tx .. 4 tx + 3
//      and 32 + 4 tx .. (two vec4 per row, in registers).
// Each invocation keeps its partial row sums (over its own keys); they are added across the 8
// invocations at the end. A row whose every key is masked writes 0. Deterministic.

// Head dimension of q and k (at most 64).
override D: u32 = 64u;
// Head dimension of v and out (at most 64).
override DV: u32 = 64u;
// Whether an additive mask is bound.
override MASK: bool = false;
// Whether K and V tiles load as vec4 through k4 / v4 (offsets and head dimensions multiples
// of 4).
override VEC: bool = false;

const BQ: u32 = 64u;
const BK: u32 = 32u;
const TX: u32 = 8u;
// The score of a masked (query, key) pair. Finite, so no inf arithmetic is needed.
const MASKED: f32 = -3.0e38;
const LOG2E: f32 = 1.4426950408889634;

// Head dimensions in vec4s.
override D4: u32 = (D + 3u) / 4u;
override DV4: u32 = (DV + 3u) / 4u;
// Row stride of the K tile in vec4s: odd, so the 8 invocations reading keys tx + 8 c hit
// different banks. Q is read by broadcast and needs no padding.
override KS4: u32 = D4 | 1u;
// Row stride of the probability tile (vec4 of 4 rows; 16 per key, plus one against conflicts).
const PS4: u32 = BQ / 4u + 1u;
override Q_LEN: u32 = BQ * D4;
override K_LEN: u32 = BK * KS4;
override V_LEN: u32 = BK * DV4;
// Staging loop trip counts (K_ITERS, V_ITERS <= 4: D, DV <= 64).
override Q_ITERS: u32 = (BQ * D4 + 127u) / 128u;
override K_ITERS: u32 = (BK * D4 + 127u) / 128u;
override V_ITERS: u32 = (BK * DV4 + 127u) / 128u;


// `Params` and `key_end`: flash_common.wgsl.

@group(0) @binding(0) var<storage, read_write> q: array<T>;
@group(0) @binding(1) var<storage, read_write> k: array<KV>;
@group(0) @binding(2) var<storage, read_write> v: array<KV>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<storage, read_write> mask: array<T>;
// The same bindings as k and v, read four elements at a time (only with VEC).
@group(0) @binding(5) var<storage, read_write> k4: array<vec4<KV>>;
@group(0) @binding(6) var<storage, read_write> v4: array<vec4<KV>>;

var<workgroup> q_tile: array<vec4<f32>, Q_LEN>;
var<workgroup> k_tile: array<vec4<f32>, K_LEN>;
var<workgroup> v_tile: array<vec4<f32>, V_LEN>;
// Probabilities, key-major: p_tile[key * PS4 + ty] holds rows 4 ty .. 4 ty + 3.
var<workgroup> p_tile: array<vec4<f32>, BK * PS4>;
// Per-invocation partial maxima (then sums) of its four rows.
var<workgroup> red: array<vec4<f32>, 128>;


// Elements d..d+3 of a row of q / k / v starting at `at` (zeros past the head dimension).
fn q_vec(at: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if d < D { x.x = f32(q[at]); }
    if d + 1u < D { x.y = f32(q[at + 1u]); }
    if d + 2u < D { x.z = f32(q[at + 2u]); }
    if d + 3u < D { x.w = f32(q[at + 3u]); }
    return x;
}
fn k_vec(at: u32, d: u32) -> vec4<f32> {
    if VEC {
        return vec4<f32>(k4[at / 4u]);
    }
    var x = vec4<f32>(0.0);
    if d < D { x.x = f32(k[at]); }
    if d + 1u < D { x.y = f32(k[at + 1u]); }
    if d + 2u < D { x.z = f32(k[at + 2u]); }
    if d + 3u < D { x.w = f32(k[at + 3u]); }
    return x;
}
fn v_vec(at: u32, d: u32) -> vec4<f32> {
    if VEC {
        return vec4<f32>(v4[at / 4u]);
    }
    var x = vec4<f32>(0.0);
    if d < DV { x.x = f32(v[at]); }
    if d + 1u < DV { x.y = f32(v[at + 1u]); }
    if d + 2u < DV { x.z = f32(v[at + 2u]); }
    if d + 3u < DV { x.w = f32(v[at + 3u]); }
    return x;
}

// The it-th vec4 (it < 4) this invocation stages of the K (V) tile of keys key0..: zeros
// past seq_k and past the tile; `put_k` (`put_v`) stores it.
fn load_k(t: u32, it: u32, key0: u32, kv_row0: u32) -> vec4<f32> {
    let e = t + it * 128u;
    let j = e / D4;
    var x = vec4<f32>(0.0);
    if it < K_ITERS && e < BK * D4 && key0 + j < params.seq_k {
        let d = 4u * (e % D4);
        x = k_vec(params.k_off + (kv_row0 + key0 + j) * D + d, d);
    }
    return x;
}
fn put_k(t: u32, it: u32, x: vec4<f32>) {
    let e = t + it * 128u;
    if it < K_ITERS && e < BK * D4 {
        k_tile[(e / D4) * KS4 + e % D4] = x;
    }
}
fn load_v(t: u32, it: u32, key0: u32, kv_row0: u32) -> vec4<f32> {
    let e = t + it * 128u;
    let j = e / DV4;
    var x = vec4<f32>(0.0);
    if it < V_ITERS && e < BK * DV4 && key0 + j < params.seq_k {
        let d = 4u * (e % DV4);
        x = v_vec(params.v_off + (kv_row0 + key0 + j) * DV + d, d);
    }
    return x;
}
fn put_v(t: u32, it: u32, x: vec4<f32>) {
    let e = t + it * 128u;
    if it < V_ITERS && e < BK * DV4 {
        v_tile[e] = x;
    }
}

// s + dot(a, b) as four fused multiply-adds.
fn dot_acc(a: vec4<f32>, b: vec4<f32>, s: f32) -> f32 {
    return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, s))));
}

// One row's state: which (head, query) it is and the keys start..end it sees (none past the
// end).
struct Row {
    head: u32,
    i: u32,
    start: u32,
    end: u32,
}

fn row_of(kvh: u32, row: u32, rows: u32) -> Row {
    var r = Row(0u, 0u, 0u, 0u);
    if row < rows {
        r.head = kvh * params.group + row / params.seq_q;
        r.i = row % params.seq_q;
        r.start = key_start(r.i);
        r.end = key_end(r.i);
    }
    return r;
}

// Scores of one row against keys key0 + tx + 8 c: mask added, masked pairs MASKED.
fn mask_row(s: vec4<f32>, b: u32, r: Row, key0: u32) -> vec4<f32> {
    var x = s;
    for (var c = 0u; c < 4u; c += 1u) {
        let key = key0 + c * TX;
        var y = x[c];
        if key < r.start || key >= r.end {
            y = MASKED;
        } else if MASK {
            y += f32(mask[params.mask_off + b * params.mask_sb + r.head * params.mask_sh + r.i * params.mask_sq
                + key * params.mask_sk]) * LOG2E;
        }
        x[c] = max(y, MASKED);
    }
    return x;
}

// Probabilities of one row's scores under the running max m (0 where masked).
fn probs(s: vec4<f32>, m: f32) -> vec4<f32> {
    return select(exp2(s - vec4<f32>(m)), vec4<f32>(0.0), s == vec4<f32>(MASKED));
}

fn hmax(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

// Writes x to out[at..at + 4] (what lies within the head dimension).
fn store_out(at: u32, d: u32, x: vec4<f32>) {
    if d < DV { out[at] = T(x.x); }
    if d + 1u < DV { out[at + 1u] = T(x.y); }
    if d + 2u < DV { out[at + 2u] = T(x.z); }
    if d + 3u < DV { out[at + 3u] = T(x.w); }
}

// Writes one row's two output column vectors, divided by the row's sum l (0 if no key).
fn store_row(b: u32, heads: u32, r: Row, row: u32, rows: u32, tx: u32, l: f32, xa: vec4<f32>, xb: vec4<f32>) {
    if row < rows {
        let inv = select(1.0 / l, 0.0, l == 0.0);
        let base = params.out_off + ((b * heads + r.head) * params.seq_q + r.i) * DV;
        if tx < DV4 {
            store_out(base + 4u * tx, 4u * tx, xa * inv);
        }
        if tx + TX < DV4 {
            store_out(base + 4u * (tx + TX), 4u * (tx + TX), xb * inv);
        }
    }
}

@compute @workgroup_size(128)
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
        let e = t + it * 128u;
        if e < BQ * D4 {
            let r = e / D4;
            let d = 4u * (e % D4);
            let row = row0 + r;
            var x = vec4<f32>(0.0);
            if row < rows {
                let h = kvh * params.group + row / params.seq_q;
                let i = row % params.seq_q;
                x = q_vec(params.q_off + ((b * heads + h) * params.seq_q + i) * D + d, d) * params.scale;
            }
            q_tile[e] = x;
        }
    }

    let tx = t % TX;
    let ty = t / TX;
    let lr = 4u * ty;
    let rw0 = row_of(kvh, row0 + lr, rows);
    let rw1 = row_of(kvh, row0 + lr + 1u, rows);
    let rw2 = row_of(kvh, row0 + lr + 2u, rows);
    let rw3 = row_of(kvh, row0 + lr + 3u, rows);

    // Keys the whole block may see (uniform): the largest query index in the block decides.
    let last_row = min(row0 + BQ, rows) - 1u;
    var i_max = params.seq_q - 1u;
    if row0 / params.seq_q == last_row / params.seq_q {
        i_max = last_row % params.seq_q;
    }
    let tiles = (key_end(i_max) + BK - 1u) / BK;
    let tile0 = first_tile(row0, last_row, BK);
    let kv_row0 = (b * params.kv_heads + kvh) * params.kv_stride;

    // Online-softmax state of the four rows (vec4 over rows): running max (base 2), this
    // invocation's partial sums, and the output columns (a: 4 tx.., b: 32 + 4 tx..) per row.
    var m = vec4<f32>(MASKED);
    var l = vec4<f32>(0.0);
    var o0a = vec4<f32>(0.0);
    var o0b = vec4<f32>(0.0);
    var o1a = vec4<f32>(0.0);
    var o1b = vec4<f32>(0.0);
    var o2a = vec4<f32>(0.0);
    var o2b = vec4<f32>(0.0);
    var o3a = vec4<f32>(0.0);
    var o3b = vec4<f32>(0.0);
    let ca = min(tx, DV4 - 1u);
    let cb = min(tx + TX, DV4 - 1u);
    let q_at = lr * D4;

    // The first tile's K and V; each later tile's are fetched into registers while the
    // previous one is multiplied (K_ITERS, V_ITERS <= 4 for head dimensions up to 64).
    var kr0 = load_k(t, 0u, tile0 * BK, kv_row0);
    var kr1 = load_k(t, 1u, tile0 * BK, kv_row0);
    var kr2 = load_k(t, 2u, tile0 * BK, kv_row0);
    var kr3 = load_k(t, 3u, tile0 * BK, kv_row0);
    var vr0 = load_v(t, 0u, tile0 * BK, kv_row0);
    var vr1 = load_v(t, 1u, tile0 * BK, kv_row0);
    var vr2 = load_v(t, 2u, tile0 * BK, kv_row0);
    var vr3 = load_v(t, 3u, tile0 * BK, kv_row0);
    put_k(t, 0u, kr0);
    put_k(t, 1u, kr1);
    put_k(t, 2u, kr2);
    put_k(t, 3u, kr3);
    put_v(t, 0u, vr0);
    put_v(t, 1u, vr1);
    put_v(t, 2u, vr2);
    put_v(t, 3u, vr3);
    workgroupBarrier();

    for (var tile = tile0; tile < tiles; tile += 1u) {
        let key0 = tile * BK;
        let more = tile + 1u < tiles;
        if more {
            let next = key0 + BK;
            kr0 = load_k(t, 0u, next, kv_row0);
            kr1 = load_k(t, 1u, next, kv_row0);
            kr2 = load_k(t, 2u, next, kv_row0);
            kr3 = load_k(t, 3u, next, kv_row0);
            vr0 = load_v(t, 0u, next, kv_row0);
            vr1 = load_v(t, 1u, next, kv_row0);
            vr2 = load_v(t, 2u, next, kv_row0);
            vr3 = load_v(t, 3u, next, kv_row0);
        }

        // Scores: rows lr..lr+3 (s0..s3) against keys tx + 8 c (components c).
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < D4; d4 += 1u) {
            let ka = k_tile[tx * KS4 + d4];
            let kb = k_tile[(tx + TX) * KS4 + d4];
            let kc = k_tile[(tx + 2u * TX) * KS4 + d4];
            let kd = k_tile[(tx + 3u * TX) * KS4 + d4];
            let qa = q_tile[q_at + d4];
            let qb = q_tile[q_at + D4 + d4];
            let qc = q_tile[q_at + 2u * D4 + d4];
            let qd = q_tile[q_at + 3u * D4 + d4];
            s0 = vec4<f32>(dot_acc(qa, ka, s0.x), dot_acc(qa, kb, s0.y), dot_acc(qa, kc, s0.z), dot_acc(qa, kd, s0.w));
            s1 = vec4<f32>(dot_acc(qb, ka, s1.x), dot_acc(qb, kb, s1.y), dot_acc(qb, kc, s1.z), dot_acc(qb, kd, s1.w));
            s2 = vec4<f32>(dot_acc(qc, ka, s2.x), dot_acc(qc, kb, s2.y), dot_acc(qc, kc, s2.z), dot_acc(qc, kd, s2.w));
            s3 = vec4<f32>(dot_acc(qd, ka, s3.x), dot_acc(qd, kb, s3.y), dot_acc(qd, kc, s3.z), dot_acc(qd, kd, s3.w));
        }
        let kt = key0 + tx;
        s0 = mask_row(s0, b, rw0, kt);
        s1 = mask_row(s1, b, rw1, kt);
        s2 = mask_row(s2, b, rw2, kt);
        s3 = mask_row(s3, b, rw3, kt);
        red[t] = vec4<f32>(hmax(s0), hmax(s1), hmax(s2), hmax(s3));
        workgroupBarrier();

        // New running maxima of the four rows; probabilities; rescale factors.
        var tm = red[ty * TX];
        for (var x = 1u; x < TX; x += 1u) {
            tm = max(tm, red[ty * TX + x]);
        }
        let mn = max(m, tm);
        let alpha = select(exp2(m - mn), vec4<f32>(0.0), m == vec4<f32>(MASKED));
        m = mn;
        let p0 = probs(s0, mn.x);
        let p1 = probs(s1, mn.y);
        let p2 = probs(s2, mn.z);
        let p3 = probs(s3, mn.w);
        l = l * alpha + vec4<f32>(dot(p0, vec4<f32>(1.0)), dot(p1, vec4<f32>(1.0)), dot(p2, vec4<f32>(1.0)),
            dot(p3, vec4<f32>(1.0)));
        p_tile[tx * PS4 + ty] = vec4<f32>(p0.x, p1.x, p2.x, p3.x);
        p_tile[(tx + TX) * PS4 + ty] = vec4<f32>(p0.y, p1.y, p2.y, p3.y);
        p_tile[(tx + 2u * TX) * PS4 + ty] = vec4<f32>(p0.z, p1.z, p2.z, p3.z);
        p_tile[(tx + 3u * TX) * PS4 + ty] = vec4<f32>(p0.w, p1.w, p2.w, p3.w);
        // Every invocation finished reading this tile's K before the barrier above: the next
        // tile's K goes in now.
        if more {
            put_k(t, 0u, kr0);
            put_k(t, 1u, kr1);
            put_k(t, 2u, kr2);
            put_k(t, 3u, kr3);
        }
        // Rescale to the new maxima (alpha is 0 while every key so far was masked, and so is
        // the accumulator).
        o0a *= alpha.x;
        o0b *= alpha.x;
        o1a *= alpha.y;
        o1b *= alpha.y;
        o2a *= alpha.z;
        o2b *= alpha.z;
        o3a *= alpha.w;
        o3b *= alpha.w;
        workgroupBarrier();

        for (var j = 0u; j < BK; j += 1u) {
            let p = p_tile[j * PS4 + ty];
            let va = v_tile[j * DV4 + ca];
            let vb = v_tile[j * DV4 + cb];
            o0a = fma(vec4<f32>(p.x), va, o0a);
            o0b = fma(vec4<f32>(p.x), vb, o0b);
            o1a = fma(vec4<f32>(p.y), va, o1a);
            o1b = fma(vec4<f32>(p.y), vb, o1b);
            o2a = fma(vec4<f32>(p.z), va, o2a);
            o2b = fma(vec4<f32>(p.z), vb, o2b);
            o3a = fma(vec4<f32>(p.w), va, o3a);
            o3b = fma(vec4<f32>(p.w), vb, o3b);
        }
        // This tile's V is read: the next one's goes in (seen after the next `red` barrier).
        workgroupBarrier();
        if more {
            put_v(t, 0u, vr0);
            put_v(t, 1u, vr1);
            put_v(t, 2u, vr2);
            put_v(t, 3u, vr3);
        }
    }

    // Row sums across the 8 invocations sharing the rows (the last reads of `red` were before
    // the last tile's final barrier).
    red[t] = l;
    workgroupBarrier();
    var lt = red[ty * TX];
    for (var x = 1u; x < TX; x += 1u) {
        lt += red[ty * TX + x];
    }
    store_row(b, heads, rw0, row0 + lr, rows, tx, lt.x, o0a, o0b);
    store_row(b, heads, rw1, row0 + lr + 1u, rows, tx, lt.y, o1a, o1b);
    store_row(b, heads, rw2, row0 + lr + 2u, rows, tx, lt.z, o2a, o2b);
    store_row(b, heads, rw3, row0 + lr + 3u, rows, tx, lt.w, o3a, o3b);
}
