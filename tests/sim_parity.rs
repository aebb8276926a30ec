//! The kernel simulator against the CPU reference: every kernel family of
//! kernels/*.cu on random inputs (seeded), outputs poisoned with NaN first so an
//! unwritten element fails, odd sizes that fill no block or tile; one full MNIST
//! MTL training step; and the simulator's own checks (a planted out-of-bounds
//! write, a planted missing barrier).
//!
//! The parity bodies (and their tolerances) are in tests/common/parity.rs, shared
//! with tests/cuda_parity.rs; this file runs them on the simulator and adds the
//! simulator's own checks.

#[macro_use]
#[path = "common/parity.rs"]
mod parity;

use parity::{rand_vec, rng};
use sskernel::backend::launch::{Arg, Launch, Plan};
use sskernel::backend::ops::*;
use sskernel::backend::sim::Sim;

/// One test per parity body, on a fresh simulator.
macro_rules! on_sim {
    ($($body:ident),*) => {
        $(
            #[test]
            fn $body() {
                parity::$body(&Sim::new().unwrap());
            }
        )*
    };
}

parity_bodies!(on_sim);

/// Reductions have a fixed order (no float atomics): the simulator's results are
/// bitwise the same whatever order it resumes fibers in.
#[test]
fn results_do_not_depend_on_the_schedule() {
    let first = parity::reduction_outputs(&Sim::with_seed(1));
    for seed in [2, 3] {
        let other = parity::reduction_outputs(&Sim::with_seed(seed));
        parity::assert_bitwise_equal(&format!("seed {seed} vs seed 1"), &first, &other);
    }
}

/// The planted out-of-bounds write (kernels/test_planted.cu) is caught by the
/// guard check after the launch, naming the kernel and the argument.
#[test]
#[should_panic(
    expected = "kernel `planted_oob_write` (test_planted.cu) wrote out of bounds of its argument `y` (1000 floats): the guard zone after the data changed, first at index 1000"
)]
fn planted_out_of_bounds_write_is_caught() {
    let sim = Sim::new().unwrap();
    let x = sim.upload(&[1.0; 1000]);
    let y = sim.zeros(1000);
    sim.launch_plan(&Plan {
        scratch: vec![],
        launches: vec![Launch {
            kernel: "planted_oob_write",
            grid: [4, 1, 1],
            block: [256, 1, 1],
            shared_bytes: 0,
            args: vec![Arg::Buf(&x), Arg::Buf(&y), Arg::I32(1000)],
        }],
    });
}

/// The planted missing barrier (kernels/test_planted.cu) is caught
/// deterministically: a block's fibers run one at a time up to the next barrier,
/// so without the barrier the first fiber to run reads a shared-memory slot its
/// neighbour has not written yet (whatever order the seed gives); with the barrier
/// the result is right for every seed.
#[test]
fn planted_missing_barrier_is_caught_for_every_seed() {
    let n = 8 * 256;
    let mut g = rng(1000);
    let x = rand_vec(&mut g, n);
    let want: Vec<f32> = (0..n)
        .map(|i| x[(i / 256) * 256 + (i % 256 + 1) % 256])
        .collect();
    for seed in 0..8 {
        let sim = Sim::with_seed(seed);
        let xs = sim.upload(&x);
        let run = |use_barrier: i32| {
            let y = sim.upload(&vec![f32::NAN; n]);
            sim.launch_plan(&Plan {
                scratch: vec![],
                launches: vec![Launch {
                    kernel: "planted_missing_barrier",
                    grid: [8, 1, 1],
                    block: [256, 1, 1],
                    shared_bytes: 0,
                    args: vec![Arg::Buf(&xs), Arg::Buf(&y), Arg::I32(use_barrier)],
                }],
            });
            sim.download(&y)
        };
        assert_eq!(run(1), want, "with the barrier, seed {seed}");
        let wrong = run(0)
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert!(
            wrong >= 8,
            "seed {seed}: without the barrier only {wrong} outputs were wrong (expect ≥ 1 per block)"
        );
    }
}

/// The simulator's TF32 rounding (kernels/sim.h, standing in for
/// cvt.rna.tf32.f32) on known bit patterns: a 10-bit mantissa, round to nearest,
/// ties away from zero (0x3f801000 is a tie that round-to-even would send down),
/// carries into the exponent, overflow to ±Inf, subnormals, and NaN kept NaN (its
/// payload lies in the dropped bits).
#[test]
fn tf32_rounding_matches_cvt_rna_bit_patterns() {
    let cases: [(u32, u32); 14] = [
        (0x3f80_0000, 0x3f80_0000),
        (0x3f80_0fff, 0x3f80_0000),
        (0x3f80_1000, 0x3f80_2000),
        (0x3f80_1001, 0x3f80_2000),
        (0x3f80_3000, 0x3f80_4000),
        (0xbf80_1000, 0xbf80_2000),
        (0xbf80_0fff, 0xbf80_0000),
        (0x3fff_ffff, 0x4000_0000),
        (0x7f7f_f000, 0x7f80_0000),
        (0x7f80_0000, 0x7f80_0000),
        (0xff80_0000, 0xff80_0000),
        (0x0000_1000, 0x0000_2000),
        (0x8000_0fff, 0x8000_0000),
        (0x7f80_0001, 0x7fc0_0000),
    ];
    let sim = Sim::new().unwrap();
    let x: Vec<f32> = cases.iter().map(|c| f32::from_bits(c.0)).collect();
    let xs = sim.upload(&x);
    let y = sim.upload(&vec![f32::NAN; x.len()]);
    sim.launch_plan(&Plan {
        scratch: vec![],
        launches: vec![Launch {
            kernel: "probe_tf32_round",
            grid: [1, 1, 1],
            block: [256, 1, 1],
            shared_bytes: 0,
            args: vec![Arg::Buf(&xs), Arg::Buf(&y), Arg::I32(x.len() as i32)],
        }],
    });
    for (&(from, want), got) in cases.iter().zip(sim.download(&y)) {
        if f32::from_bits(want).is_nan() {
            assert!(
                got.is_nan(),
                "{from:#010x} → {:#010x}, want a NaN",
                got.to_bits()
            );
        } else {
            assert_eq!(
                got.to_bits(),
                want,
                "{from:#010x} → {:#010x}, want {want:#010x}",
                got.to_bits()
            );
        }
    }
}

/// The GEMM core's TF32 variant (emulated mma.sync m16n8k8, kernels/sim.h) on the
/// conv and linear parity bodies: every GEMM output within `parity::TF32` of the
/// f32 CPU reference, and its error clearly above the f32 variant's on the same
/// inputs — the tensor-core path (operands rounded to TF32) is really taken.
#[test]
fn tf32_conv_and_linear_within_their_bound() {
    let f32_sim = Sim::with_seed(0).with_tf32(false);
    let tf32_sim = Sim::with_seed(0).with_tf32(true);
    for (what, f32_err, tf32_err) in [
        (
            "conv",
            parity::conv2d_within(&f32_sim, parity::REDUCTION),
            parity::conv2d_within(&tf32_sim, parity::TF32),
        ),
        (
            "linear",
            parity::linear_within(&f32_sim, parity::REDUCTION),
            parity::linear_within(&tf32_sim, parity::TF32),
        ),
    ] {
        println!(
            "{what}: worst ‖out − ref‖/‖ref‖ f32 {f32_err:.2e}, TF32 {tf32_err:.2e} (bound {:.2e})",
            parity::TF32
        );
        assert!(
            tf32_err > 10.0 * f32_err,
            "{what}: TF32 {tf32_err:e} vs f32 {f32_err:e}: is TF32 on?"
        );
    }
}

/// One MNIST MTL training step with the TF32 variant, against the f32 CPU.
#[test]
fn tf32_mnist_mtl_training_step() {
    parity::mnist_mtl_step_tf32(&Sim::with_seed(0).with_tf32(true));
}
