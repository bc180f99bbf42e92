// dst[i] = src[i] for contiguous tensors at any element offset.

struct Params {
    n: u32,
    src_off: u32,
    dst_off: u32,
}

@group(0) @binding(0) var<storage, read_write> src: array<T>;
@group(0) @binding(1) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    dst[params.dst_off + i] = src[params.src_off + i];
}
