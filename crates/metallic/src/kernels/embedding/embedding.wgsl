// out[t, k] = table[ids[t], k] for every id t and column k < dim; an id >= vocab gives a row of
// zeros (the GPU cannot report it). One invocation per output element: neighbouring
// invocations read neighbouring columns of one table row and write neighbouring outputs.

struct Params {
    // Output elements (ids × dim).
    n: u32,
    dim: u32,
    vocab: u32,
    table_off: u32,
    ids_off: u32,
    out_off: u32,
}

@group(0) @binding(0) var<storage, read_write> table: array<T>;
// Token ids are u32 whatever the table's type.
@group(0) @binding(1) var<storage, read_write> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    let t = i / params.dim;
    let k = i - t * params.dim;
    let id = ids[params.ids_off + t];
    var v = T(0);
    if id < params.vocab {
        v = table[params.table_off + id * params.dim + k];
    }
    out[params.out_off + i] = v;
}
