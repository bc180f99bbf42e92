// Quantized embedding lookup: out[i, :] = W[ids[i], :] decoded (`deq8`, common.wgsl), for the
// ids that fall in one weight part (rows row0 .. row0 + rows); one invocation per group of 8
// outputs. Ids past the whole table give zeros, written by the dispatch of the first part.

struct Params {
    // Ids, weights per row, groups of 8 weights per row, words per row.
    count: u32,
    k: u32,
    groups: u32,
    row_words: u32,
    // This part's first row and row count; rows of the whole table.
    row0: u32,
    rows: u32,
    vocab: u32,
    ids_off: u32,
    w_off: u32,
    out_off: u32,
    // 1: this dispatch writes the zeros of out-of-range ids.
    zeros: u32,
}

@group(0) @binding(0) var<storage, read_write> ids: array<u32>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg);
    if t >= params.count * params.groups {
        return;
    }
    let i = t / params.groups;
    let g = t - i * params.groups;
    let id = ids[params.ids_off + i];
    var v: W8;
    if id >= params.row0 && id - params.row0 < params.rows {
        v = deq8(params.w_off + (id - params.row0) * params.row_words, g, params.k);
    } else if !(id >= params.vocab && params.zeros == 1u) {
        return;
    }
    let base = params.out_off + i * params.k + 8u * g;
    let vals = array<f32, 8>(v.lo.x, v.lo.y, v.lo.z, v.lo.w, v.hi.x, v.hi.y, v.hi.z, v.hi.w);
    for (var e = 0u; e < 8u; e += 1u) {
        if 8u * g + e < params.k {
            out[base + e] = T(vals[e]);
        }
    }
}
