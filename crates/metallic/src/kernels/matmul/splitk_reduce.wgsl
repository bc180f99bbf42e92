// The second pass of split-K GEMM (`gemm_wide.wgsl` with SPLIT):
// c[c_off + i] = alpha * sum_s part[part_off + s * count + i] + beta * c[c_off + i], for the
// `count` elements of C (contiguous: batch * m * n), summing the `splits` partial products in
// f32. One invocation per element; four slices in flight per iteration.

struct Params {
    count: u32,
    splits: u32,
    part_off: u32,
    c_off: u32,
    alpha: f32,
    // 0: C is not read.
    beta: f32,
}

@group(0) @binding(0) var<storage, read_write> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> c: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.count {
        return;
    }
    let step = params.count;
    var p = params.part_off + i;
    var s = 0u;
    var acc = vec4<f32>(0.0);
    for (; s + 3u < params.splits; s += 4u) {
        acc += vec4<f32>(part[p], part[p + step], part[p + 2u * step], part[p + 3u * step]);
        p += 4u * step;
    }
    var sum = (acc.x + acc.y) + (acc.z + acc.w);
    for (; s < params.splits; s += 1u) {
        sum += part[p];
        p += step;
    }
    var v = params.alpha * sum;
    if params.beta != 0.0 {
        v += params.beta * f32(c[params.c_off + i]);
    }
    c[params.c_off + i] = T(v);
}
