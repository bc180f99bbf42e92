// metallic: trusted
// (Compiled without wgpu's runtime checks: x is read only under `gm < m` and `gk < k` (a vec4
// only where XVEC, set by the Rust side where x's offset and K are multiples of 4, so a vec4
// starting inside a row ends inside it), the weights only through `deq8` under `r < n` and
// `g < groups` (its reads stay inside row r's `row_words` words, and the part's binding holds
// n of them by construction), y is written only under `row < m` and `col < n` (at split z of
// the grid's z: `z * split_stride` further on, the Rust side sizing y for every split), all
// sizes the Rust side validated against the bindings. Workgroup-memory indices, the cooperative loads'
// and stores' whole 16 x 16 footprints included, are built from `lid < WG` (= 32 SGM SGN), the subgroup
// id (< SGM * SGN: the Rust side runs this kernel only where subgroups have exactly 32
// invocations) and the tile constants; the private arrays are indexed below XPT <= 8 and
// 2 WPT <= 8 (SGN >= 2, SGM >= 1); loops are bounded by k and the tile counts.)
enable f16;
enable wgpu_cooperative_matrix;

// Quantized GEMM on cooperative matrices (tensor cores) for many rows of x (prefill):
// y[m, n0 + r] = sum_k x[m, k] * W[r, k] for the rows r of one weight part, with x and the
// decoded weights rounded to f16 and the products accumulated in f32 16 x 16 matrices.
//
// A workgroup of SGM x SGN subgroups of 32 computes a (64 SGM) x (32 SGN) tile of y (64 x 64 up
// to 128 x 128); subgroup s takes rows 64 (s / SGN) .. + 64 and columns 32 (s % SGN) .. + 32:
// 4 x 2 accumulators, each K-step's B fragments loaded once for four A fragments. K-steps of
// BK = 32: x's tile (vec4 of consecutive k) and W's tile (`deq8`, common.wgsl: groups of 8
// weights) pass through workgroup memory as f16, both stored [row][k] with rows padded by 8
// halves so that the fragments' rows spread over the banks. The next K-step's x and weights
// are read into registers while this one multiplies. Values beyond f16's range are clamped to
// it (a prefill's activations are far inside). The accumulators leave through a per-subgroup
// 16 x 16 f32 staging tile, so that the edges of y are applied per element.
//
// Each output is its row of x against its row of W, summed over the same K-steps and 16-wide
// fragments in the same order whatever the tile: a row's result depends neither on how many
// rows run with it nor on the tile shape the Rust side picks for their count.
//
// Split K: with few rows of x there are too few tiles to fill the GPU, and one workgroup's
// walk along K is the whole latency. Then the workgroups along z each take `k_chunk` weights
// of every row and write their partial tile to their own copy of y (`split_stride` apart); a
// second kernel (gemm_split.wgsl) adds the copies in order. The sum then runs over the same
// K-steps, grouped by split: a row's result still does not depend on the other rows, for a
// given split.
//
// Grid: x = N tiles, y = M tiles, clamped to the device limit; workgroups loop over the rest;
// z = splits of K (1: all of K).

// Subgroups along M (1 or 2) and along N (2 or 4).
override SGM: u32 = 2u;
override SGN: u32 = 4u;
// Read x as vec4 through `x4`.
override XVEC: bool = false;

const BK: u32 = 32u;
// (The tile's sizes are expressions of SGM and SGN where they are used, and the workgroup
// arrays have the largest tile's size: naga 30's override processing fails on overrides
// initialized from other overrides and on workgroup arrays sized by these overrides.)
// Row stride of the f16 tiles: BK and 8 halves of padding.
const LD: u32 = BK + 8u;
const F16_MAX: f32 = 65504.0;

// `Params` and the bindings x, w, y: gemm_common.wgsl. x again, four elements at a time:
@group(0) @binding(3) var<storage, read_write> x4: array<vec4<T>>;

// x's and W's K-step tiles, [row][k] (the first 64 SGM and 32 SGN rows).
var<workgroup> xs: array<f16, 128u * LD>;
var<workgroup> ws: array<f16, 128u * LD>;
// One 16 x 16 staging tile per subgroup.
var<workgroup> c_sh: array<f32, 8u * 256u>;

// Rows and columns of the tile, invocations.
fn bm() -> u32 {
    return 64u * SGM;
}

fn bn() -> u32 {
    return 32u * SGN;
}

fn threads() -> u32 {
    return 32u * SGM * SGN;
}

// Per invocation and K-step: vec4 of x (BM * BK / 4 / THREADS) and groups of 8 weights
// (BN * BK / 8 / THREADS).
fn xpt() -> u32 {
    return 16u / SGN;
}

fn wpt() -> u32 {
    return 4u / SGM;
}

fn to_f16x4(v: vec4<f32>) -> vec4<f16> {
    return vec4<f16>(clamp(v, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
}

// The j-th run of 4 consecutive elements of x's K-step tile: row j / 8, columns 4 (j % 8) ..;
// zeros outside x.
fn load_x4(m0: u32, k0: u32, j: u32) -> vec4<f16> {
    var v = vec4<f32>(0.0);
    let gm = m0 + j / 8u;
    let gk = k0 + (j % 8u) * 4u;
    if gm < params.m {
        let base = params.x_off + gm * params.k + gk;
        if XVEC {
            if gk < params.k {
                v = vec4<f32>(x4[base / 4u]);
            }
        } else {
            for (var i = 0u; i < 4u; i += 1u) {
                if gk + i < params.k {
                    v[i] = f32(x[base + i]);
                }
            }
        }
    }
    return to_f16x4(v);
}

fn put_x4(j: u32, v: vec4<f16>) {
    let at = (j / 8u) * LD + (j % 8u) * 4u;
    xs[at] = v.x;
    xs[at + 1u] = v.y;
    xs[at + 2u] = v.z;
    xs[at + 3u] = v.w;
}

// The j-th group of 8 weights of W's K-step tile: row j / 4 of the tile, weights 8 (j % 4) ..;
// zeros past the part's rows.
fn load_w8(c0: u32, k0: u32, j: u32) -> W8 {
    var v: W8;
    let r = c0 + j / 4u;
    let g = k0 / 8u + j % 4u;
    if r < params.n && g < params.groups {
        v = deq8(params.w_off + r * params.row_words, g, params.k);
    }
    return v;
}

fn put_w4(at: u32, v: vec4<f16>) {
    ws[at] = v.x;
    ws[at + 1u] = v.y;
    ws[at + 2u] = v.z;
    ws[at + 3u] = v.w;
}

// Writes one accumulator (tile rows r0.., part columns c0..) to y through the subgroup's
// staging tile. Every invocation calls it (barriers).
fn store_frag(acc: coop_mat16x16<f32, C>, sg: u32, lane: u32, r0: u32, c0: u32, split: u32) {
    let at = sg * 256u;
    coopStoreT(acc, &c_sh[at], 16u);
    workgroupBarrier();
    for (var t = 0u; t < 8u; t += 1u) {
        let i = lane + t * 32u;
        let row = r0 + i / 16u;
        let col = c0 + i % 16u;
        if row < params.m && col < params.n {
            y[params.y_off + split * params.split_stride + row * params.ldy + params.n0 + col] = T(c_sh[at + i]);
        }
    }
    workgroupBarrier();
}

fn frag_x(r: u32, kk: u32) -> coop_mat16x16<f16, A> {
    return coopLoadT<coop_mat16x16<f16, A>>(&xs[r * LD + kk], LD);
}

fn frag_w(c: u32, kk: u32) -> coop_mat16x16<f16, B> {
    return coopLoad<coop_mat16x16<f16, B>>(&ws[c * LD + kk], LD);
}

// This invocation's part of the next K-step: x's vec4 and the decoded weights (two vec4 a
// group), waiting in registers while the current one multiplies.
var<private> xr: array<vec4<f16>, 8>;
var<private> wq: array<vec4<f16>, 8>;

// Reads this invocation's part of the K-step at k0 into `xr` and `wq`.
fn fetch(lid: u32, m0: u32, c0: u32, k0: u32) {
    for (var j = 0u; j < xpt(); j += 1u) {
        xr[j] = load_x4(m0, k0, lid + j * threads());
    }
    for (var j = 0u; j < wpt(); j += 1u) {
        let v = load_w8(c0, k0, lid + j * threads());
        wq[2u * j] = to_f16x4(v.lo);
        wq[2u * j + 1u] = to_f16x4(v.hi);
    }
}

// The tile at rows m0.., columns c0.. over weights kb..ke (split `split` of K).
fn tile(lid: u32, sg: u32, lane: u32, m0: u32, c0: u32, kb: u32, ke: u32, split: u32) {
    let wr = (sg / SGN) * 64u;
    let wc = (sg % SGN) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();
    fetch(lid, m0, c0, kb);
    for (var k0 = kb; k0 < ke; k0 += BK) {
        // Every subgroup is done with the previous K-step's tiles.
        workgroupBarrier();
        for (var j = 0u; j < xpt(); j += 1u) {
            put_x4(lid + j * threads(), xr[j]);
        }
        for (var j = 0u; j < wpt(); j += 1u) {
            let e = lid + j * threads();
            let at = (e / 4u) * LD + (e % 4u) * 8u;
            put_w4(at, wq[2u * j]);
            put_w4(at + 4u, wq[2u * j + 1u]);
        }
        workgroupBarrier();
        let k1 = k0 + BK;
        if k1 < ke {
            fetch(lid, m0, c0, k1);
        }
        for (var kk = 0u; kk < BK; kk += 16u) {
            let b0 = frag_w(wc, kk);
            let b1 = frag_w(wc + 16u, kk);
            let a0 = frag_x(wr, kk);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = frag_x(wr + 16u, kk);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            let a2 = frag_x(wr + 32u, kk);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            let a3 = frag_x(wr + 48u, kk);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
    }
    let r = m0 + wr;
    let c = c0 + wc;
    store_frag(c00, sg, lane, r, c, split);
    store_frag(c01, sg, lane, r, c + 16u, split);
    store_frag(c10, sg, lane, r + 16u, c, split);
    store_frag(c11, sg, lane, r + 16u, c + 16u, split);
    store_frag(c20, sg, lane, r + 32u, c, split);
    store_frag(c21, sg, lane, r + 32u, c + 16u, split);
    store_frag(c30, sg, lane, r + 48u, c, split);
    store_frag(c31, sg, lane, r + 48u, c + 16u, split);
}

// WG (the prelude's workgroup size): 32 SGM SGN, set so by the Rust side.
@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tiles_m = (params.m + bm() - 1u) / bm();
    let tiles_n = (params.n + bn() - 1u) / bn();
    let kb = wid.z * params.k_chunk;
    let ke = min(params.k, kb + params.k_chunk);
    for (var tm = wid.y; tm < tiles_m; tm += nwg.y) {
        for (var tn = wid.x; tn < tiles_n; tn += nwg.x) {
            tile(lid, sg, lane, tm * bm(), tn * bn(), kb, ke, wid.z);
        }
    }
}
