//! Plans of the branch-batched linear ops (kernels/linear.cu).

use super::{
    branch_map, gemm_grid, i32_of, stride_grid, Arg, KernelDevice, Launch, Plan, BLOCK, GEMM_BLOCK,
};
use crate::backend::{Backward, Forward, LinearOps, LinearShape};

/// The shape arguments every linear kernel takes: batch, in, out.
fn linear_dims<'a, B>(s: &LinearShape) -> [Arg<'a, B>; 3] {
    [
        Arg::I32(i32_of(s.batch, "batch")),
        Arg::I32(i32_of(s.in_features, "in_features")),
        Arg::I32(i32_of(s.out_features, "out_features")),
    ]
}

fn check_linear(s: &LinearShape) {
    assert_eq!(s.x_of.len(), s.branches, "x_of has one entry per branch");
    assert!(
        s.x_of.iter().all(|&i| i < s.x_branches),
        "x_of[o] < x_branches"
    );
}

impl<D: KernelDevice> LinearOps for D {
    fn linear_forward(&self, s: &LinearShape, Forward { x, p, y }: Forward<D::Buf>) {
        check_linear(s);
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(p.w),
            Arg::Buf(p.b),
            Arg::Buf(&*y),
            branch_map(&s.x_of),
        ];
        args.extend(linear_dims(s));
        args.push(Arg::I32(s.relu_out as i32));
        self.execute(&Plan::one(Launch {
            kernel: "linear_forward",
            grid: gemm_grid(s.out_features, s.batch, s.branches),
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        }));
    }

    fn linear_backward(&self, s: &LinearShape, Backward { x, w, dy, g }: Backward<D::Buf>) {
        check_linear(s);
        let mut plan = Plan::new();
        if let Some(dx) = g.dx.as_deref() {
            let mut args = vec![
                Arg::Buf(x),
                Arg::Buf(w),
                Arg::Buf(dy),
                Arg::Buf(dx),
                branch_map(&s.x_of),
                Arg::I32(i32_of(s.branches, "branches")),
            ];
            args.extend(linear_dims(s));
            args.push(Arg::I32(s.relu_in as i32));
            plan.push(Launch {
                kernel: "linear_backward_data",
                grid: gemm_grid(s.in_features, s.batch, s.x_branches),
                block: GEMM_BLOCK,
                shared_bytes: 0,
                args,
            });
        }
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(dy),
            Arg::Buf(&*g.dw),
            branch_map(&s.x_of),
        ];
        args.extend(linear_dims(s));
        plan.push(Launch {
            kernel: "linear_backward_weight",
            grid: gemm_grid(s.in_features, s.out_features, s.branches),
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        });
        plan.push(Launch {
            kernel: "linear_backward_bias",
            grid: stride_grid(s.b_len()),
            block: [BLOCK, 1, 1],
            shared_bytes: 0,
            args: vec![
                Arg::Buf(dy),
                Arg::Buf(&*g.db),
                Arg::I32(i32_of(s.branches, "branches")),
                Arg::I32(i32_of(s.batch, "batch")),
                Arg::I32(i32_of(s.out_features, "out_features")),
            ],
        });
        self.execute(&plan);
    }
}
