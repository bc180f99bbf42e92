//! Block-quantized weight formats as GGML/GGUF defines them: type ids, block sizes and the
//! byte size of a block. Kernels that read these formats, and loaders that validate files,
//! share this one table. [`dequantize`] is the CPU reference decoder (GGML's block layouts,
//! checked against gguf-py's decoders by `tests/qmatmul.rs`); the GPU kernels that multiply by
//! quantized matrices without expanding them are in
//! [`kernels::qmatmul`](crate::kernels::qmatmul).

use crate::error::{Error, Result};

/// A GGML tensor type (the `ggml_type` id stored in GGUF tensor infos).
///
/// Every type here can be named and sized; which ones can be decoded ([`dequantize`]) and
/// multiplied on the GPU is said by [`QuantType::has_kernels`].
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
    /// 256-weight super-block of 16 blocks of 16: 2-bit values, 4-bit scales and mins (one
    /// byte each), f16 `d` and `dmin`; `w = d * sc * q - dmin * m`.
    Q2K,
    /// 256-weight super-block of 16 blocks of 16: 3-bit values (2 low bits, the third in a
    /// mask apart), 6-bit signed scales, f16 `d`; `w = d * (sc - 32) * (q - 4)`.
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
    /// 32 weights: f16 `d`, 4-bit indices into a fixed non-linear table of 16 values;
    /// `w = d * table[q]` (GGML's `IQ4_NL`).
    IQ4NL,
    /// 256-weight super-block of 8 blocks of 32: 4-bit indices into the
    /// [`IQ4NL`](Self::IQ4NL) table, 6-bit signed scales, f16 `d`;
    /// `w = d * (sc - 32) * table[q]` (GGML's `IQ4_XS`).
    IQ4XS,
}

impl QuantType {
    /// The type with GGML id `id`, or `None` for ids this crate does not know (the i-quants
    /// other than IQ4_NL and IQ4_XS, the ternary and FP4 types, the integer and f64 types).
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
            20 => QuantType::IQ4NL,
            23 => QuantType::IQ4XS,
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
            QuantType::IQ4NL => 20,
            QuantType::IQ4XS => 23,
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
            QuantType::IQ4NL => "IQ4_NL",
            QuantType::IQ4XS => "IQ4_XS",
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
            | QuantType::Q8_1
            | QuantType::IQ4NL => 32,
            QuantType::Q2K
            | QuantType::Q3K
            | QuantType::Q4K
            | QuantType::Q5K
            | QuantType::Q6K
            | QuantType::Q8K
            | QuantType::IQ4XS => 256,
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
            QuantType::IQ4NL => 18,
            QuantType::IQ4XS => 136,
        }
    }

    /// Whether [`dequantize`] decodes this type and the GPU kernels of
    /// [`kernels::qmatmul`](crate::kernels::qmatmul) read it: the float types, Q4_0, Q4_1,
    /// Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS (not the activation
    /// formats Q8_1 and Q8_K).
    pub const fn has_kernels(self) -> bool {
        !matches!(self, QuantType::Q8_1 | QuantType::Q8K)
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

/// Reads a little-endian f16 at `at`.
fn f16_at(block: &[u8], at: usize) -> f32 {
    match block.get(at..at + 2) {
        Some(&[lo, hi]) => half::f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32(),
        _ => 0.0,
    }
}

/// Byte `at` of a block (0 past its end, which the callers' fixed layouts never reach).
fn byte(block: &[u8], at: usize) -> u8 {
    block.get(at).copied().unwrap_or(0)
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K super-block, from its
/// 12 packed scale bytes (GGML's `get_scale_min_k4`).
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (byte(q, j) & 63, byte(q, j + 4) & 63)
    } else {
        let sc = (byte(q, j + 4) & 0x0F) | ((byte(q, j - 4) >> 6) << 4);
        let m = (byte(q, j + 4) >> 4) | ((byte(q, j) >> 6) << 4);
        (sc, m)
    }
}

/// The 6-bit scale of block `j` (0..16) of a Q3_K super-block, from its 12 packed scale
/// bytes: the low 4 bits are the low (j < 8) or high nibble of byte `j % 8`, the high 2 bits
/// bits `2 (j / 4)`, `2 (j / 4) + 1` of byte `8 + j % 4`.
fn scale_k3(j: usize, q: &[u8]) -> u8 {
    let low = if j < 8 { byte(q, j) & 0x0F } else { byte(q, j - 8) >> 4 };
    let high = (byte(q, 8 + j % 4) >> (2 * (j / 4))) & 3;
    low | (high << 4)
}

/// The 16 values IQ4_NL and IQ4_XS indices select (GGML's `kvalues_iq4nl`).
const IQ4NL_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// The IQ4_NL table value at the index in the low 4 bits of `q`, as f32.
fn iq4nl(q: u8) -> f32 {
    f32::from(IQ4NL_VALUES.get(usize::from(q & 0x0F)).copied().unwrap_or(0))
}

/// Decodes one block of `ty` (exactly `ty.block_bytes()` bytes) into `out`
/// (`ty.block_elems()` values).
fn dequantize_block(ty: QuantType, b: &[u8], out: &mut [f32]) {
    match ty {
        QuantType::F32 => {
            if let (Some(o), Some(&[b0, b1, b2, b3])) = (out.first_mut(), b.get(..4)) {
                *o = f32::from_le_bytes([b0, b1, b2, b3]);
            }
        }
        QuantType::F16 => {
            if let Some(o) = out.first_mut() {
                *o = f16_at(b, 0);
            }
        }
        QuantType::BF16 => {
            if let Some(o) = out.first_mut() {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([byte(b, 0), byte(b, 1)])) << 16);
            }
        }
        QuantType::Q4_0 | QuantType::Q4_1 => {
            // d, [m], qs[16]: element j < 16 is the low nibble of qs[j], j + 16 the high one.
            let d = f16_at(b, 0);
            let (m, qs) = if ty == QuantType::Q4_1 { (f16_at(b, 2), 4) } else { (0.0, 2) };
            let bias = if ty == QuantType::Q4_0 { 8 } else { 0 };
            for j in 0..16 {
                let q = byte(b, qs + j);
                let (lo, hi) = (i32::from(q & 0x0F) - bias, i32::from(q >> 4) - bias);
                if let Some(o) = out.get_mut(j) {
                    *o = if ty == QuantType::Q4_1 { lo as f32 * d + m } else { lo as f32 * d };
                }
                if let Some(o) = out.get_mut(j + 16) {
                    *o = if ty == QuantType::Q4_1 { hi as f32 * d + m } else { hi as f32 * d };
                }
            }
        }
        QuantType::Q5_0 | QuantType::Q5_1 => {
            // d, [m], qh (u32: bit j is the fifth bit of element j), qs[16] as in Q4_0.
            let d = f16_at(b, 0);
            let one = ty == QuantType::Q5_1;
            let (m, qh_at) = if one { (f16_at(b, 2), 4) } else { (0.0, 2) };
            let qh = u32::from_le_bytes([byte(b, qh_at), byte(b, qh_at + 1), byte(b, qh_at + 2), byte(b, qh_at + 3)]);
            let bias = if one { 0 } else { 16 };
            for j in 0..16 {
                let q = byte(b, qh_at + 4 + j);
                let h0 = ((qh >> j) & 1) << 4;
                let h1 = ((qh >> (j + 16)) & 1) << 4;
                let lo = (u32::from(q & 0x0F) | h0) as i32 - bias;
                let hi = (u32::from(q >> 4) | h1) as i32 - bias;
                if let Some(o) = out.get_mut(j) {
                    *o = if one { lo as f32 * d + m } else { lo as f32 * d };
                }
                if let Some(o) = out.get_mut(j + 16) {
                    *o = if one { hi as f32 * d + m } else { hi as f32 * d };
                }
            }
        }
        QuantType::Q8_0 => {
            let d = f16_at(b, 0);
            for (j, o) in out.iter_mut().take(32).enumerate() {
                *o = f32::from(byte(b, 2 + j) as i8) * d;
            }
        }
        QuantType::Q4K | QuantType::Q5K => {
            // d, dmin, scales[12], [qh[32]], qs[128]: four chunks of 64 weights, each the low
            // then the high nibbles of 32 bytes of qs, with sub-block scales 2c and 2c + 1.
            let five = ty == QuantType::Q5K;
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = b.get(4..16).unwrap_or(&[]);
            let qs = if five { 48 } else { 16 };
            for c in 0..4 {
                let (sc1, m1) = scale_min_k4(2 * c, scales);
                let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
                let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
                for l in 0..32 {
                    let q = byte(b, qs + 32 * c + l);
                    let (mut lo, mut hi) = (q & 0x0F, q >> 4);
                    if five {
                        let h = byte(b, 16 + l);
                        lo += ((h >> (2 * c)) & 1) << 4;
                        hi += ((h >> (2 * c + 1)) & 1) << 4;
                    }
                    if let Some(o) = out.get_mut(64 * c + l) {
                        *o = d1 * f32::from(lo) - min1;
                    }
                    if let Some(o) = out.get_mut(64 * c + 32 + l) {
                        *o = d2 * f32::from(hi) - min2;
                    }
                }
            }
        }
        QuantType::Q6K => {
            // ql[128], qh[64], scales[16] (i8), d: two halves of 128 weights, each four
            // quarters of 32 (low nibbles of ql[0..32], of ql[32..64], high nibbles of the
            // same), the two high bits from qh[l] >> 2 * quarter, scale per 16 weights.
            let d = f16_at(b, 208);
            for n in 0..2 {
                let (ql, qh, sc) = (64 * n, 128 + 32 * n, 192 + 8 * n);
                for l in 0..32 {
                    let h = byte(b, qh + l);
                    let (a, c) = (byte(b, ql + l), byte(b, ql + l + 32));
                    let q = [
                        (a & 0x0F) | ((h & 3) << 4),
                        (c & 0x0F) | (((h >> 2) & 3) << 4),
                        (a >> 4) | (((h >> 4) & 3) << 4),
                        (c >> 4) | (((h >> 6) & 3) << 4),
                    ];
                    for (quarter, &qv) in q.iter().enumerate() {
                        let s = f32::from(byte(b, sc + l / 16 + 2 * quarter) as i8);
                        if let Some(o) = out.get_mut(128 * n + 32 * quarter + l) {
                            *o = d * s * (i32::from(qv) - 32) as f32;
                        }
                    }
                }
            }
        }
        QuantType::Q2K => {
            // scales[16], qs[64], d, dmin: two halves n of 128 weights, each four quarters j of
            // 32 (bits 2j, 2j + 1 of qs[32n + l]); per 16 weights a scale byte, the scale in its
            // low nibble, the min in its high one.
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            for n in 0..2 {
                for j in 0..4 {
                    for l in 0..32 {
                        let sc = byte(b, 8 * n + 2 * j + l / 16);
                        let (dl, ml) = (d * f32::from(sc & 0x0F), dmin * f32::from(sc >> 4));
                        let q = (byte(b, 16 + 32 * n + l) >> (2 * j)) & 3;
                        if let Some(o) = out.get_mut(128 * n + 32 * j + l) {
                            *o = dl * f32::from(q) - ml;
                        }
                    }
                }
            }
        }
        QuantType::Q3K => {
            // hmask[32], qs[64], scales[12], d: the two low bits as in Q2_K; the third is bit
            // 4n + j of hmask[l], and a clear bit subtracts 4; a 6-bit scale per 16 weights.
            let d = f16_at(b, 108);
            let scales = b.get(96..108).unwrap_or(&[]);
            for n in 0..2 {
                for j in 0..4 {
                    for l in 0..32 {
                        let dl = d * (i32::from(scale_k3(8 * n + 2 * j + l / 16, scales)) - 32) as f32;
                        let low = i32::from((byte(b, 32 + 32 * n + l) >> (2 * j)) & 3);
                        let high = (byte(b, l) >> (4 * n + j)) & 1;
                        let q = if high == 0 { low - 4 } else { low };
                        if let Some(o) = out.get_mut(128 * n + 32 * j + l) {
                            *o = dl * q as f32;
                        }
                    }
                }
            }
        }
        QuantType::IQ4NL => {
            // d, qs[16]: element j < 16 is the low nibble of qs[j], j + 16 the high one.
            let d = f16_at(b, 0);
            for j in 0..16 {
                let q = byte(b, 2 + j);
                if let Some(o) = out.get_mut(j) {
                    *o = d * iq4nl(q);
                }
                if let Some(o) = out.get_mut(j + 16) {
                    *o = d * iq4nl(q >> 4);
                }
            }
        }
        QuantType::IQ4XS => {
            // d, scales_h (u16), scales_l[4], qs[128]: block ib of 32 weights is laid out as an
            // IQ4_NL block's qs from qs[16 ib], its 6-bit scale nibble ib of scales_l (low
            // bits) and bits 2 ib, 2 ib + 1 of scales_h (high bits).
            let d = f16_at(b, 0);
            let scales_h = u16::from_le_bytes([byte(b, 2), byte(b, 3)]);
            for ib in 0..8 {
                let low = (byte(b, 4 + ib / 2) >> (4 * (ib % 2))) & 0x0F;
                let high = ((scales_h >> (2 * ib)) & 3) as u8;
                let dl = d * (i32::from(low | (high << 4)) - 32) as f32;
                for j in 0..16 {
                    let q = byte(b, 8 + 16 * ib + j);
                    if let Some(o) = out.get_mut(32 * ib + j) {
                        *o = dl * iq4nl(q);
                    }
                    if let Some(o) = out.get_mut(32 * ib + 16 + j) {
                        *o = dl * iq4nl(q >> 4);
                    }
                }
            }
        }
        QuantType::Q8_1 | QuantType::Q8K => {}
    }
}

/// Decodes `bytes`, a whole number of `ty` blocks in GGML's layout, into `out`, which must
/// hold exactly the weights they encode (`bytes.len() / block_bytes * block_elems`).
///
/// This is the CPU reference the GPU kernels are tested against, written from GGML's block
/// definitions (`ggml-common.h`) and its `dequantize_row_*` semantics: the same f32
/// operations in the same order, so results match GGML and gguf-py bit for bit on finite
/// scales.
///
/// Fails with [`Error::InvalidArgument`] for types without a decoder (see
/// [`QuantType::has_kernels`]) and when the lengths disagree.
///
/// ```
/// use metallic::quant::{dequantize, QuantType};
/// // One Q8_0 block: d = 0.5 (f16 0x3800), then 32 signed bytes.
/// let mut block = vec![0x00, 0x38];
/// block.extend((0..32).map(|i| (i as i8 - 16) as u8));
/// let mut out = [0.0f32; 32];
/// dequantize(QuantType::Q8_0, &block, &mut out)?;
/// assert_eq!(out[0], -8.0);
/// assert_eq!(out[31], 7.5);
/// # Ok::<(), metallic::Error>(())
/// ```
pub fn dequantize(ty: QuantType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    const OP: &str = "dequantize";
    if !ty.has_kernels() {
        return Err(Error::invalid(OP, format!("no decoder for {ty}")));
    }
    let (bb, be) = (ty.block_bytes(), ty.block_elems());
    if !bytes.len().is_multiple_of(bb) {
        return Err(Error::invalid(
            OP,
            format!("{} bytes are not a whole number of {ty} blocks ({bb} bytes)", bytes.len()),
        ));
    }
    let want = bytes.len() / bb * be;
    if out.len() != want {
        return Err(Error::invalid(
            OP,
            format!("{} bytes of {ty} hold {want} weights, the output {}", bytes.len(), out.len()),
        ));
    }
    for (block, o) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        dequantize_block(ty, block, o);
    }
    Ok(())
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
        assert_eq!(bpw(QuantType::Q2K), 2.625);
        assert_eq!(bpw(QuantType::Q3K), 3.4375);
        assert_eq!(bpw(QuantType::IQ4NL), 4.5);
        assert_eq!(bpw(QuantType::IQ4XS), 4.25);
        assert_eq!(QuantType::from_ggml_id(20).map(QuantType::name), Some("IQ4_NL"));
        assert_eq!(QuantType::from_ggml_id(23).map(QuantType::name), Some("IQ4_XS"));
        assert_eq!(QuantType::Q4K.bytes_for(512), Some(288));
        assert_eq!(QuantType::Q4K.bytes_for(100), None);
        assert_eq!(QuantType::from_ggml_id(4), None);
    }
}
