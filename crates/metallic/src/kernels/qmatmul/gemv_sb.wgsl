// metallic: trusted
// Quantized GEMV for few rows of x (decode), the weights read a word per lane: y[m, n0 + r] =
// sum_k x[m, k] * W[r, k] for the rows r of one weight part, f32 accumulation. Types: the
// K-quants Q4_K, Q5_K, Q6_K (units of one super-block of 256 weights) and Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1 (units of one block of 32).
//
// LANES adjacent invocations share a unit: lane t reads words t, t + LANES, ... of its quants,
// so at every load the LANES lanes read adjacent words, and the x values those words multiply
// are adjacent too (four per nibble or byte of a word, one vector read). The blocks of 32 have
// one quant word per lane (LANES = 8 for Q8_0, 4 for the others). A workgroup computes ROWS
// adjacent outputs and every lane takes part in all ROWS rows: its x values are read once per
// unit and kept in registers for the ROWS rows (reads of x, not of the weights, were what
// limited the block GEMV, gemv.wgsl: docs/PERFORMANCE.md, 2026-12-06). Workgroups of WG lanes
// take WG / LANES units of their rows at a time; `workgroup_sum4` finishes the ROWS dot
// products. A row of x is summed in the same order whatever MB is, so its outputs are
// bit-identical with any MB. Grid: x = row groups, z = groups of MB rows of x, clamped to the
// device limit; workgroups loop over the rest.
//
// Quants become f32 without a conversion instruction (a quarter-rate one on some GPUs, and
// there is one per weight): a byte b OR'd into the mantissa of 2^23 reads as 2^23 + b, from
// which 2^23 is subtracted exactly (`in_place`). Bytes 1 and 3 of a word are read in place, at
// 256 times their value (a high nibble at 16 and 4096 times), and the x values they multiply
// were scaled by the inverse powers of two when read (exact), once for all ROWS rows. The
// offsets (mins, Q6_K's -32, Q4_0's -8, ...) multiply the sums of the lane's x values, also
// shared; Q8_0's signed bytes are read as unsigned, 128 more.
//
// Compiled without runtime checks: weight reads stay inside rows below `n` (rows past it read
// the last one) and units below K / `unit_elems()`, x reads inside rows below `m` and columns below
// K (`x4`), norm-weight reads below K (`nw`, K long: the host checks it), y writes are guarded by n and m, and every loop is bounded by the parameters the op
// validated.
//
// GATED: x holds rows of 2K, a gate half and an up half, and the product's input is
// act(gate) * up, read through `x4` as gemv.wgsl reads it.

// Adjacent outputs per workgroup: 1, 2, 4 or 8 (`workgroup_sum4` reduces up to four at a
// time, GROUPS times).
override ROWS: u32 = 4u;
override GROUPS: u32 = (ROWS + 3u) / 4u;
const MAX_GROUPS: u32 = 16u;
// Rows of x per workgroup, 1 to MAX_MB.
override MB: u32 = 1u;
const MAX_MB: u32 = 8u;
// Whether x is read through a gate (see above).
override GATED: bool = false;
// Whether x is read four elements at a time through `xv` (x's offset and K multiples of 4).
override XVEC: bool = false;
// Lanes per super-block, 4 or 8: each reads 32 / LANES of its 32 words of quants (qs, or ql
// for Q6_K).
override LANES: u32 = 8u;
const MAX_WORDS: u32 = 8u;
const TWO23: f32 = 8388608.0;

// The lane's x values in one super-block of one row of x: for its word u, the four its low
// nibbles multiply (`xlo`) and the four its high nibbles multiply (`xhi`), scaled as
// `in_place` reads the quants, and the sums of each four unscaled (`slo`, `shi`).
var<private> xlo: array<vec4<f32>, MAX_WORDS>;
var<private> xhi: array<vec4<f32>, MAX_WORDS>;
var<private> slo: array<f32, MAX_WORDS>;
var<private> shi: array<f32, MAX_WORDS>;

// Bits `mask` of bytes 0 and 2 of v, and bits `mask << 8` of bytes 1 and 3 where they are
// (256 times their value), as exact f32s.
fn in_place(v: u32, mask: u32) -> vec4<f32> {
    let b = vec4<u32>(v, v, v >> 16u, v >> 16u) & vec4<u32>(mask, mask << 8u, mask, mask << 8u);
    return bitcast<vec4<f32>>(b | vec4<u32>(0x4B000000u)) - TWO23;
}

// Nibbles read in place at 16 times their value (mask 0xF0): Q4_K, Q4_0, Q4_1.
fn high_in_place() -> bool {
    return QTYPE == 12u || QTYPE == 2u || QTYPE == 3u;
}

// Reads the lane's x values of the super-block whose first weight is `e0` (see `xlo`).
fn load_x(xb: u32, e0: u32, t: u32) {
    let lo_scale = vec4<f32>(1.0, 1.0 / 256.0, 1.0, 1.0 / 256.0);
    // High nibbles read in place are at 16 times their value; the 5- and 6-bit quants are
    // assembled into whole bytes.
    let hi_scale = select(lo_scale, lo_scale / 16.0, high_in_place());
    for (var u = 0u; u < quant_words() / LANES; u += 1u) {
        let e = e0 + lo_elem(LANES * u + t);
        let a = x4(xb, e);
        // Q8_0's word holds four weights only.
        var b = vec4<f32>(0.0);
        if QTYPE != 8u {
            b = x4(xb, e + hi_off());
        }
        slo[u] = (a.x + a.y) + (a.z + a.w);
        shi[u] = (b.x + b.y) + (b.z + b.w);
        xlo[u] = a * lo_scale;
        xhi[u] = b * hi_scale;
    }
}

// The lane's part of one Q4_K or Q5_K super-block (words from `bw`: d dmin, scales[12], then
// qs[128], or qh[32] and qs[128]) times x.
fn row_q4k(bw: u32, t: u32) -> f32 {
    let dm = unpack2x16float(w[bw]);
    let h0 = w[bw + 1u];
    let h1 = w[bw + 2u];
    let h2 = w[bw + 3u];
    // The 6-bit scales and mins of sub-blocks 0..4 and 4..8, all eight at once (GGML's
    // get_scale_min_k4), as `in_place` reads bytes: odd sub-blocks at 256 times.
    var sc = array<vec4<f32>, 2>(
        in_place(h0 & 0x3F3F3F3Fu, 0xFFu),
        in_place((h2 & 0x0F0F0F0Fu) | ((h0 >> 2u) & 0x30303030u), 0xFFu),
    );
    var mn = array<vec4<f32>, 2>(
        in_place(h1 & 0x3F3F3F3Fu, 0xFFu),
        in_place(((h2 >> 4u) & 0x0F0F0F0Fu) | ((h1 >> 2u) & 0x30303030u), 0xFFu),
    );
    // Even sub-blocks (low nibbles) and odd ones (high nibbles, scales at 256 times).
    var even = 0.0;
    var odd = 0.0;
    var min_even = 0.0;
    var min_odd = 0.0;
    for (var u = 0u; u < 32u / LANES; u += 1u) {
        // The word's group: sub-blocks 2j and 2j + 1 (t < LANES, which divides 8).
        let j = LANES * u / 8u;
        let c = 2u * (j % 2u);
        var lo = 0.0;
        var hi = 0.0;
        if QTYPE == 12u {
            let v = w[bw + 4u + LANES * u + t];
            lo = dot(in_place(v, 0x0Fu), xlo[u]);
            hi = dot(in_place(v, 0xF0u), xhi[u]);
        } else {
            // Q5_K: the fifth bit of weight l of sub-block s is bit s of qh[l].
            let wd = LANES * u + t;
            let v = w[bw + 12u + wd];
            let qh = w[bw + 4u + wd % 8u] >> (2u * j);
            let q_lo = (v & 0x0F0F0F0Fu) | ((qh & 0x01010101u) << 4u);
            let q_hi = ((v >> 4u) & 0x0F0F0F0Fu) | (((qh >> 1u) & 0x01010101u) << 4u);
            lo = dot(in_place(q_lo, 0xFFu), xlo[u]);
            hi = dot(in_place(q_hi, 0xFFu), xhi[u]);
        }
        even += sc[j / 2u][c] * lo;
        odd += sc[j / 2u][c + 1u] * hi;
        min_even += mn[j / 2u][c] * slo[u];
        min_odd += mn[j / 2u][c + 1u] * shi[u];
    }
    return dm.x * (even + odd / 256.0) - dm.y * (min_even + min_odd / 256.0);
}

// Bits 0 .. 4 of b at bit 4 of bytes 0 .. 4.
fn spread4(b: u32) -> u32 {
    return ((b & 1u) << 4u) | ((b & 2u) << 11u) | ((b & 4u) << 18u) | ((b & 8u) << 25u);
}

// The lane's part of one block of 32 (words from `bw`; common.wgsl) times x: its quant word t.
fn row_b32(bw: u32, t: u32) -> f32 {
    let v = w[bw + t];
    if QTYPE == 8u {
        // Q8_0: qs[32] d; signed bytes read as unsigned, 128 more.
        let d = unpack2x16float(w[bw + 8u]).x;
        return d * (dot(in_place(v ^ 0x80808080u, 0xFFu), xlo[0]) - 128.0 * slo[0]);
    }
    var lo = 0.0;
    var hi = 0.0;
    var dm = vec2<f32>(0.0);
    if QTYPE == 2u || QTYPE == 3u {
        // Q4_0, Q4_1: qs[16], then d (and m).
        lo = dot(in_place(v, 0x0Fu), xlo[0]);
        hi = dot(in_place(v, 0xF0u), xhi[0]);
        dm = unpack2x16float(w[bw + 4u]);
    } else {
        // Q5_0, Q5_1: qs[16], qh, then d (and m); bit e of qh is the fifth bit of weight e.
        let qh = w[bw + 4u];
        let q_lo = (v & 0x0F0F0F0Fu) | spread4(qh >> (4u * t));
        let q_hi = ((v >> 4u) & 0x0F0F0F0Fu) | spread4(qh >> (16u + 4u * t));
        lo = dot(in_place(q_lo, 0xFFu), xlo[0]);
        hi = dot(in_place(q_hi, 0xFFu), xhi[0]);
        dm = unpack2x16float(w[bw + 5u]);
    }
    let sum = slo[0] + shi[0];
    if QTYPE == 2u || QTYPE == 6u {
        // Q4_0: d (q - 8); Q5_0: d (q - 16).
        return dm.x * ((lo + hi) - select(16.0, 8.0, QTYPE == 2u) * sum);
    }
    return dm.x * (lo + hi) + dm.y * sum;
}

// The lane's part of one Q6_K super-block (words from `bw`: ql[128], qh[64], scales[16], d)
// times x.
fn row_q6k(bw: u32, t: u32) -> f32 {
    var acc = 0.0;
    for (var u = 0u; u < 32u / LANES; u += 1u) {
        // ql word 16n + 8h + l4: half n, quarters h (low nibbles) and h + 2 (high), l = 4 l4.
        let wd = LANES * u + t;
        let n = LANES * u / 16u;
        let h = (LANES * u / 8u) % 2u;
        let l4 = wd % 8u;
        let v = w[bw + wd];
        // Bits 2q, 2q + 1 of qh[32n + l] for quarter q.
        let qh = w[bw + 32u + 8u * n + l4] >> (2u * h);
        let q_lo = (v & 0x0F0F0F0Fu) | ((qh & 0x03030303u) << 4u);
        let q_hi = ((v >> 4u) & 0x0F0F0F0Fu) | (((qh >> 4u) & 0x03030303u) << 4u);
        // Scales 8n + 2h + l / 16 and 4 on: byte 2h + l4 / 4 of scale words 2n and 2n + 1.
        let at = 8u * (2u * h + l4 / 4u);
        let s_lo = f32(extractBits(bitcast<i32>(w[bw + 48u + 2u * n]), at, 8u));
        let s_hi = f32(extractBits(bitcast<i32>(w[bw + 49u + 2u * n]), at, 8u));
        let a = dot(in_place(q_lo, 0xFFu), xlo[u]) - 32.0 * slo[u];
        let b = dot(in_place(q_hi, 0xFFu), xhi[u]) - 32.0 * shi[u];
        acc += s_lo * a + s_hi * b;
    }
    return unpack2x16float(w[bw + 52u]).x * acc;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let blocks = (params.n + ROWS - 1u) / ROWS;
    let last = max(params.n, 1u) - 1u;
    let units = params.k / unit_elems();
    let m_groups = (params.m + MB - 1u) / MB;
    // Elements per row of x.
    let ldx = select(params.k, 2u * params.k, GATED);
    let t = lanes.index % LANES;
    for (var mg = wid.z; mg < m_groups; mg += nwg.z) {
        let m0 = mg * MB;
        let scale = row_scales(m0, ldx, lanes);
        for (var blk = wid.x; blk < blocks; blk += nwg.x) {
            let r0 = blk * ROWS;
            // Sums of row 4g + c of x row j in component c of acc[2j + g].
            var acc: array<vec4<f32>, MAX_GROUPS>;
            for (var sb = lanes.index / LANES; sb < units; sb += WG / LANES) {
                for (var j = 0u; j < MB; j += 1u) {
                    // Rows of x past m repeat the last one; their sums are not stored.
                    load_x(params.x_off + min(m0 + j, params.m - 1u) * ldx, unit_elems() * sb, t);
                    for (var g = 0u; g < GROUPS; g += 1u) {
                        var part = vec4<f32>(0.0);
                        for (var c = 0u; c < min(ROWS, 4u); c += 1u) {
                            // Rows past the part repeat its last one; their sums are not stored.
                            let row = min(r0 + 4u * g + c, last);
                            let bw = params.w_off + row * params.row_words + sb * unit_words();
                            if with_mins() {
                                part[c] = row_q4k(bw, t);
                            } else if QTYPE == 14u {
                                part[c] = row_q6k(bw, t);
                            } else {
                                part[c] = row_b32(bw, t);
                            }
                        }
                        acc[2u * j + g] += part;
                    }
                }
            }
            for (var j = 0u; j < MB; j += 1u) {
                for (var g = 0u; g < GROUPS; g += 1u) {
                    let sums = workgroup_sum4(acc[2u * j + g], lanes);
                    let out = r0 + 4u * g + lanes.index;
                    if lanes.index < min(ROWS, 4u) && out < params.n && m0 + j < params.m {
                        store_y(params.y_off + (m0 + j) * params.ldy + params.n0 + out, sums[lanes.index] * scale[j]);
                    }
                }
            }
        }
    }
}
