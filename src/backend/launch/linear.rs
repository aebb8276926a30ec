//! Plans of the branch-batched linear ops (kernels/linear.cu).

use super::{
    branch_map, dim, gemm_grid, i32_of, split_k, split_k_args, Arg, KernelDevice, Launch, Plan,
    GEMM_BLOCK, TILE,
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

/// The forward's output tiles, all branches.
fn forward_tiles(s: &LinearShape) -> usize {
    s.out_features.div_ceil(TILE) * s.batch.div_ceil(TILE) * s.branches
}

/// The backward's dx tiles, all input branches.
fn dx_tiles(s: &LinearShape) -> usize {
    s.in_features.div_ceil(TILE) * s.batch.div_ceil(TILE) * s.x_branches
}

/// The dx GEMMs' split: over the concatenated K of the branches reading an input
/// (out per branch), as long as the most-read input's.
fn dx_split(s: &LinearShape) -> (usize, usize) {
    let mut readers = vec![0; s.x_branches];
    s.x_of.iter().for_each(|&i| readers[i] += 1);
    let most = readers.into_iter().max().unwrap_or(0);
    split_k(dx_tiles(s), most * s.out_features)
}

impl<D: KernelDevice> LinearOps for D {
    /// grid (out tiles, batch tiles, B·slices): split-K when the tiles are few.
    fn linear_forward(&self, s: &LinearShape, Forward { x, p, y }: Forward<D::Buf>) {
        check_linear(s);
        let (slices, slice_k) = split_k(forward_tiles(s), s.in_features);
        let mut plan = Plan::new();
        let mut args = vec![Arg::Buf(x), Arg::Buf(p.w), Arg::Buf(p.b), Arg::Buf(&*y)];
        args.extend(split_k_args(self, &mut plan, forward_tiles(s), slices, &*y));
        args.push(branch_map(&s.x_of));
        args.extend(linear_dims(s));
        args.push(Arg::I32(s.relu_out as i32));
        args.push(Arg::I32(i32_of(slices, "slices")));
        args.push(Arg::I32(i32_of(slice_k, "slice_k")));
        plan.push(Launch {
            kernel: "linear_forward",
            grid: gemm_grid(s.out_features, s.batch, s.branches * slices),
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        });
        self.execute(&plan);
    }

    /// One grouped launch (linear.cu: linear_backward): the dx tiles, when asked
    /// for (split-K when few), then the dw tiles, then db, each block one of them.
    fn linear_backward(&self, s: &LinearShape, Backward { x, w, dy, g }: Backward<D::Buf>) {
        check_linear(s);
        let dx = g.dx.as_deref();
        let (slices, slice_k) = if dx.is_some() { dx_split(s) } else { (1, 0) };
        let mut plan = Plan::new();
        let mut args = vec![
            Arg::Buf(x),
            Arg::Buf(w),
            Arg::Buf(dy),
            // Unused without dx (no dx blocks): dw stands in for the pointer.
            Arg::Buf(dx.unwrap_or(&*g.dw)),
            Arg::Buf(&*g.dw),
            Arg::Buf(&*g.db),
        ];
        args.extend(split_k_args(self, &mut plan, dx_tiles(s), slices, &*g.dw));
        args.extend([
            branch_map(&s.x_of),
            Arg::I32(i32_of(s.branches, "branches")),
            Arg::I32(i32_of(s.x_branches, "x_branches")),
        ]);
        args.extend(linear_dims(s));
        args.push(Arg::I32(s.relu_in as i32));
        args.push(Arg::I32(dx.is_some() as i32));
        args.push(Arg::I32(i32_of(slices, "dx_slices")));
        args.push(Arg::I32(i32_of(slice_k, "slice_k")));
        plan.push(Launch {
            kernel: "linear_backward",
            grid: [dim(backward_blocks(s, dx.is_some())), 1, 1],
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        });
        self.execute(&plan);
    }
}

/// Blocks of linear_backward's grid (linear.cu): the dx tiles of every input
/// branch times their K slices (when `with_dx`), the dw tiles of every branch, and
/// B·out db threads, a GEMM block's worth each.
fn backward_blocks(s: &LinearShape, with_dx: bool) -> usize {
    let tiles = |n: usize| n.div_ceil(TILE);
    let data = if with_dx {
        dx_tiles(s) * dx_split(s).0
    } else {
        0
    };
    let weight = tiles(s.in_features) * tiles(s.out_features) * s.branches;
    let gemm_threads = GEMM_BLOCK.iter().product::<u32>() as usize;
    data + weight + s.b_len().div_ceil(gemm_threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dx_splits_over_the_most_read_inputs_readers() {
        // dx's K is the most-read input's readers' (out each): the branches' first
        // layer reads one input 10 times; fc2's identity map once per input.
        let shape = |xb: usize, x_of: Vec<usize>, fout| LinearShape {
            branches: x_of.len(),
            x_branches: xb,
            batch: 64,
            in_features: 640,
            out_features: fout,
            x_of,
            relu_out: false,
            relu_in: true,
        };
        assert_eq!(dx_split(&shape(1, vec![0; 10], 100)), (13, 80));
        assert_eq!(dx_split(&shape(10, (0..10).collect(), 50)), (1, 50));
    }
}
