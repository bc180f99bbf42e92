// ---- unary_common.wgsl: the activation math, shared by the unary and gated kernels and the
// quantized GEMV that reads its input through a gate (appended to each of their modules) ----
//
// `apply(x)` computes the activation `OP` in f32. Intermediates never overflow for finite
// inputs (exponentials are taken of -|x| only), so tanh, sigmoid, silu and both GELUs stay
// finite for any finite x.

// 0 neg, 1 abs, 2 exp, 3 log, 4 sqrt, 5 rsqrt, 6 tanh, 7 sigmoid, 8 relu, 9 gelu (erf form),
// 10 gelu (tanh approximation), 11 silu, 12 square.
override OP: u32 = 0u;

const FRAC_1_SQRT_2: f32 = 0.70710678118654752440;
const SQRT_2_OVER_PI: f32 = 0.79788456080286535588;

// 1 / (1 + e^-x), from e^-|x| in (0, 1]: no overflow, full relative precision on both sides.
fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    let r = 1.0 / (1.0 + e);
    return select(r, e * r, x < 0.0);
}

// tanh without the inf / inf of (e^2x - 1) / (e^2x + 1): for |x| < 0.625, x + x (P(x^2) - 1)
// with P a Chebyshev fit of tanh(x)/x in x^2 (error < 4e-9); (1 - e) / (1 + e) with
// e = e^-2|x| in (0, 0.29) beyond.
fn safe_tanh(x: f32) -> f32 {
    let a = abs(x);
    if a < 0.625 {
        let y = x * x;
        var p: f32 = -0.0056571351843803915;
        p = p * y + 0.020588191454586372;
        p = p * y - 0.053720107656628939;
        p = p * y + 0.13331114055689769;
        p = p * y - 0.33333259862947528;
        p = p * y - 3.97727826e-9;
        return x + x * p;
    }
    let e = exp(-2.0 * a);
    let r = (1.0 - e) / (1.0 + e);
    return select(r, -r, x < 0.0);
}

// erf(z) for |z| < 1: z + z (P(z^2) - 1), P a Chebyshev fit of erf(z)/z in z^2 (error
// < 1.3e-9). Adding z last keeps the rounding small: absolute error ~6e-8 (one ulp) in f32.
fn erf_small(z: f32) -> f32 {
    let y = z * z;
    var p: f32 = 7.8758750626854883e-5;
    p = p * y - 0.00080168642871658695;
    p = p * y + 0.005189087423433974;
    p = p * y - 0.026854212010626412;
    p = p * y + 0.11283594715160218;
    p = p * y - 0.37612626666720331;
    p = p * y + 0.1283791658483509;
    return z + z * p;
}

// erfc(z) for z >= 1, given e = e^(-z^2): t e^(-z^2 + P(t)) with t = 1 / (1 + z/2), relative
// error < 1.1e-7 (the Chebyshev fit of Numerical Recipes' erfcc). With erf_small this is the
// whole erf: erf(z) = erf_small(z) for |z| < 1, sign(z) (1 - erfc_tail(|z|)) beyond, absolute
// error ~1e-7 in f32.
fn erfc_tail(z: f32, e: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    var p: f32 = 0.17087277;
    p = p * t - 0.82215223;
    p = p * t + 1.48851587;
    p = p * t - 1.13520398;
    p = p * t + 0.27886807;
    p = p * t - 0.18628806;
    p = p * t + 0.09678418;
    p = p * t + 0.37409196;
    p = p * t + 1.00002368;
    p = p * t - 1.26551223;
    return t * e * exp(p);
}

// e^(-x^2 / 2) with x^2 split into h^2 (h: x's top 12 significant bits, so h*h is exact) and
// the small rest, so that the rounding of x*x does not cost relative precision in the tail.
fn exp_neg_half_sq(x: f32) -> f32 {
    let h = bitcast<f32>(bitcast<u32>(x) & 0xfffff000u);
    return exp(-0.5 * (h * h)) * exp(-0.5 * (x - h) * (x + h));
}

// x Φ(x) = x (1 + erf(x/√2)) / 2 (BERT's GELU). Beyond |x|/√2 = 1, Φ comes from
// q = erfc(|x|/√2) in (0, 0.16), which has no cancellation: the negative tail keeps its
// relative precision. erfc(10) < 2.1e-45 is 0 in f32.
fn gelu_erf(x: f32) -> f32 {
    let z = abs(x) * FRAC_1_SQRT_2;
    let half = select(0.5, -0.5, x < 0.0);
    var phi: f32;
    if z < 1.0 {
        phi = 0.5 + half * erf_small(z);
    } else {
        var q: f32 = 0.0;
        if z < 10.0 {
            q = erfc_tail(z, exp_neg_half_sq(x));
        }
        phi = select(1.0 - 0.5 * q, 0.5 * q, x < 0.0);
    }
    return x * phi;
}

// x (1 + tanh u) / 2 with u = √(2/π) (x + 0.044715 x^3) (GPT-2, Gemma), computed as x σ(2u):
// the same value without the cancellation of 1 + tanh u for negative x.
fn gelu_tanh(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x);
    return x * sigmoid(2.0 * u);
}

// x σ(x) (SiLU, swish).
fn silu(x: f32) -> f32 {
    return x * sigmoid(x);
}

fn apply(x: f32) -> f32 {
    switch OP {
        case 0u: { return -x; }
        case 1u: { return abs(x); }
        case 2u: { return exp(x); }
        case 3u: { return log(x); }
        case 4u: { return sqrt(x); }
        case 5u: { return inverseSqrt(x); }
        case 6u: { return safe_tanh(x); }
        case 7u: { return sigmoid(x); }
        // NaN stays NaN. Decided on the bits: NVIDIA's compiler turned the float comparison
        // into max(x, 0), which maps NaN to 0.
        case 8u: {
            let bits = bitcast<u32>(x);
            return select(x, 0.0, bits > 0x80000000u && bits <= 0xff800000u);
        }
        case 9u: { return gelu_erf(x); }
        case 10u: { return gelu_tanh(x); }
        case 11u: { return silu(x); }
        default: { return x * x; }
    }
}
