// dst4[i] = src4[i] over vec4<T> for contiguous tensors whose element offsets are multiples of
// 4: each invocation moves UNROLL vec4, WG apart, so a workgroup covers WG * UNROLL
// consecutive vec4 and every load and store stays coalesced. The Rust side copies the n % 4
// trailing elements with the scalar kernel (`copy.wgsl`).

struct Params {
    n4: u32,
    src_off4: u32,
    dst_off4: u32,
}

@group(0) @binding(0) var<storage, read_write> src: array<vec4<T>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<T>>;

const UNROLL: u32 = 4u;

@compute @workgroup_size(WG)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // (workgroup's linear index) * WG * UNROLL + lane.
    let base = (linear_index(gid, nwg) - lid) * UNROLL + lid;
    let s = params.src_off4 + base;
    let d = params.dst_off4 + base;
    if base + (UNROLL - 1u) * WG < params.n4 {
        // Every load first, then every store: four 16-byte requests in flight per lane.
        let a = src[s];
        let b = src[s + WG];
        let c = src[s + 2u * WG];
        let e = src[s + 3u * WG];
        dst[d] = a;
        dst[d + WG] = b;
        dst[d + 2u * WG] = c;
        dst[d + 3u * WG] = e;
        return;
    }
    for (var j = 0u; j < UNROLL; j++) {
        if base + j * WG < params.n4 {
            dst[d + j * WG] = src[s + j * WG];
        }
    }
}
