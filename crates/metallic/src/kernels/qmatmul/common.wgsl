
// ---- common.wgsl: decoding the repacked quantized weights (appended to each qmatmul kernel) ----
//
// The weights are `w: array<u32>` (each kernel declares the binding), one matrix part: rows
// of `row_words` words each, a row the repacked blocks of GGML's layout (see `mod.rs`):
//   F32   one word per weight          F16/BF16  two weights per word (low half first)
//   Q4_0  qs[16] d                     (5 words)  Q4_1  qs[16] d m        (5 words)
//   Q5_0  qs[16] qh d                  (6 words)  Q5_1  qs[16] qh d m     (6 words)
//   Q8_0  qs[32] d                     (9 words)  IQ4_NL qs[16] d       (5 words)
//   Q2_K  scales[16] qs[64] d dmin     (21 words, GGML's own)
//   Q3_K  hmask[32] qs[64] scales[12] d (28 words: GGML's 110 bytes and 2 of padding)
//   Q4_K  d dmin scales[12] qs[128]    (36 words, GGML's own)
//   Q5_K  d dmin scales[12] qh[32] qs[128] (44 words, GGML's own)
//   Q6_K  ql[128] qh[64] scales[16] d  (53 words: GGML's 210 bytes and 2 of padding)
//   IQ4_XS d scales_h scales_l[4] qs[128] (34 words, GGML's own)
// f16 fields share a word (low half first) and pad it with zeros.
//
// `deq8(row, g, k)` decodes the weights 8g .. 8g + 8 of the row starting at word `row`, in f32
// with GGML's own operation order; for the float types weights at or past `k` read as 0 (the
// quantized types have whole blocks).

// GGML type id of the weights.
override QTYPE: u32 = 8u;

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// One nibble (low or high) of each byte of a word, as f32.
fn nibbles(v: u32, high: bool) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> (vec4<u32>(0u, 8u, 16u, 24u) + select(0u, 4u, high))) & vec4<u32>(15u));
}

// The four bytes of a word as signed values.
fn sbytes4(v: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(v)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Bits `first`, `first + 1`, `first + 2`, `first + 3` of a word, as 0 or 1.
fn bits4(v: u32, first: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> (vec4<u32>(0u, 1u, 2u, 3u) + first)) & vec4<u32>(1u));
}

// Bits `first + 8i` .. (`width` of them) of byte i of a word.
fn byte_bits(v: u32, first: u32, width: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> (vec4<u32>(0u, 8u, 16u, 24u) + first)) & vec4<u32>((1u << width) - 1u));
}

// Byte `i` of the words from `base` on.
fn byte_at(base: u32, i: u32) -> u32 {
    return (w[base + i / 4u] >> (8u * (i % 4u))) & 255u;
}

fn f32_at(row: u32, e: u32, k: u32) -> f32 {
    var v = 0.0;
    if e < k {
        v = bitcast<f32>(w[row + e]);
    }
    return v;
}

// The 16-bit pair holding weights e, e + 1 (e even), as f32: F16 or BF16.
fn half_pair(row: u32, e: u32, k: u32) -> vec2<f32> {
    var v = vec2<f32>(0.0);
    if e < k {
        let word = w[row + e / 2u];
        if QTYPE == 30u {
            v = vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xFFFF0000u));
        } else {
            v = unpack2x16float(word);
        }
    }
    return v;
}

// Scale and min of sub-block `s` of a Q4_K / Q5_K super-block whose scale bytes start at word
// `base` (GGML's get_scale_min_k4).
fn scale_min_k4(base: u32, s: u32) -> vec2<f32> {
    if s < 4u {
        return vec2<f32>(f32(byte_at(base, s) & 63u), f32(byte_at(base, s + 4u) & 63u));
    }
    let hi = byte_at(base, s + 4u);
    let sc = (hi & 15u) | ((byte_at(base, s - 4u) >> 6u) << 4u);
    let m = (hi >> 4u) | ((byte_at(base, s) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// The 6-bit scale of block `j` (0..16) of a Q3_K super-block whose 12 scale bytes start at
// word `base`, less 32: low 4 bits the low (j < 8) or high nibble of byte j % 8, high 2 bits
// bits 2 (j / 4), 2 (j / 4) + 1 of byte 8 + j % 4.
fn scale_k3(base: u32, j: u32) -> f32 {
    let low = (byte_at(base, j % 8u) >> (4u * (j / 8u))) & 15u;
    let high = (byte_at(base, 8u + j % 4u) >> (2u * (j / 4u))) & 3u;
    return f32(i32(low | (high << 4u)) - 32);
}

// The value at index `q` (0..16) of GGML's kvalues_iq4nl, the table IQ4_NL and IQ4_XS indices
// select (-127, -104, -83, -65, -49, ..., 89, 113), kept as signed bytes four a word. (The
// vector is a local: a module-scope `const` one makes naga 30's override processing fail with
// a type forward dependency.)
fn iq4nl(q: u32) -> f32 {
    let table = vec4<u32>(0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u);
    return f32(extractBits(bitcast<i32>(table[q / 4u]), 8u * (q % 4u), 8u));
}

// The IQ4_NL table values at one nibble (low or high) of each byte of a word.
fn iq4nl4(v: u32, high: bool) -> vec4<f32> {
    let q = (vec4<u32>(v) >> (vec4<u32>(0u, 8u, 16u, 24u) + select(0u, 4u, high))) & vec4<u32>(15u);
    return vec4<f32>(iq4nl(q.x), iq4nl(q.y), iq4nl(q.z), iq4nl(q.w));
}

fn deq8(row: u32, g: u32, k: u32) -> W8 {
    var out: W8;
    let e = 8u * g;
    if QTYPE == 0u {
        out.lo = vec4<f32>(f32_at(row, e, k), f32_at(row, e + 1u, k), f32_at(row, e + 2u, k), f32_at(row, e + 3u, k));
        out.hi = vec4<f32>(f32_at(row, e + 4u, k), f32_at(row, e + 5u, k), f32_at(row, e + 6u, k), f32_at(row, e + 7u, k));
    } else if QTYPE == 1u || QTYPE == 30u {
        out.lo = vec4<f32>(half_pair(row, e, k), half_pair(row, e + 2u, k));
        out.hi = vec4<f32>(half_pair(row, e + 4u, k), half_pair(row, e + 6u, k));
    } else if QTYPE == 2u || QTYPE == 3u {
        // Q4_0 / Q4_1: group j of a block is the low (j < 2) or high nibbles of qs[8(j % 2)..].
        let bw = row + (g / 4u) * 5u;
        let j = g % 4u;
        let q0 = w[bw + 2u * (j % 2u)];
        let q1 = w[bw + 2u * (j % 2u) + 1u];
        let dm = unpack2x16float(w[bw + 4u]);
        let n0 = nibbles(q0, j >= 2u);
        let n1 = nibbles(q1, j >= 2u);
        if QTYPE == 2u {
            out.lo = (n0 - 8.0) * dm.x;
            out.hi = (n1 - 8.0) * dm.x;
        } else {
            out.lo = n0 * dm.x + dm.y;
            out.hi = n1 * dm.x + dm.y;
        }
    } else if QTYPE == 6u || QTYPE == 7u {
        // Q5_0 / Q5_1: as Q4, with bit (8j + i) of qh as the fifth bit of element 8j + i.
        let bw = row + (g / 4u) * 6u;
        let j = g % 4u;
        let q0 = w[bw + 2u * (j % 2u)];
        let q1 = w[bw + 2u * (j % 2u) + 1u];
        let qh = w[bw + 4u];
        let dm = unpack2x16float(w[bw + 5u]);
        let n0 = nibbles(q0, j >= 2u) + 16.0 * bits4(qh, 8u * j);
        let n1 = nibbles(q1, j >= 2u) + 16.0 * bits4(qh, 8u * j + 4u);
        if QTYPE == 6u {
            out.lo = (n0 - 16.0) * dm.x;
            out.hi = (n1 - 16.0) * dm.x;
        } else {
            out.lo = n0 * dm.x + dm.y;
            out.hi = n1 * dm.x + dm.y;
        }
    } else if QTYPE == 8u {
        let bw = row + (g / 4u) * 9u;
        let j = g % 4u;
        let d = unpack2x16float(w[bw + 8u]).x;
        out.lo = sbytes4(w[bw + 2u * j]) * d;
        out.hi = sbytes4(w[bw + 2u * j + 1u]) * d;
    } else if QTYPE == 12u || QTYPE == 13u {
        // Q4_K / Q5_K: sub-block s = j / 4 of 32 weights is the low (s even) or high nibbles
        // of qs[32(s / 2) ..]; Q5_K's fifth bit is bit s of qh[l].
        let five = QTYPE == 13u;
        let bw = row + (g / 32u) * select(36u, 44u, five);
        let j = g % 32u;
        let s = j / 4u;
        let l0 = 8u * (j % 4u);
        let qs = bw + select(4u, 12u, five) + 8u * (s / 2u) + l0 / 4u;
        var n0 = nibbles(w[qs], s % 2u == 1u);
        var n1 = nibbles(w[qs + 1u], s % 2u == 1u);
        if five {
            n0 += 16.0 * byte_bits(w[bw + 4u + l0 / 4u], s, 1u);
            n1 += 16.0 * byte_bits(w[bw + 5u + l0 / 4u], s, 1u);
        }
        let dd = unpack2x16float(w[bw]);
        let sm = scale_min_k4(bw + 1u, s);
        let d1 = dd.x * sm.x;
        let m1 = dd.y * sm.y;
        out.lo = d1 * n0 - m1;
        out.hi = d1 * n1 - m1;
    } else if QTYPE == 14u {
        // Q6_K: half n of 128 weights, quarter qq of 32: the low (qq < 2) or high nibbles of
        // ql[64n + 32(qq % 2) + l], bits 2qq, 2qq + 1 of qh[32n + l], scale 8n + l / 16 + 2qq.
        let bw = row + (g / 32u) * 53u;
        let e0 = 8u * (g % 32u);
        let n = e0 / 128u;
        let qq = (e0 % 128u) / 32u;
        let l0 = e0 % 32u;
        let ql = bw + (64u * n + 32u * (qq % 2u) + l0) / 4u;
        let qh = bw + 32u + (32u * n + l0) / 4u;
        let q0 = nibbles(w[ql], qq >= 2u) + 16.0 * byte_bits(w[qh], 2u * qq, 2u) - 32.0;
        let q1 = nibbles(w[ql + 1u], qq >= 2u) + 16.0 * byte_bits(w[qh + 1u], 2u * qq, 2u) - 32.0;
        let sc_idx = 8u * n + l0 / 16u + 2u * qq;
        let sc = f32(extractBits(bitcast<i32>(w[bw + 48u + sc_idx / 4u]), 8u * (sc_idx % 4u), 8u));
        let d = unpack2x16float(w[bw + 52u]).x * sc;
        out.lo = d * q0;
        out.hi = d * q1;
    } else if QTYPE == 10u || QTYPE == 11u {
        // Q2_K / Q3_K: half n of 128 weights, quarter qq of 32: bits 2qq, 2qq + 1 of
        // qs[32n + l]; Q3_K's third bit is bit 4n + qq of hmask[l] (clear: minus 4). Scale
        // 8n + 2qq + l / 16: for Q2_K a byte, the scale in its low nibble, the min in its high.
        let three = QTYPE == 11u;
        let bw = row + (g / 32u) * select(21u, 28u, three);
        let e0 = 8u * (g % 32u);
        let n = e0 / 128u;
        let qq = (e0 % 128u) / 32u;
        let l0 = e0 % 32u;
        let qs = bw + select(4u, 8u, three) + 8u * n + l0 / 4u;
        var q0 = byte_bits(w[qs], 2u * qq, 2u);
        var q1 = byte_bits(w[qs + 1u], 2u * qq, 2u);
        let sc_idx = 8u * n + 2u * qq + l0 / 16u;
        if three {
            q0 += 4.0 * byte_bits(w[bw + l0 / 4u], 4u * n + qq, 1u) - 4.0;
            q1 += 4.0 * byte_bits(w[bw + l0 / 4u + 1u], 4u * n + qq, 1u) - 4.0;
            let dl = unpack2x16float(w[bw + 27u]).x * scale_k3(bw + 24u, sc_idx);
            out.lo = dl * q0;
            out.hi = dl * q1;
        } else {
            let sc = byte_at(bw, sc_idx);
            let dd = unpack2x16float(w[bw + 20u]);
            let dl = dd.x * f32(sc & 15u);
            let ml = dd.y * f32(sc >> 4u);
            out.lo = dl * q0 - ml;
            out.hi = dl * q1 - ml;
        }
    } else if QTYPE == 20u {
        // IQ4_NL: as Q4_0, the nibbles indices into the table.
        let bw = row + (g / 4u) * 5u;
        let j = g % 4u;
        let d = unpack2x16float(w[bw + 4u]).x;
        out.lo = d * iq4nl4(w[bw + 2u * (j % 2u)], j >= 2u);
        out.hi = d * iq4nl4(w[bw + 2u * (j % 2u) + 1u], j >= 2u);
    } else if QTYPE == 23u {
        // IQ4_XS: block ib = j / 4 of 32 weights is an IQ4_NL block's qs from qs[16 ib] (word
        // 2 + 4 ib); its scale is nibble ib of scales_l (word 1, low bits) and bits 2 ib,
        // 2 ib + 1 of scales_h (word 0's high half, high bits), less 32.
        let bw = row + (g / 32u) * 34u;
        let j = g % 32u;
        let ib = j / 4u;
        let qs = bw + 2u + 4u * ib + 2u * (j % 2u);
        let head = w[bw];
        let ls = extractBits(w[bw + 1u], 4u * ib, 4u) | (extractBits(head, 16u + 2u * ib, 2u) << 4u);
        let dl = unpack2x16float(head).x * f32(i32(ls) - 32);
        out.lo = dl * iq4nl4(w[qs], j % 4u >= 2u);
        out.hi = dl * iq4nl4(w[qs + 1u], j % 4u >= 2u);
    }
    return out;
}
