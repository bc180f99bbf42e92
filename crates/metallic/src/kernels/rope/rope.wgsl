// Rotary position embedding over rows of head_dim elements; row r sits at position
// offset + r % seq. Pair j (< rotary_dim / 2) of a row is rotated by the angle
// pos * freq_scale * base^(-2j / rotary_dim); the elements past rotary_dim are copied.
// Pairs: (j, j + rotary_dim / 2) for NeoX (rotate-half), (2j, 2j + 1) for GPT-J (interleaved).
//
// Precision: the angle is carried in turns, t = pos * freq_scale / 2π * base^(-2j / rd), with
// the power computed by exp2 in f32, and reduced exactly with t - round(t) to
// [-1/2, 1/2]. sin and cos of that come from our own polynomials (error ~1e-7): WGSL only
// promises 2^-11 for sin/cos (Metal's fast math 2^-13) and nothing outside [-π, π]. What is
// left is f32 rounding of g_j and of the product, a relative 1e-7 of the angle: about 1e-3
// radians at position 8192, as in reference implementations that compute in f32.

// 0: NeoX / rotate-half; 1: GPT-J / interleaved.
override STYLE: u32 = 0u;

struct Params {
    // Invocations: rows * head_dim / 2, one per pair.
    n: u32,
    // head_dim / 2 and rotary_dim / 2.
    half: u32,
    rot_half: u32,
    seq: u32,
    offset: u32,
    x_off: u32,
    out_off: u32,
    // log2 of the ratio between neighbouring frequencies: -2 log2(base) / rotary_dim.
    log2_step: f32,
    // Turns per position of pair 0: freq_scale / 2π.
    turns: f32,
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;

// sincos_turns: common.wgsl.

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    let row = i / params.half;
    let j = i - row * params.half;
    let xo = params.x_off + row * params.half * 2u;
    let oo = params.out_off + row * params.half * 2u;
    if j >= params.rot_half {
        // Past rotary_dim: elements rotary_dim + 2 (j - rot_half) = 2j and 2j + 1 pass through.
        let e = 2u * j;
        let v0 = x[xo + e];
        let v1 = x[xo + e + 1u];
        out[oo + e] = v0;
        out[oo + e + 1u] = v1;
        return;
    }
    var a = j;
    var b = j + params.rot_half;
    if STYLE == 1u {
        a = 2u * j;
        b = a + 1u;
    }
    let pos = params.offset + row % params.seq;
    // Pair 0 (the largest angles) multiplies by exp2(0) = 1 exactly: one rounding in all.
    let t = (f32(pos) * params.turns) * exp2(f32(j) * params.log2_step);
    let sc = sincos_turns(t - round(t));
    let x1 = f32(x[xo + a]);
    let x2 = f32(x[xo + b]);
    out[oo + a] = T(x1 * sc.y - x2 * sc.x);
    out[oo + b] = T(x2 * sc.y + x1 * sc.x);
}
