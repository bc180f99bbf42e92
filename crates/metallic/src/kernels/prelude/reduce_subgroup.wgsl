// Workgroup-wide reductions with subgroup operations. `compose_source` includes this file or
// `reduce_workgroup.wgsl`; both define the same names. Call from uniform control flow: every
// invocation of the workgroup must call, and each gets the total.

// Built-ins a reducing kernel takes as one entry-point argument (`lanes: Lanes`).
struct Lanes {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
}

// One partial per subgroup (a subgroup has at least 4 invocations on every adapter we know,
// so WG / 4 slots would do; WG slots keep the two flavours alike).
var<workgroup> reduce_scratch: array<f32, WG>;

fn workgroup_sum(v: f32, lanes: Lanes) -> f32 {
    let partial = subgroupAdd(v);
    if lanes.sg_lane == 0u {
        reduce_scratch[lanes.sg_id] = partial;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < lanes.sg_count; i += 1u) {
        total += reduce_scratch[i];
    }
    workgroupBarrier();
    return total;
}

fn workgroup_max(v: f32, lanes: Lanes) -> f32 {
    let partial = subgroupMax(v);
    if lanes.sg_lane == 0u {
        reduce_scratch[lanes.sg_id] = partial;
    }
    workgroupBarrier();
    var best = reduce_scratch[0];
    for (var i = 1u; i < lanes.sg_count; i += 1u) {
        best = max(best, reduce_scratch[i]);
    }
    workgroupBarrier();
    return best;
}

// Four sums at once (one pass of barriers instead of four).
var<workgroup> reduce_scratch4: array<vec4<f32>, WG>;

fn workgroup_sum4(v: vec4<f32>, lanes: Lanes) -> vec4<f32> {
    let partial = subgroupAdd(v);
    if lanes.sg_lane == 0u {
        reduce_scratch4[lanes.sg_id] = partial;
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    for (var i = 0u; i < lanes.sg_count; i += 1u) {
        total += reduce_scratch4[i];
    }
    workgroupBarrier();
    return total;
}
