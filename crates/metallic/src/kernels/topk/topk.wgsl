// The K largest values of each row and their column indices, largest first; equal values are
// ordered by smaller index first (so K = 1 is the first maximum, as a greedy sampler wants).
// NaN counts as -inf. Two passes of this one kernel:
//   PAIRS = false: workgroup (chunk c, row r) reads columns [c*CHUNK, (c+1)*CHUNK) of row r of
//                  `vals` (index = column) and writes its top K to candidates [r, c, 0..K);
//   PAIRS = true:  the same over (value, index) pairs: `vals` and `idx` hold `n` candidates per
//                  row (from the first pass), and one workgroup per row keeps their top K.
// Each invocation holds PER elements in registers; K rounds of a workgroup argmax each take
// the best pair ranked below the previous round's pick. Slots past the end read as
// (-inf, NONE) and never rank above a real element.

override K: u32 = 1u;
override PAIRS: bool = false;
const PER: u32 = 8u;
const NONE: u32 = 0xffffffffu;
const NEG_INF: f32 = -3.4028235e38;

struct Params {
    n: u32,          // columns (or candidates) per row
    chunks: u32,     // workgroups per row in x
    vals_off: u32,
    idx_off: u32,
    out_vals_off: u32,
    out_idx_off: u32,
}

@group(0) @binding(0) var<storage, read_write> vals: array<T>;
@group(0) @binding(1) var<storage, read_write> idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> out_vals: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_idx: array<u32>;

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

// Whether (v1, i1) ranks above (v2, i2).
fn above(v1: f32, i1: u32, v2: f32, i2: u32) -> bool {
    return v1 > v2 || (v1 == v2 && i1 < i2);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wid.x;
    let row = wid.y;
    let span = WG * PER;
    var v: array<f32, PER>;
    var ix: array<u32, PER>;
    for (var j = 0u; j < PER; j += 1u) {
        let col = chunk * span + j * WG + lid;
        v[j] = NEG_INF;
        ix[j] = NONE;
        if col < params.n {
            let at = row * params.n + col;
            var x = f32(vals[params.vals_off + at]);
            if x != x {
                x = NEG_INF;
            }
            v[j] = max(x, NEG_INF);
            ix[j] = select(col, idx[params.idx_off + at], PAIRS);
        }
    }
    // The previous pick; round r takes the best pair ranked strictly below it.
    var last_v = 3.4028235e38;
    var last_i = 0u;
    var first = true;
    for (var r = 0u; r < K; r += 1u) {
        var bv = NEG_INF;
        var bi = NONE;
        for (var j = 0u; j < PER; j += 1u) {
            let below = first || above(last_v, last_i, v[j], ix[j]);
            if ix[j] != NONE && below && (bi == NONE || above(v[j], ix[j], bv, bi)) {
                bv = v[j];
                bi = ix[j];
            }
        }
        best_v[lid] = bv;
        best_i[lid] = bi;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
            if lid < stride {
                let ov = best_v[lid + stride];
                let oi = best_i[lid + stride];
                if oi != NONE && (best_i[lid] == NONE || above(ov, oi, best_v[lid], best_i[lid])) {
                    best_v[lid] = ov;
                    best_i[lid] = oi;
                }
            }
            workgroupBarrier();
        }
        let pv = best_v[0];
        let pi = best_i[0];
        if lid == 0u {
            let at = (row * params.chunks + chunk) * K + r;
            out_vals[params.out_vals_off + at] = pv;
            out_idx[params.out_idx_off + at] = pi;
        }
        workgroupBarrier();
        last_v = pv;
        last_i = pi;
        first = false;
    }
}
