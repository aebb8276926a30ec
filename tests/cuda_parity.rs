//! The CUDA device against the CPU reference: the same bodies as
//! tests/sim_parity.rs (tests/common/parity.rs), run through the same launch plans
//! on a real GPU, plus the full MNIST MTL training step, run-to-run bitwise
//! determinism, and the device's kernel table.
//!
//! Without a usable GPU (no libcuda, no device, no NVRTC and no cached cubins)
//! every test skips with the reason; with `SSKERNEL_REQUIRE_GPU=1` (scripts/gpu-check
//! sets it) a missing GPU fails instead.

#[path = "common/parity.rs"]
mod parity;

use sskernel::backend::cuda::Cuda;
use sskernel::backend::kernels::KERNELS;
use sskernel::backend::Backend;

/// The device, or None (and a loud skip) when there is none and none is required.
fn cuda(test: &str) -> Option<Cuda> {
    match Cuda::new() {
        Ok(dev) => Some(dev),
        Err(e) => {
            let required = std::env::var("SSKERNEL_REQUIRE_GPU").is_ok_and(|v| v == "1");
            if required {
                panic!("{test}: SSKERNEL_REQUIRE_GPU=1 but the CUDA device is unusable: {e:#}");
            }
            eprintln!("\n!!!!!!!! SKIPPED {test}: no CUDA device: {e:#} !!!!!!!!\n");
            None
        }
    }
}

/// One test per shared parity body.
macro_rules! on_cuda {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(dev) = cuda(stringify!($name)) {
                    parity::$name(&dev);
                }
            }
        )*
    };
}

on_cuda!(
    conv2d_forward_and_backward,
    batchnorm_train_eval_backward,
    relu_and_maxpool_exact,
    linear_branch_batched_forward_and_backward,
    losses,
    optimiser_steps_and_axpy,
    mnist_mtl_training_step_matches_cpu,
);

/// No float atomics: the same inputs give bitwise the same outputs on every run.
#[test]
fn results_are_bitwise_reproducible() {
    let Some(dev) = cuda("results_are_bitwise_reproducible") else {
        return;
    };
    let first = parity::reduction_outputs(&dev);
    let second = parity::reduction_outputs(&dev);
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
#[test]
fn every_kernel_is_loaded_and_the_device_is_named() {
    let Some(dev) = cuda("every_kernel_is_loaded_and_the_device_is_named") else {
        return;
    };
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
#[test]
fn memory_ops_and_scratch_reuse() {
    let Some(dev) = cuda("memory_ops_and_scratch_reuse") else {
        return;
    };
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
    parity::conv2d_forward_and_backward(&dev);
    parity::conv2d_forward_and_backward(&dev);
}
