// Quantized GEMV for CPU adapters (llvmpipe): y[m, n0 + r] = sum_k x[m, k] * W[r, k], each
// invocation two whole weight rows, no workgroup memory, no barrier, no subgroup operation.
//
// A CPU adapter runs a workgroup's invocations as SIMD lanes of one thread, turns every
// storage load whose address differs between lanes into a loop of scalar loads (one per
// lane) and every barrier into a coroutine switch. So here each lane walks its own rows a
// block of 32 weights at a time: x's 32 values are read once per block as 8 vec4 loads
// (cheaper per element than scalar loads) and shared by the lane's two rows, and each
// block's scales are read and decoded once, not once per 8 weights (`dot32`, below, decodes
// the same repacked layout as `deq8` in common.wgsl, in GGML's operation order within each
// scale group, the scale applied to the group's dot product).
//
// Needs K a multiple of 32 and x's rows starting on a 4-element boundary (x_off and K
// multiples of 4): the host takes this path only then. Grid: x = row pairs of WG lanes,
// z = rows of x, clamped to the device limit; workgroups loop over the rest.
//
// `params.flags` as in gemv_x_common.wgsl: NORM_X reads x times the norm's weight `nw` and
// multiplies each row's sums by its 1 / sqrt(mean(x^2) + eps), which every lane computes
// itself (no barrier); ACCUMULATE adds the product, rounded to T, to y.

struct Params {
    // Rows of this part, weights per row, rows of x.
    n: u32,
    k: u32,
    m: u32,
    // Words per row.
    row_words: u32,
    x_off: u32,
    w_off: u32,
    y_off: u32,
    // Row stride of y (N of the whole matrix) and this part's first output column.
    ldy: u32,
    n0: u32,
    nw_off: u32,
    flags: u32,
    eps: f32,
}

const NORM_X: u32 = 1u;
const ACCUMULATE: u32 = 2u;

@group(0) @binding(0) var<storage, read_write> x: array<vec4<T>>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
@group(0) @binding(3) var<storage, read_write> nw: array<T>;

// The 32 values of x one block multiplies, and their sum (for the types with an offset).
struct X32 {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
    a4: vec4<f32>,
    a5: vec4<f32>,
    a6: vec4<f32>,
    a7: vec4<f32>,
    sum: f32,
}

// Elements 4i .. 4i + 4 of the norm's weight.
fn nw4(i: u32) -> vec4<f32> {
    let g = params.nw_off + 4u * i;
    return vec4<f32>(f32(nw[g]), f32(nw[g + 1u]), f32(nw[g + 2u]), f32(nw[g + 3u]));
}

// x's vector v (the `e`-th vector of its row) as the product reads it: times the norm's
// weight with NORM_X.
fn xw(v: u32, e: u32) -> vec4<f32> {
    if (params.flags & NORM_X) != 0u {
        return vec4<f32>(x[v]) * nw4(e);
    }
    return vec4<f32>(x[v]);
}

// The 32 values of x block b multiplies, from the row of x starting at vector `xv`.
fn x32(xv: u32, b: u32) -> X32 {
    var s: X32;
    let v = xv + 8u * b;
    let e = 8u * b;
    s.a0 = xw(v, e);
    s.a1 = xw(v + 1u, e + 1u);
    s.a2 = xw(v + 2u, e + 2u);
    s.a3 = xw(v + 3u, e + 3u);
    s.a4 = xw(v + 4u, e + 4u);
    s.a5 = xw(v + 5u, e + 5u);
    s.a6 = xw(v + 6u, e + 6u);
    s.a7 = xw(v + 7u, e + 7u);
    s.sum = dot((s.a0 + s.a1) + (s.a2 + s.a3) + ((s.a4 + s.a5) + (s.a6 + s.a7)), vec4<f32>(1.0));
    return s;
}

// Dot products of 4 words of 4 quants each (nibbles of `lo`/`hi` chosen by the caller) with
// x's vec4s `a`, `b`, `c`, `d`.
fn dot4(q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> f32 {
    return (dot(q0, a) + dot(q1, b)) + (dot(q2, c) + dot(q3, d));
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1 block at word `bw`: byte j of qs holds weight j (low nibble) and
// weight 16 + j (high nibble); bit i of Q5's qh is weight i's fifth bit.
fn dot_q4_q5(bw: u32, xs: X32) -> f32 {
    let five = QTYPE == 6u || QTYPE == 7u;
    let q0 = w[bw];
    let q1 = w[bw + 1u];
    let q2 = w[bw + 2u];
    let q3 = w[bw + 3u];
    var l0 = nibbles(q0, false);
    var l1 = nibbles(q1, false);
    var l2 = nibbles(q2, false);
    var l3 = nibbles(q3, false);
    var h0 = nibbles(q0, true);
    var h1 = nibbles(q1, true);
    var h2 = nibbles(q2, true);
    var h3 = nibbles(q3, true);
    var dm: vec2<f32>;
    if five {
        let qh = w[bw + 4u];
        l0 += 16.0 * bits4(qh, 0u);
        l1 += 16.0 * bits4(qh, 4u);
        l2 += 16.0 * bits4(qh, 8u);
        l3 += 16.0 * bits4(qh, 12u);
        h0 += 16.0 * bits4(qh, 16u);
        h1 += 16.0 * bits4(qh, 20u);
        h2 += 16.0 * bits4(qh, 24u);
        h3 += 16.0 * bits4(qh, 28u);
        dm = unpack2x16float(w[bw + 5u]);
    } else {
        dm = unpack2x16float(w[bw + 4u]);
    }
    if QTYPE == 2u || QTYPE == 6u {
        // Symmetric: w = d (q - 8) or d (q - 16).
        let z = select(8.0, 16.0, five);
        let s = dot4(l0 - z, l1 - z, l2 - z, l3 - z, xs.a0, xs.a1, xs.a2, xs.a3)
            + dot4(h0 - z, h1 - z, h2 - z, h3 - z, xs.a4, xs.a5, xs.a6, xs.a7);
        return s * dm.x;
    }
    // With a minimum: w = d q + m.
    let s = dot4(l0, l1, l2, l3, xs.a0, xs.a1, xs.a2, xs.a3) + dot4(h0, h1, h2, h3, xs.a4, xs.a5, xs.a6, xs.a7);
    return s * dm.x + dm.y * xs.sum;
}

fn dot_q8_0(bw: u32, xs: X32) -> f32 {
    let s = dot4(sbytes4(w[bw]), sbytes4(w[bw + 1u]), sbytes4(w[bw + 2u]), sbytes4(w[bw + 3u]), xs.a0, xs.a1, xs.a2, xs.a3)
        + dot4(sbytes4(w[bw + 4u]), sbytes4(w[bw + 5u]), sbytes4(w[bw + 6u]), sbytes4(w[bw + 7u]), xs.a4, xs.a5, xs.a6, xs.a7);
    return s * unpack2x16float(w[bw + 8u]).x;
}

// Sub-block s (32 weights) of the Q4_K / Q5_K super-block at word `bw`: the low (s even) or
// high nibbles of qs[32 (s / 2) ..], Q5_K's fifth bit bit s of qh[l]; w = d sc q - dmin m.
fn dot_q4k_q5k(bw: u32, s: u32, xs: X32) -> f32 {
    let five = QTYPE == 13u;
    let qs = bw + select(4u, 12u, five) + 8u * (s / 2u);
    let high = s % 2u == 1u;
    var n0 = nibbles(w[qs], high);
    var n1 = nibbles(w[qs + 1u], high);
    var n2 = nibbles(w[qs + 2u], high);
    var n3 = nibbles(w[qs + 3u], high);
    var n4 = nibbles(w[qs + 4u], high);
    var n5 = nibbles(w[qs + 5u], high);
    var n6 = nibbles(w[qs + 6u], high);
    var n7 = nibbles(w[qs + 7u], high);
    if five {
        n0 += 16.0 * byte_bits(w[bw + 4u], s, 1u);
        n1 += 16.0 * byte_bits(w[bw + 5u], s, 1u);
        n2 += 16.0 * byte_bits(w[bw + 6u], s, 1u);
        n3 += 16.0 * byte_bits(w[bw + 7u], s, 1u);
        n4 += 16.0 * byte_bits(w[bw + 8u], s, 1u);
        n5 += 16.0 * byte_bits(w[bw + 9u], s, 1u);
        n6 += 16.0 * byte_bits(w[bw + 10u], s, 1u);
        n7 += 16.0 * byte_bits(w[bw + 11u], s, 1u);
    }
    let dd = unpack2x16float(w[bw]);
    let sm = scale_min_k4(bw + 1u, s);
    let q = dot4(n0, n1, n2, n3, xs.a0, xs.a1, xs.a2, xs.a3) + dot4(n4, n5, n6, n7, xs.a4, xs.a5, xs.a6, xs.a7);
    return (dd.x * sm.x) * q - (dd.y * sm.y) * xs.sum;
}

// Sub-block s (32 weights) of the Q6_K super-block at word `bw`: half h = s / 4, quarter
// qq = s % 4: the low (qq < 2) or high nibbles of ql[64 h + 32 (qq % 2) + l], bits 2 qq and
// 2 qq + 1 of qh[32 h + l]; two scales, 8 h + 2 qq (l < 16) and the next.
fn dot_q6k(bw: u32, s: u32, xs: X32) -> f32 {
    let h = s / 4u;
    let qq = s % 4u;
    let ql = bw + 16u * h + 8u * (qq % 2u);
    let qh = bw + 32u + 8u * h;
    let high = qq >= 2u;
    let sh = 2u * qq;
    let q0 = nibbles(w[ql], high) + 16.0 * byte_bits(w[qh], sh, 2u) - 32.0;
    let q1 = nibbles(w[ql + 1u], high) + 16.0 * byte_bits(w[qh + 1u], sh, 2u) - 32.0;
    let q2 = nibbles(w[ql + 2u], high) + 16.0 * byte_bits(w[qh + 2u], sh, 2u) - 32.0;
    let q3 = nibbles(w[ql + 3u], high) + 16.0 * byte_bits(w[qh + 3u], sh, 2u) - 32.0;
    let q4 = nibbles(w[ql + 4u], high) + 16.0 * byte_bits(w[qh + 4u], sh, 2u) - 32.0;
    let q5 = nibbles(w[ql + 5u], high) + 16.0 * byte_bits(w[qh + 5u], sh, 2u) - 32.0;
    let q6 = nibbles(w[ql + 6u], high) + 16.0 * byte_bits(w[qh + 6u], sh, 2u) - 32.0;
    let q7 = nibbles(w[ql + 7u], high) + 16.0 * byte_bits(w[qh + 7u], sh, 2u) - 32.0;
    // Scales 8h + 2qq and 8h + 2qq + 1: one 16-bit half of one scales word.
    let i = 8u * h + 2u * qq;
    let sw = w[bw + 48u + i / 4u];
    let sc0 = f32(extractBits(bitcast<i32>(sw), 8u * (i % 4u), 8u));
    let sc1 = f32(extractBits(bitcast<i32>(sw), 8u * (i % 4u) + 8u, 8u));
    let d = unpack2x16float(w[bw + 52u]).x;
    return d * (sc0 * dot4(q0, q1, q2, q3, xs.a0, xs.a1, xs.a2, xs.a3) + sc1 * dot4(q4, q5, q6, q7, xs.a4, xs.a5, xs.a6, xs.a7));
}

// Sub-block s (32 weights) of the Q2_K / Q3_K super-block at word `bw`: half h = s / 4,
// quarter qq = s % 4: bits 2 qq, 2 qq + 1 of qs[32 h + l], Q3_K's third bit bit 4 h + qq of
// hmask[l] (clear: minus 4); two scales, 8 h + 2 qq (l < 16) and the next. Q2_K:
// w = d sc q - dmin m (scale byte: sc low nibble, m high); Q3_K: w = d (sc - 32) q.
fn dot_q2k_q3k(bw: u32, s: u32, xs: X32) -> f32 {
    let three = QTYPE == 11u;
    let h = s / 4u;
    let qq = s % 4u;
    let qs = bw + select(4u, 8u, three) + 8u * h;
    let sh = 2u * qq;
    var q0 = byte_bits(w[qs], sh, 2u);
    var q1 = byte_bits(w[qs + 1u], sh, 2u);
    var q2 = byte_bits(w[qs + 2u], sh, 2u);
    var q3 = byte_bits(w[qs + 3u], sh, 2u);
    var q4 = byte_bits(w[qs + 4u], sh, 2u);
    var q5 = byte_bits(w[qs + 5u], sh, 2u);
    var q6 = byte_bits(w[qs + 6u], sh, 2u);
    var q7 = byte_bits(w[qs + 7u], sh, 2u);
    let i = 8u * h + 2u * qq;
    if three {
        let hb = 4u * h + qq;
        q0 += 4.0 * byte_bits(w[bw], hb, 1u) - 4.0;
        q1 += 4.0 * byte_bits(w[bw + 1u], hb, 1u) - 4.0;
        q2 += 4.0 * byte_bits(w[bw + 2u], hb, 1u) - 4.0;
        q3 += 4.0 * byte_bits(w[bw + 3u], hb, 1u) - 4.0;
        q4 += 4.0 * byte_bits(w[bw + 4u], hb, 1u) - 4.0;
        q5 += 4.0 * byte_bits(w[bw + 5u], hb, 1u) - 4.0;
        q6 += 4.0 * byte_bits(w[bw + 6u], hb, 1u) - 4.0;
        q7 += 4.0 * byte_bits(w[bw + 7u], hb, 1u) - 4.0;
        let d = unpack2x16float(w[bw + 27u]).x;
        return d * (scale_k3(bw + 24u, i) * dot4(q0, q1, q2, q3, xs.a0, xs.a1, xs.a2, xs.a3)
            + scale_k3(bw + 24u, i + 1u) * dot4(q4, q5, q6, q7, xs.a4, xs.a5, xs.a6, xs.a7));
    }
    // Scale bytes i and i + 1: one 16-bit half of one scales word (i is even).
    let sw = w[bw + i / 4u] >> (8u * (i % 4u));
    let dd = unpack2x16float(w[bw + 20u]);
    let sum0 = dot((xs.a0 + xs.a1) + (xs.a2 + xs.a3), vec4<f32>(1.0));
    let sum1 = dot((xs.a4 + xs.a5) + (xs.a6 + xs.a7), vec4<f32>(1.0));
    let q = f32(sw & 15u) * dot4(q0, q1, q2, q3, xs.a0, xs.a1, xs.a2, xs.a3)
        + f32((sw >> 8u) & 15u) * dot4(q4, q5, q6, q7, xs.a4, xs.a5, xs.a6, xs.a7);
    let m = f32((sw >> 4u) & 15u) * sum0 + f32((sw >> 12u) & 15u) * sum1;
    return dd.x * q - dd.y * m;
}

// The IQ4_NL block at word `bw`, laid out as Q4_0 (qs[16], d) with table indices for nibbles.
fn dot_iq4nl(bw: u32, xs: X32) -> f32 {
    let q0 = w[bw];
    let q1 = w[bw + 1u];
    let q2 = w[bw + 2u];
    let q3 = w[bw + 3u];
    let s = dot4(iq4nl4(q0, false), iq4nl4(q1, false), iq4nl4(q2, false), iq4nl4(q3, false), xs.a0, xs.a1, xs.a2, xs.a3)
        + dot4(iq4nl4(q0, true), iq4nl4(q1, true), iq4nl4(q2, true), iq4nl4(q3, true), xs.a4, xs.a5, xs.a6, xs.a7);
    return s * unpack2x16float(w[bw + 4u]).x;
}

// Block ib (32 weights) of the IQ4_XS super-block at word `bw`: an IQ4_NL block's qs from
// qs[16 ib] (word 2 + 4 ib); scale nibble ib of scales_l (word 1) and bits 2 ib, 2 ib + 1 of
// scales_h (word 0's high half), less 32.
fn dot_iq4xs(bw: u32, ib: u32, xs: X32) -> f32 {
    let qs = bw + 2u + 4u * ib;
    let q0 = w[qs];
    let q1 = w[qs + 1u];
    let q2 = w[qs + 2u];
    let q3 = w[qs + 3u];
    let s = dot4(iq4nl4(q0, false), iq4nl4(q1, false), iq4nl4(q2, false), iq4nl4(q3, false), xs.a0, xs.a1, xs.a2, xs.a3)
        + dot4(iq4nl4(q0, true), iq4nl4(q1, true), iq4nl4(q2, true), iq4nl4(q3, true), xs.a4, xs.a5, xs.a6, xs.a7);
    let head = w[bw];
    let ls = extractBits(w[bw + 1u], 4u * ib, 4u) | (extractBits(head, 16u + 2u * ib, 2u) << 4u);
    return (unpack2x16float(head).x * f32(i32(ls) - 32)) * s;
}

// Weights 4i .. 4i + 4 of a float row from word `bw` on (32 weights at most past it).
fn float4(bw: u32, i: u32) -> vec4<f32> {
    if QTYPE == 0u {
        let b = bw + 4u * i;
        return bitcast<vec4<f32>>(vec4<u32>(w[b], w[b + 1u], w[b + 2u], w[b + 3u]));
    }
    let b = bw + 2u * i;
    if QTYPE == 30u {
        let lo = w[b];
        let hi = w[b + 1u];
        return bitcast<vec4<f32>>(vec4<u32>(lo << 16u, lo & 0xFFFF0000u, hi << 16u, hi & 0xFFFF0000u));
    }
    return vec4<f32>(unpack2x16float(w[b]), unpack2x16float(w[b + 1u]));
}

fn dot_float(bw: u32, xs: X32) -> f32 {
    return dot4(float4(bw, 0u), float4(bw, 1u), float4(bw, 2u), float4(bw, 3u), xs.a0, xs.a1, xs.a2, xs.a3)
        + dot4(float4(bw, 4u), float4(bw, 5u), float4(bw, 6u), float4(bw, 7u), xs.a4, xs.a5, xs.a6, xs.a7);
}

// The dot product of block b (weights 32b .. 32b + 32) of the row starting at word `row`
// with `xs`.
fn dot32(row: u32, b: u32, xs: X32) -> f32 {
    if QTYPE == 0u {
        return dot_float(row + 32u * b, xs);
    } else if QTYPE == 1u || QTYPE == 30u {
        return dot_float(row + 16u * b, xs);
    } else if QTYPE == 2u || QTYPE == 3u {
        return dot_q4_q5(row + 5u * b, xs);
    } else if QTYPE == 6u || QTYPE == 7u {
        return dot_q4_q5(row + 6u * b, xs);
    } else if QTYPE == 8u {
        return dot_q8_0(row + 9u * b, xs);
    } else if QTYPE == 12u {
        return dot_q4k_q5k(row + 36u * (b / 8u), b % 8u, xs);
    } else if QTYPE == 13u {
        return dot_q4k_q5k(row + 44u * (b / 8u), b % 8u, xs);
    } else if QTYPE == 14u {
        return dot_q6k(row + 53u * (b / 8u), b % 8u, xs);
    } else if QTYPE == 10u {
        return dot_q2k_q3k(row + 21u * (b / 8u), b % 8u, xs);
    } else if QTYPE == 11u {
        return dot_q2k_q3k(row + 28u * (b / 8u), b % 8u, xs);
    } else if QTYPE == 20u {
        return dot_iq4nl(row + 5u * b, xs);
    } else if QTYPE == 23u {
        return dot_iq4xs(row + 34u * (b / 8u), b % 8u, xs);
    }
    return 0.0;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let last = max(params.n, 1u) - 1u;
    let blocks = params.k / 32u;
    let pairs = (params.n + 2u * WG - 1u) / (2u * WG);
    for (var mz = wid.z; mz < params.m; mz += nwg.z) {
        let xv = (params.x_off + mz * params.k) / 4u;
        var scale = 1.0;
        if (params.flags & NORM_X) != 0u {
            var ss = 0.0;
            for (var i = 0u; i < params.k / 4u; i += 1u) {
                let v = vec4<f32>(x[xv + i]);
                ss += dot(v, v);
            }
            scale = inverseSqrt(ss / f32(params.k) + params.eps);
        }
        for (var p = wid.x; p < pairs; p += nwg.x) {
            // Lane l takes rows l and l + WG of the pair's 2 WG; rows past the part repeat its
            // last one and are not stored.
            let r0 = p * 2u * WG + lane;
            let r1 = r0 + WG;
            let w0 = params.w_off + min(r0, last) * params.row_words;
            let w1 = params.w_off + min(r1, last) * params.row_words;
            var acc0 = 0.0;
            var acc1 = 0.0;
            for (var b = 0u; b < blocks; b += 1u) {
                let xs = x32(xv, b);
                acc0 += dot32(w0, b, xs);
                acc1 += dot32(w1, b, xs);
            }
            let yb = params.y_off + mz * params.ldy + params.n0;
            if r0 < params.n {
                store_y(yb + r0, acc0 * scale);
            }
            if r1 < params.n {
                store_y(yb + r1, acc1 * scale);
            }
        }
    }
}

// Stores one output: y[i] = v, or y[i] += v (ACCUMULATE), v rounded to T first.
fn store_y(i: u32, v: f32) {
    if (params.flags & ACCUMULATE) != 0u {
        y[i] = T(f32(y[i]) + f32(T(v)));
    } else {
        y[i] = T(v);
    }
}
