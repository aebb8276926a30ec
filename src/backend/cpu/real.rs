//! The float type every CPU op is written over: f32 for the `Backend` impl, f64 for
//! the finite-difference gradient checks. One body of math, two instantiations, so the
//! code that is checked is the code that runs.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real floating-point scalar (f32 or f64) with its GEMM.
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn abs(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn is_nan(self) -> bool;
    /// `if c { a } else { b }` by bit masks, never a branch: for selects on data
    /// (max-pool windows) a branch mispredicts, and LLVM turns a plain `if` into one
    /// where it does not vectorise. Exactly `a` or `b`, bit for bit.
    fn select(c: bool, a: Self, b: Self) -> Self;
    /// A raw 32-bit word (`Memory::upload_words`) kept exactly: f32 stores its bits,
    /// f64 the word's integer value (a bit cast through f64 would quiet NaN patterns).
    fn from_word(w: u32) -> Self;
    fn to_word(self) -> u32;

    /// `C ← α·A·B + β·C` through `matrixmultiply` (`sgemm` / `dgemm`), with
    /// `[m, k, n]` = `mkn`.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, in-bounds matrices
    /// (A: m×k, B: k×n, C: m×n) and C must not alias A or B. C need not be
    /// initialised when β = 0.
    unsafe fn gemm_raw(
        mkn: [usize; 3],
        alpha: Self,
        a: RawMat<*const Self>,
        b: RawMat<*const Self>,
        beta: Self,
        c: RawMat<*mut Self>,
    );
}

/// A raw strided matrix as matrixmultiply takes it: element (i, j) is at
/// `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct RawMat<P> {
    pub ptr: P,
    pub rs: isize,
    pub cs: isize,
}

/// `fn f(self) -> Self` for each `f`, calling the float type's own method.
macro_rules! delegate_unary {
    ($t:ty: $($f:ident),*) => {
        $(
            #[inline(always)]
            fn $f(self) -> Self {
                <$t>::$f(self)
            }
        )*
    };
}

macro_rules! impl_real {
    ($t:ty, $u:ty, $gemm:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            delegate_unary!($t: sqrt, exp, ln, ln_1p, abs);
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn select(c: bool, a: Self, b: Self) -> Self {
                let mask = <$u>::from(c).wrapping_neg();
                <$t>::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
            }
            #[inline(always)]
            fn from_word(w: u32) -> Self {
                if std::mem::size_of::<$t>() == 4 {
                    <$t>::from_bits(w as _)
                } else {
                    w as $t
                }
            }
            #[inline(always)]
            fn to_word(self) -> u32 {
                if std::mem::size_of::<$t>() == 4 {
                    self.to_bits() as u32
                } else {
                    self as u32
                }
            }
            unsafe fn gemm_raw(
                [m, k, n]: [usize; 3],
                alpha: Self,
                a: RawMat<*const Self>,
                b: RawMat<*const Self>,
                beta: Self,
                c: RawMat<*mut Self>,
            ) {
                // SAFETY: forwarded from the caller's contract.
                unsafe {
                    $gemm(
                        m, k, n, alpha, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, beta, c.ptr, c.rs,
                        c.cs,
                    )
                }
            }
        }
    };
}

impl_real!(f32, u32, matrixmultiply::sgemm);
impl_real!(f64, u64, matrixmultiply::dgemm);
