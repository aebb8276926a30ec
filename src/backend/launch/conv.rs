//! Plans of the convolution ops (kernels/conv.cu).

use super::{
    block_per, gemm_grid, i32_of, stride_grid, Arg, KernelDevice, Launch, Plan, BLOCK,
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

    /// dx (when given) by backward-data; dw by per-image-group partials summed in
    /// order (scratch 0); db by a block per channel.
    fn conv2d_backward(&self, s: &Conv2dShape, Backward { x, w, dy, g }: Backward<D::Buf>) {
        let mut plan = Plan::new();
        if let Some(dx) = g.dx.as_deref() {
            let mut args = vec![Arg::Buf(w), Arg::Buf(dy), Arg::Buf(dx)];
            args.extend(conv_dims(s));
            plan.push(Launch {
                kernel: "conv2d_backward_data",
                grid: gemm_grid(s.batch * s.height * s.width, s.in_channels, 1),
                block: GEMM_BLOCK,
                shared_bytes: 0,
                args,
            });
        }
        let crr = s.in_channels * s.kernel * s.kernel;
        let parts = s.batch.div_ceil(CONV_IMAGES_PER_PART);
        let w_len = s.out_channels * crr;
        plan.scratch.push(parts * w_len);
        let mut args = vec![Arg::Buf(x), Arg::Buf(dy), Arg::Scratch(0)];
        args.extend(conv_dims(s));
        args.push(Arg::I32(CONV_IMAGES_PER_PART as i32));
        plan.push(Launch {
            kernel: "conv2d_backward_weight",
            grid: gemm_grid(crr, s.out_channels, parts),
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        });
        plan.push(Launch {
            kernel: "ssk_sum_partials",
            grid: stride_grid(w_len),
            block: [BLOCK, 1, 1],
            shared_bytes: 0,
            args: vec![
                Arg::Buf(&*g.dw),
                Arg::Scratch(0),
                Arg::I32(i32_of(w_len, "weights")),
                Arg::I32(i32_of(parts, "parts")),
            ],
        });
        let args = vec![
            Arg::Buf(dy),
            Arg::Buf(&*g.db),
            Arg::I32(i32_of(s.batch, "batch")),
            Arg::I32(i32_of(s.out_channels, "out_channels")),
            Arg::I32(i32_of(s.out_height() * s.out_width(), "pixels")),
        ];
        plan.push(block_per("conv2d_backward_bias", s.out_channels, 0, args));
        self.execute(&plan);
    }
}
