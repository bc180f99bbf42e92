// Shared by the fused attention kernels (`flash.wgsl`, `flash_tiled.wgsl`; appended to each
// kernel's source): the parameters, the causal rule and the sliding window.

struct Params {
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_off: u32,
    mask_off: u32,
    kv_heads: u32,
    // heads / kv_heads
    group: u32,
    seq_q: u32,
    seq_k: u32,
    // Row blocks per (batch, kv head): ceil(group * seq_q / BQ).
    blocks: u32,
    // Workgroups with work: batch * kv_heads * blocks (the grid may be folded and larger).
    total: u32,
    // 1: query i sees key j iff j <= i + offset.
    causal: u32,
    // The causal offset, an i32 (the host clamps it to [-seq_q - 1, seq_k]).
    offset: u32,
    // scale * log2(e)
    scale: f32,
    // Mask strides over (batch, head, query, key), in elements; 0 broadcasts.
    mask_sb: u32,
    mask_sh: u32,
    mask_sq: u32,
    mask_sk: u32,
    // The first key query i sees is clamp(i + start, 0, seq_k), an i32 (the host clamps it to
    // [-seq_q - 1, seq_k]): under a sliding window of w keys, offset + 1 - w; else -seq_q - 1.
    start: u32,
    // Rows between consecutive K/V heads: seq_k, or more when only a prefix of a cache is read.
    kv_stride: u32,
}

// Keys query `i` may see: min(seq_k, i + offset + 1) under the causal rule, else seq_k.
fn key_end(i: u32) -> u32 {
    if params.causal == 0u {
        return params.seq_k;
    }
    return u32(clamp(i32(i) + bitcast<i32>(params.offset) + 1, 0, i32(params.seq_k)));
}

// The first key query `i` may see: 0, or under a sliding window the oldest key of the window
// that ends at key_end(i).
fn key_start(i: u32) -> u32 {
    return u32(clamp(i32(i) + bitcast<i32>(params.start), 0, i32(params.seq_k)));
}

// The first key tile a block of query rows row0.. (last_row the last) visits (uniform): the
// smallest query index in the block decides.
fn first_tile(row0: u32, last_row: u32, bk: u32) -> u32 {
    var i_min = 0u;
    if row0 / params.seq_q == last_row / params.seq_q {
        i_min = row0 % params.seq_q;
    }
    return key_start(i_min) / bk;
}
