// out[i] = T(start + i * step): `fill` (step 0) and `arange`.

struct Params {
    n: u32,
    out_off: u32,
    start: f32,
    step: f32,
}

@group(0) @binding(0) var<storage, read_write> out: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    out[params.out_off + i] = T(params.start + f32(i) * params.step);
}
