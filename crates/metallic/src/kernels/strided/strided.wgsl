// dst[dst_off + Σ c_k * t_k] = src[src_off + Σ c_k * s_k] for every coordinate c of a region of
// up to 6 dimensions. Dimension 0 is the innermost (fastest-varying) one; the host merges
// dimensions that are contiguous on both sides and drops those of size 1, so a permutation of
// [b, s, h, d] usually runs with 3 dimensions and a slice write with 1 or 2.
//
// Invocations follow the region in row-major order with dimension 0 innermost, which the host
// arranges to be the destination's fastest dimension: neighbouring invocations write
// neighbouring elements.

// Dimensions actually used (1..6): the index arithmetic for unused ones is compiled out.
override RANK: u32 = 6u;

struct Params {
    n: u32,
    src_off: u32,
    dst_off: u32,
    // Sizes (size5 is implied by n: the outermost coordinate is what is left of the index).
    size0: u32,
    size1: u32,
    size2: u32,
    size3: u32,
    size4: u32,
    // Source strides, in elements.
    src0: u32,
    src1: u32,
    src2: u32,
    src3: u32,
    src4: u32,
    src5: u32,
    // Destination strides, in elements.
    dst0: u32,
    dst1: u32,
    dst2: u32,
    dst3: u32,
    dst4: u32,
    dst5: u32,
}

@group(0) @binding(0) var<storage, read_write> src: array<T>;
@group(0) @binding(1) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= params.n {
        return;
    }
    var rest = i;
    var s = params.src_off;
    var d = params.dst_off;
    if RANK > 1u {
        let c = rest % params.size0;
        rest = rest / params.size0;
        s += c * params.src0;
        d += c * params.dst0;
    }
    if RANK > 2u {
        let c = rest % params.size1;
        rest = rest / params.size1;
        s += c * params.src1;
        d += c * params.dst1;
    }
    if RANK > 3u {
        let c = rest % params.size2;
        rest = rest / params.size2;
        s += c * params.src2;
        d += c * params.dst2;
    }
    if RANK > 4u {
        let c = rest % params.size3;
        rest = rest / params.size3;
        s += c * params.src3;
        d += c * params.dst3;
    }
    if RANK > 5u {
        let c = rest % params.size4;
        rest = rest / params.size4;
        s += c * params.src4;
        d += c * params.dst4;
    }
    // The outermost used dimension takes what is left; its stride sits in slot RANK - 1.
    var outer_src = params.src0;
    var outer_dst = params.dst0;
    if RANK == 2u {
        outer_src = params.src1;
        outer_dst = params.dst1;
    } else if RANK == 3u {
        outer_src = params.src2;
        outer_dst = params.dst2;
    } else if RANK == 4u {
        outer_src = params.src3;
        outer_dst = params.dst3;
    } else if RANK == 5u {
        outer_src = params.src4;
        outer_dst = params.dst4;
    } else if RANK == 6u {
        outer_src = params.src5;
        outer_dst = params.dst5;
    }
    s += rest * outer_src;
    d += rest * outer_dst;
    dst[d] = src[s];
}
