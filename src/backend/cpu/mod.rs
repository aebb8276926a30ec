//! The CPU backend: Rust + rayon, f32. The parity reference for every other device.
//!
//! Every op is written once, generic over [`Real`], as the method of its family's
//! trait in the file of that family: `conv` (im2col + GEMM), `batchnorm`, `pool`
//! (ReLU, 2×2 max-pool), `linear` (branch-batched), `loss`, `optim` (and `axpy`),
//! `ttsvd` (the sharing step, sharing::ttsvd), `data` (batches from a split on the device);
//! `gemm` is matrixmultiply + rayon under them. [`Cpu`] is the f32 instantiation
//! the program runs; [`Cpu64`] the f64 one the finite-difference gradient checks
//! run, so the code that is checked is the code that runs.
//!
//! Determinism: every reduction has a fixed order and fixed chunking that does not
//! depend on the number of rayon threads; results are bitwise reproducible.

pub mod batchnorm;
pub mod conv;
pub mod data;
pub mod dropout;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod mreach;
pub mod optim;
pub mod pool;
pub mod real;
pub mod ttsvd;

#[cfg(test)]
mod testutil;

pub use real::Real;

use super::Memory;
use std::marker::PhantomData;

/// The CPU device over the float type `T`: buffers are `Vec<T>`. Each family's ops
/// are implemented in that family's file (`impl ConvOps for CpuOf<T>` in conv.rs, …).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuOf<T>(PhantomData<fn() -> T>);

/// The CPU device the program runs on (f32).
pub type Cpu = CpuOf<f32>;
/// The value of [`Cpu`], so that it reads like the unit struct it is (`&Cpu`).
#[allow(non_upper_case_globals)]
pub const Cpu: Cpu = CpuOf(PhantomData);

/// The same ops in f64, for finite-difference gradient checks of the whole net.
pub type Cpu64 = CpuOf<f64>;
/// The value of [`Cpu64`].
#[allow(non_upper_case_globals)]
pub const Cpu64: Cpu64 = CpuOf(PhantomData);

/// The CPU runs its ops as they come: recording yields no program.
impl<T: Real> crate::backend::ProgramOps for CpuOf<T> {
    type Program = std::convert::Infallible;
    fn record(&self, f: &mut dyn FnMut()) -> Option<Self::Program> {
        f();
        None
    }
    unsafe fn replay(&self, program: &Self::Program) {
        match *program {}
    }
    fn program_launches(program: &Self::Program) -> usize {
        match *program {}
    }
}

impl<T: Real> Memory for CpuOf<T> {
    type Buf = Vec<T>;

    fn name(&self) -> String {
        let bits = 8 * std::mem::size_of::<T>();
        let kind = if bits == 32 {
            "cpu".into()
        } else {
            format!("cpu f{bits}")
        };
        format!("{kind} ({} threads)", rayon::current_num_threads())
    }

    fn zeros(&self, len: usize) -> Vec<T> {
        vec![T::ZERO; len]
    }
    fn upload(&self, host: &[f32]) -> Vec<T> {
        host.iter().map(|&v| T::from_f64(v as f64)).collect()
    }
    fn download(&self, buf: &Vec<T>) -> Vec<f32> {
        buf.iter().map(|&v| v.to_f64() as f32).collect()
    }
    fn write(&self, buf: &mut Vec<T>, host: &[f32]) {
        for (b, &h) in buf[..host.len()].iter_mut().zip(host) {
            *b = T::from_f64(h as f64);
        }
    }
    fn buf_len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }
    fn compact_rows(&self, buf: &mut Vec<T>, row_len: usize, keep: &[usize]) {
        debug_assert!(keep.windows(2).all(|w| w[0] < w[1]));
        // keep[i] >= i, so moving rows front to back never overwrites a row still to move.
        for (i, &k) in keep.iter().enumerate() {
            buf.copy_within(k * row_len..(k + 1) * row_len, i * row_len);
        }
        buf.truncate(keep.len() * row_len);
        buf.shrink_to_fit();
    }
    fn upload_words(&self, words: &[u32]) -> Vec<T> {
        words.iter().map(|&w| T::from_word(w)).collect()
    }
    fn download_words(&self, buf: &Vec<T>) -> Vec<u32> {
        buf.iter().map(|&v| v.to_word()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{OptimOps, OptimStep, ParamBufs};

    /// The trait surface: memory ops and that each op reaches its f32 kernel.
    #[test]
    fn backend_memory_ops() {
        let cpu = Cpu;
        let mut b = cpu.zeros(5);
        cpu.write(&mut b, &[1.0, 2.0]);
        assert_eq!(cpu.download(&b), [1.0, 2.0, 0.0, 0.0, 0.0]);
        let x = cpu.upload(&[1.0, 1.0, 1.0, 1.0, 1.0]);
        cpu.axpy(2.0, &x, &mut b, 4);
        assert_eq!(cpu.download(&b), [3.0, 4.0, 2.0, 2.0, 0.0]);
        assert_eq!(cpu.buf_len(&b), 5);
        let mut st = [cpu.zeros(5), cpu.zeros(5)];
        let g = cpu.upload(&[1.0; 5]);
        let sgd = OptimStep::Sgd {
            lr: 0.5,
            momentum: 0.9,
        };
        let mut hyper = cpu.upload(&[0.0, 0.5, f32::NAN, f32::NAN]);
        cpu.optim_prepare(&sgd, &mut hyper);
        assert_eq!(hyper, [1.0, 0.5, 0.5, 1.0]);
        let bufs = ParamBufs {
            len: 5,
            value: &mut b,
            grad: &g,
            state: &mut st[..1],
        };
        cpu.optim_step(&sgd, &hyper, &mut [bufs]);
        assert_eq!(cpu.download(&b), [2.5, 3.5, 1.5, 1.5, -0.5]);
        let adam = OptimStep::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let mut st = [cpu.zeros(5), cpu.zeros(5)];
        let mut hyper = cpu.upload(&[0.0, 0.1, f32::NAN, f32::NAN]);
        cpu.optim_prepare(&adam, &mut hyper);
        let bufs = ParamBufs {
            len: 5,
            value: &mut b,
            grad: &g,
            state: &mut st,
        };
        cpu.optim_step(&adam, &hyper, &mut [bufs]);
        assert!((b[0] - 2.4).abs() < 1e-6);
    }
}
