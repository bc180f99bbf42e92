// ---- gemv_x_common.wgsl: the quantized GEMVs' parameters and bindings, and reading x ----
// (appended to gemv.wgsl and gemv_sb.wgsl; both declare the overrides GATED and XVEC, and
// `apply` comes from unary_common.wgsl)

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
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
// x again, as vectors (XVEC).
@group(0) @binding(3) var<storage, read_write> xv: array<vec4<T>>;

// Element e of the row of x at `base`, 0 past K, read through the gate when GATED.
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
