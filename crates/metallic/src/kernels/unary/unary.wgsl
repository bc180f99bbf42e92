// Element-wise math and activations, computed in f32 whatever the storage type T.
//
// Two entry points over the activation math of unary_common.wgsl (appended; `apply` is the op
// `OP`), which the quantized GEMV's gated input shares:
//   unary_main: buf0 = x, buf1 = out;          out[i] = f(x[i])
//   gated_main: buf0 = a, buf1 = b, buf2 = out; out[i] = f(a[i]) * b[i]   (GeGLU, SwiGLU)
//               with half > 0, a and b are the halves of the rows of buf0 (2 * half wide, the
//               fused gate and up projections): out[r, c] = f(x[r, c]) * x[r, half + c]
// Each entry point uses bindings 0..n contiguously, as the engine binds them, and the offsets
// off0, off1, off2 belong to buf0, buf1, buf2.

struct Params {
    n: u32,
    off0: u32,
    off1: u32,
    off2: u32,
    half: u32,
}

@group(0) @binding(0) var<storage, read_write> buf0: array<T>;
@group(0) @binding(1) var<storage, read_write> buf1: array<T>;
@group(0) @binding(2) var<storage, read_write> buf2: array<T>;

@compute @workgroup_size(WG)
fn unary_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    buf1[params.off1 + i] = T(apply(f32(buf0[params.off0 + i])));
}

@compute @workgroup_size(WG)
fn gated_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    if params.half > 0u {
        let r = i / params.half;
        let at = params.off0 + i + r * params.half;
        buf2[params.off2 + i] = T(apply(f32(buf0[at])) * f32(buf0[at + params.half]));
        return;
    }
    let a = f32(buf0[params.off0 + i]);
    let b = f32(buf1[params.off1 + i]);
    buf2[params.off2 + i] = T(apply(a) * b);
}
