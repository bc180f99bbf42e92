// Shared by the word GEMVs (appended to gemv_sb.wgsl and gemv_q8.wgsl): the units they walk
// (a super-block of 256 weights for the K-quants, a block of 32 for the others) and where the
// weights of each quant word sit in them. QTYPE is the kernel's weight type (GGML's id).

// Whether the type is Q4_K or Q5_K: qs[128] under 6-bit scales and mins.
fn with_mins() -> bool {
    return QTYPE == 12u || QTYPE == 13u;
}

// Whether the type is a K-quant (units of a super-block) rather than one of the blocks of 32.
fn k_quant() -> bool {
    return with_mins() || QTYPE == 14u;
}

// Weights of one unit.
fn unit_elems() -> u32 {
    return select(32u, 256u, k_quant());
}

// Words of one unit (see common.wgsl for the layouts).
fn unit_words() -> u32 {
    switch QTYPE {
        case 12u: { return 36u; }
        case 13u: { return 44u; }
        case 14u: { return 53u; }
        case 8u: { return 9u; }
        case 6u, 7u: { return 6u; }
        default: { return 5u; }
    }
}

// Words of quants of one unit (qs, or ql for Q6_K).
fn quant_words() -> u32 {
    if k_quant() {
        return 32u;
    }
    return select(4u, 8u, QTYPE == 8u);
}

// The first of the four weights that the low nibbles of word `wd` (0 .. 32) of a super-block's
// quants hold; those of its high nibbles follow `hi_off()` later.
fn lo_elem(wd: u32) -> u32 {
    if !k_quant() {
        // qs[l]: low nibbles (Q8_0: the bytes) weight l, high nibbles weight 16 + l.
        return 4u * wd;
    }
    if with_mins() {
        // Q4_K, Q5_K: qs[32j + l], low nibbles weight 64j + l (sub-block 2j), high 64j + 32 + l.
        return 64u * (wd / 8u) + 4u * (wd % 8u);
    }
    // Q6_K: ql[64n + 32h + l], low nibbles weight 128n + 32h + l, high 128n + 32h + 64 + l.
    return 128u * (wd / 16u) + 32u * ((wd / 8u) % 2u) + 4u * (wd % 8u);
}

fn hi_off() -> u32 {
    if !k_quant() {
        return 16u;
    }
    return select(64u, 32u, with_mins());
}
