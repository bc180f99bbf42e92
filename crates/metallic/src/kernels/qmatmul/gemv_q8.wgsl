// metallic: trusted
// Experimental quantized GEMV over x rounded to 8 bits: y[m, n0 + r] = sum_k x[m, k] * W[r, k]
// for the rows r of one weight part, with x first quantized to blocks of 32 signed bytes
// (`quantize`), then multiplied four weights at a time with packed integer dot products
// (`main`, `dot4I8Packed`: one instruction where the device has integer dot products, a few
// shifts and multiplies elsewhere). Types: Q4_K, Q5_K, Q6_K (units of a super-block of 256
// weights), Q8_0, Q4_0 (units of a block of 32).
//
// Quantized x (`xq`, one row of `params.q_stride` = K/4 + K/16 words per row of x, from
// `params.q_off`):
//   words 0 .. K/4          the quants, weight e at byte e % 4 of word e / 4 (signed bytes);
//   words K/4 + 2b, + 1     block b's scale d = max|x| / 127 and its sum d * sum(q), as f32
//                           bits; a block of zeros has d = 0 and zero quants.
// A lane that multiplies weight word v (four weights of one block) reads the one x word of the
// same four weights: LANES adjacent lanes read adjacent words of x as they read adjacent words
// of W.
//
// The GEMV keeps gemv_sb.wgsl's layout: LANES adjacent invocations share a unit, lane t reads
// words t, t + LANES, ... of its quants; a workgroup computes ROWS adjacent outputs for MB rows
// of x, the x words of a unit read once into registers for the ROWS rows; `workgroup_sum4`
// finishes the ROWS dot products. Per word of quants: the weights' nibbles (or bytes) as four
// signed bytes, offsets folded into them where they are constant (Q4_0's -8, Q6_K's -32),
// one `dot4I8Packed` with x's word, the i32 times the weights' integer sub-block scale, then
// one f32 FMA with x's block scale. Q4_K's and Q5_K's mins multiply x's block sums: lane t
// takes sub-blocks t, t + LANES, ... of each super-block. Accumulation is in f32 across words.
//
// Compiled without runtime checks: `quantize` reads x inside rows below `m` (K elements each
// from `x_off`) and writes whole blocks of rows below `m`; `main` reads weights inside rows
// below `n` (rows past it read the last one) and units below K / `unit_elems()`, xq inside rows
// below `m` (rows past it read the last one) and their `q_stride` words; y writes are guarded
// by n and m; every loop is bounded by the parameters the op validated; every divisor is a
// constant or an override.

// Adjacent outputs per workgroup: 1, 2, 4 or 8 (`workgroup_sum4` reduces up to four at a
// time, GROUPS times).
override ROWS: u32 = 4u;
override GROUPS: u32 = (ROWS + 3u) / 4u;
const MAX_GROUPS: u32 = 16u;
// Rows of x per workgroup, 1 to MAX_MB.
override MB: u32 = 1u;
const MAX_MB: u32 = 8u;
// Lanes per unit: 4 or 8 for the K-quants, 8 for Q8_0, 4 for Q4_0.
override LANES: u32 = 8u;
const MAX_WORDS: u32 = 8u;

struct Params {
    // Rows of this part, weights per row, rows of x.
    n: u32,
    k: u32,
    m: u32,
    // Words per weight row.
    row_words: u32,
    x_off: u32,
    w_off: u32,
    y_off: u32,
    // Row stride of y (N of the whole matrix) and this part's first output column.
    ldy: u32,
    n0: u32,
    // First word and row stride (words) of the quantized x.
    q_off: u32,
    q_stride: u32,
}

// x (`quantize` reads it).
@group(0) @binding(0) var<storage, read_write> x: array<T>;
// The weights (`main`).
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
// The output (`main`).
@group(0) @binding(2) var<storage, read_write> y: array<T>;
// Quantized x (`quantize` writes it, `main` reads it).
@group(0) @binding(3) var<storage, read_write> xq: array<u32>;

// ---- quantize: one invocation per block of 32; grid x = blocks of a row, y = rows of x ----

@compute @workgroup_size(WG)
fn quantize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blocks = params.k / 32u;
    let b = gid.x;
    if b >= blocks {
        return;
    }
    for (var row = gid.y; row < params.m; row += nwg.y) {
        let base = params.x_off + row * params.k + 32u * b;
        var v: array<f32, 32>;
        var amax = 0.0;
        for (var i = 0u; i < 32u; i += 1u) {
            v[i] = f32(x[base + i]);
            amax = max(amax, abs(v[i]));
        }
        let d = amax / 127.0;
        var id = 0.0;
        if d > 0.0 {
            id = 1.0 / d;
        }
        let out = params.q_off + row * params.q_stride;
        var sum = 0i;
        for (var wd = 0u; wd < 8u; wd += 1u) {
            var word = 0u;
            for (var c = 0u; c < 4u; c += 1u) {
                let q = i32(clamp(round(v[4u * wd + c] * id), -127.0, 127.0));
                sum += q;
                word |= (bitcast<u32>(q) & 0xFFu) << (8u * c);
            }
            xq[out + 8u * b + wd] = word;
        }
        let at = out + params.k / 4u + 2u * b;
        xq[at] = bitcast<u32>(d);
        xq[at + 1u] = bitcast<u32>(d * f32(sum));
    }
}

// ---- main: the GEMV ----

// The lane's x words in one unit of one row of x: for its weight word u, the x word its low
// nibbles (Q8_0: bytes) multiply (`xlo`) and the one its high nibbles multiply (`xhi`), and
// those words' block scales (`dlo`, `dhi`); the block sums of sub-blocks t, t + LANES, ...
// (`xsum`, Q4_K and Q5_K).
var<private> xlo: array<u32, MAX_WORDS>;
var<private> xhi: array<u32, MAX_WORDS>;
var<private> dlo: array<f32, MAX_WORDS>;
var<private> dhi: array<f32, MAX_WORDS>;
var<private> xsum: array<f32, 2>;

// The units and the weights of each quant word: gemv_units_common.wgsl.

// Reads the lane's x words of unit `sb` of the quantized row at `xrow` (see `xlo`).
fn load_x(xrow: u32, sb: u32, t: u32) {
    let scales = xrow + params.k / 4u;
    let e0 = unit_elems() * sb;
    for (var u = 0u; u < quant_words() / LANES; u += 1u) {
        let e = e0 + lo_elem(LANES * u + t);
        xlo[u] = xq[xrow + e / 4u];
        dlo[u] = bitcast<f32>(xq[scales + 2u * (e / 32u)]);
        // Q8_0's word holds four weights only.
        if QTYPE != 8u {
            let f = e + hi_off();
            xhi[u] = xq[xrow + f / 4u];
            dhi[u] = bitcast<f32>(xq[scales + 2u * (f / 32u)]);
        }
    }
    if with_mins() {
        for (var i = 0u; i < 8u / LANES; i += 1u) {
            xsum[i] = bitcast<f32>(xq[scales + 2u * (8u * sb + t + LANES * i) + 1u]);
        }
    }
}

// Byte `i` (0 .. 8) of the pair of words (a, b), as u32.
fn byte8(a: u32, b: u32, i: u32) -> u32 {
    return extractBits(select(a, b, i >= 4u), 8u * (i % 4u), 8u);
}

// The lane's part of one Q4_K or Q5_K super-block (words from `bw`: d dmin, scales[12], then
// qs[128], or qh[32] and qs[128]) times x.
fn row_q4k(bw: u32, t: u32) -> f32 {
    let dm = unpack2x16float(w[bw]);
    let h0 = w[bw + 1u];
    let h1 = w[bw + 2u];
    let h2 = w[bw + 3u];
    // The 6-bit scales and mins of sub-blocks 0..4 and 4..8 as bytes (GGML's get_scale_min_k4).
    let sc_a = h0 & 0x3F3F3F3Fu;
    let sc_b = (h2 & 0x0F0F0F0Fu) | ((h0 >> 2u) & 0x30303030u);
    let mn_a = h1 & 0x3F3F3F3Fu;
    let mn_b = ((h2 >> 4u) & 0x0F0F0F0Fu) | ((h1 >> 2u) & 0x30303030u);
    var acc = 0.0;
    for (var u = 0u; u < 32u / LANES; u += 1u) {
        // The word's sub-blocks 2j and 2j + 1 (t < LANES, which divides 8).
        let wd = LANES * u + t;
        let j = LANES * u / 8u;
        var q_lo = 0u;
        var q_hi = 0u;
        if QTYPE == 12u {
            let v = w[bw + 4u + wd];
            q_lo = v & 0x0F0F0F0Fu;
            q_hi = (v >> 4u) & 0x0F0F0F0Fu;
        } else {
            // Q5_K: the fifth bit of weight l of sub-block s is bit s of qh[l].
            let v = w[bw + 12u + wd];
            let qh = w[bw + 4u + wd % 8u] >> (2u * j);
            q_lo = (v & 0x0F0F0F0Fu) | ((qh & 0x01010101u) << 4u);
            q_hi = ((v >> 4u) & 0x0F0F0F0Fu) | (((qh >> 1u) & 0x01010101u) << 4u);
        }
        let s_lo = i32(byte8(sc_a, sc_b, 2u * j));
        let s_hi = i32(byte8(sc_a, sc_b, 2u * j + 1u));
        acc += dlo[u] * f32(s_lo * dot4I8Packed(q_lo, xlo[u])) + dhi[u] * f32(s_hi * dot4I8Packed(q_hi, xhi[u]));
    }
    var mins = 0.0;
    for (var i = 0u; i < 8u / LANES; i += 1u) {
        mins += f32(byte8(mn_a, mn_b, t + LANES * i)) * xsum[i];
    }
    return dm.x * acc - dm.y * mins;
}

// Four 6-bit quants (bytes of q) less 32, as signed bytes: q + 0x60 stays below 0x100, and
// flipping bit 7 of each byte subtracts 128 modulo 256.
fn less32(q: u32) -> u32 {
    return (q + 0x60606060u) ^ 0x80808080u;
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
        let q_lo = less32((v & 0x0F0F0F0Fu) | ((qh & 0x03030303u) << 4u));
        let q_hi = less32(((v >> 4u) & 0x0F0F0F0Fu) | (((qh >> 4u) & 0x03030303u) << 4u));
        // Scales 8n + 2h + l / 16 and 4 on: byte 2h + l4 / 4 of scale words 2n and 2n + 1.
        let at = 8u * (2u * h + l4 / 4u);
        let s_lo = extractBits(bitcast<i32>(w[bw + 48u + 2u * n]), at, 8u);
        let s_hi = extractBits(bitcast<i32>(w[bw + 49u + 2u * n]), at, 8u);
        acc += dlo[u] * f32(s_lo * dot4I8Packed(q_lo, xlo[u])) + dhi[u] * f32(s_hi * dot4I8Packed(q_hi, xhi[u]));
    }
    return unpack2x16float(w[bw + 52u]).x * acc;
}

// The lane's part of one block of 32 (words from `bw`; common.wgsl) times x: its quant word t.
fn row_b32(bw: u32, t: u32) -> f32 {
    let v = w[bw + t];
    if QTYPE == 8u {
        // Q8_0: qs[32] d, signed bytes as they are.
        return unpack2x16float(w[bw + 8u]).x * dlo[0] * f32(dot4I8Packed(v, xlo[0]));
    }
    // Q4_0: qs[16] d, nibbles less 8 as signed bytes (q + 0x78 stays below 0x100; flipping bit
    // 7 subtracts 128 modulo 256).
    let q_lo = ((v & 0x0F0F0F0Fu) + 0x78787878u) ^ 0x80808080u;
    let q_hi = (((v >> 4u) & 0x0F0F0F0Fu) + 0x78787878u) ^ 0x80808080u;
    let dot = dot4I8Packed(q_lo, xlo[0]) + dot4I8Packed(q_hi, xhi[0]);
    return unpack2x16float(w[bw + 4u]).x * dlo[0] * f32(dot);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let blocks = (params.n + ROWS - 1u) / ROWS;
    let last = max(params.n, 1u) - 1u;
    let units = params.k / unit_elems();
    let m_groups = (params.m + MB - 1u) / MB;
    let t = lanes.index % LANES;
    for (var mg = wid.z; mg < m_groups; mg += nwg.z) {
        let m0 = mg * MB;
        for (var blk = wid.x; blk < blocks; blk += nwg.x) {
            let r0 = blk * ROWS;
            // Sums of row 4g + c of x row j in component c of acc[2j + g].
            var acc: array<vec4<f32>, MAX_GROUPS>;
            for (var sb = lanes.index / LANES; sb < units; sb += WG / LANES) {
                for (var j = 0u; j < MB; j += 1u) {
                    // Rows of x past m repeat the last one; their sums are not stored.
                    load_x(params.q_off + min(m0 + j, params.m - 1u) * params.q_stride, sb, t);
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
                        y[params.y_off + (m0 + j) * params.ldy + params.n0 + out] = T(sums[lanes.index]);
                    }
                }
            }
        }
    }
}
