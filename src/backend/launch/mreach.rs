//! Plans of HDBSCAN's mutual-reachability ops (kernels/mreach.cu): the k-nearest
//! lists and core distances, and one Borůvka round (boxes and tile summaries, each
//! point's lightest edge within its list, then by the pruned scan, each component's
//! lightest edge).

use super::{dim, elementwise, i32_of, Arg, KernelDevice, Launch, Plan};
use crate::backend::{Mreach, MreachOps, Nearest, MREACH_MAX_CAP};

/// Query points per block: one per warp (MREACH_WARPS in the kernel file).
const WARPS: usize = 4;
/// Points per tile (MREACH_TILE): each tile has a bounding box the scans prune by.
const TILE: usize = 32;

/// Scratch of a round, in words: best_w [n] f64, best_pair [n] u64, comp_w [n] u64,
/// the tile boxes lo, hi [d, tiles] f64, tile_core [tiles] f64, tile_comp [tiles] u32.
const BEST_W: usize = 0;
const BEST_PAIR: usize = 1;
const COMP_W: usize = 2;
const LO: usize = 3;
const HI: usize = 4;
const TILE_CORE: usize = 5;
const TILE_COMP: usize = 6;

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

/// The tile boxes of xt into scratch `lo` and `hi` ([d, tiles] f64 each).
fn boxes<'a, B>(s: &Mreach, xt: &'a B, lo: usize, hi: usize) -> Plan<'a, B> {
    elementwise(
        "mreach_boxes",
        s.n.div_ceil(TILE) * s.d,
        vec![
            Arg::Buf(xt),
            Arg::Scratch(lo),
            Arg::Scratch(hi),
            Arg::I32(i32_of(s.n, "n")),
            Arg::I32(i32_of(s.d, "d")),
        ],
    )
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
        let box_words = 2 * s.d * s.n.div_ceil(TILE);
        let mut plan = Plan::new();
        plan.scratch = vec![box_words; 2];
        plan.launches = boxes(s, xt, 0, 1).launches;
        plan.push(warp_per_point(
            "mreach_knn",
            s.n,
            vec![
                Arg::Buf(xt),
                Arg::Scratch(0),
                Arg::Scratch(1),
                Arg::Buf(&*near_sq),
                Arg::Buf(&*near_idx),
                Arg::Buf(&*core),
                int(s.n, "n"),
                int(s.d, "d"),
                int(s.k, "k"),
                int(s.cap, "cap"),
            ],
        ));
        self.execute(&plan);
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
        let (d, cap) = (i32_of(s.d, "d"), i32_of(s.cap, "cap"));
        let tiles = s.n.div_ceil(TILE);
        let mut plan = Plan::new();
        plan.scratch = vec![
            2 * s.n,
            2 * s.n,
            2 * s.n,
            2 * s.d * tiles,
            2 * s.d * tiles,
            2 * tiles,
            tiles,
        ];
        plan.launches = boxes(s, xt, LO, HI).launches;
        let mut reset = elementwise(
            "mreach_reset",
            s.n,
            vec![
                Arg::Buf(core),
                Arg::Buf(comp),
                Arg::Scratch(COMP_W),
                Arg::Buf(&*comp_edge),
                Arg::Scratch(TILE_CORE),
                Arg::Scratch(TILE_COMP),
                Arg::I32(n),
            ],
        );
        plan.launches.append(&mut reset.launches);
        plan.push(warp_per_point(
            "mreach_list_edge",
            s.n,
            vec![
                Arg::Buf(core),
                Arg::Buf(near.sq),
                Arg::Buf(near.idx),
                Arg::Buf(comp),
                Arg::Scratch(BEST_W),
                Arg::Scratch(BEST_PAIR),
                Arg::Scratch(COMP_W),
                Arg::I32(n),
                Arg::I32(cap),
            ],
        ));
        plan.push(warp_per_point(
            "mreach_lightest",
            s.n,
            vec![
                Arg::Buf(xt),
                Arg::Scratch(LO),
                Arg::Scratch(HI),
                Arg::Buf(core),
                Arg::Buf(near.sq),
                Arg::Buf(comp),
                Arg::Scratch(TILE_CORE),
                Arg::Scratch(TILE_COMP),
                Arg::Scratch(BEST_W),
                Arg::Scratch(BEST_PAIR),
                Arg::Scratch(COMP_W),
                Arg::I32(n),
                Arg::I32(d),
                Arg::I32(cap),
            ],
        ));
        let mut edge = elementwise(
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
        );
        plan.launches.append(&mut edge.launches);
        self.execute(&plan);
    }
}
