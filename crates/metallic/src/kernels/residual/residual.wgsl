// The residual step of a transformer block with RMS norms, one workgroup per row of n:
//
//   h = x + rms_norm(d) * wd        (h = x + d without DELTA_NORM)
//   y = rms_norm(h) * w
//
// where rms_norm(v) = v / sqrt(mean(v^2) + eps). Three kernels' work (the norm after an
// attention or MLP block, the residual add, the norm before the next block) in one dispatch:
// what a decode step of a small model is short of is dispatches, not bandwidth. Sums are
// f32 per invocation, then `workgroup_sum`. Each invocation reads and writes the same
// indices in every loop, so `h` may be `x` (in place) and the last loop reads back its own
// writes of `h`.

// Bit of `params.flags`: normalise `d` (with weight `wd`) before adding it.
const DELTA_NORM: u32 = 1u;

struct Params {
    rows: u32,
    n: u32,
    x_off: u32,
    d_off: u32,
    wd_off: u32,
    w_off: u32,
    h_off: u32,
    y_off: u32,
    flags: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> d: array<T>;
@group(0) @binding(2) var<storage, read_write> wd: array<T>;
@group(0) @binding(3) var<storage, read_write> w: array<T>;
@group(0) @binding(4) var<storage, read_write> h: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let row = wid.x + (wid.y + wid.z * nwg.y) * nwg.x;
    if row >= params.rows {
        return;
    }
    let n = params.n;
    let base = row * n;
    let normed = (params.flags & DELTA_NORM) != 0u;
    var d_scale = 1.0;
    if normed {
        var s = 0.0;
        for (var i = lanes.index; i < n; i += WG) {
            let v = f32(d[params.d_off + base + i]);
            s += v * v;
        }
        d_scale = inverseSqrt(workgroup_sum(s, lanes) / f32(n) + params.eps);
    }
    var s2 = 0.0;
    for (var i = lanes.index; i < n; i += WG) {
        var dv = f32(d[params.d_off + base + i]);
        if normed {
            dv *= d_scale * f32(wd[params.wd_off + i]);
        }
        // The stored value, so that `y` is the norm of exactly what `h` holds.
        let hv = f32(T(f32(x[params.x_off + base + i]) + dv));
        h[params.h_off + base + i] = T(hv);
        s2 += hv * hv;
    }
    let scale = inverseSqrt(workgroup_sum(s2, lanes) / f32(n) + params.eps);
    for (var i = lanes.index; i < n; i += WG) {
        let hv = f32(h[params.h_off + base + i]);
        y[params.y_off + base + i] = T(hv * scale * f32(w[params.w_off + i]));
    }
}
