
// ---- gemm_common.wgsl: the parameters and bindings of the quantized GEMMs (gemm.wgsl,
// gemm_coop.wgsl) ----

struct Params {
    // Rows of x, rows of this part, weights per row.
    m: u32,
    n: u32,
    k: u32,
    // Groups of 8 weights per row (ceil(k / 8)) and words per row.
    groups: u32,
    row_words: u32,
    x_off: u32,
    w_off: u32,
    y_off: u32,
    // Row stride of y (N of the whole matrix) and this part's first output column.
    ldy: u32,
    n0: u32,
    // The cooperative GEMM's split of K (gemm_coop.wgsl; the tiled GEMM takes all of K): the
    // weights each workgroup along z sums (a multiple of its K-step), and how far apart in y
    // the splits' partial products lie.
    k_chunk: u32,
    split_stride: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
