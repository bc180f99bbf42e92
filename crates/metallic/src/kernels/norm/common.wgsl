// Shared by every normalisation kernel in this folder (appended to each kernel's source):
// the options, the parameters and the compensated per-invocation sums. `norm.wgsl` says what
// they compute and why.

// 0: layer norm; 1: RMS norm.
override RMS: bool = false;
// Neumaier-compensated per-invocation sums (else plain f32 sums).
override COMPENSATED: bool = true;

// Bits of `params.flags`.
const HAS_WEIGHT: u32 = 1u;
const HAS_BIAS: u32 = 2u;
const UNIT_OFFSET: u32 = 4u;

struct Params {
    rows: u32,
    cols: u32,
    x_off: u32,
    w_off: u32,
    b_off: u32,
    out_off: u32,
    flags: u32,
    eps: f32,
    // Always 0. XOR-ed into the bits of each compensated partial sum so that no compiler
    // can prove `(s + v) - s == v` and fold the compensation away (fast-math on Metal,
    // algebraic passes elsewhere).
    zero: u32,
}

// A running sum `s` and, when COMPENSATED, the rounding error `c` it has shed (value s + c).
struct Acc {
    s: f32,
    c: f32,
}

fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ params.zero);
}

fn acc_add(a: Acc, v: f32) -> Acc {
    if !COMPENSATED {
        return Acc(a.s + v, 0.0);
    }
    let t = opaque(a.s + v);
    // Neumaier: the exact rounding error of s + v, taken from the larger operand.
    let err = select((v - t) + a.s, (a.s - t) + v, abs(a.s) >= abs(v));
    return Acc(t, a.c + err);
}

fn acc_add4(a: Acc, v: vec4<f32>) -> Acc {
    return acc_add(acc_add(acc_add(acc_add(a, v.x), v.y), v.z), v.w);
}

// Sum over the workgroup; call from uniform control flow.
fn acc_total(a: Acc, lanes: Lanes) -> f32 {
    return workgroup_sum(a.s + a.c, lanes);
}

// The same, and when COMPENSATED a second reduction corrects the first one's rounding: each
// invocation's distance from an equal share, p - t / WG (t / WG is exact, WG a power of two),
// sums exactly to (sum of partials) - t, and being small it sums with small error.
fn acc_total_refined(a: Acc, lanes: Lanes) -> f32 {
    let p = a.s + a.c;
    let t = workgroup_sum(p, lanes);
    if !COMPENSATED {
        return t;
    }
    return t + workgroup_sum(p - t / f32(WG), lanes);
}
