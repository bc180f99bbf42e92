// Workgroup-wide reductions over workgroup memory (a tree), for adapters without subgroups.
// Same names and contract as `reduce_subgroup.wgsl`; WG must be a power of two.

struct Lanes {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> reduce_scratch: array<f32, WG>;

fn workgroup_sum(v: f32, lanes: Lanes) -> f32 {
    reduce_scratch[lanes.index] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lanes.index < stride {
            reduce_scratch[lanes.index] += reduce_scratch[lanes.index + stride];
        }
        workgroupBarrier();
    }
    let total = reduce_scratch[0];
    workgroupBarrier();
    return total;
}

fn workgroup_max(v: f32, lanes: Lanes) -> f32 {
    reduce_scratch[lanes.index] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lanes.index < stride {
            reduce_scratch[lanes.index] = max(reduce_scratch[lanes.index], reduce_scratch[lanes.index + stride]);
        }
        workgroupBarrier();
    }
    let best = reduce_scratch[0];
    workgroupBarrier();
    return best;
}

// Four sums at once (one pass of barriers instead of four).
var<workgroup> reduce_scratch4: array<vec4<f32>, WG>;

fn workgroup_sum4(v: vec4<f32>, lanes: Lanes) -> vec4<f32> {
    reduce_scratch4[lanes.index] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lanes.index < stride {
            reduce_scratch4[lanes.index] += reduce_scratch4[lanes.index + stride];
        }
        workgroupBarrier();
    }
    let total = reduce_scratch4[0];
    workgroupBarrier();
    return total;
}
