//! The parity bodies shared by tests/sim_parity.rs and tests/cuda_parity.rs (one
//! body, every device: candle's `test_device!` idea): each runs one kernel family
//! of kernels/*.cu on a device and on the CPU reference, on random inputs (seeded),
//! outputs poisoned with NaN first so an unwritten element fails, odd sizes that
//! fill no block or tile; and one full MNIST MTL training step.
//!
//! Tolerances, as ‖device − cpu‖ / ‖cpu‖ (DESIGN.md §6): `ELEMENTWISE` for outputs
//! computed element by element, `REDUCTION` for sums, GEMMs and what is computed
//! from them. ReLU and pooling copy values and must match exactly.
//!
//! Included with `#[macro_use] #[path = "common/parity.rs"] mod parity;` (not
//! through common/mod.rs, so the other test binaries do not compile it).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::{
    ops::*, Backward, BatchNorm2d, BatchStats, Conv2dShape, DataBufs, Dropout, Forward, Gather,
    Grads, LinearShape, LossIo, Mreach, Nchw, Nearest, OptimStep, ParamBufs, RunningStats,
    TrainStats, TtSvd, WeightBias, MREACH_NONE,
};
use sskernel::model::Branched;
use sskernel::sharing::ttsvd::TensorTrain;

/// Every parity body, listed once: `parity_bodies!(m)` expands to
/// `m!(body, body, …)`, and each device's test file passes the macro that makes
/// one test of a body on that device (candle's `test_device!` idea).
macro_rules! parity_bodies {
    ($on_device:ident) => {
        $on_device! {
            conv2d_forward_and_backward,
            batchnorm_train_eval_backward,
            conv_block_batchnorm_relu_maxpool_fused,
            relu_and_maxpool_exact,
            linear_branch_batched_forward_and_backward,
            losses,
            optimiser_steps_and_axpy,
            dropout,
            data_gather_and_advance_exact,
            tt_svd_reconstructions_and_distances,
            compact_rows_exact,
            mreach_knn_and_boruvka_rounds,
            // One full training step of the paper's MNIST MTL net at batch 64
            // (forward, sigmoid BCE, backward, SGD) on the device and on cpu from the
            // same seed and batch: every parameter after the step and its update
            // agree to 1e-4 relative.
            mnist_mtl_training_step_matches_cpu
        }
    };
}

pub const ELEMENTWISE: f64 = 1e-5;
pub const REDUCTION: f64 = 1e-4;
/// The GEMM kernels (conv, linear) on their TF32 tensor-core variant
/// (`SSKERNEL_TF32=1`): each operand is rounded to TF32 (unit roundoff 2^-11), so
/// a product a·b carries a relative error ≤ 2·2^-11 + 2^-22, and a K-term dot
/// product an error ≤ 2·2^-11·Σ|a·b| plus f32 accumulation (held to REDUCTION).
/// Normwise, with independent rounding errors on random inputs, the expected error
/// is √2 times the rms relative rounding error (≈ 0.41·2^-11), ≈ 2.8e-4: measured
/// 2.7e-4 on most outputs of the simulator's emulation (tests/sim_parity.rs
/// `tf32_*`), but 1.0e-3 on the 4 outputs of a conv dw (few outputs, one of them
/// with cancellation). 4·2^-11 ≈ 2e-3 covers that and the hardware's own
/// accumulation order; a wrong fragment layout errs by O(1).
pub const TF32: f64 = 4.0 / 2048.0;

/// The GEMM kernels' tolerance for this process' variant: `SSKERNEL_TF32=1` turns
/// TF32 on in both devices (`Sim::new`, `Cuda::new`).
pub fn gemm_tolerance() -> f64 {
    if sskernel::backend::kernels::tf32_requested() {
        TF32
    } else {
        REDUCTION
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn rand_vec(g: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| g.random_range(-1.0f32..1.0)).collect()
}

/// ‖a − b‖ / ‖b‖; NaN anywhere in `a` (an unwritten, poisoned element) gives NaN.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    if a.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den.max(1e-300)).sqrt()
}

/// Asserts ‖dev − cpu‖/‖cpu‖ < tol; returns that error.
#[track_caller]
pub fn assert_close(what: &str, dev: &[f32], cpu: &[f32], tol: f64) -> f64 {
    let e = rel_err(dev, cpu);
    assert!(
        e < tol,
        "{what}: ‖device − cpu‖/‖cpu‖ = {e:e} (tolerance {tol:e})"
    );
    e
}

/// The same host data on both devices.
pub struct Both<'a, B: Backend> {
    pub dev: &'a B,
    pub cpu: Cpu,
}

impl<'a, B: Backend> Both<'a, B> {
    pub fn new(dev: &'a B) -> Self {
        Self { dev, cpu: Cpu }
    }
    pub fn up(&self, host: &[f32]) -> (B::Buf, Vec<f32>) {
        (self.dev.upload(host), self.cpu.upload(host))
    }
    pub fn poisoned(&self, n: usize) -> (B::Buf, Vec<f32>) {
        self.up(&vec![f32::NAN; n])
    }
}

pub fn conv_shape(batch: usize, c: usize, k: usize, h: usize, w: usize, r: usize) -> Conv2dShape {
    Conv2dShape {
        batch,
        in_channels: c,
        out_channels: k,
        height: h,
        width: w,
        kernel: r,
        pad: 0,
        stride: 1,
    }
}

/// The argument structs, positionally (the bodies below pass many of them).
pub fn wb<'a, B>(w: &'a B, b: &'a B) -> WeightBias<&'a B> {
    WeightBias { w, b }
}

pub fn fwd<'a, B>(x: &'a B, p: WeightBias<&'a B>, y: &'a mut B) -> Forward<'a, B> {
    Forward { x, p, y }
}

pub fn bwd<'a, B>(x: &'a B, w: &'a B, dy: &'a B, g: Grads<'a, B>) -> Backward<'a, B> {
    Backward { x, w, dy, g }
}

pub fn grads<'a, B>(dx: Option<&'a mut B>, dw: &'a mut B, db: &'a mut B) -> Grads<'a, B> {
    Grads { dx, dw, db }
}

pub fn stats<R>(mean: R, inv_std: R) -> BatchStats<R> {
    BatchStats { mean, inv_std }
}

pub fn running<R>(mean: R, var: R) -> RunningStats<R> {
    RunningStats { mean, var }
}

pub fn loss_io<'a, B>(
    logits: &'a B,
    targets: &'a B,
    loss: &'a mut B,
    dlogits: &'a mut B,
) -> LossIo<'a, B> {
    LossIo {
        logits,
        targets,
        loss,
        dlogits,
    }
}

/// The net's batchnorm constants (PyTorch's defaults).
pub fn bn(shape: Nchw) -> BatchNorm2d {
    BatchNorm2d {
        shape,
        momentum: 0.1,
        eps: 1e-5,
    }
}

pub fn conv2d_forward_and_backward<B: Backend>(dev: &B) {
    conv2d_within(dev, gemm_tolerance());
}

/// The conv parity body with the GEMM outputs (y, dx, dw, db) held to `tol`; returns
/// the largest of their errors.
pub fn conv2d_within<B: Backend>(dev: &B, tol: f64) -> f64 {
    let d = Both::new(dev);
    let mut worst = 0.0f64;
    for (i, s) in [
        conv_shape(3, 2, 3, 7, 9, 3),
        conv_shape(2, 1, 4, 6, 6, 1),
        conv_shape(10, 3, 5, 9, 8, 5),
        conv_shape(9, 20, 40, 12, 12, 5),
        conv_shape(3, 1, 20, 28, 28, 5),
        // The MNIST nets' conv1 and conv2 at batch 64, with their weight gradients'
        // split-K as training runs it (launch/conv.rs: 256 and 32 partials; conv1's
        // 144-row partials end mid-image).
        conv_shape(64, 1, 20, 28, 28, 5),
        conv_shape(64, 20, 40, 12, 12, 5),
        // VGG's 3×3 pad 1, and stride 2 with and without padding.
        Conv2dShape {
            pad: 1,
            ..conv_shape(4, 3, 8, 9, 7, 3)
        },
        Conv2dShape {
            pad: 1,
            stride: 2,
            ..conv_shape(3, 2, 5, 8, 9, 3)
        },
        Conv2dShape {
            stride: 2,
            ..conv_shape(9, 2, 3, 7, 6, 2)
        },
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = rng(100 + i as u64);
        let (x, w, b, dy) = (
            rand_vec(&mut g, s.x_len()),
            rand_vec(&mut g, s.w_len()),
            rand_vec(&mut g, s.out_channels),
            rand_vec(&mut g, s.y_len()),
        );
        let ((xs, xc), (ws, wc), (bs, bc), (dys, dyc)) = (d.up(&x), d.up(&w), d.up(&b), d.up(&dy));
        let (mut ys, mut yc) = d.poisoned(s.y_len());
        d.dev.conv2d_forward(&s, fwd(&xs, wb(&ws, &bs), &mut ys));
        d.cpu.conv2d_forward(&s, fwd(&xc, wb(&wc, &bc), &mut yc));
        worst = worst.max(assert_close(
            &format!("conv y {s:?}"),
            &d.dev.download(&ys),
            &yc,
            tol,
        ));

        let (mut dxs, mut dxc) = d.poisoned(s.x_len());
        let (mut dws, mut dwc) = d.poisoned(s.w_len());
        let (mut dbs, mut dbc) = d.poisoned(s.out_channels);
        d.dev.conv2d_backward(
            &s,
            bwd(&xs, &ws, &dys, grads(Some(&mut dxs), &mut dws, &mut dbs)),
        );
        d.cpu.conv2d_backward(
            &s,
            bwd(&xc, &wc, &dyc, grads(Some(&mut dxc), &mut dwc, &mut dbc)),
        );
        worst = worst.max(assert_close(
            &format!("conv dx {s:?}"),
            &d.dev.download(&dxs),
            &dxc,
            tol,
        ));
        worst = worst.max(assert_close(
            &format!("conv dw {s:?}"),
            &d.dev.download(&dws),
            &dwc,
            tol,
        ));
        // db is a GEMM output too (the weight GEMM's column of ones).
        worst = worst.max(assert_close(
            &format!("conv db {s:?}"),
            &d.dev.download(&dbs),
            &dbc,
            tol,
        ));
        // Without dx (the first layer): dw and db as above, into freshly poisoned
        // buffers; the dx buffer of the call above, not passed, keeps its bits.
        let dx_before = d.dev.download(&dxs);
        let (mut dws, _) = d.poisoned(s.w_len());
        let (mut dbs, _) = d.poisoned(s.out_channels);
        d.dev
            .conv2d_backward(&s, bwd(&xs, &ws, &dys, grads(None, &mut dws, &mut dbs)));
        worst = worst.max(assert_close(
            &format!("conv dw (no dx) {s:?}"),
            &d.dev.download(&dws),
            &dwc,
            tol,
        ));
        worst = worst.max(assert_close(
            &format!("conv db (no dx) {s:?}"),
            &d.dev.download(&dbs),
            &dbc,
            tol,
        ));
        assert_bitwise_equal(
            &format!("conv dx after a backward without dx {s:?}"),
            &[d.dev.download(&dxs)],
            &[dx_before],
        );
    }
    worst
}

pub fn nchw(batch: usize, channels: usize, height: usize, width: usize) -> Nchw {
    Nchw {
        batch,
        channels,
        height,
        width,
    }
}

pub fn batchnorm_train_eval_backward<B: Backend>(dev: &B) {
    let d = Both::new(dev);
    for (i, s) in [
        nchw(3, 5, 7, 9),
        // M = N·H·W = 3 (M = 2 makes dx ≡ 0 analytically: nothing to compare).
        nchw(3, 3, 1, 1),
        nchw(16, 20, 24, 24),
        nchw(64, 40, 8, 8),
        // 6 blocks per channel over 7 images (batchnorm.cu's shares: 1, …, 1, 2).
        nchw(7, 12, 6, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let c = s.channels;
        let mut g = rng(200 + i as u64);
        // An offset and a scale per channel, as real activations have.
        let x: Vec<f32> = rand_vec(&mut g, s.len())
            .iter()
            .enumerate()
            .map(|(j, v)| 3.0 * v + ((j / (s.height * s.width)) % c) as f32 * 0.5)
            .collect();
        let (gamma, beta, dy) = (
            rand_vec(&mut g, c),
            rand_vec(&mut g, c),
            rand_vec(&mut g, s.len()),
        );
        let rm: Vec<f32> = rand_vec(&mut g, c);
        let rv: Vec<f32> = rand_vec(&mut g, c).iter().map(|v| v.abs() + 0.5).collect();
        let ((xs, xc), (gs, gc), (bs, bc), (dys, dyc)) =
            (d.up(&x), d.up(&gamma), d.up(&beta), d.up(&dy));
        let ((mut rms, mut rmc), (mut rvs, mut rvc)) = (d.up(&rm), d.up(&rv));
        let (mut ys, mut yc) = d.poisoned(s.len());
        let (mut ms, mut mc) = d.poisoned(c);
        let (mut iss, mut isc) = d.poisoned(c);
        d.dev.batchnorm2d_forward_train(
            &bn(s),
            fwd(&xs, wb(&gs, &bs), &mut ys),
            TrainStats {
                batch: stats(&mut ms, &mut iss),
                running: running(&mut rms, &mut rvs),
            },
        );
        d.cpu.batchnorm2d_forward_train(
            &bn(s),
            fwd(&xc, wb(&gc, &bc), &mut yc),
            TrainStats {
                batch: stats(&mut mc, &mut isc),
                running: running(&mut rmc, &mut rvc),
            },
        );
        let what = |n: &str| format!("batchnorm {n} {s:?}");
        assert_close(&what("y"), &d.dev.download(&ys), &yc, REDUCTION);
        assert_close(&what("mean"), &d.dev.download(&ms), &mc, REDUCTION);
        assert_close(&what("inv_std"), &d.dev.download(&iss), &isc, REDUCTION);
        assert_close(
            &what("running_mean"),
            &d.dev.download(&rms),
            &rmc,
            REDUCTION,
        );
        assert_close(&what("running_var"), &d.dev.download(&rvs), &rvc, REDUCTION);

        let (mut ys, mut yc) = d.poisoned(s.len());
        d.dev.batchnorm2d_forward_eval(
            &bn(s),
            fwd(&xs, wb(&gs, &bs), &mut ys),
            running(&rms, &rvs),
        );
        d.cpu.batchnorm2d_forward_eval(
            &bn(s),
            fwd(&xc, wb(&gc, &bc), &mut yc),
            running(&rmc, &rvc),
        );
        // From the device's running statistics, which went through a reduction.
        assert_close(
            &what("eval y (device statistics)"),
            &d.dev.download(&ys),
            &yc,
            REDUCTION,
        );
        // Elementwise: the CPU's statistics uploaded, so that only the elementwise
        // part is compared, into a freshly poisoned output.
        let (rms, rvs) = (d.dev.upload(&rmc), d.dev.upload(&rvc));
        let (mut ys, _) = d.poisoned(s.len());
        d.dev.batchnorm2d_forward_eval(
            &bn(s),
            fwd(&xs, wb(&gs, &bs), &mut ys),
            running(&rms, &rvs),
        );
        assert_close(&what("eval y"), &d.dev.download(&ys), &yc, ELEMENTWISE);

        // Backward from the CPU's saved statistics (same inputs on both sides).
        let (ms, is) = (d.dev.upload(&mc), d.dev.upload(&isc));
        let (mut dxs, mut dxc) = d.poisoned(s.len());
        let (mut dgs, mut dgc) = d.poisoned(c);
        let (mut dbs, mut dbc) = d.poisoned(c);
        d.dev.batchnorm2d_backward(
            &s,
            bwd(&xs, &gs, &dys, grads(Some(&mut dxs), &mut dgs, &mut dbs)),
            stats(&ms, &is),
        );
        d.cpu.batchnorm2d_backward(
            &s,
            bwd(&xc, &gc, &dyc, grads(Some(&mut dxc), &mut dgc, &mut dbc)),
            stats(&mc, &isc),
        );
        assert_close(&what("dx"), &d.dev.download(&dxs), &dxc, REDUCTION);
        assert_close(&what("dgamma"), &d.dev.download(&dgs), &dgc, REDUCTION);
        assert_close(&what("dbeta"), &d.dev.download(&dbs), &dbc, REDUCTION);
    }
}

/// The conv block's fused ops (`batchnorm2d_relu_maxpool_train`,
/// `relu_maxpool_batchnorm2d_backward`; kernels/batchnorm.cu): on the device the
/// unfused ops they replace (batchnorm then ReLU + pool; the pool's and ReLU's
/// backward then batchnorm's) — the forward and dn bit for bit, dx, dγ and dβ within
/// `REDUCTION` (the fused backward sums window by window; measured ≤ 2.1e-7 on
/// sim) — and against the CPU within `REDUCTION`
/// (`ELEMENTWISE` would not hold: the statistics are f32 tree sums on the device,
/// f64 on the CPU). On the CPU the fused ops are the unfused ones in turn, checked
/// bit for bit too. Odd H and W (a dropped row and column), ties planted in x
/// (equal inputs stay equal after the per-channel affine map), every output poisoned.
pub fn conv_block_batchnorm_relu_maxpool_fused<B: Backend>(dev: &B) {
    let d = Both::new(dev);
    for (i, s) in [
        nchw(3, 5, 7, 9),
        nchw(5, 3, 2, 3),
        nchw(16, 20, 24, 24),
        // The MNIST net's two conv blocks at batch 64 (4 and 2 blocks per channel).
        nchw(64, 20, 24, 24),
        nchw(64, 40, 8, 8),
        // 6 blocks per channel over 7 images (shares of 1 and 2), odd W.
        nchw(7, 12, 6, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let c = s.channels;
        let (hw, pw) = (s.height * s.width, (s.height / 2) * (s.width / 2));
        let p_len = s.batch * c * pw;
        let mut g = rng(250 + i as u64);
        let mut x: Vec<f32> = rand_vec(&mut g, s.len())
            .iter()
            .enumerate()
            .map(|(j, v)| 3.0 * v + ((j / hw) % c) as f32 * 0.5)
            .collect();
        // Every 5th window of each plane: its first two elements equal (a tie at the
        // maximum or below it).
        for plane in 0..s.batch * c {
            for o in (0..pw).step_by(5) {
                let at = plane * hw + 2 * (o / (s.width / 2)) * s.width + 2 * (o % (s.width / 2));
                x[at + 1] = x[at];
            }
        }
        let (gamma, beta, dp) = (
            rand_vec(&mut g, c),
            rand_vec(&mut g, c),
            rand_vec(&mut g, p_len),
        );
        let rm: Vec<f32> = rand_vec(&mut g, c);
        let rv: Vec<f32> = rand_vec(&mut g, c).iter().map(|v| v.abs() + 0.5).collect();
        let what = |n: &str| format!("conv block fused {n} {s:?}");

        // Forward, fused or unfused, on the device or the CPU: [n, pooled, mean,
        // inv_std, running mean, running var].
        let forward = |on_dev: bool, fused: bool| -> [Vec<f32>; 6] {
            if on_dev {
                let ((xs, _), (gs, _), (bs, _)) = (d.up(&x), d.up(&gamma), d.up(&beta));
                let ((mut rms, _), (mut rvs, _)) = (d.up(&rm), d.up(&rv));
                let ((mut ys, _), (mut ps, _)) = (d.poisoned(s.len()), d.poisoned(p_len));
                let ((mut ms, _), (mut iss, _)) = (d.poisoned(c), d.poisoned(c));
                let st = TrainStats {
                    batch: stats(&mut ms, &mut iss),
                    running: running(&mut rms, &mut rvs),
                };
                let io = fwd(&xs, wb(&gs, &bs), &mut ys);
                if fused {
                    d.dev
                        .batchnorm2d_relu_maxpool_train(&bn(s), io, &mut ps, st);
                } else {
                    d.dev.batchnorm2d_forward_train(&bn(s), io, st);
                    d.dev.relu_maxpool2x2_forward(&s, &ys, &mut ps);
                }
                [&ys, &ps, &ms, &iss, &rms, &rvs].map(|b| d.dev.download(b))
            } else {
                let mut out = [s.len(), p_len, c, c, 0, 0].map(|n| vec![f32::NAN; n]);
                let [y, p, m, is, rmc, rvc] = &mut out;
                (*rmc, *rvc) = (rm.clone(), rv.clone());
                let st = TrainStats {
                    batch: stats(m, is),
                    running: running(rmc, rvc),
                };
                let io = fwd(&x, wb(&gamma, &beta), &mut *y);
                if fused {
                    d.cpu.batchnorm2d_relu_maxpool_train(&bn(s), io, p, st);
                } else {
                    d.cpu.batchnorm2d_forward_train(&bn(s), io, st);
                    d.cpu.relu_maxpool2x2_forward(&s, y, p);
                }
                out
            }
        };
        let (dev_f, dev_u) = (forward(true, true), forward(true, false));
        let (cpu_f, cpu_u) = (forward(false, true), forward(false, false));
        assert_bitwise_equal(&what("forward vs unfused (device)"), &dev_f, &dev_u);
        assert_bitwise_equal(&what("forward vs unfused (cpu)"), &cpu_f, &cpu_u);
        for (name, (a, b)) in [
            "n",
            "pooled",
            "mean",
            "inv_std",
            "running_mean",
            "running_var",
        ]
        .iter()
        .zip(dev_f.iter().zip(&cpu_f))
        {
            assert_close(&what(name), a, b, REDUCTION);
        }

        // Backward from the CPU's forward (same inputs on both sides): [dn, dx, dγ, dβ].
        let [n_c, _, m_c, is_c, ..] = &cpu_f;
        let backward = |on_dev: bool, fused: bool| -> [Vec<f32>; 4] {
            if on_dev {
                let ((xs, _), (gs, _), (ns, _), (dps, _)) =
                    (d.up(&x), d.up(&gamma), d.up(n_c), d.up(&dp));
                let ((ms, _), (iss, _)) = (d.up(m_c), d.up(is_c));
                let (mut dns, _) = d.poisoned(s.len());
                let (mut dxs, _) = d.poisoned(s.len());
                let ((mut dgs, _), (mut dbs, _)) = (d.poisoned(c), d.poisoned(c));
                let gr = grads(Some(&mut dxs), &mut dgs, &mut dbs);
                if fused {
                    d.dev.relu_maxpool_batchnorm2d_backward(
                        &s,
                        bwd(&xs, &gs, &dps, gr),
                        &ns,
                        &mut dns,
                        stats(&ms, &iss),
                    );
                } else {
                    d.dev.relu_maxpool2x2_backward(&s, &ns, &dps, &mut dns);
                    d.dev
                        .batchnorm2d_backward(&s, bwd(&xs, &gs, &dns, gr), stats(&ms, &iss));
                }
                [&dns, &dxs, &dgs, &dbs].map(|b| d.dev.download(b))
            } else {
                let mut out = [s.len(), s.len(), c, c].map(|n| vec![f32::NAN; n]);
                let [dn, dx, dg, db] = &mut out;
                let gr = grads(Some(dx), dg, db);
                let dn: &mut Vec<f32> = dn;
                if fused {
                    d.cpu.relu_maxpool_batchnorm2d_backward(
                        &s,
                        bwd(&x, &gamma, &dp, gr),
                        n_c,
                        dn,
                        stats(m_c, is_c),
                    );
                } else {
                    d.cpu.relu_maxpool2x2_backward(&s, n_c, &dp, dn);
                    d.cpu
                        .batchnorm2d_backward(&s, bwd(&x, &gamma, dn, gr), stats(m_c, is_c));
                }
                out
            }
        };
        let (dev_f, dev_u) = (backward(true, true), backward(true, false));
        let (cpu_f, cpu_u) = (backward(false, true), backward(false, false));
        // The device's fused kernel sums the gradient window by window, the unfused
        // one element by element: dn the same bits, the rest within f32 rounding.
        assert_bitwise_equal(
            &what("backward dn vs unfused (device)"),
            &dev_f[..1],
            &dev_u[..1],
        );
        let mut worst = 0.0f64;
        for (name, (a, b)) in ["dx", "dgamma", "dbeta"]
            .iter()
            .zip(dev_f[1..].iter().zip(&dev_u[1..]))
        {
            assert_close(&what(&format!("{name} vs unfused")), a, b, REDUCTION);
            worst = worst.max(rel_err(a, b));
        }
        eprintln!("{}: ≤ {worst:.1e}", what("dx, dγ, dβ vs unfused (device)"));
        assert_bitwise_equal(&what("backward vs unfused (cpu)"), &cpu_f, &cpu_u);
        assert_eq!(
            dev_f[0],
            cpu_f[0],
            "{}",
            what("dn (a copy of dpooled or 0)")
        );
        for (name, (a, b)) in ["dx", "dgamma", "dbeta"]
            .iter()
            .zip(dev_f[1..].iter().zip(&cpu_f[1..]))
        {
            assert_close(&what(name), a, b, REDUCTION);
        }
    }
}

/// ReLU, 2×2 max-pooling (with planted ties) and global average pooling: values
/// copied or summed in the same order, so exactly equal.
pub fn relu_and_maxpool_exact<B: Backend>(dev: &B) {
    let d = Both::new(dev);
    for (i, s) in [
        nchw(3, 5, 7, 9),
        nchw(2, 3, 2, 2),
        nchw(64, 20, 24, 24),
        nchw(1, 1, 1, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = rng(300 + i as u64);
        let mut x = rand_vec(&mut g, s.len());
        // Ties inside windows, where the first maximum must win on both devices:
        // in every 7th window all four elements are equal; in every other 3rd, two
        // of them (each of the six pairs in turn) share a value above the rest.
        let (oh, ow) = (s.height / 2, s.width / 2);
        let at = |plane: usize, oy: usize, ox: usize, k: usize| {
            (plane * s.height + 2 * oy + k / 2) * s.width + 2 * ox + k % 2
        };
        let pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
        let mut planted = 0;
        for plane in 0..s.batch * s.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let window = (plane * oh + oy) * ow + ox;
                    if window % 7 == 0 {
                        for k in 0..4 {
                            x[at(plane, oy, ox, k)] = 0.5;
                        }
                    } else if window % 3 == 0 {
                        let (a, b) = pairs[window / 3 % 6];
                        x[at(plane, oy, ox, a)] = 1.5;
                        x[at(plane, oy, ox, b)] = 1.5;
                    } else {
                        continue;
                    }
                    planted += 1;
                }
            }
        }
        // Counted from x itself: the windows whose maximum occurs more than once.
        let mut tied = 0;
        for plane in 0..s.batch * s.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let v: Vec<f32> = (0..4).map(|k| x[at(plane, oy, ox, k)]).collect();
                    let max = v.iter().cloned().fold(f32::MIN, f32::max);
                    tied += usize::from(v.iter().filter(|&&e| e == max).count() > 1);
                }
            }
        }
        let windows = s.batch * s.channels * oh * ow;
        assert_eq!(tied, planted, "maxpool ties {s:?}");
        assert_eq!(
            planted,
            (0..windows).filter(|w| w % 7 == 0 || w % 3 == 0).count()
        );
        assert!(windows == 0 || tied > 0, "no tie in {s:?}");
        let dy_len = s.batch * s.channels * (s.height / 2) * (s.width / 2);
        let dy = rand_vec(&mut g, dy_len.max(s.len()));
        let ((xs, xc), (dys, dyc)) = (d.up(&x), d.up(&dy));
        let (mut rs, mut rc) = d.poisoned(s.len());
        d.dev.relu_forward(s.len(), &xs, &mut rs);
        d.cpu.relu_forward(s.len(), &xc, &mut rc);
        assert_eq!(d.dev.download(&rs), rc, "relu y {s:?}");
        let (mut dxs, mut dxc) = d.poisoned(s.len());
        d.dev.relu_backward(s.len(), &rs, &dys, &mut dxs);
        d.cpu.relu_backward(s.len(), &rc, &dyc, &mut dxc);
        assert_eq!(d.dev.download(&dxs), dxc, "relu dx {s:?}");

        let (mut ps, mut pc) = d.poisoned(dy_len);
        d.dev.maxpool2x2_forward(&s, &xs, &mut ps);
        d.cpu.maxpool2x2_forward(&s, &xc, &mut pc);
        assert_eq!(d.dev.download(&ps), pc, "maxpool y {s:?}");
        let (mut dxs, mut dxc) = d.poisoned(s.len());
        d.dev.maxpool2x2_backward(&s, &xs, &dys, &mut dxs);
        d.cpu.maxpool2x2_backward(&s, &xc, &dyc, &mut dxc);
        assert_eq!(d.dev.download(&dxs), dxc, "maxpool dx {s:?}");

        // The ReLU fused into the pool (x is the ReLU's input; windows of negative
        // values tie at 0 after it): the composition of the ops above, bit for bit,
        // on the CPU, and the device equal to the CPU.
        let (mut fs, mut fc) = d.poisoned(dy_len);
        d.dev.relu_maxpool2x2_forward(&s, &xs, &mut fs);
        d.cpu.relu_maxpool2x2_forward(&s, &xc, &mut fc);
        let mut composed = vec![f32::NAN; dy_len];
        d.cpu.maxpool2x2_forward(&s, &rc, &mut composed);
        assert_eq!(fc, composed, "relu+maxpool y vs relu then maxpool {s:?}");
        assert_eq!(d.dev.download(&fs), fc, "relu+maxpool y {s:?}");
        let (mut fdxs, mut fdxc) = d.poisoned(s.len());
        d.dev.relu_maxpool2x2_backward(&s, &xs, &dys, &mut fdxs);
        d.cpu.relu_maxpool2x2_backward(&s, &xc, &dyc, &mut fdxc);
        let (mut dr, mut dn) = (vec![f32::NAN; s.len()], vec![f32::NAN; s.len()]);
        d.cpu.maxpool2x2_backward(&s, &rc, &dyc, &mut dr);
        d.cpu.relu_backward(s.len(), &rc, &dr, &mut dn);
        assert_eq!(
            fdxc, dn,
            "relu+maxpool dx vs maxpool then relu backward {s:?}"
        );
        assert_eq!(d.dev.download(&fdxs), fdxc, "relu+maxpool dx {s:?}");

        // Global average pooling: the same sums in the same order, the same f32 scale.
        let planes = s.batch * s.channels;
        let (mut gs, mut gc) = d.poisoned(planes);
        d.dev.global_avgpool_forward(&s, &xs, &mut gs);
        d.cpu.global_avgpool_forward(&s, &xc, &mut gc);
        assert_eq!(d.dev.download(&gs), gc, "global avgpool y {s:?}");
        let (mut dxs, mut dxc) = d.poisoned(s.len());
        d.dev.global_avgpool_backward(&s, &dys, &mut dxs);
        d.cpu.global_avgpool_backward(&s, &dyc, &mut dxc);
        assert_eq!(d.dev.download(&dxs), dxc, "global avgpool dx {s:?}");
    }
}

pub fn linear_shape(
    x_branches: usize,
    x_of: &[usize],
    batch: usize,
    fin: usize,
    fout: usize,
) -> LinearShape {
    LinearShape {
        branches: x_of.len(),
        x_branches,
        batch,
        in_features: fin,
        out_features: fout,
        x_of: x_of.to_vec(),
        relu_out: false,
        relu_in: false,
    }
}

pub fn linear_branch_batched_forward_and_backward<B: Backend>(dev: &B) {
    linear_within(dev, gemm_tolerance());
}

/// The linear parity body with the GEMM outputs (y, dx, dw) held to `tol`; returns
/// the largest of their errors.
pub fn linear_within<B: Backend>(dev: &B, tol: f64) -> f64 {
    let d = Both::new(dev);
    let mut worst = 0.0f64;
    let identity: Vec<usize> = (0..10).collect();
    let heads: Vec<usize> = [3, 3, 0, 9, 1, 1, 5, 7, 2, 2].to_vec();
    for (i, s) in [
        // Input 1 is read by no branch: its dx must be 0.
        linear_shape(3, &[0, 0, 2], 3, 37, 45),
        linear_shape(1, &[0; 10], 7, 33, 17),
        linear_shape(10, &identity, 5, 100, 50),
        linear_shape(10, &heads, 64, 50, 1),
        LinearShape::single(64, 640, 640),
        LinearShape::single(1, 1, 1),
        // Several tiles along every axis of the grouped backward (dx: 2·3 per
        // input, dw: 2·2 per branch), two inputs read by unequal branch counts.
        linear_shape(2, &[1, 0, 1], 130, 70, 66),
        // The MNIST branches' first layer at batch 64: split-K forward (7 slices)
        // and dx (13 slices over the 10 branches' K, boundaries inside branches).
        linear_shape(1, &[0; 10], 64, 640, 100),
        // Split-K with a short last slice (forward 4 × 80 of 300; dx 4 × 80 of the
        // 4 branches' 280, two inputs read by 1 and 3 branches, unaligned offsets).
        linear_shape(2, &[1, 0, 1, 1], 9, 300, 70),
    ]
    .into_iter()
    // Each also with both ReLUs fused (the forward's output ReLU, dx through the
    // ReLU that produced x): half the random x and y are negative.
    .flat_map(|s| [s.clone(), s.with_relu(true, true)])
    .enumerate()
    {
        let mut g = rng(400 + i as u64);
        let (x, w, b, dy) = (
            rand_vec(&mut g, s.x_len()),
            rand_vec(&mut g, s.w_len()),
            rand_vec(&mut g, s.b_len()),
            rand_vec(&mut g, s.y_len()),
        );
        let ((xs, xc), (ws, wc), (bs, bc), (dys, dyc)) = (d.up(&x), d.up(&w), d.up(&b), d.up(&dy));
        let (mut ys, mut yc) = d.poisoned(s.y_len());
        d.dev.linear_forward(&s, fwd(&xs, wb(&ws, &bs), &mut ys));
        d.cpu.linear_forward(&s, fwd(&xc, wb(&wc, &bc), &mut yc));
        let what = |n: &str| format!("linear {n} {s:?}");
        worst = worst.max(assert_close(&what("y"), &d.dev.download(&ys), &yc, tol));

        let (mut dxs, mut dxc) = d.poisoned(s.x_len());
        let (mut dws, mut dwc) = d.poisoned(s.w_len());
        let (mut dbs, mut dbc) = d.poisoned(s.b_len());
        d.dev.linear_backward(
            &s,
            bwd(&xs, &ws, &dys, grads(Some(&mut dxs), &mut dws, &mut dbs)),
        );
        d.cpu.linear_backward(
            &s,
            bwd(&xc, &wc, &dyc, grads(Some(&mut dxc), &mut dwc, &mut dbc)),
        );
        let dx = d.dev.download(&dxs);
        worst = worst.max(assert_close(&what("dx"), &dx, &dxc, tol));
        worst = worst.max(assert_close(&what("dw"), &d.dev.download(&dws), &dwc, tol));
        assert_close(&what("db"), &d.dev.download(&dbs), &dbc, REDUCTION);
        if s.x_of == [0, 0, 2] {
            let unread = &dx[s.batch * s.in_features..2 * s.batch * s.in_features];
            assert!(unread.iter().all(|&v| v == 0.0));
        }
        // Without dx (the grouped launch has no dx blocks): the same dw and db.
        let (mut dws2, _) = d.poisoned(s.w_len());
        let (mut dbs2, _) = d.poisoned(s.b_len());
        d.dev
            .linear_backward(&s, bwd(&xs, &ws, &dys, grads(None, &mut dws2, &mut dbs2)));
        assert_bitwise_equal(
            &what("dw, db without dx"),
            &[d.dev.download(&dws2), d.dev.download(&dbs2)],
            &[d.dev.download(&dws), d.dev.download(&dbs)],
        );
    }
    worst
}

/// A loss run on the device and on the CPU, each with its own buffers.
type BothLoss<'r, B> = dyn Fn(&B, LossIo<<B as Memory>::Buf>, &Cpu, LossIo<Vec<f32>>) + 'r;

/// Every loss on random logits, with some targets missing (an all-zero one-hot row,
/// a NaN): the loss is the mean over the samples present and a missing sample's
/// gradient is 0 on both devices.
pub fn losses<B: Backend>(dev: &B) {
    let d = Both::new(dev);
    // One loss on both devices; asserts loss and dlogits agree and returns dlogits.
    let compare = |what: String, z: &[f32], t: &[f32], loss_len: usize, run: &BothLoss<B>| {
        let ((zs, zc), (ts, tc)) = (d.up(z), d.up(t));
        let (mut ls, mut lc) = d.poisoned(loss_len);
        let (mut dzs, mut dzc) = d.poisoned(z.len());
        run(
            d.dev,
            loss_io(&zs, &ts, &mut ls, &mut dzs),
            &d.cpu,
            loss_io(&zc, &tc, &mut lc, &mut dzc),
        );
        assert_close(&what, &d.dev.download(&ls), &lc, REDUCTION);
        assert_close(&what, &d.dev.download(&dzs), &dzc, ELEMENTWISE);
        dzc
    };
    for (i, (batch, classes)) in [(7, 10), (300, 3), (1, 1)].into_iter().enumerate() {
        let mut g = rng(500 + i as u64);
        let z: Vec<f32> = rand_vec(&mut g, batch * classes)
            .iter()
            .map(|v| 4.0 * v)
            .collect();
        let mut t = vec![0.0f32; batch * classes];
        // Every 5th row missing (all zeros), except in a batch of one.
        for n in (0..batch).filter(|n| batch == 1 || n % 5 != 2) {
            t[n * classes + g.random_range(0..classes)] = 1.0;
        }
        let what = format!("softmax CE batch {batch} classes {classes}");
        let dz = compare(what, &z, &t, 1, &|dev, io, cpu, io_c| {
            dev.softmax_cross_entropy(batch, classes, io);
            cpu.softmax_cross_entropy(batch, classes, io_c);
        });
        assert!((0..batch)
            .filter(|n| n % 5 == 2 && batch > 1)
            .all(|n| dz[n * classes..(n + 1) * classes].iter().all(|&v| v == 0.0)));
    }
    for (i, (tasks, batch)) in [(3, 7), (10, 300), (1, 1)].into_iter().enumerate() {
        let mut g = rng(600 + i as u64);
        let z: Vec<f32> = rand_vec(&mut g, tasks * batch)
            .iter()
            .map(|v| 6.0 * v)
            .collect();
        let t: Vec<f32> = (0..tasks * batch)
            .map(|k| match (k % 7 == 3 && batch > 1, g.random_bool(0.3)) {
                (true, _) => f32::NAN,
                (false, true) => 1.0,
                (false, false) => 0.0,
            })
            .collect();
        let what = format!("sigmoid BCE tasks {tasks} batch {batch}");
        compare(what, &z, &t, tasks, &|dev, io, cpu, io_c| {
            dev.sigmoid_bce(tasks, batch, io);
            cpu.sigmoid_bce(tasks, batch, io_c);
        });
    }
    for (i, batch) in [7, 300, 1].into_iter().enumerate() {
        let mut g = rng(650 + i as u64);
        let z = rand_vec(&mut g, batch);
        // Targets with ties (a ranking skips them) and every 6th missing.
        let t: Vec<f32> = (0..batch)
            .map(|n| {
                if n % 6 == 4 {
                    f32::NAN
                } else {
                    (g.random_range(0..5) as f32) * 0.5
                }
            })
            .collect();
        let dz = compare(
            format!("mse batch {batch}"),
            &z,
            &t,
            1,
            &|dev, io, cpu, io_c| {
                dev.mse(batch, io);
                cpu.mse(batch, io_c);
            },
        );
        assert!((0..batch).filter(|n| n % 6 == 4).all(|n| dz[n] == 0.0));
        compare(
            format!("pairwise rank batch {batch}"),
            &z,
            &t,
            1,
            &|dev, io, cpu, io_c| {
                dev.pairwise_rank(batch, io);
                cpu.pairwise_rank(batch, io_c);
            },
        );
    }
}

/// The same masks on both devices (bitwise: an integer hash), outputs and
/// gradients exact (one multiply each).
pub fn dropout<B: Backend>(dev: &B) {
    let d = Both::new(dev);
    for (i, (len, p)) in [(1000, 0.2f32), (64 * 300 + 7, 0.5), (3, 0.0)]
        .into_iter()
        .enumerate()
    {
        let mut g = rng(680 + i as u64);
        let ((xs, xc), (dys, dyc)) = (d.up(&rand_vec(&mut g, len)), d.up(&rand_vec(&mut g, len)));
        let ((mut ms, mut mc), (mut ys, mut yc)) = (d.poisoned(len), d.poisoned(len));
        let key = 0x5EED_0000 + i as u32;
        let drop = Dropout { len, p, key };
        d.dev.dropout_forward(&drop, &xs, &mut ms, &mut ys);
        d.cpu.dropout_forward(&drop, &xc, &mut mc, &mut yc);
        assert_bitwise_equal(
            &format!("dropout mask, y {len} p {p}"),
            &[d.dev.download(&ms), d.dev.download(&ys)],
            &[mc.clone(), yc],
        );
        let (mut dxs, mut dxc) = d.poisoned(len);
        d.dev.dropout_backward(len, &ms, &dys, &mut dxs);
        d.cpu.dropout_backward(len, &mc, &dyc, &mut dxc);
        assert_bitwise_equal(
            &format!("dropout dx {len}"),
            &[d.dev.download(&dxs)],
            &[dxc],
        );
    }
}

/// The batch gather copies values and the advance moves integers: both exact.
/// Random pixels and a shuffled order; the last batch of the order ends at its end;
/// x and targets poisoned before each gather, the log before the first advance.
pub fn data_gather_and_advance_exact<B: Backend>(dev: &B) {
    fn on<'a, T>(pixels: &'a T, labels: &'a T, order: &'a T, state: &'a T) -> DataBufs<'a, T> {
        DataBufs {
            pixels,
            labels,
            order,
            state,
        }
    }
    use rand::seq::SliceRandom;
    let d = Both::new(dev);
    let mut g = rng(700);
    let (len, size, classes, batch, tasks) = (53, 37, 10, 13, 3);
    let pixels = rand_vec(&mut g, len * size);
    let labels: Vec<f32> = (0..len)
        .map(|_| g.random_range(0..classes) as f32)
        .collect();
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut g);
    let order: Vec<f32> = order.iter().map(|&i| i as f32).collect();
    let ((ps, pc), (ls, lc), (os, oc)) = (d.up(&pixels), d.up(&labels), d.up(&order));
    // Starts at an offset, as a resumed epoch does: the batches end at len.
    let off = len - 4 * batch;
    let (mut ss, mut sc) = d.up(&[off as f32, 0.0]);
    let (mut logs, mut logc) = d.poisoned(4 * tasks);
    let gather = Gather {
        batch,
        size,
        classes,
    };
    for step in 0..4 {
        let ((mut xs, mut xc), (mut ts, mut tc)) =
            (d.poisoned(batch * size), d.poisoned(batch * classes));
        d.dev
            .gather_batch(&gather, on(&ps, &ls, &os, &ss), &mut xs, &mut ts);
        d.cpu
            .gather_batch(&gather, on(&pc, &lc, &oc, &sc), &mut xc, &mut tc);
        assert_bitwise_equal(
            &format!("gather_batch x, targets, step {step}"),
            &[d.dev.download(&xs), d.dev.download(&ts)],
            &[xc, tc],
        );
        let (lss, lsc) = d.up(&rand_vec(&mut g, tasks));
        d.dev
            .advance_batch((tasks, batch), &lss, &mut ss, &mut logs);
        d.cpu
            .advance_batch((tasks, batch), &lsc, &mut sc, &mut logc);
        assert_bitwise_equal(
            &format!("advance_batch state, step {step}"),
            &[d.dev.download(&ss)],
            &[sc.clone()],
        );
    }
    assert_eq!(sc, [len as f32, 4.0], "the cursor ends at the order's end");
    assert_bitwise_equal("advance_batch log", &[d.dev.download(&logs)], &[logc]);
}

/// The multi-tensor updates (one launch per 64 tensors): 70 tensors, so two
/// launches, of lengths that fill several blocks, exactly one, a part of one, or
/// none (an empty tensor); each buffer two floats longer than the tensor, a tail
/// that must stay as it was.
pub fn optimiser_steps_and_axpy<B: Backend>(dev: &B) {
    let d = Both::new(dev);
    let mut g = rng(700);
    let mut lens = vec![5000, 1, 0, 2048, 4099];
    lens.extend((0..65).map(|_| g.random_range(1..300)));
    // Per tensor: value, gradient, and two state buffers (Adam's v non-negative).
    let host: Vec<Vec<Vec<f32>>> = lens
        .iter()
        .map(|&len| {
            let mut t: Vec<_> = (0..4).map(|_| rand_vec(&mut g, len + 2)).collect();
            t[3].iter_mut().for_each(|v| *v = v.abs());
            t
        })
        .collect();
    let steps = [
        OptimStep::Sgd {
            lr: 0.02,
            momentum: 0.5,
        },
        OptimStep::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    ];
    for step in steps {
        // The step state after two steps; the third is prepared on each device, with
        // the same bits (Adam's bias corrections in f64, β^t by the same powering).
        let hyper = [2.0, step.lr(), f32::NAN, f32::NAN];
        let (mut hs, mut hc) = d.up(&hyper);
        d.dev.optim_prepare(&step, &mut hs);
        d.cpu.optim_prepare(&step, &mut hc);
        assert_bitwise_equal(
            &format!("{step:?} step state"),
            &[d.dev.download(&hs)],
            &[hc.clone()],
        );
        // Each tensor as [value, gradient, state…].
        let n = 2 + step.state_len();
        let mut on_dev: Vec<Vec<B::Buf>> = host
            .iter()
            .map(|h| h[..n].iter().map(|v| d.dev.upload(v)).collect())
            .collect();
        let mut on_cpu: Vec<Vec<Vec<f32>>> = host.iter().map(|h| h[..n].to_vec()).collect();
        d.dev
            .optim_step(&step, &hs, &mut param_bufs(&mut on_dev, &lens));
        d.cpu
            .optim_step(&step, &hc, &mut param_bufs(&mut on_cpu, &lens));
        for (t, (td, tc)) in on_dev.iter().zip(&on_cpu).enumerate() {
            let len = lens[t];
            // The gradient (k = 1) is only read.
            for (k, (bd, bc)) in td.iter().zip(tc).enumerate().filter(|&(k, _)| k != 1) {
                let (bd, what) = (
                    d.dev.download(bd),
                    format!("{step:?} tensor {t} buffer {k}"),
                );
                assert_close(&what, &bd[..len], &bc[..len], ELEMENTWISE);
                assert_bitwise_equal(
                    &format!("{what} tail"),
                    &[bd[len..].to_vec()],
                    &[bc[len..].to_vec()],
                );
            }
            assert!(
                len == 0 || tc[0][..len] != host[t][0][..len],
                "the update moved tensor {t}"
            );
        }
    }
    let len = 1003;
    let (p, gr) = (rand_vec(&mut g, len), rand_vec(&mut g, len));
    let ((xs, xc), (mut ys, mut yc)) = (d.up(&p), d.up(&gr));
    d.dev.axpy(-0.7, &xs, &mut ys, len - 1);
    d.cpu.axpy(-0.7, &xc, &mut yc, len - 1);
    assert_close("axpy", &d.dev.download(&ys), &yc, ELEMENTWISE);
}

/// The optimiser's view of tensors held as `[value, gradient, state…]`, the first
/// `lens[t]` elements of tensor t.
fn param_bufs<'a, T>(tensors: &'a mut [Vec<T>], lens: &[usize]) -> Vec<ParamBufs<'a, T>> {
    tensors
        .iter_mut()
        .zip(lens)
        .map(|(b, &len)| {
            let (value_grad, state) = b.split_at_mut(2);
            let (value, grad) = value_grad.split_at_mut(1);
            ParamBufs {
                len,
                value: &mut value[0],
                grad: &grad[0],
                state,
            }
        })
        .collect()
}

/// Branch gradients `[b, out, inp]` with structure, none zero: branch i is a shared
/// random base + 0.3·(its own noise) (the group a distance should find), every
/// third branch is rank 1 (u·vᵀ, exact low TT ranks: zero singular values on the
/// device's path), branch 1 is −2·branch 0 (distance 2).
pub fn tt_svd_grads(g: &mut ChaCha8Rng, b: usize, out: usize, inp: usize) -> Vec<f32> {
    let per = out * inp;
    let base = rand_vec(g, per);
    let mut grads = Vec::with_capacity(b * per);
    for i in 0..b {
        let branch: Vec<f32> = if i == 1 {
            grads[..per].iter().map(|v: &f32| -2.0 * v).collect()
        } else if i % 3 == 2 {
            let (u, v) = (rand_vec(g, out), rand_vec(g, inp));
            (0..per).map(|e| u[e / inp] * v[e % inp] + 1e-3).collect()
        } else {
            let noise = rand_vec(g, per);
            base.iter().zip(&noise).map(|(x, n)| x + 0.3 * n).collect()
        };
        grads.extend(branch);
    }
    grads
}

/// The sharing step's TT-SVD (kernels/ttsvd.cu) against sharing::ttsvd: the tensor
/// each branch's cores represent (the cores themselves differ by signs and
/// rotations) and the `[B, B]` distances, ‖device − cpu‖/‖cpu‖ < 1e-4 (REDUCTION;
/// measured on sim: reconstructions ≤ 5e-8, distances equal in f32 — the kernels
/// work in double, the outputs are f32); the
/// device's distances exactly symmetric with a zero diagonal. B = 1, 2 and ≥ 10;
/// odd and prime sizes (13 = 1·13: a mode of size 1); rank-1 branches; wide and tall
/// unfoldings (the Gram matrix on either side); a Gram matrix of 60 × 60, too large
/// for shared memory ([225, 100]: step 2 is 60 × 100); one of 68 × 68, whose 2346
/// entries take the kernel two passes over C ([289, 100]); and MNIST's 10 × [100, 640]
/// at R = 4 (its step 1: 55 entries, each summed in 4 parts).
pub fn tt_svd_reconstructions_and_distances<B: Backend>(dev: &B) {
    let d = Both::new(dev);
    for (i, &(branches, out, inp, max_rank)) in [
        (1, 12, 30, 3),
        (2, 13, 21, 4),
        (11, 15, 35, 4),
        (10, 20, 48, 5),
        (3, 225, 100, 4),
        (2, 289, 100, 4),
        (10, 100, 640, 4),
    ]
    .iter()
    .enumerate()
    {
        let s = TtSvd {
            branches,
            out,
            inp,
            max_rank,
        };
        let grads = tt_svd_grads(&mut rng(950 + i as u64), branches, out, inp);
        let (gs, gc) = d.up(&grads);
        let ((mut cs, mut cc), (mut ds, mut dc)) = (
            d.poisoned(branches * s.core_len()),
            d.poisoned(branches * branches),
        );
        d.dev.tt_svd(&s, &gs, &mut cs, &mut ds);
        d.cpu.tt_svd(&s, &gc, &mut cc, &mut dc);
        let (cores, dist) = (d.dev.download(&cs), d.dev.download(&ds));
        let (dims, ranks) = (s.dims(), s.ranks());
        let tensor = |flat: &[f32]| {
            let flat: Vec<f64> = flat.iter().map(|&v| v as f64).collect();
            let t = TensorTrain::from_flat(&dims, &ranks, &flat).reconstruct();
            t.iter().map(|&v| v as f32).collect::<Vec<f32>>()
        };
        let mut worst = 0.0f64;
        for (b, (dev_b, cpu_b)) in cores
            .chunks(s.core_len())
            .zip(cc.chunks(s.core_len()))
            .enumerate()
        {
            let e = rel_err(&tensor(dev_b), &tensor(cpu_b));
            assert!(
                e < REDUCTION,
                "tt_svd {s}: branch {b}'s reconstruction, ‖device − cpu‖/‖cpu‖ = {e:e}"
            );
            worst = worst.max(e);
        }
        let e = rel_err(&dist, &dc);
        eprintln!("tt_svd {s}: reconstructions ≤ {worst:.1e}, distances {e:.1e}");
        assert_close(&format!("tt_svd {s} distances"), &dist, &dc, REDUCTION);
        for a in 0..branches {
            assert_eq!(dist[a * branches + a], 0.0, "tt_svd {s}: d[{a}, {a}]");
            for b in 0..a {
                assert_eq!(dist[a * branches + b], dist[b * branches + a], "{s}");
            }
        }
        if branches >= 2 {
            assert!((dist[1] - 2.0).abs() < 1e-5, "{s}: d(g, −2g) = {}", dist[1]);
        }
        // What the sharing step reads: the same distances, on the host (not repeated
        // at the realistic size, where the simulator takes seconds).
        if out * inp < 100 * 640 {
            let host = d.dev.branch_distances(&s, &gs);
            assert!(host.iter().zip(&dist).all(|(&h, &x)| h == x as f64));
        }
    }
}

/// Pruning's compaction (memory.cu: ssk_gather_rows on kernel devices) keeps
/// exactly the rows asked for, in order, and shrinks the buffer: bitwise the CPU's.
pub fn compact_rows_exact<B: Backend>(dev: &B) {
    let d = Both::new(dev);
    let (rows, row_len) = (11, 1003);
    let host = rand_vec(&mut rng(990), rows * row_len);
    for keep in [vec![0, 3, 4, 9, 10], vec![7], (0..rows).collect()] {
        let (mut s, mut c) = d.up(&host);
        d.dev.compact_rows(&mut s, row_len, &keep);
        d.cpu.compact_rows(&mut c, row_len, &keep);
        assert_eq!(d.dev.buf_len(&s), keep.len() * row_len, "keep {keep:?}");
        assert_bitwise_equal(
            &format!("compact_rows {keep:?}"),
            &[d.dev.download(&s)],
            &[c],
        );
    }
}

/// One full training step of the paper's MNIST MTL net at batch 64 (forward,
/// sigmoid BCE, backward, SGD) on the device and on cpu from the same seed and batch:
/// every parameter after the step and its update agree to 1e-4 relative
/// (the update: after − before, i.e. −lr·grad; measured ≤ 2.3e-5).
///
/// With TF32 on (`SSKERNEL_TF32=1`) gradients that cancel (a BN β's is a sum of a
/// near-zero-mean dy; conv1's dw before a BN) carry the TF32 error of their terms
/// magnified by the cancellation (6e-2 measured on bn1.bias), so per parameter only
/// the loss is held to `TF32` and the update of all parameters together to
/// `TF32_STEP`; each parameter's errors are printed.
pub fn mnist_mtl_training_step_matches_cpu<B: Backend>(dev: &B) {
    if sskernel::backend::kernels::tf32_requested() {
        mnist_mtl_step_tf32(dev);
    } else {
        mnist_mtl_step_within(dev, REDUCTION, REDUCTION, CONV_BIAS_UPDATE);
    }
}

/// The TF32 variant's bound on the whole MNIST step's update, ‖Δdev − Δcpu‖/‖Δcpu‖
/// over every parameter: no a-priori bound holds under cancellation, so this is
/// the measured 9.0e-3 of the simulator's emulation with a margin of 3 for the
/// hardware's accumulation order (a wrong fragment layout errs by O(1)).
pub const TF32_STEP: f64 = 3e-2;

/// The MNIST MTL step with the TF32 variant (see above).
pub fn mnist_mtl_step_tf32<B: Backend>(dev: &B) {
    let (ds, dc) = mnist_mtl_step_within(dev, TF32, f64::INFINITY, TF32_CONV_BIAS_UPDATE);
    assert_close(
        "update of every parameter",
        &ds.concat(),
        &dc.concat(),
        TF32_STEP,
    );
}

/// A conv bias followed by batchnorm has an analytically zero gradient: its update
/// is rounding noise on both devices, held to an absolute bound (f32: 1e-7).
pub const CONV_BIAS_UPDATE: f32 = 1e-7;
/// The same with TF32: the conv bias gradient is a TF32 GEMM output (the weight
/// GEMM's column of ones), each term of Σ dy rounded to TF32 (unit roundoff 2^-11,
/// f32's 2^-24): measured 1.3e-7 on the simulator's emulation, ×4 for the
/// hardware's accumulation order.
pub const TF32_CONV_BIAS_UPDATE: f32 = 5e-7;

/// The MNIST MTL step body with the loss held to `loss_tol`, parameters and updates to
/// `tol`, the conv biases' updates to `conv_bias` absolute; returns each parameter's
/// update on the device and on cpu.
pub fn mnist_mtl_step_within<B: Backend>(
    dev: &B,
    loss_tol: f64,
    tol: f64,
    conv_bias: f32,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    use sskernel::model::{Activations, Mode, Net, NetSpec};
    let n = 64;
    let spec = NetSpec::mnist(Mode::Mtl, 10);
    let cpu = Cpu;
    let mut g = rng(900);
    let x: Vec<f32> = (0..n * 28 * 28)
        .map(|_| g.random_range(0.0f32..1.0))
        .collect();
    let mut t = vec![0.0f32; n * 10];
    for i in 0..n {
        t[i * 10 + g.random_range(0..10)] = 1.0;
    }
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    let mut net_s = Net::new(dev, spec.clone(), &mut rng(5));
    let mut net_c = Net::new(&cpu, spec.clone(), &mut rng(5));
    let before: Vec<Vec<f32>> = net_c.params().iter().map(|p| p.value.clone()).collect();
    let mut act_s = Activations::new(dev, &spec, n);
    let mut act_c = Activations::new(&cpu, &spec, n);
    dev.write(&mut act_s.x, &x);
    dev.write(&mut act_s.targets, &t);
    cpu.write(&mut act_c.x, &x);
    cpu.write(&mut act_c.targets, &t);
    net_s.train_step(dev, &mut act_s, n, &step);
    net_c.train_step(&cpu, &mut act_c, n, &step);
    assert_close("loss", &dev.download(&act_s.loss), &act_c.loss, loss_tol);
    let mut updates = (Vec::new(), Vec::new());
    for ((ps, pc), b) in net_s.params().iter().zip(net_c.params()).zip(&before) {
        let vs = dev.download(&ps.value);
        // REDUCTION, not tighter: BN β starts at 0, so after one step it *is* the update.
        println!(
            "{:24} param {:.1e}  update {:.1e}",
            pc.name,
            rel_err(&vs, &pc.value),
            rel_err(
                &vs.iter().zip(b).map(|(a, b)| a - b).collect::<Vec<_>>(),
                &pc.value
                    .iter()
                    .zip(b)
                    .map(|(a, b)| a - b)
                    .collect::<Vec<_>>()
            )
        );
        assert_close(&format!("{} after the step", pc.name), &vs, &pc.value, tol);
        let ds: Vec<f32> = vs.iter().zip(b).map(|(a, b)| a - b).collect();
        let dc: Vec<f32> = pc.value.iter().zip(b).map(|(a, b)| a - b).collect();
        // The conv biases: an absolute bound (CONV_BIAS_UPDATE).
        if pc.name.starts_with("trunk.conv") && pc.name.ends_with(".bias") {
            let worst = ds
                .iter()
                .zip(&dc)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                worst < conv_bias,
                "{}: update differs by {worst:e} (bound {conv_bias:e})",
                pc.name
            );
        } else {
            assert_close(&format!("{} update", pc.name), &ds, &dc, tol);
        }
        updates.0.push(ds);
        updates.1.push(dc);
    }
    updates
}

/// The outputs of a linear and a conv backward (reductions split over blocks and
/// partials) and of the sharing step's TT-SVD (Jacobi rounds across a block) on `dev`: with a fixed reduction order (no float atomics) they are
/// bitwise the same run after run, and on the simulator whatever order it resumes
/// fibers in.
pub fn reduction_outputs<B: Backend>(dev: &B) -> [Vec<f32>; 8] {
    let s = linear_shape(3, &[0, 0, 2], 9, 70, 33);
    let c = conv_shape(10, 3, 4, 9, 8, 3);
    let mut g = rng(800);
    let x = dev.upload(&rand_vec(&mut g, s.x_len()));
    let w = dev.upload(&rand_vec(&mut g, s.w_len()));
    let dy = dev.upload(&rand_vec(&mut g, s.y_len()));
    let (mut dx, mut dw, mut db) = (
        dev.zeros(s.x_len()),
        dev.zeros(s.w_len()),
        dev.zeros(3 * 33),
    );
    dev.linear_backward(&s, bwd(&x, &w, &dy, grads(Some(&mut dx), &mut dw, &mut db)));
    let cx = dev.upload(&rand_vec(&mut g, c.x_len()));
    let cw = dev.upload(&rand_vec(&mut g, c.w_len()));
    let cdy = dev.upload(&rand_vec(&mut g, c.y_len()));
    let (mut cdx, mut cdw, mut cdb) = (dev.zeros(c.x_len()), dev.zeros(c.w_len()), dev.zeros(4));
    dev.conv2d_backward(
        &c,
        bwd(&cx, &cw, &cdy, grads(Some(&mut cdx), &mut cdw, &mut cdb)),
    );
    let t = TtSvd {
        branches: 5,
        out: 12,
        inp: 30,
        max_rank: 3,
    };
    let tg = dev.upload(&tt_svd_grads(&mut g, 5, 12, 30));
    let (mut cores, mut dist) = (dev.zeros(5 * t.core_len()), dev.zeros(25));
    dev.tt_svd(&t, &tg, &mut cores, &mut dist);
    [dx, dw, db, cdx, cdw, cdb, cores, dist].map(|b| dev.download(&b))
}

/// Bitwise equality of two runs' outputs.
#[track_caller]
pub fn assert_bitwise_equal(what: &str, a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len(), "{what}: number of outputs");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{what}: output {i} differs bitwise"
        );
    }
}

/// HDBSCAN's mutual-reachability kernels (kernels/mreach.cu) against their CPU twin,
/// exactly: tolerance 0 (the same bits; the kernels compute the CPU's ordered f64
/// sums without FMA). The nearest lists (squared distance, index), the core
/// distances, also against `distance::core_distances` (the CPU clustering's), and one
/// Borůvka round's lightest edge per component for singletons, a few random
/// components, one component (no edge anywhere) and runs of consecutive points (tiles
/// all in one component, which the scan skips). Sizes not multiples of the 4-warp
/// block, the 32-point tile or the 32-tile batch, n = cap, k up to 30 (a full warp
/// list), points on a coarse grid with duplicates (tied distances: the index
/// decides), and points in KD-tree order over several batches of tiles (as
/// hdbscan::device passes them: compact tiles, so the box bounds prune, ties at the
/// bound included).
pub fn mreach_knn_and_boruvka_rounds<B: Backend>(dev: &B) {
    use sskernel::backend::{f64_of_words, u64_of_words, words_of_f64};
    use sskernel::sharing::hdbscan::distance::{core_distances, Distances};
    use sskernel::sharing::hdbscan::kdtree::KdTree;
    const NAN_WORD: u32 = 0x7fc0_0000;
    let d2 = Both::new(dev);
    let up = |w: &[u32]| (d2.dev.upload_words(w), d2.cpu.upload_words(w));
    for (case, &(n, d, k, grid, tree_order)) in [
        (3, 1, 1, false, false),
        (37, 3, 1, false, false),
        (130, 5, 4, false, false),
        (257, 2, 30, false, false),
        (301, 17, 6, false, false),
        (400, 2, 5, true, false),
        (203, 4, 3, true, false),
        (2213, 3, 5, false, true),
        (1601, 2, 4, true, true),
    ]
    .iter()
    .enumerate()
    {
        let mut g = rng(1400 + case as u64);
        let mut pts: Vec<f64> = (0..n * d)
            .map(|_| {
                if grid {
                    g.random_range(0..6) as f64
                } else {
                    g.random_range(-3.0..3.0)
                }
            })
            .collect();
        if grid {
            // Exact duplicates as well as tied distances.
            let row: Vec<f64> = pts[..d].to_vec();
            pts[d..2 * d].copy_from_slice(&row);
        }
        if tree_order {
            pts = KdTree::build(&pts, n, d).points;
        }
        let cap = (k + 2).min(n);
        let s = Mreach { n, d, k, cap };
        let mut xt = vec![0.0; n * d];
        for i in 0..n {
            for c in 0..d {
                xt[c * n + i] = pts[i * d + c];
            }
        }
        let (xs, xc) = up(&words_of_f64(&xt));
        let ((mut qs, mut qc), (mut is, mut ic), (mut cs, mut cc)) = (
            up(&vec![NAN_WORD; 2 * n * cap]),
            up(&vec![NAN_WORD; n * cap]),
            up(&vec![NAN_WORD; 2 * n]),
        );
        d2.dev.mreach_knn(&s, &xs, &mut qs, &mut is, &mut cs);
        d2.cpu.mreach_knn(&s, &xc, &mut qc, &mut ic, &mut cc);
        let words = |b: &B::Buf| d2.dev.download_words(b);
        let cpu_words = |b: &Vec<f32>| d2.cpu.download_words(b);
        assert_eq!(
            words(&qs),
            cpu_words(&qc),
            "mreach_knn {s}: squared distances"
        );
        assert_eq!(words(&is), cpu_words(&ic), "mreach_knn {s}: indices");
        assert_eq!(words(&cs), cpu_words(&cc), "mreach_knn {s}: core distances");
        let core = f64_of_words(&words(&cs));
        let reference = core_distances(&Distances::euclidean(&pts, n, d), k);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&core),
            bits(&reference),
            "mreach_knn {s}: c_k vs distance.rs"
        );
        let sq = f64_of_words(&words(&qs));
        assert!(
            sq.iter().all(|v| v.is_finite()),
            "mreach_knn {s}: unwritten entries"
        );

        let groups = [n, 3.min(n), 1, 1 + n / 7, n.div_ceil(97)];
        for (gi, &groups) in groups.iter().enumerate() {
            // Component ids: the smallest member of each group (a union-find root).
            let member: Vec<usize> = (0..n)
                .map(|i| match gi {
                    3 => g.random_range(0..groups),
                    4 => i / 97,
                    _ => i % groups,
                })
                .collect();
            let mut root = vec![usize::MAX; groups];
            for (i, &m) in member.iter().enumerate() {
                root[m] = root[m].min(i);
            }
            let comp: Vec<u32> = member.iter().map(|&m| root[m] as u32).collect();
            let (ms, mc) = up(&comp);
            let (mut es, mut ec) = up(&vec![NAN_WORD; 2 * n]);
            d2.dev
                .mreach_round(&s, &xs, &cs, Nearest { sq: &qs, idx: &is }, &ms, &mut es);
            d2.cpu
                .mreach_round(&s, &xc, &cc, Nearest { sq: &qc, idx: &ic }, &mc, &mut ec);
            let (dev_edges, cpu_edges) = (u64_of_words(&words(&es)), u64_of_words(&cpu_words(&ec)));
            assert_eq!(dev_edges, cpu_edges, "mreach_round {s}, {groups} groups");
            let found = dev_edges.iter().filter(|&&e| e != MREACH_NONE).count();
            let components = root.iter().filter(|&&r| r != usize::MAX).count();
            assert_eq!(found, if components > 1 { components } else { 0 }, "{s}");
        }
        eprintln!("mreach {s}: nearest lists, core distances and rounds equal bit for bit");
    }

    // A tie at the nearest list's bound (mreach_lightest stops early only when the
    // list's best is strictly below it). k = 2, cap = 4; point 0's list is {0, 3, 4,
    // 1}; point 2 ties with point 1 at distance 2 and is left out by its index. Point
    // 0's other-component edges to 3 (in the list) and to 2 (outside) both weigh 2
    // (c_3 = c_2 = 2), and (0, 2) < (0, 3): only the scan finds it. Components {0, 1,
    // 4}, {3}, {2, 5}; x = 3's and 4's edges weigh 2 too but order after (0, 2).
    let pts = [
        0.0, 0.0, 0.0, 2.0, 0.0, -2.0, 1.0, 0.0, -1.0, 0.0, 0.0, -3.0,
    ];
    let s = Mreach {
        n: 6,
        d: 2,
        k: 2,
        cap: 4,
    };
    let xt: Vec<f64> = (0..2)
        .flat_map(|c| pts.iter().skip(c).step_by(2).copied())
        .collect();
    let (xs, xc) = up(&words_of_f64(&xt));
    let ((mut qs, mut qc), (mut is, mut ic), (mut cs, mut cc)) = (
        up(&[NAN_WORD; 48]),
        up(&[NAN_WORD; 24]),
        up(&[NAN_WORD; 12]),
    );
    d2.dev.mreach_knn(&s, &xs, &mut qs, &mut is, &mut cs);
    d2.cpu.mreach_knn(&s, &xc, &mut qc, &mut ic, &mut cc);
    let (ms, mc) = up(&[0, 0, 2, 3, 0, 2]);
    let (mut es, mut ec) = up(&[NAN_WORD; 12]);
    d2.dev
        .mreach_round(&s, &xs, &cs, Nearest { sq: &qs, idx: &is }, &ms, &mut es);
    d2.cpu
        .mreach_round(&s, &xc, &cc, Nearest { sq: &qc, idx: &ic }, &mc, &mut ec);
    let (dev_edges, cpu_edges) = (
        u64_of_words(&d2.dev.download_words(&es)),
        u64_of_words(&d2.cpu.download_words(&ec)),
    );
    assert_eq!(
        cpu_edges[0], 2,
        "the CPU twin: component 0's edge is (0, 2)"
    );
    assert_eq!(
        dev_edges, cpu_edges,
        "mreach_round, a tie at the list's bound"
    );
}
