//! Plans of the convolution ops (kernels/conv.cu).

use super::{
    dim, gemm_grid, i32_of, split_k, split_k_args, Arg, KernelDevice, Launch, Plan, GEMM_BLOCK,
    TILE,
};
use crate::backend::kernels::geometry::{SSK_NARROW_M, SSK_TILE_K, SSK_WIDE_N};
use crate::backend::{Backward, Conv2dShape, ConvOps, Forward};

/// Blocks the weight gradient's split-K aims at: 2 per SM of an H100/H200 (132 SMs;
/// one wave: at 53–64 registers 4 weight blocks fit an SM), so that conv1's single
/// 64×64 tile (dW 20×26) does not run its 36,864-row k on 8 blocks. A function of
/// the shape alone: the same partials, the same bits, on every device and in the
/// recorded program.
const WEIGHT_BLOCKS: usize = 264;
/// Fewest GEMM k rows of a partial (4 stages of the GEMM core).
const MIN_PART_ROWS: usize = 4 * SSK_TILE_K;
/// Threads per output of conv2d_backward_weight_sum (its blockDim.y, ≤ 32).
const SUM_SLICES: u32 = 16;

/// The weight gradient's split-K over `tiles` output tiles: the GEMM's k rows (the
/// batch·P pairs (n, p)) per partial, a multiple of the core's stage, and the number
/// of partials.
fn weight_split(s: &Conv2dShape, tiles: usize) -> (usize, usize) {
    let rows = s.batch * s.out_height() * s.out_width();
    let per_part = (rows * tiles)
        .div_ceil(WEIGHT_BLOCKS)
        .next_multiple_of(SSK_TILE_K)
        .max(MIN_PART_ROWS);
    (per_part, rows.div_ceil(per_part).max(1))
}

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
    /// grid (pixel tiles, channel tiles, slices): split-K when the tiles are few.
    fn conv2d_forward(&self, s: &Conv2dShape, Forward { x, p, y }: Forward<D::Buf>) {
        let cols = s.batch * s.out_height() * s.out_width();
        let tiles = cols.div_ceil(TILE) * s.out_channels.div_ceil(TILE);
        let (slices, slice_k) = split_k(tiles, s.in_channels * s.kernel * s.kernel);
        let mut plan = Plan::new();
        let mut args = vec![Arg::Buf(x), Arg::Buf(p.w), Arg::Buf(p.b), Arg::Buf(&*y)];
        args.extend(split_k_args(self, &mut plan, tiles, slices, &*y));
        args.extend(conv_dims(s));
        args.push(Arg::I32(i32_of(slices, "slices")));
        args.push(Arg::I32(i32_of(slice_k, "slice_k")));
        plan.push(Launch {
            kernel: "conv2d_forward",
            grid: gemm_grid(cols, s.out_channels, slices),
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        });
        self.execute(&plan);
    }

    /// dw and db by split-K partials of one GEMM (db: its column of ones; scratch 0)
    /// summed in a fixed order; dx (when given) by backward-data, in the same launch
    /// as those partials.
    fn conv2d_backward(&self, s: &Conv2dShape, Backward { x, w, dy, g }: Backward<D::Buf>) {
        // The weight GEMM's columns: the CRR taps and a column of ones (the bias).
        let crr = s.in_channels * s.kernel * s.kernel;
        let tiles = |g: [u32; 3]| g.iter().map(|&d| d as usize).product::<usize>();
        let (per_part, parts) = weight_split(s, tiles(gemm_grid(crr + 1, s.out_channels, 1)));
        let mut plan = Plan::new();
        plan.scratch.push(parts * s.out_channels * (crr + 1));
        let weight_grid = gemm_grid(crr + 1, s.out_channels, parts);
        let rows = Arg::I32(i32_of(per_part, "rows per partial"));
        if let Some(dx) = g.dx.as_deref() {
            // Backward-data (32 × 128 tiles, split-K when few) and -weight tiles in
            // one launch, a 1-D grid of both.
            let data_tiles = (s.batch * s.height * s.width).div_ceil(SSK_WIDE_N)
                * s.in_channels.div_ceil(SSK_NARROW_M);
            let (slices, slice_k) = split_k(data_tiles, s.out_channels * s.kernel * s.kernel);
            let mut args = vec![
                Arg::Buf(w),
                Arg::Buf(x),
                Arg::Buf(dy),
                Arg::Buf(dx),
                Arg::Scratch(0),
            ];
            args.extend(split_k_args(self, &mut plan, data_tiles, slices, dx));
            args.extend(conv_dims(s));
            args.push(rows);
            args.push(Arg::I32(i32_of(slices, "data slices")));
            args.push(Arg::I32(i32_of(slice_k, "data slice_k")));
            plan.push(Launch {
                kernel: "conv2d_backward_data_weight",
                grid: [dim(data_tiles * slices + tiles(weight_grid)), 1, 1],
                block: GEMM_BLOCK,
                shared_bytes: 0,
                args,
            });
        } else {
            let mut args = vec![Arg::Buf(x), Arg::Buf(dy), Arg::Scratch(0)];
            args.extend(conv_dims(s));
            args.push(rows);
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
            grid: [dim((s.out_channels * (crr + 1)).div_ceil(32)), 1, 1],
            block: [32, SUM_SLICES, 1],
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
