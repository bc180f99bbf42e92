// Softmax for rows held in registers, scalar loads and stores: `softmax_rows.wgsl` for rows
// of K <= 16 * WG keys at any offset and of any length (the vec4 kernel needs rows that start
// at multiples of 4 elements). Invocation i holds keys i + WG * n for n = 0..15 in the
// components of four vec4 (key base + c * WG in component c of the vector at base
// i + 4 * WG * j), so every load and store is coalesced across the workgroup; each key is read
// once and written once.

// Options, `Params`, masking and the compensated sums: common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> mask: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

// Logits of keys k0 + c * WG (component c).
fn logits(xv: vec4<f32>, k0: u32, limit: u32, mr: u32) -> vec4<f32> {
    let v = xv * params.scale;
    return vec4<f32>(logit(v.x, k0, limit, mr), logit(v.y, k0 + WG, limit, mr), logit(v.z, k0 + 2u * WG, limit, mr),
        logit(v.w, k0 + 3u * WG, limit, mr));
}

// Keys k0 + c * WG of the row at `xr` (zeros beyond `k_len`).
fn load(xr: u32, k0: u32, k_len: u32) -> vec4<f32> {
    var v = vec4<f32>();
    if k0 < k_len {
        v.x = f32(x[xr + k0]);
    }
    if k0 + WG < k_len {
        v.y = f32(x[xr + k0 + WG]);
    }
    if k0 + 2u * WG < k_len {
        v.z = f32(x[xr + k0 + 2u * WG]);
    }
    if k0 + 3u * WG < k_len {
        v.w = f32(x[xr + k0 + 3u * WG]);
    }
    return v;
}

fn store(orow: u32, k0: u32, k_len: u32, p: vec4<f32>) {
    if k0 < k_len {
        out[orow + k0] = T(p.x);
    }
    if k0 + WG < k_len {
        out[orow + k0 + WG] = T(p.y);
    }
    if k0 + 2u * WG < k_len {
        out[orow + k0 + 2u * WG] = T(p.z);
    }
    if k0 + 3u * WG < k_len {
        out[orow + k0 + 3u * WG] = T(p.w);
    }
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
    let xr = params.x_off + row * params.k;
    let orow = params.out_off + row * params.k;
    let i2 = row % params.n2;
    let i01 = row / params.n2;
    let mr = params.mask_off + (i01 / params.n1) * params.ms0 + (i01 % params.n1) * params.ms1 + i2 * params.ms2;

    // Keys k0 + c * WG for the four bases; all loads first.
    let k0 = lanes.index;
    let k1 = k0 + 4u * WG;
    let k2 = k0 + 8u * WG;
    let k3 = k0 + 12u * WG;
    let a = load(xr, k0, k_len);
    let b = load(xr, k1, k_len);
    let c = load(xr, k2, k_len);
    let d = load(xr, k3, k_len);
    let va = logits(a, k0, limit, mr);
    let vb = logits(b, k1, limit, mr);
    let vc = logits(c, k2, limit, mr);
    let vd = logits(d, k3, limit, mr);

    let row_max = workgroup_max(max(max(max4(va), max4(vb)), max(max4(vc), max4(vd))), lanes);
    let ea = exps(va, row_max);
    let eb = exps(vb, row_max);
    let ec = exps(vc, row_max);
    let ed = exps(vd, row_max);
    let part = acc_add4(acc_add4(acc_add4(acc_add4(Acc(0.0, 0.0), ea), eb), ec), ed);
    // At least 1 (the max's own term) unless nothing in the row took part.
    let total = workgroup_sum(part.s + part.c, lanes);
    let inv = select(0.0, 1.0 / total, total > 0.0);

    store(orow, k0, k_len, ea * inv);
    store(orow, k1, k_len, eb * inv);
    store(orow, k2, k_len, ec * inv);
    store(orow, k3, k_len, ed * inv);
}
