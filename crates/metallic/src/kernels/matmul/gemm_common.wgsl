// Shared by the GEMM kernels (`gemm.wgsl`, `gemm_wide.wgsl`, `gemm_coop.wgsl`; appended to
// each kernel's source): the parameters and the store of one output element.

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
    // K slices (>= 1) and their length (a multiple of BK; k without SPLIT).
    splits: u32,
    k_chunk: u32,
    // First element of the partial sums in `part` (SPLIT).
    part_off: u32,
}

// c[idx] = alpha * v + beta * c[idx] for an output column inside C.
fn store_one(idx: u32, col: u32, v: f32) {
    if SPLIT {
        if col < params.n {
            part[idx] = v;
        }
    } else if col < params.n {
        var r = params.alpha * v;
        if params.beta != 0.0 {
            r += params.beta * f32(c[idx]);
        }
        c[idx] = T(r);
    }
}
