//! Plans of HDBSCAN's mutual-reachability ops (kernels/mreach.cu): the k-nearest
//! lists and core distances, and one Borůvka round (reset, lightest edge per point,
//! lightest edge per component).

use super::{dim, elementwise, i32_of, Arg, KernelDevice, Launch, Plan};
use crate::backend::{Mreach, MreachOps, Nearest, MREACH_MAX_CAP};

/// Query points per block: one per warp (MREACH_WARPS in the kernel file).
const WARPS: usize = 4;

/// Scratch of a round, in floats: best_w [n] f64, best_pair [n] u64, comp_w [n] u64.
const BEST_W: usize = 0;
const BEST_PAIR: usize = 1;
const COMP_W: usize = 2;

/// One warp per point.
fn warp_per_point<'a, B>(kernel: &'static str, n: usize, args: Vec<Arg<'a, B>>) -> Launch<'a, B> {
    Launch {
        kernel,
        grid: [dim(n.div_ceil(WARPS)), 1, 1],
        block: [32 * WARPS as u32, 1, 1],
        shared_bytes: 0,
        args,
    }
}

impl<D: KernelDevice> MreachOps for D {
    fn mreach_knn(
        &self,
        s: &Mreach,
        xt: &D::Buf,
        near_sq: &mut D::Buf,
        near_idx: &mut D::Buf,
        core: &mut D::Buf,
    ) {
        assert!(
            s.k >= 1 && s.k < s.cap && s.cap <= s.n.min(MREACH_MAX_CAP),
            "mreach_knn {s}: needs 1 <= k < cap <= min(n, {MREACH_MAX_CAP})"
        );
        let int = |v: usize, what: &str| Arg::I32(i32_of(v, what));
        let args = vec![
            Arg::Buf(xt),
            Arg::Buf(&*near_sq),
            Arg::Buf(&*near_idx),
            Arg::Buf(&*core),
            int(s.n, "n"),
            int(s.d, "d"),
            int(s.k, "k"),
            int(s.cap, "cap"),
        ];
        self.execute(&Plan::one(warp_per_point("mreach_knn", s.n, args)));
    }

    fn mreach_round(
        &self,
        s: &Mreach,
        xt: &D::Buf,
        core: &D::Buf,
        near: Nearest<'_, D::Buf>,
        comp: &D::Buf,
        comp_edge: &mut D::Buf,
    ) {
        let n = i32_of(s.n, "n");
        let mut plan = Plan::new();
        plan.scratch = vec![2 * s.n; 3];
        plan.launches = elementwise(
            "mreach_reset",
            s.n,
            vec![Arg::Scratch(COMP_W), Arg::Buf(&*comp_edge), Arg::I32(n)],
        )
        .launches;
        plan.push(warp_per_point(
            "mreach_lightest",
            s.n,
            vec![
                Arg::Buf(xt),
                Arg::Buf(core),
                Arg::Buf(near.sq),
                Arg::Buf(near.idx),
                Arg::Buf(comp),
                Arg::Scratch(BEST_W),
                Arg::Scratch(BEST_PAIR),
                Arg::Scratch(COMP_W),
                Arg::I32(n),
                Arg::I32(i32_of(s.d, "d")),
                Arg::I32(i32_of(s.cap, "cap")),
            ],
        ));
        plan.launches.extend(
            elementwise(
                "mreach_component_edge",
                s.n,
                vec![
                    Arg::Scratch(BEST_W),
                    Arg::Scratch(BEST_PAIR),
                    Arg::Buf(comp),
                    Arg::Scratch(COMP_W),
                    Arg::Buf(&*comp_edge),
                    Arg::I32(n),
                ],
            )
            .launches,
        );
        self.execute(&plan);
    }
}
