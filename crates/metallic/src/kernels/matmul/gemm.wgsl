// Batched GEMM: C = alpha * op(A) · op(B) + beta * C, accumulated in f32.
//
// Each workgroup computes a BM x BN tile of C, one invocation a TM x TN (4 x 4) register block;
// op(A) and op(B) pass through workgroup memory in K-steps of BK. The tile loads read the
// operands' natural layout (contiguous along their last dimension, so global reads are
// coalesced for every transpose) and store k-major tiles that the inner loop reads as vec4.
// WG must equal (BM / TM) * (BN / TN); BM and BN are multiples of 4.
//
// Grid: x = N tiles, y = M tiles, z = batch, each clamped to the device limit; workgroups loop
// over the tiles beyond it.

override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
// A is stored [.., K, M] (op(A) = Aᵀ) instead of [.., M, K].
override TRANS_A: bool = false;
// B is stored [.., N, K] (op(B) = Bᵀ) instead of [.., K, N].
override TRANS_B: bool = false;

const TM: u32 = 4u;
const TN: u32 = 4u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    // Row strides of the stored matrices, in elements.
    lda: u32,
    ldb: u32,
    ldc: u32,
    // Batch strides in elements; 0 repeats one matrix over the batch.
    a_batch: u32,
    b_batch: u32,
    c_batch: u32,
    alpha: f32,
    // 0: C is not read.
    beta: f32,
}

@group(0) @binding(0) var<storage, read_write> a: array<T>;
@group(0) @binding(1) var<storage, read_write> b: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<T>;

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
        if gm < params.m && gk < params.k {
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
        if gn < params.n && gk < params.k {
            if TRANS_B {
                v = f32(b[b_base + gn * params.ldb + gk]);
            } else {
                v = f32(b[b_base + gk * params.ldb + gn]);
            }
        }
        b_tile[kk * B_ROW + nn / 4u][nn % 4u] = v;
    }
}

fn gemm_tile(lid: u32, bz: u32, m0: u32, n0: u32) {
    let tx = lid % (BN / TN);
    let ty = lid / (BN / TN);
    let a_base = params.a_off + bz * params.a_batch;
    let b_base = params.b_off + bz * params.b_batch;
    var acc: array<vec4<f32>, TM>;
    for (var i = 0u; i < TM; i += 1u) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        load_tiles(lid, a_base, b_base, m0, n0, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 1u) {
            let av = a_tile[kk * A_ROW + ty];
            let bv = b_tile[kk * B_ROW + tx];
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }
    let c_base = params.c_off + bz * params.c_batch;
    for (var i = 0u; i < TM; i += 1u) {
        let row = m0 + ty * TM + i;
        if row >= params.m {
            break;
        }
        let r = acc[i];
        for (var j = 0u; j < TN; j += 1u) {
            let col = n0 + tx * TN + j;
            if col < params.n {
                let idx = c_base + row * params.ldc + col;
                var v = params.alpha * r[j];
                if params.beta != 0.0 {
                    v += params.beta * f32(c[idx]);
                }
                c[idx] = T(v);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tiles_m = (params.m + BM - 1u) / BM;
    let tiles_n = (params.n + BN - 1u) / BN;
    for (var bz = wid.z; bz < params.batch; bz += nwg.z) {
        for (var tm = wid.y; tm < tiles_m; tm += nwg.y) {
            for (var tn = wid.x; tn < tiles_n; tn += nwg.x) {
                gemm_tile(lid, bz, tm * BM, tn * BN);
            }
        }
    }
}
