// Quantized GEMM for many rows of x (prefill): y[m, n0 + r] = sum_k x[m, k] * W[r, k] for the
// rows r of one weight part, f32 accumulation.
//
// A workgroup of 256 invocations computes a 64 x 64 tile of y, 4 x 4 outputs per invocation, in
// K-steps of 32: each step stages x's 64 x 32 tile and W's 64 x 32 tile in workgroup memory,
// W's decoded on the way (`deq8`, common.wgsl: one group of 8 weights per invocation), both
// k-major so the FMA loop reads vec4 along m and n. Grid: x = N tiles, y = M tiles, clamped to
// the device limit; workgroups loop over the rest.

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;
const THREADS: u32 = 256u;

// `Params` and the bindings x, w, y: gemm_common.wgsl.

// xs[kk * BM / 4 + mm / 4][mm % 4] = x[m0 + mm, k0 + kk]; ws likewise along n.
var<workgroup> xs: array<vec4<f32>, BK * BM / 4u>;
var<workgroup> ws: array<vec4<f32>, BK * BN / 4u>;

fn store(row: u32, col: u32, v: vec4<f32>) {
    if row < params.m {
        let base = params.y_off + row * params.ldy + params.n0;
        for (var j = 0u; j < 4u; j += 1u) {
            if col + j < params.n {
                y[base + col + j] = T(v[j]);
            }
        }
    }
}

fn tile(lid: u32, m0: u32, c0: u32) {
    let tx = lid % 16u;
    let ty = lid / 16u;
    // This invocation's group of 8 weights in each K-step: row wn of the tile, group wq.
    let wn = lid / 4u;
    let wq = lid % 4u;
    let wrow = c0 + wn;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        for (var i = 0u; i < BM * BK / THREADS; i += 1u) {
            let e = lid + i * THREADS;
            let mm = e / BK;
            let kk = e % BK;
            let gm = m0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if gm < params.m && gk < params.k {
                v = f32(x[params.x_off + gm * params.k + gk]);
            }
            xs[kk * (BM / 4u) + mm / 4u][mm % 4u] = v;
        }
        var wv: W8;
        let g = k0 / 8u + wq;
        if wrow < params.n && g < params.groups {
            wv = deq8(params.w_off + wrow * params.row_words, g, params.k);
        }
        let at = (wq * 8u) * (BN / 4u) + wn / 4u;
        let c = wn % 4u;
        ws[at][c] = wv.lo.x;
        ws[at + BN / 4u][c] = wv.lo.y;
        ws[at + 2u * (BN / 4u)][c] = wv.lo.z;
        ws[at + 3u * (BN / 4u)][c] = wv.lo.w;
        ws[at + 4u * (BN / 4u)][c] = wv.hi.x;
        ws[at + 5u * (BN / 4u)][c] = wv.hi.y;
        ws[at + 6u * (BN / 4u)][c] = wv.hi.z;
        ws[at + 7u * (BN / 4u)][c] = wv.hi.w;
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 1u) {
            let a = xs[kk * (BM / 4u) + ty];
            let b = ws[kk * (BN / 4u) + tx];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    let row = m0 + ty * 4u;
    let col = c0 + tx * 4u;
    store(row, col, acc0);
    store(row + 1u, col, acc1);
    store(row + 2u, col, acc2);
    store(row + 3u, col, acc3);
}

@compute @workgroup_size(THREADS)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tiles_m = (params.m + BM - 1u) / BM;
    let tiles_n = (params.n + BN - 1u) / BN;
    for (var tm = wid.y; tm < tiles_m; tm += nwg.y) {
        for (var tn = wid.x; tn < tiles_n; tn += nwg.x) {
            tile(lid, tm * BM, tn * BN);
        }
    }
}
