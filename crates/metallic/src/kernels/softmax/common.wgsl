// Shared by every softmax kernel in this folder (appended to each kernel's source): the
// options, the parameters, masking and the compensated sums. `softmax.wgsl` says what they
// compute.

// Neumaier-compensated per-invocation sums: on long rows an invocation adds thousands of
// terms, many below half an ulp of its running sum (see COMPENSATED_DEFAULT in mod.rs for the
// measurement). A compiler that reassociates float additions (fast math) may fold the
// compensation away; the long-row test checks that it still helps.
override COMPENSATED: bool = true;

struct Params {
    // Rows (all dimensions but the last, multiplied out) and their length K.
    rows: u32,
    k: u32,
    // Queries per plane (second-to-last dimension; 1 for rank 1), for the causal mask.
    q_len: u32,
    x_off: u32,
    out_off: u32,
    mask_off: u32,
    // Multiplies every logit before the mask and the max.
    scale: f32,
    // Non-zero: key k of query q takes part iff k <= q + causal_offset.
    causal: u32,
    causal_offset: u32,
    // Zero: no mask (x is bound in its place).
    has_mask: u32,
    // The row index splits into (i0, i1, i2) over sizes (-, n1, n2); the mask row starts at
    // mask_off + i0 * ms0 + i1 * ms1 + i2 * ms2 and steps ms_k per key (0: broadcast).
    n1: u32,
    n2: u32,
    ms0: u32,
    ms1: u32,
    ms2: u32,
    ms_k: u32,
    // Always 0 (see `opaque`).
    zero: u32,
}

// `v`, hidden from the optimiser: compensated summation computes (s - (s + t)) + t, which a
// compiler that reassociates float additions folds to 0. NVIDIA's Vulkan compiler did so on an
// H100 until the sum went through this runtime identity.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ params.zero);
}

// The largest finite f32.
const F32_MAX: f32 = 0x1.fffffep+127f;
// exp of anything below this is 0 in f32. Clamping keeps -inf and NaN-prone differences away
// from exp, and keeps masked keys at exactly 0 even where a compiler drops `is_masked`.
const EXP_FLOOR: f32 = -128.0;

// Masked logits (-inf) are found on the bits, which a fast-math compiler (Metal's default)
// may not fold away as it may a comparison with -inf.
fn is_masked(v: f32) -> bool {
    return bitcast<u32>(v) >= 0xff800000u;
}


// Scaled logit `v` of key `k`: mask added, overflow clamped to the largest finite value, and
// -inf (taking no part) for keys at or beyond `limit` (causal, or past the row).
fn logit(v: f32, k: u32, limit: u32, mr: u32) -> f32 {
    if k >= limit {
        // -inf, built at run time (a constant infinity is not valid WGSL).
        return bitcast<f32>(0xff800000u | params.zero);
    }
    var r = v;
    if params.has_mask != 0u {
        r += f32(mask[mr + k * params.ms_k]);
    }
    if bitcast<u32>(r) == 0x7f800000u {
        r = F32_MAX;
    }
    return r;
}

fn live(v: f32) -> f32 {
    return select(v, -F32_MAX, is_masked(v));
}

fn max4(v: vec4<f32>) -> f32 {
    return max(max(live(v.x), live(v.y)), max(live(v.z), live(v.w)));
}

fn ex(v: f32, m: f32) -> f32 {
    return select(exp(max(v - m, EXP_FLOOR)), 0.0, is_masked(v));
}

fn exps(v: vec4<f32>, m: f32) -> vec4<f32> {
    return vec4<f32>(ex(v.x, m), ex(v.y, m), ex(v.z, m), ex(v.w, m));
}

// A running sum `s` and, when COMPENSATED, the rounding error `c` it has shed.
struct Acc {
    s: f32,
    c: f32,
}

fn acc_add(a: Acc, v: f32) -> Acc {
    if !COMPENSATED {
        return Acc(a.s + v, 0.0);
    }
    let t = opaque(a.s + v);
    let err = select((v - t) + a.s, (a.s - t) + v, abs(a.s) >= abs(v));
    return Acc(t, a.c + err);
}

fn acc_add4(a: Acc, v: vec4<f32>) -> Acc {
    return acc_add(acc_add(acc_add(acc_add(a, v.x), v.y), v.z), v.w);
}
