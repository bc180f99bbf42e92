// ---- gemv_x_common.wgsl: the quantized GEMVs' parameters and bindings, reading x, writing y ----
// (appended to gemv.wgsl and gemv_sb.wgsl; both declare the overrides GATED and XVEC, and
// `apply` comes from unary_common.wgsl)
//
// Two options of a decode step's products, in `params.flags` (uniform, no pipeline of their
// own):
// NORM_X: the product's input is rms_norm(x) * nw — x read times the norm's weight, each row's
//   sums times that row's 1 / sqrt(mean(x^2) + eps), which every workgroup computes itself
//   (`row_scale`): the norm before a block costs no dispatch of its own.
// ACCUMULATE: y += the product, rounded to T first (the residual add of a block's output
//   projection, as a separate add would round it).

const NORM_X: u32 = 1u;
const ACCUMULATE: u32 = 2u;

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
    // NORM_X's weight, ACCUMULATE (see above), the norm's epsilon.
    nw_off: u32,
    flags: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
// x again, as vectors (XVEC).
@group(0) @binding(3) var<storage, read_write> xv: array<vec4<T>>;
// The norm's weight (NORM_X; else any tensor).
@group(0) @binding(4) var<storage, read_write> nw: array<T>;

// Element e of the row of x at `base`, 0 past K, read through the gate when GATED.
fn x_at(base: u32, e: u32) -> f32 {
    var v = 0.0;
    if e < params.k {
        if GATED {
            v = f32(T(apply(f32(x[base + e])) * f32(x[base + params.k + e])));
        } else {
            v = f32(x[base + e]);
            if (params.flags & NORM_X) != 0u {
                v *= f32(nw[params.nw_off + e]);
            }
        }
    }
    return v;
}

// Elements e .. e + 4 of the row of x at `base` (XVEC: base and e multiples of 4; a vector
// is inside the row or past K whole), read through the gate as `x_at` reads them.
fn x_vec(base: u32, e: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if e < params.k {
        let i = (base + e) / 4u;
        if GATED {
            let g = vec4<f32>(xv[i]);
            let a = vec4<f32>(apply(g.x), apply(g.y), apply(g.z), apply(g.w));
            v = vec4<f32>(vec4<T>(a * vec4<f32>(xv[i + params.k / 4u])));
        } else {
            v = vec4<f32>(xv[i]);
            if (params.flags & NORM_X) != 0u {
                let g = params.nw_off + e;
                v *= vec4<f32>(f32(nw[g]), f32(nw[g + 1u]), f32(nw[g + 2u]), f32(nw[g + 3u]));
            }
        }
    }
    return v;
}

// Elements e .. e + 4 of the row of x at `base`: one vector read where x is read as vectors
// (XVEC), else four `x_at`.
fn x4(base: u32, e: u32) -> vec4<f32> {
    if XVEC {
        return x_vec(base, e);
    }
    return vec4<f32>(x_at(base, e), x_at(base, e + 1u), x_at(base, e + 2u), x_at(base, e + 3u));
}

// NORM_X: 1 / sqrt(mean(x^2) + eps) of the row of x at `base`, summed by the whole workgroup
// (call it from uniform control flow); 1 otherwise.
fn row_scale(base: u32, lanes: Lanes) -> f32 {
    if (params.flags & NORM_X) == 0u {
        return 1.0;
    }
    var s = 0.0;
    for (var e = lanes.index; e < params.k; e += WG) {
        let v = f32(x[base + e]);
        s += v * v;
    }
    return inverseSqrt(workgroup_sum(s, lanes) / f32(params.k) + params.eps);
}

// `row_scale` of rows m0 .. m0 + MB of x (rows of `ldx` elements; rows past m repeat the
// last one), for the sums of each.
fn row_scales(m0: u32, ldx: u32, lanes: Lanes) -> array<f32, MAX_MB> {
    var scale: array<f32, MAX_MB>;
    for (var j = 0u; j < MB; j += 1u) {
        scale[j] = row_scale(params.x_off + min(m0 + j, params.m - 1u) * ldx, lanes);
    }
    return scale;
}

// Stores one output: y[i] = v, or y[i] += v (ACCUMULATE), v rounded to T first.
fn store_y(i: u32, v: f32) {
    if (params.flags & ACCUMULATE) != 0u {
        y[i] = T(f32(y[i]) + f32(T(v)));
    } else {
        y[i] = T(v);
    }
}
