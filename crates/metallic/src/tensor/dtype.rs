//! Element types.

use std::fmt;

/// The element type of a tensor.
///
/// Quantized block formats (GGUF's Q4_K and friends) will join this enum as block types
/// whose size is given per block rather than per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float (needs the adapter's `SHADER_F16` for GPU kernels).
    F16,
    /// 32-bit unsigned integer (token ids, indices).
    U32,
}

impl DType {
    /// Bytes per element.
    ///
    /// ```
    /// assert_eq!(metallic::DType::F16.size_in_bytes(), 2);
    /// ```
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }

    /// Whether arithmetic kernels (add, mul, ...) accept this dtype.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }

    /// The WGSL scalar type that stores this dtype.
    pub const fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        })
    }
}

/// A host element type that maps to a [`DType`]: `f32`, [`half::f16`], `u32`.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The matching dtype.
    const DTYPE: DType;
    /// Converts to `f32` (exact for every implementor except large `u32`s).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

impl Element for u32 {
    const DTYPE: DType = DType::U32;
    #[allow(clippy::cast_precision_loss)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}
