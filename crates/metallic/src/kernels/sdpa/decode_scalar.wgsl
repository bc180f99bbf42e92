// decode.wgsl's K and V as scalars: any head dimension, any offset.

@group(0) @binding(1) var<storage, read_write> k: array<KV>;
@group(0) @binding(2) var<storage, read_write> v: array<KV>;

// Elements d..d+3 of k / v from element index `at` (zeros past the head dimension).
fn k4(at: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if d < D { x.x = f32(k[at]); }
    if d + 1u < D { x.y = f32(k[at + 1u]); }
    if d + 2u < D { x.z = f32(k[at + 2u]); }
    if d + 3u < D { x.w = f32(k[at + 3u]); }
    return x;
}
fn v4(at: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    if d < DV { x.x = f32(v[at]); }
    if d + 1u < DV { x.y = f32(v[at + 1u]); }
    if d + 2u < DV { x.z = f32(v[at + 2u]); }
    if d + 3u < DV { x.w = f32(v[at + 3u]); }
    return x;
}
