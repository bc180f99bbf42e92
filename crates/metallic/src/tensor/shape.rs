//! Tensor shapes.

use std::fmt;

use crate::error::{Error, Result};

/// Most dimensions a [`Shape`] can have.
pub const MAX_DIMS: usize = 8;

/// The dimensions of a tensor, outermost first. Row-major (contiguous) layout is implied.
///
/// A `Shape` is `Copy` and never allocates.
///
/// ```
/// use metallic::Shape;
/// let s = Shape::new(&[2, 3, 4])?;
/// assert_eq!(s.numel(), 24);
/// assert_eq!(s.strides().as_slice(), &[12, 4, 1]);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_DIMS],
    rank: u8,
}

impl Shape {
    /// A shape from its dimensions. Fails on more than [`MAX_DIMS`] dimensions or an element
    /// count that overflows `usize`. A rank-0 shape (`&[]`) is a scalar with one element.
    pub fn new(dims: &[usize]) -> Result<Self> {
        if dims.len() > MAX_DIMS {
            return Err(Error::shape(
                "Shape::new",
                format!("{} dimensions given, at most {MAX_DIMS} supported", dims.len()),
            ));
        }
        let mut out = [0usize; MAX_DIMS];
        for (slot, &d) in out.iter_mut().zip(dims) {
            *slot = d;
        }
        let shape = Shape { dims: out, rank: dims.len() as u8 };
        dims.iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::shape("Shape::new", format!("element count of {shape} overflows")))?;
        Ok(shape)
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.dims.get(..self.rank as usize).unwrap_or(&[])
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// Row-major strides, in elements.
    pub fn strides(&self) -> Strides {
        let mut strides = [0usize; MAX_DIMS];
        let mut acc = 1usize;
        for (stride, &dim) in strides.iter_mut().zip(self.dims()).rev() {
            *stride = acc;
            acc = acc.saturating_mul(dim);
        }
        Strides { strides, rank: self.rank }
    }

    /// Size of dimension `i`, or an error naming `op` if out of range.
    pub fn dim(&self, i: usize, op: &'static str) -> Result<usize> {
        self.dims()
            .get(i)
            .copied()
            .ok_or_else(|| Error::invalid(op, format!("dimension {i} out of range for shape {self}")))
    }

    /// Whether `other`'s dimensions equal the trailing dimensions of `self`
    /// (the broadcast rule of the element-wise kernels). A scalar shape is a suffix of all.
    pub fn ends_with(&self, other: &Shape) -> bool {
        self.dims().ends_with(other.dims())
    }
}

/// Anything a shape can be made from: `[2, 3]`, `&[2, 3]`, `vec![2, 3]`, a `Shape`.
pub trait IntoShape {
    /// The shape, or an error if it has too many dimensions or overflows.
    fn into_shape(self) -> Result<Shape>;
}

impl IntoShape for Shape {
    fn into_shape(self) -> Result<Shape> {
        Ok(self)
    }
}

impl IntoShape for &[usize] {
    fn into_shape(self) -> Result<Shape> {
        Shape::new(self)
    }
}

impl<const N: usize> IntoShape for [usize; N] {
    fn into_shape(self) -> Result<Shape> {
        Shape::new(&self)
    }
}

impl<const N: usize> IntoShape for &[usize; N] {
    fn into_shape(self) -> Result<Shape> {
        Shape::new(self)
    }
}

impl IntoShape for Vec<usize> {
    fn into_shape(self) -> Result<Shape> {
        Shape::new(&self)
    }
}

impl IntoShape for &Vec<usize> {
    fn into_shape(self) -> Result<Shape> {
        Shape::new(self)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

/// Row-major strides of a [`Shape`], in elements.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Strides {
    strides: [usize; MAX_DIMS],
    rank: u8,
}

impl Strides {
    /// The strides as a slice.
    pub fn as_slice(&self) -> &[usize] {
        self.strides.get(..self.rank as usize).unwrap_or(&[])
    }
}
