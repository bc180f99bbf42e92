enable f16;
enable wgpu_cooperative_matrix;

// Quantized GEMM on cooperative matrices (tensor cores) for many rows of x (prefill):
// y[m, n0 + r] = sum_k x[m, k] * W[r, k] for the rows r of one weight part, with x and the
// decoded weights rounded to f16 and the products accumulated in f32 16 x 16 matrices.
//
// A workgroup of 128 invocations (4 subgroups of 32) computes a 64 x 64 tile of y; subgroup s
// takes rows 32 * (s / 2) .. + 32 and columns 32 * (s % 2) .. + 32: 2 x 2 accumulators. K-steps
// of BK = 32: x's 64 x 32 tile (four vec4 of consecutive k per invocation) and W's 64 x 32 tile
// (`deq8`, common.wgsl: two groups of 8 weights per invocation) pass through workgroup memory
// as f16, both stored [row][k] with rows padded by 8 halves so that the fragments' rows spread
// over the banks. The next K-step's x and weights are read into registers while this one
// multiplies. Values beyond f16's range are clamped to it (a prefill's activations are far
// inside). The accumulators leave through a per-subgroup 16 x 16 f32 staging tile, so that the
// edges of y are applied per element.
//
// Each row of y depends only on its row of x (the K-steps and the 16-wide fragments add up in
// the same order in every tile), so a row's result does not depend on how many rows run with
// it. The Rust side runs this kernel only where subgroups have exactly 32 invocations.
//
// Grid: x = N tiles, y = M tiles, clamped to the device limit; workgroups loop over the rest.

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;
const THREADS: u32 = 128u;
// Row stride of the f16 tiles: BK and 8 halves of padding.
const LD: u32 = BK + 8u;
const F16_MAX: f32 = 65504.0;

// `Params` and the bindings x, w, y: gemm_common.wgsl.

var<workgroup> xs: array<f16, BM * LD>;
var<workgroup> ws: array<f16, BN * LD>;
// One 16 x 16 staging tile per subgroup.
var<workgroup> c_sh: array<f32, 4u * 256u>;

fn to_f16(v: f32) -> f16 {
    return f16(clamp(v, -F16_MAX, F16_MAX));
}

// The j-th (j < 512) run of 4 consecutive elements of x's K-step tile: row j / 8, columns
// 4 (j % 8) ..; zeros outside x.
fn load_x4(m0: u32, k0: u32, j: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let gm = m0 + j / 8u;
    let gk = k0 + (j % 8u) * 4u;
    if gm < params.m {
        let base = params.x_off + gm * params.k + gk;
        for (var i = 0u; i < 4u; i += 1u) {
            if gk + i < params.k {
                v[i] = f32(x[base + i]);
            }
        }
    }
    return v;
}

fn put_x4(j: u32, v: vec4<f32>) {
    let at = (j / 8u) * LD + (j % 8u) * 4u;
    xs[at] = to_f16(v.x);
    xs[at + 1u] = to_f16(v.y);
    xs[at + 2u] = to_f16(v.z);
    xs[at + 3u] = to_f16(v.w);
}

// The j-th (j < 256) group of 8 weights of W's K-step tile: row j / 4 of the tile, weights
// 8 (j % 4) ..; zeros past the part's rows.
fn load_w8(c0: u32, k0: u32, j: u32) -> W8 {
    var v: W8;
    let r = c0 + j / 4u;
    let g = k0 / 8u + j % 4u;
    if r < params.n && g < params.groups {
        v = deq8(params.w_off + r * params.row_words, g, params.k);
    }
    return v;
}

fn put_w8(j: u32, v: W8) {
    let at = (j / 4u) * LD + (j % 4u) * 8u;
    ws[at] = to_f16(v.lo.x);
    ws[at + 1u] = to_f16(v.lo.y);
    ws[at + 2u] = to_f16(v.lo.z);
    ws[at + 3u] = to_f16(v.lo.w);
    ws[at + 4u] = to_f16(v.hi.x);
    ws[at + 5u] = to_f16(v.hi.y);
    ws[at + 6u] = to_f16(v.hi.z);
    ws[at + 7u] = to_f16(v.hi.w);
}

// Writes one accumulator (tile rows r0.., part columns c0..) to y through the subgroup's
// staging tile. Every invocation calls it (barriers).
fn store_frag(acc: coop_mat16x16<f32, C>, sg: u32, lane: u32, r0: u32, c0: u32) {
    let at = sg * 256u;
    coopStoreT(acc, &c_sh[at], 16u);
    workgroupBarrier();
    for (var t = 0u; t < 8u; t += 1u) {
        let i = lane + t * 32u;
        let row = r0 + i / 16u;
        let col = c0 + i % 16u;
        if row < params.m && col < params.n {
            y[params.y_off + row * params.ldy + params.n0 + col] = T(c_sh[at + i]);
        }
    }
    workgroupBarrier();
}

fn tile(lid: u32, sg: u32, lane: u32, m0: u32, c0: u32) {
    let wr = (sg / 2u) * 32u;
    let wc = (sg % 2u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var x0 = load_x4(m0, 0u, lid);
    var x1 = load_x4(m0, 0u, lid + THREADS);
    var x2 = load_x4(m0, 0u, lid + 2u * THREADS);
    var x3 = load_x4(m0, 0u, lid + 3u * THREADS);
    var w0 = load_w8(c0, 0u, lid);
    var w1 = load_w8(c0, 0u, lid + THREADS);
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        // Every subgroup is done with the previous K-step's tiles.
        workgroupBarrier();
        put_x4(lid, x0);
        put_x4(lid + THREADS, x1);
        put_x4(lid + 2u * THREADS, x2);
        put_x4(lid + 3u * THREADS, x3);
        put_w8(lid, w0);
        put_w8(lid + THREADS, w1);
        workgroupBarrier();
        let k1 = k0 + BK;
        if k1 < params.k {
            x0 = load_x4(m0, k1, lid);
            x1 = load_x4(m0, k1, lid + THREADS);
            x2 = load_x4(m0, k1, lid + 2u * THREADS);
            x3 = load_x4(m0, k1, lid + 3u * THREADS);
            w0 = load_w8(c0, k1, lid);
            w1 = load_w8(c0, k1, lid + THREADS);
        }
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&xs[wr * LD + kk], LD);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&xs[(wr + 16u) * LD + kk], LD);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&ws[wc * LD + kk], LD);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&ws[(wc + 16u) * LD + kk], LD);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
    }
    let r = m0 + wr;
    let c = c0 + wc;
    store_frag(c00, sg, lane, r, c);
    store_frag(c01, sg, lane, r, c + 16u);
    store_frag(c10, sg, lane, r + 16u, c);
    store_frag(c11, sg, lane, r + 16u, c + 16u);
}

@compute @workgroup_size(THREADS)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tiles_m = (params.m + BM - 1u) / BM;
    let tiles_n = (params.n + BN - 1u) / BN;
    for (var tm = wid.y; tm < tiles_m; tm += nwg.y) {
        for (var tn = wid.x; tn < tiles_n; tn += nwg.x) {
            tile(lid, sg, lane, tm * BM, tn * BN);
        }
    }
}
