//! Plans of the sharing step's TT-SVD (kernels/ttsvd.cu): widen the gradients to
//! double, three TT-SVD steps, the descriptors' inner products, the distances, and
//! the cores narrowed to f32.

use super::{dim, elementwise, i32_of, Arg, KernelDevice, Launch, Plan};
use crate::backend::{TtSvd, TtSvdOps};

/// Threads of a `ttsvd_step` block: the Jacobi rounds have ≤ m/2 rotations and
/// m·m/2 updates, m = min(rows, cols) ≤ 40 for MNIST at R = 4.
const STEP_BLOCK: u32 = 256;
/// Dynamic shared memory a `ttsvd_step` block may have without opting in: 48 KB on
/// every CUDA device, less the kernel's static bytes (a flag per Jacobi sweep, 65
/// ints; 512 reserved). A step's Gram matrix, its rotated copy and the eigenvectors go
/// there when they fit (m ≤ 44 at R = 4).
const SHARED_LIMIT: usize = 48 * 1024 - 512;
/// Threads of a `ttsvd_inner` block: one per entry of the carried `[r, r]` matrix.
const INNER_BLOCK: u32 = 64;

/// Scratch buffers, in doubles (a plan's scratch is counted in floats: ×2).
const REM_A: usize = 0;
const REM_B: usize = 1;
const CORES: usize = 2;
const WORK: usize = 3;
const GRAM: usize = 4;

impl<D: KernelDevice> TtSvdOps for D {
    fn tt_svd(&self, s: &TtSvd, grads: &D::Buf, cores: &mut D::Buf, dist: &mut D::Buf) {
        let (dims, ranks) = (s.dims(), s.ranks());
        let (b, per, core_len) = (s.branches, s.out * s.inp, s.core_len());
        let int = |v: usize, what: &str| Arg::I32(i32_of(v, what));
        // Step k's unfolding [rows_k, cols_k]; the remainders alternate A → B → A.
        let rows: Vec<usize> = (0..3).map(|k| ranks[k] * dims[k]).collect();
        let cols: Vec<usize> = (0..3).map(|k| dims[k + 1..].iter().product()).collect();
        // The Gram matrix is taken on the unfolding's short side.
        let gram: Vec<usize> = (0..3).map(|k| rows[k].min(cols[k])).collect();
        // A, its rotated copy and V, m² doubles each, where shared memory is too small.
        let work = gram.iter().map(|m| 3 * m * m).max().unwrap();
        let mut plan = Plan::new();
        plan.scratch = [b * per, b * per, b * core_len, b * work, b * b]
            .iter()
            .map(|doubles| 2 * doubles)
            .collect();
        plan.launches = elementwise(
            "ttsvd_widen",
            b * per,
            vec![Arg::Buf(grads), Arg::Scratch(REM_A), int(b * per, "grads")],
        )
        .launches;
        let mut core_off = 0;
        for k in 0..3 {
            let r = ranks[k + 1];
            // The last step's U_rᵀ·C is core 4: it goes right after core 3.
            let (c, next) = [(REM_A, REM_B), (REM_B, REM_A), (REM_A, CORES)][k];
            let (next_stride, next_off) = if next == CORES {
                (core_len, core_off + rows[k] * r)
            } else {
                (per, 0)
            };
            // Two rounds' rotations (cs, sn: doubles; partners: ints), the kept
            // columns' norms (doubles) and order (ints); then A, A's copy and V when
            // they fit, and the chunks of C the Gram matrix streams through (over A's
            // copy and V): whatever of the 48 KB is left.
            let m = gram[k];
            let small = 8 * (4 * m + r) + 8 * (2 * m + r).div_ceil(2);
            let work_in_shared = small + 24 * m * m <= SHARED_LIMIT;
            let a_bytes = if work_in_shared { 8 * m * m } else { 0 };
            let chunk = SHARED_LIMIT.saturating_sub(small + a_bytes) / 8;
            assert!(
                chunk >= (2 * m).max(256),
                "tt_svd {s}: step {}'s Gram matrix ({m} × {m}) leaves too little shared memory",
                k + 1
            );
            plan.push(Launch {
                kernel: "ttsvd_step",
                grid: [dim(b), 1, 1],
                block: [STEP_BLOCK, 1, 1],
                shared_bytes: (small + a_bytes + 8 * chunk) as u32,
                args: vec![
                    Arg::Scratch(c),
                    Arg::Scratch(WORK),
                    Arg::Scratch(CORES),
                    Arg::Scratch(next),
                    int(rows[k], "rows"),
                    int(cols[k], "cols"),
                    int(r, "rank"),
                    int(per, "remainder"),
                    int(work, "work"),
                    int(core_len, "core_len"),
                    int(core_off, "core offset"),
                    int(next_stride, "next"),
                    int(next_off, "next offset"),
                    int(work_in_shared.into(), "work in shared"),
                    int(chunk, "chunk"),
                ],
            });
            core_off += rows[k] * r;
        }
        let rmax = ranks.iter().copied().max().unwrap();
        let mut args = vec![Arg::Scratch(CORES), Arg::Scratch(GRAM)];
        args.extend(dims.iter().map(|&n| int(n, "dims")));
        args.extend(ranks[1..4].iter().map(|&r| int(r, "ranks")));
        args.extend([int(core_len, "core_len"), int(b, "branches")]);
        plan.push(Launch {
            kernel: "ttsvd_inner",
            grid: [dim(b), dim(b), 1],
            block: [INNER_BLOCK, 1, 1],
            shared_bytes: (16 * rmax * rmax) as u32,
            args,
        });
        let distances = vec![Arg::Scratch(GRAM), Arg::Buf(&*dist), int(b, "branches")];
        plan.launches
            .extend(elementwise("ttsvd_distances", b * b, distances).launches);
        let narrow = vec![
            Arg::Scratch(CORES),
            Arg::Buf(&*cores),
            int(b * core_len, "cores"),
        ];
        plan.launches
            .extend(elementwise("ttsvd_narrow", b * core_len, narrow).launches);
        self.execute(&plan);
    }
}
