// Batched GEMV (M = 1): c[n] = alpha * sum_k a[k] * op(B)[k, n] + beta * c[n], in f32.
//
// Two entry points, one per layout of B:
// - `gemv_nk`: B stored [N, K] (op(B) = Bᵀ, the layout of linear-layer weights). A workgroup
//   computes NK_COLS outputs; its invocations stride along K, so each row of B is read
//   contiguously, and `workgroup_sum` finishes each dot product.
// - `gemv_kn`: B stored [K, N]. A workgroup computes KN_COLS adjacent outputs with
//   WG / KN_COLS slices of K; the KN_COLS invocations of a slice read a contiguous run of a
//   row of B (four rows in flight per invocation), and the slices' partial sums meet in
//   workgroup memory.
//
// Grid: x = column groups, z = batch, each clamped to the device limit; workgroups loop over
// the rest.

// Output columns per workgroup of `gemv_kn`; divides WG.
override KN_COLS: u32 = 32u;
// Output columns per workgroup of `gemv_nk`.
const NK_COLS: u32 = 4u;

struct Params {
    n: u32,
    k: u32,
    batch: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    // Row stride of the stored B, in elements.
    ldb: u32,
    // Batch strides in elements; 0 repeats one operand over the batch.
    a_batch: u32,
    b_batch: u32,
    c_batch: u32,
    alpha: f32,
    // 0: c is not read.
    beta: f32,
}

@group(0) @binding(0) var<storage, read_write> a: array<T>;
@group(0) @binding(1) var<storage, read_write> b: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<T>;

fn store(idx: u32, dot: f32) {
    var v = params.alpha * dot;
    if params.beta != 0.0 {
        v += params.beta * f32(c[idx]);
    }
    c[idx] = T(v);
}

@compute @workgroup_size(WG)
fn gemv_nk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, lanes: Lanes) {
    let groups = (params.n + NK_COLS - 1u) / NK_COLS;
    let last = max(params.n, 1u) - 1u;
    for (var bz = wid.z; bz < params.batch; bz += nwg.z) {
        let a_base = params.a_off + bz * params.a_batch;
        let b_base = params.b_off + bz * params.b_batch;
        for (var g = wid.x; g < groups; g += nwg.x) {
            let n0 = g * NK_COLS;
            // Rows past N repeat the last one; their sums are not stored.
            let r0 = b_base + min(n0, last) * params.ldb;
            let r1 = b_base + min(n0 + 1u, last) * params.ldb;
            let r2 = b_base + min(n0 + 2u, last) * params.ldb;
            let r3 = b_base + min(n0 + 3u, last) * params.ldb;
            var acc = vec4<f32>(0.0);
            for (var k = lanes.index; k < params.k; k += WG) {
                let x = f32(a[a_base + k]);
                acc += x * vec4<f32>(f32(b[r0 + k]), f32(b[r1 + k]), f32(b[r2 + k]), f32(b[r3 + k]));
            }
            let s = vec4<f32>(
                workgroup_sum(acc.x, lanes),
                workgroup_sum(acc.y, lanes),
                workgroup_sum(acc.z, lanes),
                workgroup_sum(acc.w, lanes),
            );
            let col = n0 + lanes.index;
            if lanes.index < NK_COLS && col < params.n {
                store(params.c_off + bz * params.c_batch + col, s[lanes.index]);
            }
        }
    }
}

// Partial sums of the K-slices of `gemv_kn`: partial[slice * KN_COLS + column].
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn gemv_kn(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let slices = WG / KN_COLS;
    let col = lid % KN_COLS;
    let slice = lid / KN_COLS;
    let groups = (params.n + KN_COLS - 1u) / KN_COLS;
    for (var bz = wid.z; bz < params.batch; bz += nwg.z) {
        let a_base = params.a_off + bz * params.a_batch;
        let b_base = params.b_off + bz * params.b_batch;
        for (var g = wid.x; g < groups; g += nwg.x) {
            let n = g * KN_COLS + col;
            var acc = 0.0;
            if n < params.n {
                // Four independent loads per iteration keep enough bytes in flight.
                var k = slice;
                let step = slices * params.ldb;
                var p = b_base + k * params.ldb + n;
                for (; k + 3u * slices < params.k; k += 4u * slices) {
                    let b0 = f32(b[p]);
                    let b1 = f32(b[p + step]);
                    let b2 = f32(b[p + 2u * step]);
                    let b3 = f32(b[p + 3u * step]);
                    acc += f32(a[a_base + k]) * b0 + f32(a[a_base + k + slices]) * b1
                        + f32(a[a_base + k + 2u * slices]) * b2 + f32(a[a_base + k + 3u * slices]) * b3;
                    p += 4u * step;
                }
                for (; k < params.k; k += slices) {
                    acc += f32(a[a_base + k]) * f32(b[p]);
                    p += step;
                }
            }
            partial[lid] = acc;
            workgroupBarrier();
            if slice == 0u && n < params.n {
                var total = 0.0;
                for (var s = 0u; s < slices; s += 1u) {
                    total += partial[s * KN_COLS + col];
                }
                store(params.c_off + bz * params.c_batch + n, total);
            }
            workgroupBarrier();
        }
    }
}
