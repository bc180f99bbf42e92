// Layer norm and RMS norm for rows held in registers, scalar loads and stores:
// `norm_rows.wgsl` for rows of n <= 16 * WG elements at any offset and of any length (the
// vec4 kernel needs rows, weights and biases that start at multiples of 4 elements).
// Invocation i holds elements i + WG * m for m = 0..15 in the components of four vec4
// (element base + c * WG in component c of the vector at base i + 4 * WG * j), so every load
// and store is coalesced across the workgroup; each element is read once and written once.

// Options, `Params` and the `Acc` sums: common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> weight: array<T>;
@group(0) @binding(2) var<storage, read_write> bias: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

// Elements i + c * WG (component c) of the row starting at `xs`, zeros beyond its `n`.
fn load(xs: u32, i: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>();
    if i < n {
        v.x = f32(x[xs + i]);
    }
    if i + WG < n {
        v.y = f32(x[xs + i + WG]);
    }
    if i + 2u * WG < n {
        v.z = f32(x[xs + i + 2u * WG]);
    }
    if i + 3u * WG < n {
        v.w = f32(x[xs + i + 3u * WG]);
    }
    return v;
}

// Deviation from `shift`, zero beyond the row.
fn dev(v: vec4<f32>, shift: f32, i: u32, n: u32) -> vec4<f32> {
    let inside = vec4<bool>(i < n, i + WG < n, i + 2u * WG < n, i + 3u * WG < n);
    return select(vec4<f32>(), v - shift, inside);
}

// Output element `e` of the row from deviation `d`.
fn store1(os: u32, e: u32, d: f32, center: f32, scale: f32) {
    var y = (d - center) * scale;
    if (params.flags & HAS_WEIGHT) != 0u {
        let unit = select(0.0, 1.0, (params.flags & UNIT_OFFSET) != 0u);
        y *= unit + f32(weight[params.w_off + e]);
    }
    if (params.flags & HAS_BIAS) != 0u {
        y += f32(bias[params.b_off + e]);
    }
    out[os + e] = T(y);
}

fn store(os: u32, i: u32, n: u32, d: vec4<f32>, center: f32, scale: f32) {
    if i < n {
        store1(os, i, d.x, center, scale);
    }
    if i + WG < n {
        store1(os, i + WG, d.y, center, scale);
    }
    if i + 2u * WG < n {
        store1(os, i + 2u * WG, d.z, center, scale);
    }
    if i + 3u * WG < n {
        store1(os, i + 3u * WG, d.w, center, scale);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let row = wid.x + wid.y * nwg.x;
    if row >= params.rows {
        return;
    }
    let n = params.cols;
    let count = f32(n);
    let xs = params.x_off + row * n;
    let os = params.out_off + row * n;

    let i0 = lanes.index;
    let i1 = i0 + 4u * WG;
    let i2 = i0 + 8u * WG;
    let i3 = i0 + 12u * WG;
    let a = load(xs, i0, n);
    let b = load(xs, i1, n);
    let c = load(xs, i2, n);
    let d = load(xs, i3, n);

    // A first mean (layer norm), the shift of the deviations.
    var shift = 0.0;
    if !RMS {
        let sum = acc_add4(acc_add4(acc_add4(acc_add4(Acc(0.0, 0.0), a), b), c), d);
        shift = acc_total(sum, lanes) / count;
    }
    let da = dev(a, shift, i0, n);
    let db = dev(b, shift, i1, n);
    let dc = dev(c, shift, i2, n);
    let dd = dev(d, shift, i3, n);
    let s2 = acc_add4(acc_add4(acc_add4(acc_add4(Acc(0.0, 0.0), da * da), db * db), dc * dc), dd * dd);
    var center = 0.0;
    var meansq = acc_total_refined(s2, lanes) / count;
    if !RMS {
        let s1 = acc_add4(acc_add4(acc_add4(acc_add4(Acc(0.0, 0.0), da), db), dc), dd);
        center = acc_total(s1, lanes) / count;
        meansq = max(meansq - center * center, 0.0);
    }
    let scale = inverseSqrt(meansq + params.eps);

    store(os, i0, n, da, center, scale);
    store(os, i1, n, db, center, scale);
    store(os, i2, n, dc, center, scale);
    store(os, i3, n, dd, center, scale);
}
