// metallic: trusted
// (Compiled without wgpu's runtime checks: every storage read is guarded by `gm < m`,
// `gn < n`, `gk < k` and every write by `row < m`, `col < n`, sizes the Rust side validated
// against the bindings; workgroup-memory indices are built from `lid < WG` and the tile
// constants only; loops are bounded by k, the tile counts and the batch; the only runtime
// divisor, the batch, is at least 1 inside the loop over batch * splits. The partial sums are
// written under the same guards as C, into a scratch tensor of splits * batch * m * n f32. The
// vec4 reads through `a4`, `b4` are guarded the same way, by their first element: see
// VEC_A.)
//
// Batched GEMM with register blocking: C = alpha * op(A) · op(B) + beta * C, accumulated in f32.
//
// A workgroup of 256 invocations computes a 128 x 128 tile of C; each invocation an 8 x 8 block
// held in sixteen named vec4 registers (rows ty*4 + 0..3 and 64 + ty*4 + 0..3, columns tx*4 +
// 0..3 and 64 + tx*4 + 0..3, so that the vec4 reads of the tiles are contiguous across
// invocations). op(A) and op(B) pass through workgroup memory in K-steps of BK (8 or 16),
// double-buffered: while the invocations multiply one buffer, their loads of the next K-step
// wait in registers and go to the other buffer, so one barrier per K-step suffices.
//
// Tile loads read the operands' natural layout (coalesced for every transpose; as vec4 where
// the operand's offset and strides are multiples of 4: VEC_A, VEC_B) and store
// k-major tiles: a_tile[kk][mm], b_tile[kk][nn], read as vec4 along mm / nn. A row of a tile
// whose loads run along K (A untransposed, B transposed) gets one vec4 of padding so that the
// transposing stores spread over the banks.
//
// Split-K (SPLIT): the K range is cut into `splits` slices of `k_chunk` (a multiple of BK);
// workgroup z = slice * batch + item multiplies one slice and writes its raw partial sums (no
// alpha, beta) as f32 to `part[part_off + z * c_batch + row * n + col]`; `splitk_reduce.wgsl`
// adds the slices up into C. Without SPLIT, splits = 1 and k_chunk = k.
//
// Grid: x = N tiles, y = M tiles, z = batch * splits, each clamped to the device limit;
// workgroups loop over the tiles beyond it.

override BK: u32 = 8u;
// A is stored [.., K, M] (op(A) = Aᵀ) instead of [.., M, K].
override TRANS_A: bool = false;
// B is stored [.., N, K] (op(B) = Bᵀ) instead of [.., K, N].
override TRANS_B: bool = false;
// Load A (B) as vec4 through `a4` (`b4`): the Rust side sets it only where the element offset,
// the row stride and the batch stride are multiples of 4, so a vec4 starting inside the
// matrix ends inside it and the vec4 index is exact; VEC_B only without TRANS_B.
override VEC_A: bool = false;
override VEC_B: bool = false;
// Write partial sums of one K slice to `part` (see above) instead of C.
override SPLIT: bool = false;

const BM: u32 = 128u;
const BN: u32 = 128u;
const THREADS: u32 = 256u;
// Invocations along N.
const TX: u32 = 16u;


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

// Row strides of the tiles in vec4 (padded where the stores transpose).
override A_ROW: u32 = BM / 4u + select(1u, 0u, TRANS_A);
override B_ROW: u32 = BN / 4u + select(0u, 1u, TRANS_B);
// Two buffers of BK rows each.
var<workgroup> a_tile: array<vec4<f32>, 2u * BK * A_ROW>;
var<workgroup> b_tile: array<vec4<f32>, 2u * BK * B_ROW>;

// Where the e-th element of a K-step of op(A) lies: (mm, kk) within the tile.
fn a_pos(e: u32) -> vec2<u32> {
    if TRANS_A {
        return vec2<u32>(e % BM, e / BM);
    }
    return vec2<u32>(e / BK, e % BK);
}

fn b_pos(e: u32) -> vec2<u32> {
    if TRANS_B {
        return vec2<u32>(e / BK, e % BK);
    }
    return vec2<u32>(e % BN, e / BN);
}

// op(A)[m0 + p.x, k0 + p.y], or 0 outside A.
fn load_a(a_base: u32, m0: u32, k0: u32, p: vec2<u32>) -> f32 {
    let gm = m0 + p.x;
    let gk = k0 + p.y;
    var v = 0.0;
    if gm < params.m && gk < k_end {
        if TRANS_A {
            v = f32(a[a_base + gk * params.lda + gm]);
        } else {
            v = f32(a[a_base + gm * params.lda + gk]);
        }
    }
    return v;
}

// op(B)[k0 + p.y, n0 + p.x], or 0 outside B.
fn load_b(b_base: u32, n0: u32, k0: u32, p: vec2<u32>) -> f32 {
    let gn = n0 + p.x;
    let gk = k0 + p.y;
    var v = 0.0;
    if gn < params.n && gk < k_end {
        if TRANS_B {
            v = f32(b[b_base + gn * params.ldb + gk]);
        } else {
            v = f32(b[b_base + gk * params.ldb + gn]);
        }
    }
    return v;
}

fn put_a(buf: u32, p: vec2<u32>, v: f32) {
    a_tile[(buf * BK + p.y) * A_ROW + p.x / 4u][p.x % 4u] = v;
}

fn put_b(buf: u32, p: vec2<u32>, v: f32) {
    b_tile[(buf * BK + p.y) * B_ROW + p.x / 4u][p.x % 4u] = v;
}

// The j-th vec4 of a K-step of op(A) (j < BM * BK / 4): four elements along K (A) or along M
// (Aᵀ), or zeros outside A; `put_a4` stores it.
fn load_a4(a_base: u32, m0: u32, k0: u32, j: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if TRANS_A {
        let gm = m0 + (j % (BM / 4u)) * 4u;
        let gk = k0 + j / (BM / 4u);
        if gm < params.m && gk < k_end {
            v = vec4<f32>(a4[(a_base + gk * params.lda + gm) / 4u]);
        }
    } else {
        let gm = m0 + j / (BK / 4u);
        let gk = k0 + (j % (BK / 4u)) * 4u;
        if gm < params.m && gk < k_end {
            v = vec4<f32>(a4[(a_base + gm * params.lda + gk) / 4u]);
        }
    }
    return v;
}

fn put_a4(buf: u32, j: u32, v: vec4<f32>) {
    if TRANS_A {
        a_tile[(buf * BK + j / (BM / 4u)) * A_ROW + j % (BM / 4u)] = v;
    } else {
        let mm = j / (BK / 4u);
        let kk = (j % (BK / 4u)) * 4u;
        let at = (buf * BK + kk) * A_ROW + mm / 4u;
        a_tile[at][mm % 4u] = v.x;
        a_tile[at + A_ROW][mm % 4u] = v.y;
        a_tile[at + 2u * A_ROW][mm % 4u] = v.z;
        a_tile[at + 3u * A_ROW][mm % 4u] = v.w;
    }
}

// The j-th vec4 of a K-step of B (untransposed: VEC_B is never set with TRANS_B), four
// elements along N, or zeros outside B; `put_b4` stores it.
fn load_b4(b_base: u32, n0: u32, k0: u32, j: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let gn = n0 + (j % (BN / 4u)) * 4u;
    let gk = k0 + j / (BN / 4u);
    if gn < params.n && gk < k_end {
        v = vec4<f32>(b4[(b_base + gk * params.ldb + gn) / 4u]);
    }
    return v;
}

fn put_b4(buf: u32, j: u32, v: vec4<f32>) {
    b_tile[(buf * BK + j / (BN / 4u)) * B_ROW + j % (BN / 4u)] = v;
}

// The K-step at k0 into buffer 0 (scalar loads; the vec4 path's are in `gemm_tile`).
fn first_step_a(a_base: u32, m0: u32, k0: u32, p0: vec2<u32>, p1: vec2<u32>, p2: vec2<u32>, p3: vec2<u32>) {
    put_a(0u, p0, load_a(a_base, m0, k0, p0));
    put_a(0u, p1, load_a(a_base, m0, k0, p1));
    put_a(0u, p2, load_a(a_base, m0, k0, p2));
    put_a(0u, p3, load_a(a_base, m0, k0, p3));
}

fn first_step_b(b_base: u32, n0: u32, k0: u32, p0: vec2<u32>, p1: vec2<u32>, p2: vec2<u32>, p3: vec2<u32>) {
    put_b(0u, p0, load_b(b_base, n0, k0, p0));
    put_b(0u, p1, load_b(b_base, n0, k0, p1));
    put_b(0u, p2, load_b(b_base, n0, k0, p2));
    put_b(0u, p3, load_b(b_base, n0, k0, p3));
}


// Stores columns col0..col0 + 4 of one row, if the row is inside C.
fn store4(c_base: u32, row: u32, col0: u32, v: vec4<f32>) {
    if row < params.m {
        let idx = c_base + row * params.ldc + col0;
        store_one(idx, col0, v.x);
        store_one(idx + 1u, col0 + 1u, v.y);
        store_one(idx + 2u, col0 + 2u, v.z);
        store_one(idx + 3u, col0 + 3u, v.w);
    }
}

fn gemm_tile(lid: u32, bz: u32, z: u32, m0: u32, n0: u32, k_lo: u32) {
    let tx = lid % TX;
    let ty = lid / TX;
    let a_base = params.a_off + bz * params.a_batch;
    let b_base = params.b_off + bz * params.b_batch;
    // This invocation's elements of each K-step: 4 (BK = 8) or 8 (BK = 16) of A and of B.
    let pa0 = a_pos(lid);
    let pa1 = a_pos(lid + THREADS);
    let pa2 = a_pos(lid + 2u * THREADS);
    let pa3 = a_pos(lid + 3u * THREADS);
    let pa4 = a_pos(lid + 4u * THREADS);
    let pa5 = a_pos(lid + 5u * THREADS);
    let pa6 = a_pos(lid + 6u * THREADS);
    let pa7 = a_pos(lid + 7u * THREADS);
    let pb0 = b_pos(lid);
    let pb1 = b_pos(lid + THREADS);
    let pb2 = b_pos(lid + 2u * THREADS);
    let pb3 = b_pos(lid + 3u * THREADS);
    let pb4 = b_pos(lid + 4u * THREADS);
    let pb5 = b_pos(lid + 5u * THREADS);
    let pb6 = b_pos(lid + 6u * THREADS);
    let pb7 = b_pos(lid + 7u * THREADS);
    let wide = BK == 16u;

    // The first K-step of the slice into buffer 0.
    if VEC_A {
        put_a4(0u, lid, load_a4(a_base, m0, k_lo, lid));
        if wide {
            put_a4(0u, lid + THREADS, load_a4(a_base, m0, k_lo, lid + THREADS));
        }
    } else {
        first_step_a(a_base, m0, k_lo, pa0, pa1, pa2, pa3);
        if wide {
            first_step_a(a_base, m0, k_lo, pa4, pa5, pa6, pa7);
        }
    }
    if VEC_B {
        put_b4(0u, lid, load_b4(b_base, n0, k_lo, lid));
        if wide {
            put_b4(0u, lid + THREADS, load_b4(b_base, n0, k_lo, lid + THREADS));
        }
    } else {
        first_step_b(b_base, n0, k_lo, pb0, pb1, pb2, pb3);
        if wide {
            first_step_b(b_base, n0, k_lo, pb4, pb5, pb6, pb7);
        }
    }
    workgroupBarrier();

    var c0l = vec4<f32>(0.0);
    var c0r = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1r = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2r = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3r = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4r = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5r = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6r = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7r = vec4<f32>(0.0);
    var buf = 0u;
    for (var k0 = k_lo; k0 < k_end; k0 += BK) {
        // Fetch the next K-step into registers while this one is multiplied.
        let k1 = k0 + BK;
        let more = k1 < k_end;
        var ra0 = 0.0;
        var ra1 = 0.0;
        var ra2 = 0.0;
        var ra3 = 0.0;
        var ra4 = 0.0;
        var ra5 = 0.0;
        var ra6 = 0.0;
        var ra7 = 0.0;
        var rb0 = 0.0;
        var rb1 = 0.0;
        var rb2 = 0.0;
        var rb3 = 0.0;
        var rb4 = 0.0;
        var rb5 = 0.0;
        var rb6 = 0.0;
        var rb7 = 0.0;
        var va0 = vec4<f32>(0.0);
        var va1 = vec4<f32>(0.0);
        var vb0 = vec4<f32>(0.0);
        var vb1 = vec4<f32>(0.0);
        if more {
            if VEC_A {
                va0 = load_a4(a_base, m0, k1, lid);
                if wide {
                    va1 = load_a4(a_base, m0, k1, lid + THREADS);
                }
            } else {
                ra0 = load_a(a_base, m0, k1, pa0);
                ra1 = load_a(a_base, m0, k1, pa1);
                ra2 = load_a(a_base, m0, k1, pa2);
                ra3 = load_a(a_base, m0, k1, pa3);
                if wide {
                    ra4 = load_a(a_base, m0, k1, pa4);
                    ra5 = load_a(a_base, m0, k1, pa5);
                    ra6 = load_a(a_base, m0, k1, pa6);
                    ra7 = load_a(a_base, m0, k1, pa7);
                }
            }
            if VEC_B {
                vb0 = load_b4(b_base, n0, k1, lid);
                if wide {
                    vb1 = load_b4(b_base, n0, k1, lid + THREADS);
                }
            } else {
                rb0 = load_b(b_base, n0, k1, pb0);
                rb1 = load_b(b_base, n0, k1, pb1);
                rb2 = load_b(b_base, n0, k1, pb2);
                rb3 = load_b(b_base, n0, k1, pb3);
                if wide {
                    rb4 = load_b(b_base, n0, k1, pb4);
                    rb5 = load_b(b_base, n0, k1, pb5);
                    rb6 = load_b(b_base, n0, k1, pb6);
                    rb7 = load_b(b_base, n0, k1, pb7);
                }
            }
        }
        let a_at = buf * BK * A_ROW + ty;
        let b_at = buf * BK * B_ROW + tx;
        for (var kk = 0u; kk < BK; kk += 1u) {
            let a0 = a_tile[a_at + kk * A_ROW];
            let a1 = a_tile[a_at + kk * A_ROW + BM / 8u];
            let b0 = b_tile[b_at + kk * B_ROW];
            let b1 = b_tile[b_at + kk * B_ROW + BN / 8u];
            c0l += a0.x * b0;
            c0r += a0.x * b1;
            c1l += a0.y * b0;
            c1r += a0.y * b1;
            c2l += a0.z * b0;
            c2r += a0.z * b1;
            c3l += a0.w * b0;
            c3r += a0.w * b1;
            c4l += a1.x * b0;
            c4r += a1.x * b1;
            c5l += a1.y * b0;
            c5r += a1.y * b1;
            c6l += a1.z * b0;
            c6r += a1.z * b1;
            c7l += a1.w * b0;
            c7r += a1.w * b1;
        }
        if more {
            let nb = 1u - buf;
            if VEC_A {
                put_a4(nb, lid, va0);
                if wide {
                    put_a4(nb, lid + THREADS, va1);
                }
            } else {
                put_a(nb, pa0, ra0);
                put_a(nb, pa1, ra1);
                put_a(nb, pa2, ra2);
                put_a(nb, pa3, ra3);
                if wide {
                    put_a(nb, pa4, ra4);
                    put_a(nb, pa5, ra5);
                    put_a(nb, pa6, ra6);
                    put_a(nb, pa7, ra7);
                }
            }
            if VEC_B {
                put_b4(nb, lid, vb0);
                if wide {
                    put_b4(nb, lid + THREADS, vb1);
                }
            } else {
                put_b(nb, pb0, rb0);
                put_b(nb, pb1, rb1);
                put_b(nb, pb2, rb2);
                put_b(nb, pb3, rb3);
                if wide {
                    put_b(nb, pb4, rb4);
                    put_b(nb, pb5, rb5);
                    put_b(nb, pb6, rb6);
                    put_b(nb, pb7, rb7);
                }
            }
        }
        buf = 1u - buf;
        workgroupBarrier();
    }
    var c_base = params.c_off + bz * params.c_batch;
    if SPLIT {
        c_base = params.part_off + z * params.c_batch;
    }
    let r0 = m0 + ty * 4u;
    let r1 = r0 + BM / 2u;
    let cl = n0 + tx * 4u;
    let cr = cl + BN / 2u;
    store4(c_base, r0, cl, c0l);
    store4(c_base, r0, cr, c0r);
    store4(c_base, r0 + 1u, cl, c1l);
    store4(c_base, r0 + 1u, cr, c1r);
    store4(c_base, r0 + 2u, cl, c2l);
    store4(c_base, r0 + 2u, cr, c2r);
    store4(c_base, r0 + 3u, cl, c3l);
    store4(c_base, r0 + 3u, cr, c3r);
    store4(c_base, r1, cl, c4l);
    store4(c_base, r1, cr, c4r);
    store4(c_base, r1 + 1u, cl, c5l);
    store4(c_base, r1 + 1u, cr, c5r);
    store4(c_base, r1 + 2u, cl, c6l);
    store4(c_base, r1 + 2u, cr, c6r);
    store4(c_base, r1 + 3u, cl, c7l);
    store4(c_base, r1 + 3u, cr, c7r);
}

@compute @workgroup_size(THREADS)
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
                // Ends with a barrier: the next tile may overwrite either buffer.
                gemm_tile(lid, bz, z, tm * BM, tn * BN, k_lo);
            }
        }
    }
}
