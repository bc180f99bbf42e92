// metallic: trusted
// (Compiled without wgpu's runtime checks: every storage read is guarded by `gm < m`,
// `gn < n`, `gk < k` and every write by `row < m`, `col < n`, sizes the Rust side validated
// against the bindings; workgroup-memory indices come from `e < BM * BK` (or `BN * BK`) and
// `lid < WG`; loops are bounded by k, the tile sizes, the tile counts and the batch; the only
// runtime divisor, the batch, is at least 1 inside the loop over batch * splits. The partial
// sums (SPLIT) are written under the same guards as C, into a scratch tensor of
// splits * batch * m * n f32.)
//
// Batched GEMM: C = alpha * op(A) · op(B) + beta * C, accumulated in f32.
//
// Each workgroup computes a BM x BN tile of C, one invocation a TM x TN (4 x 4) register block;
// op(A) and op(B) pass through workgroup memory in K-steps of BK. The tile loads read the
// operands' natural layout (contiguous along their last dimension, so global reads are
// coalesced for every transpose) and store k-major tiles that the inner loop reads as vec4.
// WG must equal (BM / TM) * (BN / TN); BM and BN are multiples of 4.
//
// The accumulators are four named vec4 registers, never an array indexed in a loop: with the
// runtime checks wgpu adds (bounded loops), drivers may not unroll such loops, and a
// dynamically indexed array goes to local memory — 7x slower on an H100.
//
// Split-K (SPLIT), as in `gemm_wide.wgsl`: workgroup z = slice * batch + item multiplies the K
// slice [slice * k_chunk, + k_chunk) (k_chunk a multiple of BK) and writes its raw f32 partial
// sums to `part[part_off + z * c_batch + row * n + col]`; `splitk_reduce.wgsl` adds them up.
//
// Grid: x = N tiles, y = M tiles, z = batch * splits, each clamped to the device limit;
// workgroups loop over the tiles beyond it.

override BM: u32 = 64u;
// Always BM here (the Rust side sets BM only).
override BN: u32 = BM;
override BK: u32 = 16u;
// A is stored [.., K, M] (op(A) = Aᵀ) instead of [.., M, K].
override TRANS_A: bool = false;
// B is stored [.., N, K] (op(B) = Bᵀ) instead of [.., K, N].
override TRANS_B: bool = false;
// Write the partial sums of one K slice to `part` instead of C.
override SPLIT: bool = false;

const TM: u32 = 4u;
const TN: u32 = 4u;


// `Params` and `store_one`: gemm_common.wgsl.

@group(0) @binding(0) var<storage, read_write> a: array<T>;
@group(0) @binding(1) var<storage, read_write> b: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<T>;
// Partial sums of the K slices (SPLIT); another binding, never accessed, otherwise.
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

// End of this tile's K slice (k without SPLIT).
var<private> k_end: u32;

// Row strides of the k-major tiles, in vec4: one vec4 of padding per row spreads the
// transposing stores of the loads over the memory banks.
override A_ROW: u32 = BM / 4u + 1u;
override B_ROW: u32 = BN / 4u + 1u;
// a_tile[kk * A_ROW + mm / 4][mm % 4] = op(A)[m0 + mm, k0 + kk]
var<workgroup> a_tile: array<vec4<f32>, BK * A_ROW>;
// b_tile[kk * B_ROW + nn / 4][nn % 4] = op(B)[k0 + kk, n0 + nn]
var<workgroup> b_tile: array<vec4<f32>, BK * B_ROW>;

fn load_tiles(lid: u32, a_base: u32, b_base: u32, m0: u32, n0: u32, k0: u32) {
    for (var e = lid; e < BM * BK; e += WG) {
        var mm: u32;
        var kk: u32;
        if TRANS_A {
            mm = e % BM;
            kk = e / BM;
        } else {
            kk = e % BK;
            mm = e / BK;
        }
        let gm = m0 + mm;
        let gk = k0 + kk;
        var v = 0.0;
        if gm < params.m && gk < k_end {
            if TRANS_A {
                v = f32(a[a_base + gk * params.lda + gm]);
            } else {
                v = f32(a[a_base + gm * params.lda + gk]);
            }
        }
        a_tile[kk * A_ROW + mm / 4u][mm % 4u] = v;
    }
    for (var e = lid; e < BN * BK; e += WG) {
        var nn: u32;
        var kk: u32;
        if TRANS_B {
            kk = e % BK;
            nn = e / BK;
        } else {
            nn = e % BN;
            kk = e / BN;
        }
        let gn = n0 + nn;
        let gk = k0 + kk;
        var v = 0.0;
        if gn < params.n && gk < k_end {
            if TRANS_B {
                v = f32(b[b_base + gn * params.ldb + gk]);
            } else {
                v = f32(b[b_base + gk * params.ldb + gn]);
            }
        }
        b_tile[kk * B_ROW + nn / 4u][nn % 4u] = v;
    }
}


// Stores columns col0..col0 + 4 of one row of the register block, if the row is inside C.
fn store_row(c_base: u32, row: u32, col0: u32, v: vec4<f32>) {
    if row < params.m {
        let idx = c_base + row * params.ldc + col0;
        store_one(idx, col0, v.x);
        store_one(idx + 1u, col0 + 1u, v.y);
        store_one(idx + 2u, col0 + 2u, v.z);
        store_one(idx + 3u, col0 + 3u, v.w);
    }
}

fn gemm_tile(lid: u32, bz: u32, z: u32, m0: u32, n0: u32, k_lo: u32) {
    let tx = lid % (BN / TN);
    let ty = lid / (BN / TN);
    let a_base = params.a_off + bz * params.a_batch;
    let b_base = params.b_off + bz * params.b_batch;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k0 = k_lo; k0 < k_end; k0 += BK) {
        load_tiles(lid, a_base, b_base, m0, n0, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 1u) {
            let av = a_tile[kk * A_ROW + ty];
            let bv = b_tile[kk * B_ROW + tx];
            c0 += av.x * bv;
            c1 += av.y * bv;
            c2 += av.z * bv;
            c3 += av.w * bv;
        }
        workgroupBarrier();
    }
    var c_base = params.c_off + bz * params.c_batch;
    if SPLIT {
        c_base = params.part_off + z * params.c_batch;
    }
    let row = m0 + ty * TM;
    let col = n0 + tx * TN;
    store_row(c_base, row, col, c0);
    store_row(c_base, row + 1u, col, c1);
    store_row(c_base, row + 2u, col, c2);
    store_row(c_base, row + 3u, col, c3);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tiles_m = (params.m + BM - 1u) / BM;
    let tiles_n = (params.n + BN - 1u) / BN;
    let items = params.batch * params.splits;
    for (var z = wid.z; z < items; z += nwg.z) {
        let bz = z % params.batch;
        let k_lo = (z / params.batch) * params.k_chunk;
        k_end = min(params.k, k_lo + params.k_chunk);
        for (var tm = wid.y; tm < tiles_m; tm += nwg.y) {
            for (var tn = wid.x; tn < tiles_n; tn += nwg.x) {
                gemm_tile(lid, bz, z, tm * BM, tn * BN, k_lo);
            }
        }
    }
}
