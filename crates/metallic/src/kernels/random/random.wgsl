// out[i] = low + (high - low) * u(i), u(i) in [0, 1) from a counter-based hash of (seed, i).

struct Params {
    n: u32,
    out_off: u32,
    seed_lo: u32,
    seed_hi: u32,
    low: f32,
    high: f32,
}

@group(0) @binding(0) var<storage, read_write> out: array<T>;

// PCG-style integer hash (one LCG step and an output permutation).
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    let key = pcg_hash(params.seed_lo ^ pcg_hash(params.seed_hi));
    let bits = pcg_hash(i ^ key);
    // 24 random bits: exactly representable in f32, so u < 1.
    let u = f32(bits >> 8u) * (1.0 / 16777216.0);
    out[params.out_off + i] = T(params.low + (params.high - params.low) * u);
}
