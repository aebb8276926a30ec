//! Plans of the branch-batched linear ops (kernels/linear.cu).

use super::{
    branch_map, dim, gemm_grid, i32_of, Arg, KernelDevice, Launch, Plan, GEMM_BLOCK, TILE,
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

    /// One grouped launch (linear.cu: linear_backward): the dx tiles, when asked
    /// for, then the dw tiles, then db, each block one of them.
    fn linear_backward(&self, s: &LinearShape, Backward { x, w, dy, g }: Backward<D::Buf>) {
        check_linear(s);
        let dx = g.dx.as_deref();
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(w),
            Arg::Buf(dy),
            // Unused without dx (no dx blocks): dw stands in for the pointer.
            Arg::Buf(dx.unwrap_or(&*g.dw)),
            Arg::Buf(&*g.dw),
            Arg::Buf(&*g.db),
            branch_map(&s.x_of),
            Arg::I32(i32_of(s.branches, "branches")),
            Arg::I32(i32_of(s.x_branches, "x_branches")),
        ];
        args.extend(linear_dims(s));
        args.push(Arg::I32(s.relu_in as i32));
        args.push(Arg::I32(dx.is_some() as i32));
        self.execute(&Plan::one(Launch {
            kernel: "linear_backward",
            grid: [dim(backward_blocks(s, dx.is_some())), 1, 1],
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        }));
    }
}

/// Blocks of linear_backward's grid (linear.cu): the dx tiles of every input
/// branch (when `with_dx`), the dw tiles of every branch, and B·out db threads,
/// a GEMM block's worth each.
fn backward_blocks(s: &LinearShape, with_dx: bool) -> usize {
    let tiles = |n: usize| n.div_ceil(TILE);
    let data = if with_dx {
        tiles(s.in_features) * tiles(s.batch) * s.x_branches
    } else {
        0
    };
    let weight = tiles(s.in_features) * tiles(s.out_features) * s.branches;
    let gemm_threads = GEMM_BLOCK.iter().product::<u32>() as usize;
    data + weight + s.b_len().div_ceil(gemm_threads)
}
