// out[i] = op(a[i], b[i % b_len])  — or op(a[i], scalar) when b_len == 0.
// Computed in f32 whatever the storage type T.

// 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum.
override OP: u32 = 0u;
// Swap the operands: op(y, x). Gives `scalar - a` and `scalar / a`.
override SWAP: bool = false;

struct Params {
    n: u32,
    // Elements of b, repeated over a (b's shape is a suffix of a's); 0: use `scalar`.
    b_len: u32,
    a_off: u32,
    b_off: u32,
    out_off: u32,
    scalar: f32,
}

@group(0) @binding(0) var<storage, read_write> a: array<T>;
@group(0) @binding(1) var<storage, read_write> b: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

fn apply(x: f32, y: f32) -> f32 {
    if OP == 0u { return x + y; }
    if OP == 1u { return x - y; }
    if OP == 2u { return x * y; }
    if OP == 3u { return x / y; }
    if OP == 4u { return max(x, y); }
    return min(x, y);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    let x = f32(a[params.a_off + i]);
    var y = params.scalar;
    if params.b_len != 0u {
        y = f32(b[params.b_off + i % params.b_len]);
    }
    if SWAP {
        out[params.out_off + i] = T(apply(y, x));
    } else {
        out[params.out_off + i] = T(apply(x, y));
    }
}
