// Softmax for rows held in registers, with vec4 loads and stores: the same contract as
// `softmax.wgsl` (read it first), for rows of K <= 16 * WG keys whose starts are multiples of
// 4 elements (x_off, out_off and K multiples of 4; the Rust side checks). Each invocation
// loads its UNROLL (4) vectors of the row once, WG vectors apart (coalesced), into named
// variables; the max, the sum of exp and the outputs all come from those registers: one read
// and one write per element. The mask stays scalar-indexed (any strides).

// Options, `Params`, masking and the compensated sums: common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<vec4<T>>;
@group(0) @binding(1) var<storage, read_write> mask: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<T>>;

// Logits of keys k0 .. k0 + 3 (one vector).
fn logits(xv: vec4<T>, k0: u32, limit: u32, mr: u32) -> vec4<f32> {
    let v = vec4<f32>(xv) * params.scale;
    return vec4<f32>(logit(v.x, k0, limit, mr), logit(v.y, k0 + 1u, limit, mr), logit(v.z, k0 + 2u, limit, mr),
        logit(v.w, k0 + 3u, limit, mr));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let row = wid.x + (wid.y + wid.z * nwg.y) * nwg.x;
    let k_len = select(0u, params.k, row < params.rows);
    var limit = k_len;
    if params.causal != 0u && k_len != 0u {
        let q = row % params.q_len;
        limit = min(k_len - 1u, q + params.causal_offset) + 1u;
    }
    let k4 = k_len / 4u;
    let xr = (params.x_off + row * params.k) / 4u;
    let orow = (params.out_off + row * params.k) / 4u;
    let i2 = row % params.n2;
    let i01 = row / params.n2;
    let mr = params.mask_off + (i01 / params.n1) * params.ms0 + (i01 % params.n1) * params.ms1 + i2 * params.ms2;

    // Vectors i, i + WG, i + 2 WG, i + 3 WG of the row; all loads first.
    let i0 = lanes.index;
    let i1 = i0 + WG;
    let i2v = i0 + 2u * WG;
    let i3 = i0 + 3u * WG;
    var a = vec4<T>();
    var b = vec4<T>();
    var c = vec4<T>();
    var d = vec4<T>();
    if i0 < k4 {
        a = x[xr + i0];
    }
    if i1 < k4 {
        b = x[xr + i1];
    }
    if i2v < k4 {
        c = x[xr + i2v];
    }
    if i3 < k4 {
        d = x[xr + i3];
    }
    let va = logits(a, 4u * i0, limit, mr);
    let vb = logits(b, 4u * i1, limit, mr);
    let vc = logits(c, 4u * i2v, limit, mr);
    let vd = logits(d, 4u * i3, limit, mr);

    let row_max = workgroup_max(max(max(max4(va), max4(vb)), max(max4(vc), max4(vd))), lanes);
    let ea = exps(va, row_max);
    let eb = exps(vb, row_max);
    let ec = exps(vc, row_max);
    let ed = exps(vd, row_max);
    let part = acc_add4(acc_add4(acc_add4(acc_add4(Acc(0.0, 0.0), ea), eb), ec), ed);
    // At least 1 (the max's own term) unless nothing in the row took part.
    let total = workgroup_sum(part.s + part.c, lanes);
    let inv = select(0.0, 1.0 / total, total > 0.0);

    if i0 < k4 {
        out[orow + i0] = vec4<T>(ea * inv);
    }
    if i1 < k4 {
        out[orow + i1] = vec4<T>(eb * inv);
    }
    if i2v < k4 {
        out[orow + i2v] = vec4<T>(ec * inv);
    }
    if i3 < k4 {
        out[orow + i3] = vec4<T>(ed * inv);
    }
}
