// decode.wgsl's K and V as vec4s: one load per four elements. The host takes this variant
// only when D, DV and both element offsets are multiples of 4, so every `at` is one too and a
// vec4 never straddles a row.

@group(0) @binding(1) var<storage, read_write> k: array<vec4<KV>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<KV>>;

// Elements d..d+3 of k / v from element index `at` (a multiple of 4; d < D).
fn k4(at: u32, d: u32) -> vec4<f32> {
    return vec4<f32>(k[at / 4u]);
}
fn v4(at: u32, d: u32) -> vec4<f32> {
    return vec4<f32>(v[at / 4u]);
}
