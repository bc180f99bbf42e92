// Layer norm and RMS norm for rows held in registers, with vec4 loads and stores: the same
// contract and arithmetic as `norm.wgsl` (read it first), for rows of n <= 16 * WG elements
// whose starts are multiples of 4 elements (x_off, out_off, w_off, b_off and n multiples of
// 4; the Rust side checks). Each invocation loads its UNROLL (4) vectors of the row once,
// WG vectors apart (coalesced), into named variables; the first mean, the corrected
// two-pass sums of deviations and the outputs all come from those registers: one read and
// one write per element (plus the weight and bias vectors).

// Options, `Params` and the `Acc` sums: common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<vec4<T>>;
@group(0) @binding(1) var<storage, read_write> weight: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> bias: array<vec4<T>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<T>>;

// Vector `i` of the row at `xs` (in vectors), or zeros beyond the row's `n4` vectors.
fn load(xs: u32, i: u32, n4: u32) -> vec4<f32> {
    if i < n4 {
        return vec4<f32>(x[xs + i]);
    }
    return vec4<f32>();
}

// Deviation from `shift`, zero beyond the row.
fn dev(v: vec4<f32>, shift: f32, i: u32, n4: u32) -> vec4<f32> {
    return select(vec4<f32>(), v - shift, i < n4);
}

fn store(os: u32, i: u32, n4: u32, d: vec4<f32>, center: f32, scale: f32) {
    if i >= n4 {
        return;
    }
    var y = (d - center) * scale;
    if (params.flags & HAS_WEIGHT) != 0u {
        let unit = select(0.0, 1.0, (params.flags & UNIT_OFFSET) != 0u);
        y *= unit + vec4<f32>(weight[params.w_off / 4u + i]);
    }
    if (params.flags & HAS_BIAS) != 0u {
        y += vec4<f32>(bias[params.b_off / 4u + i]);
    }
    out[os + i] = vec4<T>(y);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let row = wid.x + wid.y * nwg.x;
    if row >= params.rows {
        return;
    }
    let n = params.cols;
    let n4 = n / 4u;
    let count = f32(n);
    let xs = (params.x_off + row * n) / 4u;
    let os = (params.out_off + row * n) / 4u;

    let i0 = lanes.index;
    let i1 = i0 + WG;
    let i2 = i0 + 2u * WG;
    let i3 = i0 + 3u * WG;
    let a = load(xs, i0, n4);
    let b = load(xs, i1, n4);
    let c = load(xs, i2, n4);
    let d = load(xs, i3, n4);

    // A first mean (layer norm), the shift of the deviations.
    var shift = 0.0;
    if !RMS {
        let sum = acc_add4(acc_add4(acc_add4(acc_add4(Acc(0.0, 0.0), a), b), c), d);
        shift = acc_total(sum, lanes) / count;
    }
    let da = dev(a, shift, i0, n4);
    let db = dev(b, shift, i1, n4);
    let dc = dev(c, shift, i2, n4);
    let dd = dev(d, shift, i3, n4);
    let s2 = acc_add4(acc_add4(acc_add4(acc_add4(Acc(0.0, 0.0), da * da), db * db), dc * dc), dd * dd);
    var center = 0.0;
    var meansq = acc_total_refined(s2, lanes) / count;
    if !RMS {
        let s1 = acc_add4(acc_add4(acc_add4(acc_add4(Acc(0.0, 0.0), da), db), dc), dd);
        center = acc_total(s1, lanes) / count;
        meansq = max(meansq - center * center, 0.0);
    }
    let scale = inverseSqrt(meansq + params.eps);

    store(os, i0, n4, da, center, scale);
    store(os, i1, n4, db, center, scale);
    store(os, i2, n4, dc, center, scale);
    store(os, i3, n4, dd, center, scale);
}
