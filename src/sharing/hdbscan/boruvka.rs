//! Step 2 on the tree path: the exact minimum spanning tree of the mutual-reachability
//! graph by Borůvka over the KD-tree (McInnes & Healy 2017, "Accelerated Hierarchical
//! Density Clustering"), then the library's Prim run over a sparse candidate graph so
//! that the rows are the ones `mst::prim` (and the library's `generic` run) emits.
//!
//! **Borůvka.** Every round, each component finds its lightest outgoing edge under
//! m(a,b) = max(c(a), c(b), d(a,b)), and all of them join the forest; the number of
//! components at least halves. Edges are ordered by (weight, smaller position, larger
//! position), a total order, so the lightest edge of a component is unique, the
//! chosen edges never close a cycle, and the tree is the same for any thread count.
//! The search runs in two passes: first, in parallel, each query *leaf* Q on a
//! component boundary (points of several components) against the whole tree; then the
//! single-component leaves as a dual-tree traversal, one query subtree of at most
//! `SUBTREE` points per task, a query node bounded by the largest bound of the leaves
//! below it (so a reference node far from all of them is dropped once). Each point
//! also starts from last round's best edge when that still leaves its component. In
//! both passes:
//! - a node R whose points all share Q's single component is skipped;
//! - R is skipped when max(min_dist(Q, R), min c over Q, min c over R) is above every
//!   bound of Q's points, the bound of point q being min(q's best edge so far, the
//!   best edge any point of q's component has found so far — a per-component atomic);
//! - a point q with c(q) above its bound, and a point r with c(r) above it, are
//!   skipped without computing d(q, r); so is a point whose best edge already weighs
//!   c(q) (nothing is lighter, and every edge that heavy lies in its ball).
//!   Pruning is on strict inequalities only, so an edge tied with the lightest is
//!   never skipped and the (weight, position) order decides. Each point starts from the
//!   lightest edge in its ball (all of whose weights are max(c(q), c(r)), known without
//!   a distance) that leaves its component, which makes the first rounds nearly free.
//!
//! The last rounds (at most `LATE` components, the long edges between clusters) search
//! differently: the shared tree's nodes there mix components, so their boxes and
//! smallest core distances bound little. Each component gets a KD-tree of its own,
//! and every pair of components is a dual-tree search pruned at the larger of the
//! two components' bounds (an edge heavier than both is the lightest of neither).
//!
//! **Prim over candidates.** Minimum spanning trees are not unique (m ties wherever a
//! point's neighbours are closer than its core distance), and the single-linkage tree
//! and the label numbering depend on which one Prim picked. An edge can be picked by
//! Prim only if it is the lightest across some cut, i.e. only if m(a,b) equals the
//! largest weight on the tree path between a and b. Those edges are: every (a, b)
//! with d(a,b) ≤ max(c(a), c(b)) — the balls — plus the tree's own edges, plus, only
//! when two *distances* tie exactly, pairs whose distance equals a tree weight. Prim
//! with the library's tie rules (smallest (value, node); a source changes only on a
//! strictly smaller value) over balls ∪ tree therefore emits exactly the rows it
//! emits over the full graph wherever the input has no tied distances; where it has
//! (grids, duplicates that are not within a core distance), the result is still a
//! minimum spanning tree with the same total weight, but the single-linkage tree may
//! resolve equal heights differently.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::distance::{euclidean, mutual_reachability};
use super::kdtree::{min_dist_across, Balls, KdTree, LEAF};
use super::mst::MstEdge;

/// Most points in a query subtree of the dual-tree pass (the unit of parallel work).
const SUBTREE: usize = 4096;

/// Rounds that start with at most this many components search component against
/// component (`Part`, `Pair`) instead of point by point over the shared tree. On 1M × 8
/// blobs + noise the pair search won at 9 and 3 components and lost at 37 (k² pairs,
/// trees rebuilt each round).
const LATE: usize = 16;

/// Most query points per task of a late round's component pair.
const PAIR_TASK: usize = 16384;

/// No component (a node whose points span several).
const MIXED: u32 = u32::MAX;

/// A candidate edge from a point: weight, then the pair (smaller, larger position).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Candidate {
    w: f64,
    a: u32,
    b: u32,
}

impl Candidate {
    const NONE: Candidate = Candidate {
        w: f64::INFINITY,
        a: u32::MAX,
        b: u32::MAX,
    };

    fn new(w: f64, p: usize, q: usize) -> Self {
        let (a, b) = if p < q { (p, q) } else { (q, p) };
        Candidate {
            w,
            a: a as u32,
            b: b as u32,
        }
    }

    /// The total order of edges: (weight, a, b).
    #[inline]
    fn lighter(&self, other: &Candidate) -> bool {
        self.w < other.w || (self.w == other.w && (self.a, self.b) < (other.a, other.b))
    }
}

/// Union-find over points, by size with path halving (also the device path's).
pub(super) struct Forest {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl Forest {
    pub(super) fn new(n: usize) -> Self {
        Forest {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    pub(super) fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let up = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = up;
            x = up;
        }
        x
    }

    pub(super) fn union(&mut self, a: u32, b: u32) -> bool {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return false;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
        true
    }
}

/// Non-negative f64 values order like their bits, so an atomic min on the bits is a
/// min on the values.
#[inline]
fn fetch_min(slot: &AtomicU64, w: f64) {
    slot.fetch_min(w.to_bits(), Ordering::Relaxed);
}

#[inline]
fn load(slot: &AtomicU64) -> f64 {
    f64::from_bits(slot.load(Ordering::Relaxed))
}

/// One query subtree of the dual-tree pass: node ids `root..end` (pre-order, so the
/// subtree is contiguous), points from `base`, their best edges and the nodes' bounds.
struct Sub<'a> {
    root: usize,
    end: usize,
    base: usize,
    best: &'a mut [Candidate],
    bound: Vec<f64>,
}

/// One round's read-only state, shared by the leaf queries.
struct Round<'a> {
    tree: &'a KdTree,
    core: &'a [f64],
    /// [n]: component (root) of each tree position.
    comp: &'a [u32],
    /// [nodes]: the component all of a node's points share, or MIXED.
    node_comp: &'a [u32],
    /// [nodes]: smallest core distance in the node.
    node_core: &'a [f64],
    /// [n], by component root: the lightest weight any of its points has found.
    bound: &'a [AtomicU64],
}

impl Round<'_> {
    /// q's bound: nothing heavier than this can be q's component's lightest edge.
    /// −∞ when q is settled: its best edge weighs c(q), the least any edge of q can,
    /// and every edge of that weight joins q's ball, which the seed has looked at.
    #[inline]
    fn bound_of(&self, q: usize, best: &Candidate) -> f64 {
        if best.w == self.core[q] {
            return f64::NEG_INFINITY;
        }
        best.w.min(load(&self.bound[self.comp[q] as usize]))
    }

    /// Lightest outgoing edge of every point of leaf `q_node` (best: its slice).
    fn query_leaf(&self, q_node: usize, best: &mut [Candidate]) {
        let nd = self.tree.nodes[q_node];
        let mut q_bound = best
            .iter()
            .enumerate()
            .map(|(o, b)| self.bound_of(nd.start + o, b))
            .fold(f64::NEG_INFINITY, f64::max);
        // Each entry carries its lower bound, computed once when its parent was opened
        // and checked again when popped (q_bound only shrinks meanwhile).
        let mut stack = vec![(0usize, self.lower_bound(q_node, 0))];
        while let Some((r_node, lower)) = stack.pop() {
            if self.node_comp[q_node] != MIXED && self.node_comp[q_node] == self.node_comp[r_node] {
                continue;
            }
            if lower > q_bound {
                continue;
            }
            let r = self.tree.nodes[r_node];
            if r.is_leaf() {
                self.leaf_pair(q_node, r_node, best);
                q_bound = best
                    .iter()
                    .enumerate()
                    .map(|(o, b)| self.bound_of(nd.start + o, b))
                    .fold(f64::NEG_INFINITY, f64::max);
            } else {
                // Nearer child on top of the stack; a child all in Q's component is
                // never pushed (nor its bound computed).
                let q_comp = self.node_comp[q_node];
                let open = |c: usize| q_comp == MIXED || self.node_comp[c] != q_comp;
                match (open(r.left), open(r.right)) {
                    (true, true) => {
                        let (bl, br) = (
                            self.lower_bound(q_node, r.left),
                            self.lower_bound(q_node, r.right),
                        );
                        if bl <= br {
                            stack.push((r.right, br));
                            stack.push((r.left, bl));
                        } else {
                            stack.push((r.left, bl));
                            stack.push((r.right, br));
                        }
                    }
                    (true, false) => stack.push((r.left, self.lower_bound(q_node, r.left))),
                    (false, true) => stack.push((r.right, self.lower_bound(q_node, r.right))),
                    (false, false) => {}
                }
            }
        }
    }

    /// Largest bound over the points of leaf `q_node` (best: its slice).
    #[inline]
    fn leaf_bound(&self, q_node: usize, best: &[Candidate]) -> f64 {
        let start = self.tree.nodes[q_node].start;
        best.iter()
            .enumerate()
            .map(|(o, b)| self.bound_of(start + o, b))
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Lightest outgoing edge of every point in the single-component (interior)
    /// leaves under `sub.root`, as one dual-tree traversal against the whole tree: a
    /// query node carries the largest bound of the interior leaves below it, so a
    /// reference node too far from all of them is dropped once for all. The boundary
    /// leaves (searched before by `query_leaf`) count as settled here.
    fn query_subtree(&self, sub: &mut Sub<'_>) {
        let nodes = &self.tree.nodes;
        for id in (sub.root..sub.end).rev() {
            let nd = nodes[id];
            sub.bound[id - sub.root] = if nd.is_leaf() {
                if self.node_comp[id] == MIXED {
                    f64::NEG_INFINITY
                } else {
                    let s = nd.start - sub.base;
                    self.leaf_bound(id, &sub.best[s..s + nd.end - nd.start])
                }
            } else {
                sub.bound[nd.left - sub.root].max(sub.bound[nd.right - sub.root])
            };
        }
        self.dual(sub.root, 0, self.lower_bound(sub.root, 0), sub);
    }

    fn dual(&self, q: usize, r: usize, lower: f64, sub: &mut Sub<'_>) {
        let q_comp = self.node_comp[q];
        if q_comp != MIXED && q_comp == self.node_comp[r] {
            return;
        }
        if lower > sub.bound[q - sub.root] {
            return;
        }
        let nodes = &self.tree.nodes;
        let (qn, rn) = (nodes[q], nodes[r]);
        if qn.is_leaf() && rn.is_leaf() {
            let s = qn.start - sub.base;
            let best = &mut sub.best[s..s + qn.end - qn.start];
            self.leaf_pair(q, r, best);
            sub.bound[q - sub.root] = self.leaf_bound(q, best);
            return;
        }
        let split_r = !rn.is_leaf() && (qn.is_leaf() || rn.end - rn.start >= qn.end - qn.start);
        if split_r {
            let open = |c: usize| q_comp == MIXED || self.node_comp[c] != q_comp;
            let (bl, br) = (
                if open(rn.left) {
                    self.lower_bound(q, rn.left)
                } else {
                    f64::INFINITY
                },
                if open(rn.right) {
                    self.lower_bound(q, rn.right)
                } else {
                    f64::INFINITY
                },
            );
            let order = if bl <= br {
                [(rn.left, bl), (rn.right, br)]
            } else {
                [(rn.right, br), (rn.left, bl)]
            };
            for (c, b) in order {
                if b.is_finite() {
                    self.dual(q, c, b, sub);
                }
            }
        } else {
            for c in [qn.left, qn.right] {
                self.dual(c, r, self.lower_bound(c, r), sub);
            }
            sub.bound[q - sub.root] =
                sub.bound[qn.left - sub.root].max(sub.bound[qn.right - sub.root]);
        }
    }

    /// No edge between the two nodes is lighter than this.
    #[inline]
    fn lower_bound(&self, a: usize, b: usize) -> f64 {
        mutual_reachability(
            self.tree.min_dist_nodes(a, b),
            self.node_core[a],
            self.node_core[b],
        )
    }

    fn leaf_pair(&self, q_node: usize, r_node: usize, best: &mut [Candidate]) {
        let (q, r) = (self.tree.nodes[q_node], self.tree.nodes[r_node]);
        let mut row = [0.0; LEAF];
        let mut take = [0usize; LEAF];
        for (o, b) in best.iter_mut().enumerate() {
            let i = q.start + o;
            let mut limit = self.bound_of(i, b);
            let (ci, comp_i) = (self.core[i], self.comp[i]);
            if ci > limit {
                continue;
            }
            let x = self.tree.point(i);
            if mutual_reachability(
                self.tree.min_dist_point(x, r_node),
                ci,
                self.node_core[r_node],
            ) > limit
            {
                continue;
            }
            // The points of R that can still beat the bound; all of R's distances in
            // one kernel call when most of them can, else one at a time.
            let mut m = 0;
            for j in r.start..r.end {
                take[m] = j;
                m += usize::from(self.comp[j] != comp_i && self.core[j] <= limit);
            }
            if m == 0 {
                continue;
            }
            let dense = 2 * m > r.end - r.start;
            if dense {
                self.tree.leaf_distances(x, r_node, &mut row);
            }
            for &j in &take[..m] {
                let dist = if dense {
                    row[j - r.start]
                } else {
                    euclidean(x, self.tree.point(j))
                };
                let w = mutual_reachability(dist, ci, self.core[j]);
                let c = Candidate::new(w, i, j);
                if c.lighter(b) {
                    *b = c;
                    if w < limit {
                        limit = w;
                        fetch_min(&self.bound[comp_i as usize], w);
                    }
                }
            }
        }
    }
}

/// One component's points in a KD-tree of their own (late rounds): its boxes hold no
/// point of another component, so they bound that component's edges tightly.
struct Part {
    tree: KdTree,
    /// [len]: main-tree position of each of this tree's positions.
    pos: Vec<u32>,
    /// [len]: core distances, this tree's order.
    core: Vec<f64>,
    /// [nodes]: smallest core distance in the node.
    node_core: Vec<f64>,
    /// The component (its root).
    comp: u32,
}

impl Part {
    /// members: main-tree positions of the component's points.
    fn new(tree: &KdTree, core: &[f64], members: &[u32], comp: u32) -> Self {
        let points: Vec<f64> = members
            .iter()
            .flat_map(|&p| tree.point(p as usize).iter().copied())
            .collect();
        let own = KdTree::build(&points, members.len(), tree.d);
        let pos: Vec<u32> = own.index.iter().map(|&i| members[i]).collect();
        let core: Vec<f64> = pos.iter().map(|&p| core[p as usize]).collect();
        let node_core = node_cores(&own, &core);
        Part {
            tree: own,
            pos,
            core,
            node_core,
            comp,
        }
    }
}

/// Lightest edges between two components' trees, q's against r's, sharing the
/// per-component bounds with every other pair.
struct Pair<'a> {
    q: &'a Part,
    r: &'a Part,
    /// [n], by component root: the lightest weight any search has found.
    bound: &'a [AtomicU64],
}

impl Pair<'_> {
    /// Nothing heavier than this can be the lightest edge of q's or of r's component,
    /// nor lighter than `best`, the lightest q–r edge found so far.
    #[inline]
    fn limit(&self, best: &Candidate) -> f64 {
        let comps =
            load(&self.bound[self.q.comp as usize]).max(load(&self.bound[self.r.comp as usize]));
        best.w.min(comps)
    }

    /// No edge between node a (of q) and node b (of r) is lighter than this.
    #[inline]
    fn lower(&self, a: usize, b: usize) -> f64 {
        mutual_reachability(
            min_dist_across(&self.q.tree, a, &self.r.tree, b),
            self.q.node_core[a],
            self.r.node_core[b],
        )
    }

    /// Dual-tree search below (a, b), nearer pair first.
    fn search(&self, a: usize, b: usize, lower: f64, best: &mut Candidate) {
        if lower > self.limit(best) {
            return;
        }
        let (an, bn) = (self.q.tree.nodes[a], self.r.tree.nodes[b]);
        if an.is_leaf() && bn.is_leaf() {
            self.leaves(a, b, best);
            return;
        }
        let split_b = !bn.is_leaf() && (an.is_leaf() || bn.end - bn.start >= an.end - an.start);
        let [x, y] = if split_b {
            [(a, bn.left), (a, bn.right)]
        } else {
            [(an.left, b), (an.right, b)]
        };
        let (lx, ly) = (self.lower(x.0, x.1), self.lower(y.0, y.1));
        let order = if lx <= ly {
            [(x, lx), (y, ly)]
        } else {
            [(y, ly), (x, lx)]
        };
        for ((a, b), l) in order {
            self.search(a, b, l, best);
        }
    }

    fn leaves(&self, a: usize, b: usize, best: &mut Candidate) {
        let (an, bn) = (self.q.tree.nodes[a], self.r.tree.nodes[b]);
        let mut row = [0.0; LEAF];
        for i in an.start..an.end {
            let mut limit = self.limit(best);
            let ci = self.q.core[i];
            if ci > limit {
                continue;
            }
            let x = self.q.tree.point(i);
            if mutual_reachability(self.r.tree.min_dist_point(x, b), ci, self.r.node_core[b])
                > limit
            {
                continue;
            }
            self.r.tree.leaf_distances(x, b, &mut row);
            for (o, &dist) in row[..bn.end - bn.start].iter().enumerate() {
                let w = mutual_reachability(dist, ci, self.r.core[bn.start + o]);
                if w > limit {
                    continue;
                }
                let c =
                    Candidate::new(w, self.q.pos[i] as usize, self.r.pos[bn.start + o] as usize);
                if c.lighter(best) {
                    *best = c;
                    limit = w;
                    fetch_min(&self.bound[self.q.comp as usize], w);
                    fetch_min(&self.bound[self.r.comp as usize], w);
                }
            }
        }
    }
}

/// A late round: each component's points in a tree of their own, then every pair of
/// components searched (the larger one's tree in query subtrees of at most
/// `PAIR_TASK` points, in parallel). Returns the lightest edge each task found; the
/// lightest edge of every component is among them (a pair is only pruned where its
/// edges are heavier than edges already found for both of its components).
fn late_round(tree: &KdTree, core: &[f64], comp: &[u32], bound: &[AtomicU64]) -> Vec<Candidate> {
    let mut members: Vec<u32> = (0..tree.n as u32).collect();
    members.sort_by_key(|&p| (comp[p as usize], p));
    let groups: Vec<&[u32]> = members
        .chunk_by(|&a, &b| comp[a as usize] == comp[b as usize])
        .collect();
    let parts: Vec<Part> = groups
        .par_iter()
        .map(|g| Part::new(tree, core, g, comp[g[0] as usize]))
        .collect();
    let mut tasks = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        for o in parts.iter().skip(i + 1) {
            let (q, r) = if p.tree.n >= o.tree.n { (p, o) } else { (o, p) };
            for root in subtrees(&q.tree, PAIR_TASK) {
                tasks.push((q, r, root));
            }
        }
    }
    tasks
        .into_par_iter()
        .map(|(q, r, root)| {
            let pair = Pair { q, r, bound };
            let mut best = Candidate::NONE;
            pair.search(root, 0, pair.lower(root, 0), &mut best);
            best
        })
        .filter(|c| c.w.is_finite())
        .collect()
}

/// Smallest core distance in each node of `tree` (core: [n], tree order).
fn node_cores(tree: &KdTree, core: &[f64]) -> Vec<f64> {
    let nodes = &tree.nodes;
    let mut node_core = vec![f64::INFINITY; nodes.len()];
    for id in (0..nodes.len()).rev() {
        let nd = nodes[id];
        node_core[id] = if nd.is_leaf() {
            core[nd.start..nd.end]
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
        } else {
            node_core[nd.left].min(node_core[nd.right])
        };
    }
    node_core
}

/// The first nodes of at most `most` points on every root-to-leaf path, left to right
/// (so their points tile 0..n in order).
fn subtrees(tree: &KdTree, most: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack = vec![0usize];
    while let Some(id) = stack.pop() {
        let nd = tree.nodes[id];
        if nd.is_leaf() || nd.end - nd.start <= most {
            out.push(id);
        } else {
            stack.push(nd.right);
            stack.push(nd.left);
        }
    }
    out
}

/// The exact MST of the mutual-reachability graph. core: [n] in tree order; balls as
/// from `kdtree::core_distances_and_balls`. Edges in tree positions, in the order the
/// rounds found them; `progress(round, components)` is called before every round.
pub fn boruvka(
    tree: &KdTree,
    core: &[f64],
    balls: &Balls,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<MstEdge> {
    let n = tree.n;
    let nodes = &tree.nodes;
    let node_core = node_cores(tree, core);
    let leaves: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_leaf()).collect();
    debug_assert!(leaves
        .windows(2)
        .all(|w| nodes[w[0]].end == nodes[w[1]].start));
    // Pre-order: the subtree of node id is ids id..subtree_end[id].
    let mut subtree_end = vec![0usize; nodes.len()];
    for id in (0..nodes.len()).rev() {
        subtree_end[id] = if nodes[id].is_leaf() {
            id + 1
        } else {
            subtree_end[nodes[id].right]
        };
    }
    // The dual-tree pass's query subtrees.
    let subtrees = subtrees(tree, SUBTREE);

    let mut forest = Forest::new(n);
    let mut comp = vec![0u32; n];
    let mut node_comp = vec![MIXED; nodes.len()];
    let bound: Vec<AtomicU64> = (0..n)
        .map(|_| AtomicU64::new(f64::INFINITY.to_bits()))
        .collect();
    let mut best = vec![Candidate::NONE; n];
    let mut lightest = vec![Candidate::NONE; n];
    let mut edges = Vec::with_capacity(n.saturating_sub(1));
    let mut components = n;
    let mut round = 0;
    // The lightest edges late rounds' pair searches found (`late_round`).
    let mut found: Vec<Candidate> = Vec::new();
    while components > 1 {
        progress(round, components);
        round += 1;
        for (i, c) in comp.iter_mut().enumerate() {
            *c = forest.find(i as u32);
        }
        for id in (0..nodes.len()).rev() {
            let nd = nodes[id];
            node_comp[id] = if nd.is_leaf() {
                let c = comp[nd.start];
                if comp[nd.start..nd.end].iter().all(|&x| x == c) {
                    c
                } else {
                    MIXED
                }
            } else if node_comp[nd.left] == node_comp[nd.right] {
                node_comp[nd.left]
            } else {
                MIXED
            };
        }
        bound
            .par_iter()
            .for_each(|b| b.store(f64::INFINITY.to_bits(), Ordering::Relaxed));
        // Seeds: the lightest ball edge leaving the component (d ≤ c(i) there, so
        // m = max(c(i), c(j)) exactly as `mutual_reachability` would give it).
        // And last round's best edge of the point where it still leaves the component:
        // a real edge, so an upper bound from the start (the search below is exact
        // whatever it starts from; which edge a point kept may depend on the thread
        // timing, each component's lightest edge does not).
        best.par_iter_mut().enumerate().for_each(|(i, b)| {
            if !(b.w.is_finite() && comp[b.a as usize] != comp[b.b as usize]) {
                *b = Candidate::NONE;
            }
            for &j in balls.of(i) {
                let j = j as usize;
                if comp[j] != comp[i] {
                    let c = Candidate::new(core[i].max(core[j]), i, j);
                    if c.lighter(b) {
                        *b = c;
                    }
                }
            }
            if b.w.is_finite() {
                fetch_min(&bound[comp[i] as usize], b.w);
            }
        });

        if components <= LATE {
            // Last late round's pair results are edges too: seeds where they still
            // join two components.
            for c in &found {
                let (ca, cb) = (comp[c.a as usize], comp[c.b as usize]);
                if ca != cb {
                    fetch_min(&bound[ca as usize], c.w);
                    fetch_min(&bound[cb as usize], c.w);
                }
            }
            found = late_round(tree, core, &comp, &bound);
            for c in &found {
                for end in [c.a, c.b] {
                    let slot = &mut lightest[comp[end as usize] as usize];
                    if c.lighter(slot) {
                        *slot = *c;
                    }
                }
            }
        } else {
            let state = Round {
                tree,
                core,
                comp: &comp,
                node_comp: &node_comp,
                node_core: &node_core,
                bound: &bound,
            };
            // Leaves on a component boundary first, one by one: the lightest edges are
            // mostly there, so the component bounds are tight before the interior
            // leaves search, together, subtree by subtree.
            let mut slices = Vec::with_capacity(leaves.len());
            let mut rest = best.as_mut_slice();
            for &leaf in &leaves {
                let (here, tail) = rest.split_at_mut(nodes[leaf].end - nodes[leaf].start);
                if node_comp[leaf] == MIXED {
                    slices.push((leaf, here));
                }
                rest = tail;
            }
            slices
                .into_par_iter()
                .with_min_len(4)
                .for_each(|(leaf, b)| state.query_leaf(leaf, b));
            let mut subs = Vec::with_capacity(subtrees.len());
            let mut rest = best.as_mut_slice();
            for &root in &subtrees {
                let nd = nodes[root];
                let (here, tail) = rest.split_at_mut(nd.end - nd.start);
                subs.push(Sub {
                    root,
                    end: subtree_end[root],
                    base: nd.start,
                    best: here,
                    bound: vec![0.0; subtree_end[root] - root],
                });
                rest = tail;
            }
            subs.into_par_iter()
                .for_each(|mut sub| state.query_subtree(&mut sub));
        }

        // Each component's lightest edge, then the merges.
        for (i, b) in best.iter().enumerate() {
            let c = comp[i] as usize;
            if b.lighter(&lightest[c]) {
                lightest[c] = *b;
            }
        }
        for slot in lightest.iter_mut() {
            let c = std::mem::replace(slot, Candidate::NONE);
            if c.w.is_finite() && forest.union(c.a, c.b) {
                edges.push(MstEdge {
                    from: c.a as usize,
                    to: c.b as usize,
                    weight: c.w,
                });
                components -= 1;
            }
        }
    }
    edges
}

/// Prim's rows over the candidate graph balls ∪ tree, in original point ids, with
/// the library's tie rules (see the module comment and `mst::prim`). core: [n] in tree
/// order; tree_edges: from `boruvka`.
pub fn prim_over_candidates(
    tree: &KdTree,
    core: &[f64],
    balls: &Balls,
    tree_edges: &[MstEdge],
) -> Vec<MstEdge> {
    let n = tree.n;
    // Original id → tree position.
    let mut pos = vec![0u32; n];
    for (p, &i) in tree.index.iter().enumerate() {
        pos[i] = p as u32;
    }
    // Undirected adjacency in tree positions (duplicates are harmless).
    let mut degree = vec![0usize; n + 1];
    for i in 0..n {
        for &j in balls.of(i) {
            degree[i] += 1;
            degree[j as usize] += 1;
        }
    }
    for e in tree_edges {
        degree[e.from] += 1;
        degree[e.to] += 1;
    }
    let mut offset = vec![0usize; n + 1];
    for i in 0..n {
        offset[i + 1] = offset[i] + degree[i];
    }
    let mut fill = offset.clone();
    let mut adj = vec![0u32; offset[n]];
    let mut add = |a: usize, b: usize| {
        adj[fill[a]] = b as u32;
        fill[a] += 1;
    };
    for i in 0..n {
        for &j in balls.of(i) {
            add(i, j as usize);
            add(j as usize, i);
        }
    }
    for e in tree_edges {
        add(e.from, e.to);
        add(e.to, e.from);
    }
    drop(degree);

    // Prim from original node 0; the heap holds (weight bits, original id), so equal
    // weights pop by smallest id, as the dense scan picks them.
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut in_tree = vec![false; n];
    let mut best = vec![f64::MAX; n];
    let mut source = vec![0usize; n];
    let mut heap = BinaryHeap::new();
    let mut edges = Vec::with_capacity(n.saturating_sub(1));
    let mut current = 0usize;
    for _ in 1..n {
        in_tree[current] = true;
        let p = pos[current] as usize;
        let (x, cc) = (tree.point(p), core[p]);
        for &q in &adj[offset[p]..offset[p + 1]] {
            let q = q as usize;
            let j = tree.index[q];
            if in_tree[j] {
                continue;
            }
            let w = mutual_reachability(euclidean(x, tree.point(q)), core[q], cc);
            if w < best[j] {
                best[j] = w;
                source[j] = current;
                heap.push(Reverse((w.to_bits(), j)));
            }
        }
        let next = loop {
            let Reverse((w, j)) = heap.pop().expect("the candidate graph is connected");
            if !in_tree[j] && w == best[j].to_bits() {
                break j;
            }
        };
        edges.push(MstEdge {
            from: source[next],
            to: next,
            weight: best[next],
        });
        current = next;
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::super::distance::{core_distances, Distances};
    use super::super::kdtree::core_distances_and_balls;
    use super::super::mst::prim;
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Gaussian-ish blobs (sum of uniforms) plus uniform noise: no tied distances.
    fn blobs(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<f64> = (0..6 * d).map(|_| rng.random_range(-8.0..8.0)).collect();
        let mut pts = Vec::with_capacity(n * d);
        for i in 0..n {
            if i % 10 == 9 {
                pts.extend((0..d).map(|_| rng.random_range(-12.0..12.0)));
            } else {
                let c = &centres[(i % 6) * d..(i % 6 + 1) * d];
                pts.extend(
                    c.iter()
                        .map(|x| x + (0..4).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>()),
                );
            }
        }
        pts
    }

    fn tree_rows(pts: &[f64], n: usize, d: usize, k: usize) -> (Vec<MstEdge>, Vec<MstEdge>) {
        let tree = KdTree::build(pts, n, d);
        let (core, balls) = core_distances_and_balls(&tree, k);
        let forest = boruvka(&tree, &core, &balls, &mut |_, _| {});
        let rows = prim_over_candidates(&tree, &core, &balls, &forest);
        (forest, rows)
    }

    fn sorted_weights(edges: &[MstEdge]) -> Vec<u64> {
        let mut w: Vec<u64> = edges.iter().map(|e| e.weight.to_bits()).collect();
        w.sort();
        w
    }

    #[test]
    fn prim_over_candidates_equals_dense_prim_without_tied_distances() {
        for (n, d, k) in [(3000, 2, 5), (2500, 5, 3), (2000, 8, 10), (500, 3, 1)] {
            let pts = blobs(n, d, n as u64 + d as u64);
            let dist = Distances::euclidean(&pts, n, d);
            let dense = prim(&dist, &core_distances(&dist, k));
            let (forest, rows) = tree_rows(&pts, n, d, k);
            assert_eq!(forest.len(), n - 1);
            assert_eq!(rows, dense, "n {n} d {d} k {k}");
        }
    }

    #[test]
    fn boruvka_weights_equal_prim_weights_with_ties_and_duplicates() {
        // Integer grid values: many tied distances and exact duplicates.
        let (n, d) = (2000, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let pts: Vec<f64> = (0..n * d).map(|_| rng.random_range(0..40) as f64).collect();
        for k in [1, 4, 9] {
            let dist = Distances::euclidean(&pts, n, d);
            let dense = prim(&dist, &core_distances(&dist, k));
            let (forest, rows) = tree_rows(&pts, n, d, k);
            // Every MST has the same multiset of weights.
            assert_eq!(sorted_weights(&forest), sorted_weights(&dense), "k {k}");
            assert_eq!(sorted_weights(&rows), sorted_weights(&dense), "k {k}");
        }
    }

    #[test]
    fn same_tree_for_any_thread_count() {
        let (n, d) = (6000, 3);
        let mut pts = blobs(n, d, 9);
        // Some ties too: snap a third of the coordinates to a grid.
        for v in pts.iter_mut().step_by(3) {
            *v = v.round();
        }
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| tree_rows(&pts, n, d, 5))
        };
        let one = run(1);
        for threads in [2, 3, 8] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }
}
