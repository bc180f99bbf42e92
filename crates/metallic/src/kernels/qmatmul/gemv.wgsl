// metallic: trusted
// Quantized GEMV for few rows of x (decode): y[m, n0 + r] = sum_k x[m, k] * W[r, k] for the rows
// r of one weight part, W decoded in registers, f32 accumulation.
//
// A workgroup computes ROWS adjacent outputs of MB rows of x: each invocation walks blocks of
// 32 weights (`deq32`) of one of the ROWS weight rows, runs of SPAN invocations on adjacent
// blocks of one row (see `main`), each block decoded once and multiplied by the MB rows of x,
// so every weight is read once per MB rows of x (batched decoding: one read for up to 8
// sequences); `workgroup_sum4` finishes each row's ROWS dot products. A block of 32 is one
// GGML block (Q4_0 ... Q8_0, IQ4_NL) or one sub-block of a K-quant super-block: its scale is
// decoded once and its quants are eight independent word loads. x is read as vectors where it
// can be (XVEC): with one row per subgroup, scalar reads of x at 32 places 128 bytes apart were
// the bottleneck (docs/PERFORMANCE.md, 2026-12-06). A row of x is summed in the same order
// whatever MB is, so its outputs are bit-identical with any MB. Grid: x = row groups, z =
// groups of MB rows of x, clamped to the device limit; workgroups loop over the rest.
//
// UNIT = 8 walks groups of 8 weights (`deq8`) the same way: more items, less work each.
//
// Compiled without runtime checks: weight reads stay inside rows below `n` (rows past it read
// the last one) and blocks below the row's count, x reads inside rows below `m` and columns
// below K (`x_at`, `x_vec`), norm-weight reads below K (`nw`, K long: the host checks it), y writes are guarded by n and m, and every loop is bounded by
// the parameters the op validated.
//
// GATED: x holds rows of 2K, a gate half and an up half (a GeGLU / SwiGLU MLP's fused gate
// and up projections), and the product's input is act(gate) * up (`apply`, unary_common.wgsl,
// op OP), rounded to T as the gated kernel stores it: the MLP's down projection reads the
// gate through, one dispatch instead of two.

const ROWS: u32 = 4u;
// Adjacent lanes on one row (see `main`); WG is a multiple of SPAN * ROWS.
const SPAN: u32 = 8u;
// Rows of x per workgroup, 1 to MAX_MB.
override MB: u32 = 1u;
const MAX_MB: u32 = 8u;
// Whether x is read through a gate (see above).
override GATED: bool = false;
// Whether x is read four elements at a time through `xv` (x's offset and K multiples of 4).
override XVEC: bool = false;
// Weights per work item: 32 (`deq32`) or 8 (`deq8`).
override UNIT: u32 = 32u;

// The 32 weights 32b .. 32b + 32 of the row starting at word `row`, four per vector. The
// common types decode their block here with its scale read once; the rest go through `deq8`.
fn deq32(row: u32, b: u32) -> array<vec4<f32>, 8> {
    var out: array<vec4<f32>, 8>;
    if QTYPE == 8u {
        // Q8_0: the block's qs[32], then d.
        let bw = row + b * 9u;
        let d = unpack2x16float(w[bw + 8u]).x;
        for (var i = 0u; i < 8u; i += 1u) {
            out[i] = sbytes4(w[bw + i]) * d;
        }
    } else if QTYPE == 2u || QTYPE == 3u {
        // Q4_0 / Q4_1: weights 0..16 the low nibbles of qs[16], 16..32 the high ones.
        let bw = row + b * 5u;
        let dm = unpack2x16float(w[bw + 4u]);
        for (var i = 0u; i < 4u; i += 1u) {
            let q = w[bw + i];
            if QTYPE == 2u {
                out[i] = (nibbles(q, false) - 8.0) * dm.x;
                out[i + 4u] = (nibbles(q, true) - 8.0) * dm.x;
            } else {
                out[i] = nibbles(q, false) * dm.x + dm.y;
                out[i + 4u] = nibbles(q, true) * dm.x + dm.y;
            }
        }
    } else if QTYPE == 12u {
        // Q4_K: sub-block s of a super-block is the low (s even) or high nibbles of
        // qs[32(s / 2) ..], with its own 6-bit scale and min.
        let bw = row + (b / 8u) * 36u;
        let s = b % 8u;
        let qs = bw + 4u + 8u * (s / 2u);
        let dd = unpack2x16float(w[bw]);
        let sm = scale_min_k4(bw + 1u, s);
        let d1 = dd.x * sm.x;
        let m1 = dd.y * sm.y;
        for (var i = 0u; i < 8u; i += 1u) {
            out[i] = d1 * nibbles(w[qs + i], s % 2u == 1u) - m1;
        }
    } else if QTYPE == 14u {
        // Q6_K: half n of the super-block, quarter qq: the low (qq < 2) or high nibbles of
        // ql[64n + 32(qq % 2) + l], bits 2qq, 2qq + 1 of qh[32n + l], for l in 0..32; scale
        // 8n + l / 16 + 2qq.
        let bw = row + (b / 8u) * 53u;
        let t = b % 8u;
        let n = t / 4u;
        let qq = t % 4u;
        let ql = bw + 16u * n + 8u * (qq % 2u);
        let qh = bw + 32u + 8u * n;
        let d = unpack2x16float(w[bw + 52u]).x;
        let sc_idx = 8u * n + 2u * qq;
        let scales = w[bw + 48u + sc_idx / 4u];
        let d0 = d * f32(extractBits(bitcast<i32>(scales), 8u * (sc_idx % 4u), 8u));
        let d1 = d * f32(extractBits(bitcast<i32>(scales), 8u * (sc_idx % 4u) + 8u, 8u));
        for (var i = 0u; i < 8u; i += 1u) {
            let q = nibbles(w[ql + i], qq >= 2u) + 16.0 * byte_bits(w[qh + i], 2u * qq, 2u) - 32.0;
            out[i] = select(d1, d0, i < 4u) * q;
        }
    } else {
        for (var j = 0u; j < 4u; j += 1u) {
            let v = deq8(row, 4u * b + j, params.k);
            out[2u * j] = v.lo;
            out[2u * j + 1u] = v.hi;
        }
    }
    return out;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let blocks = (params.n + ROWS - 1u) / ROWS;
    let last = max(params.n, 1u) - 1u;
    // Work items per row.
    let per_row = (params.k + UNIT - 1u) / UNIT;
    let m_groups = (params.m + MB - 1u) / MB;
    // Elements per row of x.
    let ldx = select(params.k, 2u * params.k, GATED);
    // This invocation's row of the ROWS, and its first item of the row: runs of SPAN lanes
    // take SPAN adjacent items of one row, the ROWS rows' runs alternate, so one load
    // instruction of a subgroup touches SPAN places of x (each shared by ROWS lanes) and
    // ROWS short runs of weights, where one row per subgroup would touch 32 places of x.
    let r = (lanes.index / SPAN) % ROWS;
    let first = lanes.index % SPAN + SPAN * (lanes.index / (SPAN * ROWS));
    let stride = WG / ROWS;
    for (var mg = wid.z; mg < m_groups; mg += nwg.z) {
        let m0 = mg * MB;
        let scale = row_scales(m0, ldx, lanes);
        for (var blk = wid.x; blk < blocks; blk += nwg.x) {
            let r0 = blk * ROWS;
            // Rows past the part repeat its last one; their sums are not stored.
            let row = params.w_off + min(r0 + r, last) * params.row_words;
            var acc: array<f32, MAX_MB>;
            for (var b = first; b < per_row; b += stride) {
                var wv: array<vec4<f32>, 8>;
                if UNIT == 32u {
                    wv = deq32(row, b);
                } else {
                    let w8 = deq8(row, b, params.k);
                    wv[0] = w8.lo;
                    wv[1] = w8.hi;
                }
                let e = UNIT * b;
                for (var j = 0u; j < MB; j += 1u) {
                    // Rows of x past m repeat the last one; their sums are not stored.
                    let xb = params.x_off + min(m0 + j, params.m - 1u) * ldx;
                    var s = 0.0;
                    for (var q = 0u; q < UNIT / 4u; q += 1u) {
                        s += dot(wv[q], x4(xb, e + 4u * q));
                    }
                    acc[j] += s;
                }
            }
            for (var j = 0u; j < MB; j += 1u) {
                let mine = select(vec4<f32>(0.0), vec4<f32>(acc[j]), vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(r));
                let sums = workgroup_sum4(mine, lanes);
                let out = r0 + lanes.index;
                if lanes.index < ROWS && out < params.n && m0 + j < params.m {
                    store_y(params.y_off + (m0 + j) * params.ldy + params.n0 + out, sums[lanes.index] * scale[j]);
                }
            }
        }
    }
}
