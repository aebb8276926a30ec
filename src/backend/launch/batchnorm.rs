//! Plans of the batchnorm ops (kernels/batchnorm.cu).

use super::{dim, elementwise, i32_of, Arg, KernelDevice, Launch, Plan};
use crate::backend::{
    Backward, BatchNorm2d, BatchStats, Forward, Nchw, NormOps, RunningStats, TrainStats,
};

/// Threads of a training kernel's block: the more loads in flight, the faster a
/// block reads its channel (batchnorm.cu: any multiple of 32 up to 1024; the sums'
/// order depends on it, the same for the fused and unfused kernels).
const BN_THREADS: u32 = 512;
/// Blocks the training kernels aim at: S = ⌈BN_BLOCKS / C⌉ blocks per channel, at
/// most one per image. Each block reads its whole channel for the statistics and
/// does 1/S of the elementwise work, so S trades redundant (L2) reads against
/// parallelism: MNIST's conv1 (C = 20) gets 4 blocks per channel, conv2 (40) 2.
const BN_BLOCKS: usize = 64;

/// A training kernel's launch: grid (C, S), block (BN_THREADS) (batchnorm.cu).
fn per_channel<'a, B>(kernel: &'static str, s: &Nchw, args: Vec<Arg<'a, B>>) -> Launch<'a, B> {
    Launch {
        kernel,
        grid: [dim(s.channels), dim(blocks_per_channel(s)), 1],
        block: [BN_THREADS, 1, 1],
        shared_bytes: 0,
        args,
    }
}

/// S of the training kernels' grid (C, S): see [`BN_BLOCKS`].
fn blocks_per_channel(s: &Nchw) -> usize {
    BN_BLOCKS
        .div_ceil(s.channels.max(1))
        .clamp(1, s.batch.max(1))
}

/// The shape arguments every batchnorm kernel takes: batch, channels, H·W.
fn nchw_dims<'a, B>(s: &Nchw) -> [Arg<'a, B>; 3] {
    [
        Arg::I32(i32_of(s.batch, "batch")),
        Arg::I32(i32_of(s.channels, "channels")),
        Arg::I32(i32_of(s.height * s.width, "height·width")),
    ]
}

impl<D: KernelDevice> NormOps for D {
    fn batchnorm2d_forward_train(
        &self,
        bn: &BatchNorm2d,
        Forward { x, p, y }: Forward<D::Buf>,
        TrainStats { batch, running }: TrainStats<D::Buf>,
    ) {
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(p.w),
            Arg::Buf(p.b),
            Arg::Buf(&*y),
            Arg::Buf(&*batch.mean),
            Arg::Buf(&*batch.inv_std),
            Arg::Buf(&*running.mean),
            Arg::Buf(&*running.var),
        ];
        args.extend(nchw_dims(&bn.shape));
        args.extend([Arg::F32(bn.momentum), Arg::F32(bn.eps)]);
        let kernel = "batchnorm2d_forward_train";
        self.execute(&Plan::one(per_channel(kernel, &bn.shape, args)));
    }

    fn batchnorm2d_forward_eval(
        &self,
        bn: &BatchNorm2d,
        Forward { x, p, y }: Forward<D::Buf>,
        running: RunningStats<&D::Buf>,
    ) {
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(p.w),
            Arg::Buf(p.b),
            Arg::Buf(running.mean),
            Arg::Buf(running.var),
            Arg::Buf(&*y),
        ];
        args.extend(nchw_dims(&bn.shape));
        args.push(Arg::F32(bn.eps));
        self.execute(&elementwise(
            "batchnorm2d_forward_eval",
            bn.shape.len(),
            args,
        ));
    }

    /// Without `g.dx`, the kernel writes the input gradient into scratch 0.
    fn batchnorm2d_backward(
        &self,
        s: &Nchw,
        Backward { x, w: gamma, dy, g }: Backward<D::Buf>,
        batch: BatchStats<&D::Buf>,
    ) {
        let dx = g.dx.as_deref().map_or(Arg::Scratch(0), Arg::Buf);
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(gamma),
            Arg::Buf(batch.mean),
            Arg::Buf(batch.inv_std),
            Arg::Buf(dy),
            dx,
            Arg::Buf(&*g.dw),
            Arg::Buf(&*g.db),
        ];
        args.extend(nchw_dims(s));
        let mut plan = Plan::one(per_channel("batchnorm2d_backward", s, args));
        if g.dx.is_none() {
            plan.scratch.push(s.len());
        }
        self.execute(&plan);
    }

    /// Blocks (c, s) normalise channel c of their share of the images, then pool
    /// those planes.
    fn batchnorm2d_relu_maxpool_train(
        &self,
        bn: &BatchNorm2d,
        Forward { x, p, y }: Forward<D::Buf>,
        pooled: &mut D::Buf,
        TrainStats { batch, running }: TrainStats<D::Buf>,
    ) {
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(p.w),
            Arg::Buf(p.b),
            Arg::Buf(&*y),
            Arg::Buf(&*pooled),
            Arg::Buf(&*batch.mean),
            Arg::Buf(&*batch.inv_std),
            Arg::Buf(&*running.mean),
            Arg::Buf(&*running.var),
        ];
        args.extend(nchw_hw(&bn.shape));
        args.extend([Arg::F32(bn.momentum), Arg::F32(bn.eps)]);
        let kernel = "batchnorm2d_relu_maxpool_train";
        self.execute(&Plan::one(per_channel(kernel, &bn.shape, args)));
    }

    /// Blocks (c, s): channel c's gradient sums, then dn (the pool's gradient) and
    /// dx of their share of the images.
    /// Without `g.dx`, the kernel writes the input gradient into scratch 0.
    fn relu_maxpool_batchnorm2d_backward(
        &self,
        s: &Nchw,
        Backward { x, w: gamma, dy, g }: Backward<D::Buf>,
        n: &D::Buf,
        dn: &mut D::Buf,
        batch: BatchStats<&D::Buf>,
    ) {
        let dx = g.dx.as_deref().map_or(Arg::Scratch(0), Arg::Buf);
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(gamma),
            Arg::Buf(batch.mean),
            Arg::Buf(batch.inv_std),
            Arg::Buf(n),
            Arg::Buf(dy),
            Arg::Buf(&*dn),
            dx,
            Arg::Buf(&*g.dw),
            Arg::Buf(&*g.db),
        ];
        args.extend(nchw_hw(s));
        let kernel = "relu_maxpool_batchnorm2d_backward";
        let mut plan = Plan::one(per_channel(kernel, s, args));
        if g.dx.is_none() {
            plan.scratch.push(s.len());
        }
        self.execute(&plan);
    }
}

/// The fused conv-block kernels' shape arguments: batch, channels, H, W (the pool
/// needs H and W apart).
fn nchw_hw<'a, B>(s: &Nchw) -> [Arg<'a, B>; 4] {
    [
        Arg::I32(i32_of(s.batch, "batch")),
        Arg::I32(i32_of(s.channels, "channels")),
        Arg::I32(i32_of(s.height, "height")),
        Arg::I32(i32_of(s.width, "width")),
    ]
}
