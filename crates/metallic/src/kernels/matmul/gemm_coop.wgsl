// metallic: trusted
// (Compiled without wgpu's runtime checks: every storage read is guarded by `gm < m`,
// `gn < n`, `gk < k` and every write by `row < m`, `col < n`, sizes the Rust side validated
// against the bindings; workgroup-memory indices, the cooperative loads' and stores' whole
// 16 x 16 footprints included, are built from `lid < 256`, the subgroup id (< 8: the Rust side
// runs this kernel only where subgroups have exactly 32 invocations) and the tile constants;
// loops are bounded by k, the tile counts and the batch; the only runtime divisor, the batch,
// is at least 1 inside the loop over batch * splits. The partial sums (SPLIT) are written under
// the same guards as C, into a scratch tensor of splits * batch * m * n f32.)
enable f16;
enable wgpu_cooperative_matrix;

// Batched GEMM on cooperative matrices (tensor cores): C = alpha * op(A) · op(B) + beta * C,
// with op(A) and op(B) rounded to f16 and the products accumulated in f32 16 x 16 matrices.
//
// A workgroup of 256 invocations (8 subgroups of 32) computes a 128 x 128 tile of C; subgroup
// s takes rows 64 * (s / 4) .. + 64 and columns 32 * (s % 4) .. + 32: 4 x 2 accumulators of
// 16 x 16. op(A) and op(B) pass through workgroup memory as f16 in K-steps of BK = 32, each
// stored in the layout its loads read contiguously (a transposed operand's tile is stored
// column-major and read with `coopLoad` instead of `coopLoadT`), rows padded by 8 halves (16
// bytes) so that the fragments' rows spread over the banks. Where both operands allow (VEC) the
// loads are vec4 and the next K-step's wait in registers while this one multiplies; elsewhere
// each K-step is loaded element by element. The accumulators leave through a
// per-subgroup 16 x 16 f32 staging tile, so that alpha, beta and the edges of C are applied per
// element.
//
// Split-K (SPLIT), as in `gemm_wide.wgsl`: workgroup z = slice * batch + item multiplies the K
// slice [slice * k_chunk, + k_chunk) (k_chunk a multiple of BK) and writes its raw f32 partial
// sums to `part[part_off + z * c_batch + row * n + col]`; `splitk_reduce.wgsl` adds them up.
//
// Grid: x = N tiles, y = M tiles, z = batch * splits, each clamped to the device limit;
// workgroups loop over the tiles beyond it.

// A is stored [.., K, M] (op(A) = Aᵀ) instead of [.., M, K].
override TRANS_A: bool = false;
// B is stored [.., N, K] (op(B) = Bᵀ) instead of [.., K, N].
override TRANS_B: bool = false;
// Load A and B as vec4 through `a4`, `b4`, the next K-step's while this one multiplies: the Rust
// side sets it only where both operands' element offsets, row strides and batch strides are
// multiples of 4, so a vec4 starting inside a matrix ends inside it and its index is exact.
override VEC: bool = false;
// Write the partial sums of one K slice to `part` instead of C.
override SPLIT: bool = false;

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 32u;
const THREADS: u32 = 256u;
const PAD: u32 = 8u;


// `Params` and `store_one`: gemm_common.wgsl.

@group(0) @binding(0) var<storage, read_write> a: array<T>;
@group(0) @binding(1) var<storage, read_write> b: array<T>;
@group(0) @binding(2) var<storage, read_write> c: array<T>;
// The same bindings as A and B, read four elements at a time.
@group(0) @binding(3) var<storage, read_write> a4: array<vec4<T>>;
@group(0) @binding(4) var<storage, read_write> b4: array<vec4<T>>;
// Partial sums of the K slices (SPLIT); another binding, never accessed, otherwise.
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

// End of this tile's K slice (k without SPLIT).
var<private> k_end: u32;

// op(A)'s tile: [mm][kk] (row stride A_LD) or, for Aᵀ, [kk][mm].
override A_LD: u32 = select(BK + PAD, BM + PAD, TRANS_A);
// op(B)'s tile: [kk][nn] (row stride B_LD) or, for Bᵀ, [nn][kk].
override B_LD: u32 = select(BN + PAD, BK + PAD, TRANS_B);
var<workgroup> a_sh: array<f16, select(BM * (BK + PAD), BK * (BM + PAD), TRANS_A)>;
var<workgroup> b_sh: array<f16, select(BK * (BN + PAD), BN * (BK + PAD), TRANS_B)>;
// One 16 x 16 staging tile per subgroup.
var<workgroup> c_sh: array<f32, 8u * 256u>;

// Loads one K-step of op(A) and op(B) into the tiles (zeros outside the matrices).
fn load_tiles(lid: u32, a_base: u32, b_base: u32, m0: u32, n0: u32, k0: u32) {
    for (var j = 0u; j < BM * BK / THREADS; j += 1u) {
        let e = lid + j * THREADS;
        var v = 0.0;
        if TRANS_A {
            // Coalesced along M; stored [kk][mm].
            let mm = e % BM;
            let kk = e / BM;
            let gm = m0 + mm;
            let gk = k0 + kk;
            if gm < params.m && gk < k_end {
                v = f32(a[a_base + gk * params.lda + gm]);
            }
            a_sh[kk * A_LD + mm] = f16(v);
        } else {
            let kk = e % BK;
            let mm = e / BK;
            let gm = m0 + mm;
            let gk = k0 + kk;
            if gm < params.m && gk < k_end {
                v = f32(a[a_base + gm * params.lda + gk]);
            }
            a_sh[mm * A_LD + kk] = f16(v);
        }
    }
    for (var j = 0u; j < BN * BK / THREADS; j += 1u) {
        let e = lid + j * THREADS;
        var v = 0.0;
        if TRANS_B {
            // Coalesced along K; stored [nn][kk].
            let kk = e % BK;
            let nn = e / BK;
            let gn = n0 + nn;
            let gk = k0 + kk;
            if gn < params.n && gk < k_end {
                v = f32(b[b_base + gn * params.ldb + gk]);
            }
            b_sh[nn * B_LD + kk] = f16(v);
        } else {
            let nn = e % BN;
            let kk = e / BN;
            let gn = n0 + nn;
            let gk = k0 + kk;
            if gn < params.n && gk < k_end {
                v = f32(b[b_base + gk * params.ldb + gn]);
            }
            b_sh[kk * B_LD + nn] = f16(v);
        }
    }
}

// The j-th vec4 (j < 1024) of a K-step of A, four elements along its stored rows (K for A, M for
// Aᵀ), or zeros outside A; `put_a4` stores it in the tile, where those four are contiguous too.
fn load_a4(a_base: u32, m0: u32, k0: u32, j: u32) -> vec4<f16> {
    var v = vec4<f16>(0.0);
    if TRANS_A {
        let gm = m0 + (j % (BM / 4u)) * 4u;
        let gk = k0 + j / (BM / 4u);
        if gm < params.m && gk < k_end {
            v = vec4<f16>(a4[(a_base + gk * params.lda + gm) / 4u]);
        }
    } else {
        let gm = m0 + j / (BK / 4u);
        let gk = k0 + (j % (BK / 4u)) * 4u;
        if gm < params.m && gk < k_end {
            v = vec4<f16>(a4[(a_base + gm * params.lda + gk) / 4u]);
        }
    }
    return v;
}

fn put_a4(j: u32, v: vec4<f16>) {
    var at: u32;
    if TRANS_A {
        at = (j / (BM / 4u)) * A_LD + (j % (BM / 4u)) * 4u;
    } else {
        at = (j / (BK / 4u)) * A_LD + (j % (BK / 4u)) * 4u;
    }
    a_sh[at] = v.x;
    a_sh[at + 1u] = v.y;
    a_sh[at + 2u] = v.z;
    a_sh[at + 3u] = v.w;
}

// The same for B: four elements along N (B) or K (Bᵀ).
fn load_b4(b_base: u32, n0: u32, k0: u32, j: u32) -> vec4<f16> {
    var v = vec4<f16>(0.0);
    if TRANS_B {
        let gn = n0 + j / (BK / 4u);
        let gk = k0 + (j % (BK / 4u)) * 4u;
        if gn < params.n && gk < k_end {
            v = vec4<f16>(b4[(b_base + gn * params.ldb + gk) / 4u]);
        }
    } else {
        let gn = n0 + (j % (BN / 4u)) * 4u;
        let gk = k0 + j / (BN / 4u);
        if gn < params.n && gk < k_end {
            v = vec4<f16>(b4[(b_base + gk * params.ldb + gn) / 4u]);
        }
    }
    return v;
}

fn put_b4(j: u32, v: vec4<f16>) {
    var at: u32;
    if TRANS_B {
        at = (j / (BK / 4u)) * B_LD + (j % (BK / 4u)) * 4u;
    } else {
        at = (j / (BN / 4u)) * B_LD + (j % (BN / 4u)) * 4u;
    }
    b_sh[at] = v.x;
    b_sh[at + 1u] = v.y;
    b_sh[at + 2u] = v.z;
    b_sh[at + 3u] = v.w;
}

// The 16 x 16 fragment of op(A) at tile rows r.., K-step columns kk..
fn frag_a(r: u32, kk: u32) -> coop_mat16x16<f16, A> {
    let ld = A_LD;
    if TRANS_A {
        let at = kk * A_LD + r;
        return coopLoad<coop_mat16x16<f16, A>>(&a_sh[at], ld);
    }
    let at = r * A_LD + kk;
    return coopLoadT<coop_mat16x16<f16, A>>(&a_sh[at], ld);
}

// The 16 x 16 fragment of op(B) at K-step rows kk.., tile columns col..
fn frag_b(kk: u32, col: u32) -> coop_mat16x16<f16, B> {
    let ld = B_LD;
    if TRANS_B {
        let at = col * B_LD + kk;
        return coopLoad<coop_mat16x16<f16, B>>(&b_sh[at], ld);
    }
    let at = kk * B_LD + col;
    return coopLoadT<coop_mat16x16<f16, B>>(&b_sh[at], ld);
}

// Writes one accumulator (tile rows r0.., columns c0..) to C through the subgroup's staging
// tile: alpha, beta and the edges of C per element. Every invocation calls it (barriers).
fn store_frag(acc: coop_mat16x16<f32, C>, sg: u32, lane: u32, c_base: u32, r0: u32, c0: u32) {
    let at = sg * 256u;
    let ld = 16u;
    coopStoreT(acc, &c_sh[at], ld);
    workgroupBarrier();
    for (var t = 0u; t < 8u; t += 1u) {
        let i = lane + t * 32u;
        let row = r0 + i / 16u;
        let col = c0 + i % 16u;
        if SPLIT {
            if row < params.m && col < params.n {
                part[c_base + row * params.ldc + col] = c_sh[at + i];
            }
        } else if row < params.m && col < params.n {
            let idx = c_base + row * params.ldc + col;
            var v = params.alpha * c_sh[at + i];
            if params.beta != 0.0 {
                v += params.beta * f32(c[idx]);
            }
            c[idx] = T(v);
        }
    }
    workgroupBarrier();
}

fn gemm_tile(lid: u32, sg: u32, lane: u32, bz: u32, z: u32, m0: u32, n0: u32, k_lo: u32) {
    let a_base = params.a_off + bz * params.a_batch;
    let b_base = params.b_off + bz * params.b_batch;
    let wr = (sg / 4u) * 64u;
    let wc = (sg % 4u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();
    // With VEC, each invocation's four vec4 of A and of B for the next K-step wait in registers
    // while this one multiplies.
    var ra0 = vec4<f16>(0.0);
    var ra1 = vec4<f16>(0.0);
    var ra2 = vec4<f16>(0.0);
    var ra3 = vec4<f16>(0.0);
    var rb0 = vec4<f16>(0.0);
    var rb1 = vec4<f16>(0.0);
    var rb2 = vec4<f16>(0.0);
    var rb3 = vec4<f16>(0.0);
    if VEC {
        ra0 = load_a4(a_base, m0, k_lo, lid);
        ra1 = load_a4(a_base, m0, k_lo, lid + THREADS);
        ra2 = load_a4(a_base, m0, k_lo, lid + 2u * THREADS);
        ra3 = load_a4(a_base, m0, k_lo, lid + 3u * THREADS);
        rb0 = load_b4(b_base, n0, k_lo, lid);
        rb1 = load_b4(b_base, n0, k_lo, lid + THREADS);
        rb2 = load_b4(b_base, n0, k_lo, lid + 2u * THREADS);
        rb3 = load_b4(b_base, n0, k_lo, lid + 3u * THREADS);
    }
    for (var k0 = k_lo; k0 < k_end; k0 += BK) {
        // Every subgroup is done with the previous K-step's tiles.
        workgroupBarrier();
        if VEC {
            put_a4(lid, ra0);
            put_a4(lid + THREADS, ra1);
            put_a4(lid + 2u * THREADS, ra2);
            put_a4(lid + 3u * THREADS, ra3);
            put_b4(lid, rb0);
            put_b4(lid + THREADS, rb1);
            put_b4(lid + 2u * THREADS, rb2);
            put_b4(lid + 3u * THREADS, rb3);
        } else {
            load_tiles(lid, a_base, b_base, m0, n0, k0);
        }
        workgroupBarrier();
        let k1 = k0 + BK;
        if VEC && k1 < k_end {
            ra0 = load_a4(a_base, m0, k1, lid);
            ra1 = load_a4(a_base, m0, k1, lid + THREADS);
            ra2 = load_a4(a_base, m0, k1, lid + 2u * THREADS);
            ra3 = load_a4(a_base, m0, k1, lid + 3u * THREADS);
            rb0 = load_b4(b_base, n0, k1, lid);
            rb1 = load_b4(b_base, n0, k1, lid + THREADS);
            rb2 = load_b4(b_base, n0, k1, lid + 2u * THREADS);
            rb3 = load_b4(b_base, n0, k1, lid + 3u * THREADS);
        }
        for (var kk = 0u; kk < BK; kk += 16u) {
            let b0 = frag_b(kk, wc);
            let b1 = frag_b(kk, wc + 16u);
            let a0 = frag_a(wr, kk);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = frag_a(wr + 16u, kk);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            let a2 = frag_a(wr + 32u, kk);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            let a3 = frag_a(wr + 48u, kk);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
    }
    var c_base = params.c_off + bz * params.c_batch;
    if SPLIT {
        c_base = params.part_off + z * params.c_batch;
    }
    let r = m0 + wr;
    let col = n0 + wc;
    store_frag(c00, sg, lane, c_base, r, col);
    store_frag(c01, sg, lane, c_base, r, col + 16u);
    store_frag(c10, sg, lane, c_base, r + 16u, col);
    store_frag(c11, sg, lane, c_base, r + 16u, col + 16u);
    store_frag(c20, sg, lane, c_base, r + 32u, col);
    store_frag(c21, sg, lane, c_base, r + 32u, col + 16u);
    store_frag(c30, sg, lane, c_base, r + 48u, col);
    store_frag(c31, sg, lane, c_base, r + 48u, col + 16u);
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
    let items = params.batch * params.splits;
    for (var z = wid.z; z < items; z += nwg.z) {
        let bz = z % params.batch;
        let k_lo = (z / params.batch) * params.k_chunk;
        k_end = min(params.k, k_lo + params.k_chunk);
        for (var tm = wid.y; tm < tiles_m; tm += nwg.y) {
            for (var tn = wid.x; tn < tiles_n; tn += nwg.x) {
                gemm_tile(lid, sg, lane, bz, z, tm * BM, tn * BN, k_lo);
            }
        }
    }
}
