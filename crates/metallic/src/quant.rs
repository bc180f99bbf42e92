//! Block-quantized weight formats as GGML/GGUF defines them: type ids, block sizes and the
//! byte size of a block. Kernels that read these formats, and loaders that validate files,
//! share this one table.

/// A GGML tensor type (the `ggml_type` id stored in GGUF tensor infos).
///
/// Every type here can be named and sized; which ones have GPU kernels is said by
/// [`QuantType::has_kernels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuantType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    BF16,
    /// 32 weights: f16 scale `d`, 4-bit values; `w = d * (q - 8)`.
    Q4_0,
    /// 32 weights: f16 `d` and `m`, 4-bit values; `w = d * q + m`.
    Q4_1,
    /// 32 weights: f16 `d`, 5-bit values (high bits packed apart); `w = d * (q - 16)`.
    Q5_0,
    /// 32 weights: f16 `d` and `m`, 5-bit values; `w = d * q + m`.
    Q5_1,
    /// 32 weights: f16 `d`, 8-bit signed values; `w = d * q`.
    Q8_0,
    /// 32 weights: f16 `d` and `s` (`d * sum(q)`), 8-bit signed values.
    Q8_1,
    /// 256-weight super-block, 2-bit values, 4-bit scales and mins.
    Q2K,
    /// 256-weight super-block, 3-bit values, 6-bit scales.
    Q3K,
    /// 256-weight super-block of 8 blocks of 32: 4-bit values, 6-bit scales and mins, f16 `d`
    /// and `dmin`.
    Q4K,
    /// As [`Q4K`](Self::Q4K) with a fifth bit per value.
    Q5K,
    /// 256-weight super-block of 16 blocks of 16: 6-bit values, 8-bit scales, f16 `d`.
    Q6K,
    /// 256-weight super-block: f32 `d`, 8-bit values, 16 block sums (an activation format).
    Q8K,
}

impl QuantType {
    /// The type with GGML id `id`, or `None` for ids this crate does not know (including the
    /// i-quants, integer and f64 types).
    pub const fn from_ggml_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => QuantType::F32,
            1 => QuantType::F16,
            2 => QuantType::Q4_0,
            3 => QuantType::Q4_1,
            6 => QuantType::Q5_0,
            7 => QuantType::Q5_1,
            8 => QuantType::Q8_0,
            9 => QuantType::Q8_1,
            10 => QuantType::Q2K,
            11 => QuantType::Q3K,
            12 => QuantType::Q4K,
            13 => QuantType::Q5K,
            14 => QuantType::Q6K,
            15 => QuantType::Q8K,
            30 => QuantType::BF16,
            _ => return None,
        })
    }

    /// The GGML id.
    pub const fn ggml_id(self) -> u32 {
        match self {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
            QuantType::Q8_1 => 9,
            QuantType::Q2K => 10,
            QuantType::Q3K => 11,
            QuantType::Q4K => 12,
            QuantType::Q5K => 13,
            QuantType::Q6K => 14,
            QuantType::Q8K => 15,
            QuantType::BF16 => 30,
        }
    }

    /// GGML's name for the type (`"Q4_K"`, `"F16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "F32",
            QuantType::F16 => "F16",
            QuantType::BF16 => "BF16",
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q5_0 => "Q5_0",
            QuantType::Q5_1 => "Q5_1",
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q8_1 => "Q8_1",
            QuantType::Q2K => "Q2_K",
            QuantType::Q3K => "Q3_K",
            QuantType::Q4K => "Q4_K",
            QuantType::Q5K => "Q5_K",
            QuantType::Q6K => "Q6_K",
            QuantType::Q8K => "Q8_K",
        }
    }

    /// Weights per block (1 for the float types).
    pub const fn block_elems(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q4_0
            | QuantType::Q4_1
            | QuantType::Q5_0
            | QuantType::Q5_1
            | QuantType::Q8_0
            | QuantType::Q8_1 => 32,
            QuantType::Q2K | QuantType::Q3K | QuantType::Q4K | QuantType::Q5K | QuantType::Q6K | QuantType::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q8_1 => 36,
            QuantType::Q2K => 84,
            QuantType::Q3K => 110,
            QuantType::Q4K => 144,
            QuantType::Q5K => 176,
            QuantType::Q6K => 210,
            QuantType::Q8K => 292,
        }
    }

    /// Bytes holding `elems` weights, or `None` if `elems` is not a whole number of blocks or
    /// the size overflows.
    pub const fn bytes_for(self, elems: usize) -> Option<usize> {
        let block = self.block_elems();
        if !elems.is_multiple_of(block) {
            return None;
        }
        (elems / block).checked_mul(self.block_bytes())
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::QuantType;

    #[test]
    fn ids_round_trip_and_sizes_match_ggml() {
        for id in 0..64 {
            if let Some(t) = QuantType::from_ggml_id(id) {
                assert_eq!(t.ggml_id(), id);
            }
        }
        // Bits per weight as GGML documents them: Q4_K 4.5, Q5_K 5.5, Q6_K 6.5625, Q8_0 8.5.
        let bpw = |t: QuantType| (t.block_bytes() * 8) as f64 / t.block_elems() as f64;
        assert_eq!(bpw(QuantType::Q4K), 4.5);
        assert_eq!(bpw(QuantType::Q5K), 5.5);
        assert_eq!(bpw(QuantType::Q6K), 6.5625);
        assert_eq!(bpw(QuantType::Q8_0), 8.5);
        assert_eq!(QuantType::Q4K.bytes_for(512), Some(288));
        assert_eq!(QuantType::Q4K.bytes_for(100), None);
        assert_eq!(QuantType::from_ggml_id(4), None);
    }
}
