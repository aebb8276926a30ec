//! Plans of the batchnorm ops (kernels/batchnorm.cu).

use super::{block_per, elementwise, i32_of, Arg, KernelDevice, Plan};
use crate::backend::{
    Backward, BatchNorm2d, BatchStats, Forward, Nchw, NormOps, RunningStats, TrainStats,
};

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
        // The block-sum scratch: one float per warp, 32 at most.
        let kernel = "batchnorm2d_forward_train";
        self.execute(&Plan::one(block_per(
            kernel,
            bn.shape.channels,
            32 * 4,
            args,
        )));
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
        let mut plan = Plan::one(block_per("batchnorm2d_backward", s.channels, 0, args));
        if g.dx.is_none() {
            plan.scratch.push(s.len());
        }
        self.execute(&plan);
    }

    /// A block per channel normalises, then pools its own planes.
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
        self.execute(&Plan::one(block_per(
            kernel,
            bn.shape.channels,
            32 * 4,
            args,
        )));
    }

    /// A block per channel: the pool's gradient into dn and its sums, then dx.
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
        let mut plan = Plan::one(block_per(kernel, s.channels, 0, args));
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
