//! Steps 1–2 on a kernel device (`cluster --device sim|cuda`, issue 14): the core
//! distances and the Borůvka MST by kernels/mreach.cu (`MreachOps`), tile by tile,
//! never an n × n matrix; the rest on the host, shared with the tree path.
//!
//! - The host builds the KD-tree only for its point order and its range query; the
//!   device works in tree positions, so its edge order (w, smaller position, larger
//!   position) is `boruvka`'s, and 32 consecutive positions are a compact tile whose
//!   bounding box prunes the kernels' scans (kernels/mreach.cu).
//! - Core distances: each point's min(k + 2, n) nearest by (squared distance,
//!   position) on the device; c_k and the balls follow from them exactly as in
//!   `kdtree::core_distances_and_balls` (the range query when distances tie at c_k).
//! - Borůvka: per round the host uploads each point's component (union-find root)
//!   and reads back each component's lightest outgoing edge; one upload and one
//!   download per round, about log₂ n rounds.
//! - Then `boruvka::prim_over_candidates`, sort, linkage, condense, select: unchanged.
//!
//! **The rule.** The kernels compute every squared distance as the CPU's ordered sum
//! in f64 with no fused multiply-add, so core distances, balls and every edge weight
//! have the CPU's bits, and under a total order of edges the MST is unique: the
//! device's forest is the CPU Borůvka's, edge for edge, and the rows, labels,
//! probabilities and MST weights equal `Algorithm::Tree`'s on every input, ties and
//! duplicates included (and `Algorithm::Dense`'s wherever the tree path's do: on
//! inputs without tied distances). Edge weights are recomputed on the host in f64
//! (the same bits).

use std::time::Instant;

use super::boruvka::{prim_over_candidates, Forest};
use super::distance::{euclidean, mutual_reachability};
use super::kdtree::{Balls, KdTree};
use super::mst::MstEdge;
use super::{
    check, check_points, finish, Algorithm, ClusterError, Clustering, HdbscanParams, Progress,
    StepTimes,
};
use crate::backend::{
    f64_of_words, u64_of_words, words_of_f64, Mreach, MreachOps, Nearest, MREACH_MAX_CAP,
    MREACH_NONE,
};

/// Device bytes the path needs for n points in d dimensions with nearest lists of
/// `cap`: the points (f64), the lists (f64 + u32), core, component, edge (8 + 4 +
/// 8) and a round's scratch (3 × 8), per point; per tile of 32 points its box (2 ×
/// d f64), smallest core (f64) and component (u32).
pub fn device_bytes(n: usize, d: usize, cap: usize) -> u64 {
    let tiles = n.div_ceil(32) as u64;
    n as u64 * (8 * d as u64 + 12 * cap as u64 + 20 + 24) + tiles * (16 * d as u64 + 12)
}

/// HDBSCAN on Euclidean points ([n, d]) with steps 1–2 on `dev`; the same checks
/// and errors as `hdbscan_with`, plus the device's limits (min_samples ≤ 30, memory),
/// checked before any work.
pub fn hdbscan_device<B: MreachOps>(
    dev: &B,
    points: &[f64],
    n: usize,
    d: usize,
    params: &HdbscanParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Clustering, StepTimes), ClusterError> {
    check_points(points, n, d)?;
    let k = check(n, params)?;
    let cap = (k + 2).min(n);
    if cap > MREACH_MAX_CAP {
        return Err(ClusterError::DeviceMinSamples {
            k,
            max: MREACH_MAX_CAP - 2,
        });
    }
    let need = device_bytes(n, d, cap);
    if let Some(free) = dev.free_memory() {
        if need > free {
            return Err(ClusterError::DeviceMemory {
                device: dev.name(),
                n,
                d,
                need,
                free,
            });
        }
    }
    let mut times = StepTimes {
        algorithm: Algorithm::Tree,
        ..Default::default()
    };
    progress(Progress::CoreDistances);
    let t = Instant::now();
    let tree = KdTree::build(points, n, d);
    let s = Mreach { n, d, k, cap };
    let mut xt = vec![0.0; n * d];
    for (p, x) in tree.points.chunks_exact(d).enumerate() {
        for (c, &v) in x.iter().enumerate() {
            xt[c * n + p] = v;
        }
    }
    let mut on = OnDevice {
        xt: dev.upload_words(&words_of_f64(&xt)),
        near_sq: dev.zeros(2 * n * cap),
        near_idx: dev.zeros(n * cap),
        core: dev.zeros(2 * n),
    };
    dev.mreach_knn(&s, &on.xt, &mut on.near_sq, &mut on.near_idx, &mut on.core);
    let near_sq = f64_of_words(&dev.download_words(&on.near_sq));
    let near_idx = dev.download_words(&on.near_idx);
    let core = f64_of_words(&dev.download_words(&on.core));
    let balls = balls_from_nearest(&tree, k, cap, &near_sq, &near_idx, &core);
    times.core_distances = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let forest = boruvka_rounds(dev, &s, &on, &tree, &core, &mut |r, c| {
        times.boruvka_rounds = r + 1;
        progress(Progress::MstRound {
            round: r,
            components: c,
        })
    });
    let rows = prim_over_candidates(&tree, &core, &balls, &forest);
    times.mst = t.elapsed().as_secs_f64();
    let mut original = vec![0.0; n];
    for (p, &i) in tree.index.iter().enumerate() {
        original[i] = core[p];
    }
    Ok((
        finish(rows, original, k, params, &mut times, progress),
        times,
    ))
}

/// What the rounds read on the device: the points `[d, n]`, `mreach_knn`'s nearest
/// lists and the core distances.
struct OnDevice<B: MreachOps> {
    xt: B::Buf,
    near_sq: B::Buf,
    near_idx: B::Buf,
    core: B::Buf,
}

/// The balls {j ≠ i : d(i, j) ≤ c_k(i)} from the nearest lists ([n, cap], tree
/// positions), by `kdtree::core_distances_and_balls`' rule: if entry k + 1 is
/// farther than c_k, the first k + 1 entries are the ball and the point itself;
/// otherwise distances tie at c_k and the tree's range query collects them all.
fn balls_from_nearest(
    tree: &KdTree,
    k: usize,
    cap: usize,
    near_sq: &[f64],
    near_idx: &[u32],
    core: &[f64],
) -> Balls {
    let n = tree.n;
    let mut offset = Vec::with_capacity(n + 1);
    offset.push(0);
    let mut list = Vec::new();
    let mut range = Vec::new();
    for (i, &c) in core.iter().enumerate() {
        let (sq, idx) = (&near_sq[i * cap..][..cap], &near_idx[i * cap..][..cap]);
        if cap > k + 1 && sq[k + 1].sqrt() <= c {
            range.clear();
            tree.within(tree.point(i), c, &mut range);
            list.extend(range.iter().filter(|&&j| j != i).map(|&j| j as u32));
        } else {
            list.extend(idx[..=k].iter().filter(|&&j| j as usize != i));
        }
        offset.push(list.len());
    }
    Balls { offset, list }
}

/// The MST edges (tree positions) by Borůvka rounds on the device; `progress(round,
/// components)` before each round.
fn boruvka_rounds<B: MreachOps>(
    dev: &B,
    s: &Mreach,
    on: &OnDevice<B>,
    tree: &KdTree,
    core: &[f64],
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<MstEdge> {
    let n = s.n;
    let mut forest = Forest::new(n);
    let mut edge_buf = dev.zeros(2 * n);
    let mut edges = Vec::with_capacity(n - 1);
    let mut components = n;
    let mut round = 0;
    while components > 1 {
        progress(round, components);
        round += 1;
        let comp: Vec<u32> = (0..n as u32).map(|i| forest.find(i)).collect();
        let comp_buf = dev.upload_words(&comp);
        dev.mreach_round(
            s,
            &on.xt,
            &on.core,
            Nearest {
                sq: &on.near_sq,
                idx: &on.near_idx,
            },
            &comp_buf,
            &mut edge_buf,
        );
        let before = components;
        for key in u64_of_words(&dev.download_words(&edge_buf)) {
            if key == MREACH_NONE {
                continue;
            }
            let (a, b) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
            assert!(
                a < b && b < n,
                "mreach_round returned edge ({a}, {b}) of {n} points"
            );
            if forest.union(a as u32, b as u32) {
                let w =
                    mutual_reachability(euclidean(tree.point(a), tree.point(b)), core[a], core[b]);
                edges.push(MstEdge {
                    from: a,
                    to: b,
                    weight: w,
                });
                components -= 1;
            }
        }
        // Every component of a complete graph has an outgoing edge: a round that
        // merges nothing is a device fault, not an input property.
        assert!(
            components < before,
            "Borůvka round {round} on {} merged nothing",
            dev.name()
        );
    }
    edges
}
