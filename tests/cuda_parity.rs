//! The CUDA device against the CPU reference: the same bodies as
//! tests/sim_parity.rs (tests/common/parity.rs), run through the same launch plans
//! on a real GPU, plus the full MNIST MTL training step, run-to-run bitwise
//! determinism, and the device's kernel table.
//!
//! Without a usable GPU (no libcuda, no device, no NVRTC and no cached cubins) every
//! test is reported as `ignored (no CUDA device: …)`: counted and printed by the test
//! runner, never passed. With `SSKERNEL_REQUIRE_GPU=1` a missing GPU fails every test
//! instead; that is how to run them (scripts/gpu-check sets it):
//!
//! ```text
//! SSKERNEL_REQUIRE_GPU=1 cargo test --release --test cuda_parity
//! ```
//!
//! libtest cannot skip a test at run time, so this file has its own harness
//! (libtest-mimic, `harness = false` in Cargo.toml); it takes the same arguments
//! (filters, `--nocapture`, `--test-threads`, `--list`).

#[macro_use]
#[path = "common/parity.rs"]
mod parity;

use libtest_mimic::{Arguments, Completion, Trial};
use sskernel::backend::cuda::Cuda;
use sskernel::backend::kernels::KERNELS;
use sskernel::backend::ops::*;

fn gpu_required() -> bool {
    std::env::var("SSKERNEL_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// A test that runs `body` on a fresh CUDA device. Without one it is ignored, with
/// the reason, or fails when `SSKERNEL_REQUIRE_GPU=1`.
fn on_cuda(name: &'static str, body: fn(&Cuda)) -> Trial {
    Trial::ignorable_test(name, move || match Cuda::new() {
        Ok(dev) => {
            body(&dev);
            Ok(Completion::Completed)
        }
        Err(e) if gpu_required() => {
            Err(format!("SSKERNEL_REQUIRE_GPU=1 but the CUDA device is unusable: {e:#}").into())
        }
        // The outer message only ("no CUDA driver", …): the full chain is the
        // failure's, under SSKERNEL_REQUIRE_GPU=1.
        Err(e) => Ok(Completion::ignored_with(format!(
            "needs a GPU: {e}; SSKERNEL_REQUIRE_GPU=1 makes this a failure"
        ))),
    })
}

fn main() {
    let args = Arguments::from_args();
    /// One test per parity body.
    macro_rules! on_cuda_each {
        ($($body:ident),*) => {
            vec![$(on_cuda(stringify!($body), parity::$body)),*]
        };
    }
    let mut tests = parity_bodies!(on_cuda_each);
    tests.extend([
        on_cuda(
            "results_are_bitwise_reproducible",
            results_are_bitwise_reproducible,
        ),
        on_cuda(
            "every_kernel_is_loaded_and_the_device_is_named",
            every_kernel_is_loaded_and_the_device_is_named,
        ),
        on_cuda("memory_ops_and_scratch_reuse", memory_ops_and_scratch_reuse),
    ]);
    libtest_mimic::run(&args, tests).exit();
}

/// No float atomics: the same inputs give bitwise the same outputs on every run.
fn results_are_bitwise_reproducible(dev: &Cuda) {
    let first = parity::reduction_outputs(dev);
    let second = parity::reduction_outputs(dev);
    parity::assert_bitwise_equal("second run vs first", &first, &second);
    // And on a second instance (kernels from the cache this time).
    let again = Cuda::new().expect("a second Cuda instance");
    parity::assert_bitwise_equal(
        "second instance",
        &first,
        &parity::reduction_outputs(&again),
    );
}

/// Every kernel of kernels/*.cu is loaded, and the name says which GPU.
fn every_kernel_is_loaded_and_the_device_is_named(dev: &Cuda) {
    for k in KERNELS {
        assert!(dev.has_kernel(k.name), "{} ({}) not loaded", k.name, k.file);
    }
    let name = dev.name();
    assert!(
        name.starts_with("cuda:0 (") && name.contains(&dev.device().arch),
        "{name}"
    );
    println!("{name}");
}

/// Buffers longer than an op needs, writes of a prefix, zero-length buffers and
/// scratch reuse across ops of different sizes.
fn memory_ops_and_scratch_reuse(dev: &Cuda) {
    let mut b = dev.zeros(5);
    dev.write(&mut b, &[1.0, 2.0]);
    assert_eq!(dev.download(&b), [1.0, 2.0, 0.0, 0.0, 0.0]);
    let x = dev.upload(&[1.0; 5]);
    dev.axpy(2.0, &x, &mut b, 4);
    assert_eq!(dev.download(&b), [3.0, 4.0, 2.0, 2.0, 0.0]);
    let empty = dev.zeros(0);
    assert_eq!(dev.buf_len(&empty), 0);
    assert!(dev.download(&empty).is_empty());
    assert!(dev.download(&dev.upload(&[])).is_empty());
    let mut rows = dev.upload(&[0.0, 0.1, 1.0, 1.1, 2.0, 2.1]);
    dev.compact_rows(&mut rows, 2, &[0, 2]);
    assert_eq!(dev.download(&rows), [0.0, 0.1, 2.0, 2.1]);
    // A large conv backward then a small one: the scratch pool is reused.
    parity::conv2d_forward_and_backward(dev);
    parity::conv2d_forward_and_backward(dev);
}
