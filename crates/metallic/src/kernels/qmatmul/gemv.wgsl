// Quantized GEMV for few rows of x (decode): y[m, n0 + r] = sum_k x[m, k] * W[r, k] for the rows
// r of one weight part, W decoded in registers (`deq8`, common.wgsl), f32 accumulation.
//
// A workgroup computes ROWS adjacent outputs of MB rows of x: its invocations walk the ROWS
// weight rows' groups of 8 weights, consecutive invocations on consecutive groups of the same
// row (contiguous words), each group decoded once and multiplied by the MB rows of x, so every
// weight is read once per MB rows of x (batched decoding: one read for up to 8 sequences);
// `workgroup_sum4` finishes each row's ROWS dot products. A row of x is summed in the same
// order whatever MB is, so its outputs are bit-identical with any MB. Grid: x = row groups,
// z = groups of MB rows of x, clamped to the device limit; workgroups loop over the rest.
//
// GATED: x holds rows of 2K, a gate half and an up half (a GeGLU / SwiGLU MLP's fused gate
// and up projections), and the product's input is act(gate) * up (`apply`, unary_common.wgsl,
// op OP), rounded to T as the gated kernel stores it: the MLP's down projection reads the
// gate through, one dispatch instead of two.

const ROWS: u32 = 4u;
// Rows of x per workgroup, 1 to MAX_MB.
override MB: u32 = 1u;
const MAX_MB: u32 = 8u;
// Whether x is read through a gate (see above).
override GATED: bool = false;

struct Params {
    // Rows of this part, weights per row, rows of x.
    n: u32,
    k: u32,
    m: u32,
    // Groups of 8 weights per row (ceil(k / 8)) and words per row.
    groups: u32,
    row_words: u32,
    x_off: u32,
    w_off: u32,
    y_off: u32,
    // Row stride of y (N of the whole matrix) and this part's first output column.
    ldy: u32,
    n0: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

fn x_at(base: u32, e: u32) -> f32 {
    var v = 0.0;
    if e < params.k {
        if GATED {
            v = f32(T(apply(f32(x[base + e])) * f32(x[base + params.k + e])));
        } else {
            v = f32(x[base + e]);
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let blocks = (params.n + ROWS - 1u) / ROWS;
    let last = max(params.n, 1u) - 1u;
    let items = ROWS * params.groups;
    let m_groups = (params.m + MB - 1u) / MB;
    // Elements per row of x.
    let ldx = select(params.k, 2u * params.k, GATED);
    for (var mg = wid.z; mg < m_groups; mg += nwg.z) {
        let m0 = mg * MB;
        for (var blk = wid.x; blk < blocks; blk += nwg.x) {
            let r0 = blk * ROWS;
            var acc: array<vec4<f32>, MAX_MB>;
            for (var i = lanes.index; i < items; i += WG) {
                let r = i / params.groups;
                let g = i - r * params.groups;
                // Rows past the part repeat its last one; their sums are not stored.
                let row = min(r0 + r, last);
                let wv = deq8(params.w_off + row * params.row_words, g, params.k);
                let e = 8u * g;
                for (var j = 0u; j < MB; j += 1u) {
                    // Rows of x past m repeat the last one; their sums are not stored.
                    let xb = params.x_off + min(m0 + j, params.m - 1u) * ldx;
                    let xlo = vec4<f32>(x_at(xb, e), x_at(xb, e + 1u), x_at(xb, e + 2u), x_at(xb, e + 3u));
                    let xhi = vec4<f32>(x_at(xb, e + 4u), x_at(xb, e + 5u), x_at(xb, e + 6u), x_at(xb, e + 7u));
                    acc[j][r] += dot(wv.lo, xlo) + dot(wv.hi, xhi);
                }
            }
            for (var j = 0u; j < MB; j += 1u) {
                let s = workgroup_sum4(acc[j], lanes);
                let r = r0 + lanes.index;
                if lanes.index < ROWS && r < params.n && m0 + j < params.m {
                    y[params.y_off + (m0 + j) * params.ldy + params.n0 + r] = T(s[lanes.index]);
                }
            }
        }
    }
}
