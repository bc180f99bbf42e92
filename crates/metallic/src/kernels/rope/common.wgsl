// Shared by the kernels of this folder (appended to each): sin and cos of an angle in turns.

const TAU: f32 = 6.2831853071795864769;

// (sin, cos) of 2π·u for |u| <= 1/2: quadrant from round(4u), then Taylor polynomials on
// [-π/4, π/4] (truncation error below 2e-9).
fn sincos_turns(u: f32) -> vec2<f32> {
    let q = round(u * 4.0);
    let r = (u - q * 0.25) * TAU;
    let r2 = r * r;
    let s = r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0)))));
    let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0)))));
    // sin/cos(r + k·π/2); k = q mod 4 (q = -1 is quadrant 3, q = -2 quadrant 2).
    let k = i32(q) & 3;
    if k == 0 {
        return vec2<f32>(s, c);
    }
    if k == 1 {
        return vec2<f32>(c, -s);
    }
    if k == 2 {
        return vec2<f32>(-s, -c);
    }
    return vec2<f32>(-c, s);
}
