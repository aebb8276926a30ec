//! Plans of the convolution ops (kernels/conv.cu).

use super::{
    dim, gemm_grid, i32_of, stride_grid, Arg, KernelDevice, Launch, Plan, BLOCK,
    CONV_IMAGES_PER_PART, GEMM_BLOCK,
};
use crate::backend::{Backward, Conv2dShape, ConvOps, Forward};

/// The shape arguments every conv kernel takes, in their order.
fn conv_dims<'a, B>(s: &Conv2dShape) -> Vec<Arg<'a, B>> {
    vec![
        Arg::I32(i32_of(s.batch, "batch")),
        Arg::I32(i32_of(s.in_channels, "in_channels")),
        Arg::I32(i32_of(s.height, "height")),
        Arg::I32(i32_of(s.width, "width")),
        Arg::I32(i32_of(s.out_channels, "out_channels")),
        Arg::I32(i32_of(s.kernel, "kernel")),
        Arg::I32(i32_of(s.pad, "pad")),
        Arg::I32(i32_of(s.stride, "stride")),
    ]
}

impl<D: KernelDevice> ConvOps for D {
    fn conv2d_forward(&self, s: &Conv2dShape, Forward { x, p, y }: Forward<D::Buf>) {
        let mut args = vec![Arg::Buf(x), Arg::Buf(p.w), Arg::Buf(p.b), Arg::Buf(&*y)];
        args.extend(conv_dims(s));
        self.execute(&Plan::one(Launch {
            kernel: "conv2d_forward",
            grid: gemm_grid(s.batch * s.out_height() * s.out_width(), s.out_channels, 1),
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        }));
    }

    /// dw and db by per-image-group partials of one GEMM (db: its column of ones;
    /// scratch 0) summed in order; dx (when given) by backward-data, in the same launch
    /// as those partials.
    fn conv2d_backward(&self, s: &Conv2dShape, Backward { x, w, dy, g }: Backward<D::Buf>) {
        // The weight GEMM's columns: the CRR taps and a column of ones (the bias).
        let crr = s.in_channels * s.kernel * s.kernel;
        let parts = s.batch.div_ceil(CONV_IMAGES_PER_PART);
        let mut plan = Plan::new();
        plan.scratch.push(parts * s.out_channels * (crr + 1));
        let weight_grid = gemm_grid(crr + 1, s.out_channels, parts);
        let images = Arg::I32(CONV_IMAGES_PER_PART as i32);
        if let Some(dx) = g.dx.as_deref() {
            // Backward-data and -weight tiles in one launch, a 1-D grid of both.
            let data_grid = gemm_grid(s.batch * s.height * s.width, s.in_channels, 1);
            let tiles = |g: [u32; 3]| g.iter().map(|&d| d as usize).product::<usize>();
            let mut args = vec![
                Arg::Buf(w),
                Arg::Buf(x),
                Arg::Buf(dy),
                Arg::Buf(dx),
                Arg::Scratch(0),
            ];
            args.extend(conv_dims(s));
            args.push(images);
            plan.push(Launch {
                kernel: "conv2d_backward_data_weight",
                grid: [dim(tiles(data_grid) + tiles(weight_grid)), 1, 1],
                block: GEMM_BLOCK,
                shared_bytes: 0,
                args,
            });
        } else {
            let mut args = vec![Arg::Buf(x), Arg::Buf(dy), Arg::Scratch(0)];
            args.extend(conv_dims(s));
            args.push(images);
            plan.push(Launch {
                kernel: "conv2d_backward_weight",
                grid: weight_grid,
                block: GEMM_BLOCK,
                shared_bytes: 0,
                args,
            });
        }
        plan.push(Launch {
            kernel: "conv2d_backward_weight_sum",
            grid: stride_grid(s.out_channels * (crr + 1)),
            block: [BLOCK, 1, 1],
            shared_bytes: 0,
            args: vec![
                Arg::Buf(&*g.dw),
                Arg::Buf(&*g.db),
                Arg::Scratch(0),
                Arg::I32(i32_of(s.out_channels, "out_channels")),
                Arg::I32(i32_of(crr, "in_channels·kernel²")),
                Arg::I32(i32_of(parts, "parts")),
            ],
        });
        self.execute(&plan);
    }
}
