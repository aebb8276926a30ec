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
