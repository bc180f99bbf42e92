// Normalisation over the last dimension: layer norm and RMS norm, one workgroup per row.
//
//   layer norm: y = (x - mean) / sqrt(var + eps) * w + b
//   RMS norm:   y = x / sqrt(mean(x^2) + eps) * w        (or * (1 + w): Gemma's convention)
//
// Storage is T (f32 or f16); every sum is f32. Rows beyond the grid's x dimension fold into
// y: row = wid.x + wid.y * nwg.x.
//
// Layer norm is the corrected two-pass algorithm (Chan, Golub & LeVeque): pass 1 sums the
// row for a first mean m; pass 2 re-reads the row and sums d = x - m and d^2; then
// mean = m + S1/n and var = S2/n - (S1/n)^2, which removes pass 1's rounding error from the
// mean. Pass 3 writes ((x - m) - S1/n) * rsqrt(var + eps); x - m is exact where x is within a
// factor 2 of m, so a row far from zero (mean 100, std 1) loses nothing to cancellation.
//
// COMPENSATED: each invocation sums with Neumaier's compensated addition, so its partial is
// accurate to about one rounding however long the row, and the sum of squares takes a second
// `workgroup_sum` that corrects the first one's rounding (`acc_total_refined`). The first
// mean and the sum of deviations need no such correction: the corrected two-pass formula
// absorbs the error of the one, and the other is small.

// Options, `Params` and the `Acc` sums: common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<T>;
// When the op has no weight (bias), the host binds `x` here and clears the flag.
@group(0) @binding(1) var<storage, read_write> weight: array<T>;
@group(0) @binding(2) var<storage, read_write> bias: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let row = wid.x + wid.y * nwg.x;
    if row >= params.rows {
        return;
    }
    let n = params.cols;
    let count = f32(n);
    let xs = params.x_off + row * n;
    let os = params.out_off + row * n;

    // Pass 1 (layer norm): a first mean, the shift of pass 2.
    var shift = 0.0;
    if !RMS {
        var sum = Acc(0.0, 0.0);
        for (var i = lanes.index; i < n; i += WG) {
            sum = acc_add(sum, f32(x[xs + i]));
        }
        shift = acc_total(sum, lanes) / count;
    }

    // Pass 2: sums of d = x - shift and of d^2.
    var s1 = Acc(0.0, 0.0);
    var s2 = Acc(0.0, 0.0);
    for (var i = lanes.index; i < n; i += WG) {
        let d = f32(x[xs + i]) - shift;
        if !RMS {
            s1 = acc_add(s1, d);
        }
        s2 = acc_add(s2, d * d);
    }
    var center = 0.0;
    var meansq = acc_total_refined(s2, lanes) / count;
    if !RMS {
        center = acc_total(s1, lanes) / count;
        meansq = max(meansq - center * center, 0.0);
    }
    let scale = inverseSqrt(meansq + params.eps);

    // Pass 3: normalise, scale, shift.
    let has_weight = (params.flags & HAS_WEIGHT) != 0u;
    let has_bias = (params.flags & HAS_BIAS) != 0u;
    let unit = select(0.0, 1.0, (params.flags & UNIT_OFFSET) != 0u);
    for (var i = lanes.index; i < n; i += WG) {
        var y = ((f32(x[xs + i]) - shift) - center) * scale;
        if has_weight {
            y *= unit + f32(weight[params.w_off + i]);
        }
        if has_bias {
            y += f32(bias[params.b_off + i]);
        }
        out[os + i] = T(y);
    }
}
