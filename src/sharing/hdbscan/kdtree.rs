//! Step 1 on the tree path: a KD-tree over the points, the core distances c_k from
//! k-nearest-neighbour queries, and each point's "ball" (the other points within its
//! core distance), which `tree_mst` needs to reproduce the library's Prim exactly.
//!
//! - Build: median split on the widest side of the node's box, leaves of at most
//!   `LEAF` points; the points are copied in tree order ([n, d], contiguous per node).
//!   Median ties are broken by the original index, so the tree is a function of the
//!   input alone.
//! - Every distance is `distance::euclidean` (the ordered sum the dense path and the
//!   library use), so c_k has the same bits as `distance::core_distances`.
//! - Box lower bounds (`min_dist`) sum the per-coordinate gaps in the same order with
//!   the same operations; IEEE rounding is monotone, so the bound never exceeds the
//!   computed distance of any pair of points in the boxes, and pruning on
//!   `bound > limit` (strict) is exact, ties included.

use rayon::prelude::*;

use super::distance::{euclidean, row_kernel, row_kernel_sq};

/// Most points in a leaf. 16–64 measured within a few per cent of each other on
/// 100k × 8 blobs; 32 was fastest.
pub const LEAF: usize = 32;

/// One node: points `start..end` in tree order; `left`/`right` are node ids, NONE in
/// a leaf.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub start: usize,
    pub end: usize,
    pub left: usize,
    pub right: usize,
}

pub const NONE: usize = usize::MAX;

impl Node {
    pub fn is_leaf(&self) -> bool {
        self.left == NONE
    }
}

/// A KD-tree. Nodes are in pre-order: a node's children come after it, so a reverse
/// scan visits children before parents.
pub struct KdTree {
    pub n: usize,
    pub d: usize,
    /// [n, d]: the points in tree order.
    pub points: Vec<f64>,
    /// [n]: original index of the point at tree position i.
    pub index: Vec<usize>,
    /// The same coordinates leaf by leaf, each leaf transposed ([d, len] at
    /// `start * d`), so one point's distances to a whole leaf run as independent
    /// ordered sums side by side (`distance::row_kernel`).
    pub leaf_columns: Vec<f64>,
    pub nodes: Vec<Node>,
    /// [nodes, d]: lower and upper corners of each node's bounding box.
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl KdTree {
    /// points: [n, d], original order.
    pub fn build(points: &[f64], n: usize, d: usize) -> Self {
        assert_eq!(points.len(), n * d, "points must be [n, d]");
        assert!(n > 0 && d > 0);
        let mut index: Vec<usize> = (0..n).collect();
        let mut tree = KdTree {
            n,
            d,
            points: Vec::new(),
            index: Vec::new(),
            leaf_columns: Vec::new(),
            nodes: Vec::with_capacity(2 * n / LEAF + 2),
            lo: Vec::new(),
            hi: Vec::new(),
        };
        tree.split(points, &mut index, 0, n);
        tree.points = index
            .iter()
            .flat_map(|&i| points[i * d..(i + 1) * d].iter().copied())
            .collect();
        tree.index = index;
        tree.leaf_columns = vec![0.0; n * d];
        for nd in tree.nodes.iter().filter(|nd| nd.is_leaf()) {
            let len = nd.end - nd.start;
            let block = &mut tree.leaf_columns[nd.start * d..nd.end * d];
            for o in 0..len {
                for k in 0..d {
                    block[k * len + o] = tree.points[(nd.start + o) * d + k];
                }
            }
        }
        tree
    }

    /// out[o] = d(x, point start + o) for every point of leaf `leaf`, with the bits of
    /// `euclidean`. out: at least the leaf's length.
    #[inline]
    pub fn leaf_distances(&self, x: &[f64], leaf: usize, out: &mut [f64]) {
        let (block, len) = self.leaf_block(leaf);
        row_kernel(x, block, len, 0, &mut out[..len]);
    }

    /// `leaf_distances` squared: out[o] is the sum whose `sqrt` is d(x, point start + o).
    #[inline]
    pub fn leaf_sq_distances(&self, x: &[f64], leaf: usize, out: &mut [f64]) {
        let (block, len) = self.leaf_block(leaf);
        row_kernel_sq(x, block, len, 0, &mut out[..len]);
    }

    /// The transposed coordinates of leaf `leaf` ([d, len]) and its length.
    #[inline]
    fn leaf_block(&self, leaf: usize) -> (&[f64], usize) {
        let nd = self.nodes[leaf];
        (
            &self.leaf_columns[nd.start * self.d..nd.end * self.d],
            nd.end - nd.start,
        )
    }

    /// Makes the node for `index[start..end]` and its subtree; returns its id.
    fn split(&mut self, points: &[f64], index: &mut [usize], start: usize, end: usize) -> usize {
        let d = self.d;
        let id = self.nodes.len();
        self.nodes.push(Node {
            start,
            end,
            left: NONE,
            right: NONE,
        });
        let (mut lo, mut hi) = (vec![f64::INFINITY; d], vec![f64::NEG_INFINITY; d]);
        for &i in &index[start..end] {
            for k in 0..d {
                let v = points[i * d + k];
                lo[k] = lo[k].min(v);
                hi[k] = hi[k].max(v);
            }
        }
        let widest = (0..d)
            .max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b])).then(b.cmp(&a)))
            .unwrap();
        self.lo.extend_from_slice(&lo);
        self.hi.extend_from_slice(&hi);
        if end - start <= LEAF {
            return id;
        }
        let mid = (end - start) / 2;
        index[start..end].select_nth_unstable_by(mid, |&a, &b| {
            points[a * d + widest]
                .total_cmp(&points[b * d + widest])
                .then(a.cmp(&b))
        });
        let left = self.split(points, index, start, start + mid);
        let right = self.split(points, index, start + mid, end);
        self.nodes[id].left = left;
        self.nodes[id].right = right;
        id
    }

    /// Coordinates of tree position i.
    #[inline]
    pub fn point(&self, i: usize) -> &[f64] {
        &self.points[i * self.d..(i + 1) * self.d]
    }

    /// A lower bound of the distance from x to any point in node `node`.
    #[inline]
    pub fn min_dist_point(&self, x: &[f64], node: usize) -> f64 {
        self.min_sq_point(x, node).sqrt()
    }

    /// `min_dist_point` squared: a lower bound of the ordered sum of squares (the
    /// distance before its `sqrt`) from x to any point in node `node`.
    #[inline]
    pub fn min_sq_point(&self, x: &[f64], node: usize) -> f64 {
        let (lo, hi) = self.corners(node);
        let mut acc = 0.0;
        for k in 0..self.d {
            // (lo − x) and (x − hi) round no further from 0 than |x − p| for p in the
            // box; (lo − x)² has the bits of (x − lo)².
            let (below, above) = (lo[k] - x[k], x[k] - hi[k]);
            // At most one of them is positive (lo ≤ hi); adding 0 is exact.
            let t = below.max(0.0) + above.max(0.0);
            acc += t * t;
        }
        acc
    }

    /// A lower bound of the distance between any point of node a and any of node b.
    #[inline]
    pub fn min_dist_nodes(&self, a: usize, b: usize) -> f64 {
        min_dist_across(self, a, self, b)
    }

    #[inline]
    fn corners(&self, node: usize) -> (&[f64], &[f64]) {
        let d = self.d;
        (
            &self.lo[node * d..(node + 1) * d],
            &self.hi[node * d..(node + 1) * d],
        )
    }

    /// The `cap` nearest tree positions to x (itself included when x is a point of
    /// the tree), by (squared distance, position), ascending: each entry's first field
    /// is the sum whose `sqrt` is the `euclidean` distance. `out` is reused.
    pub fn nearest_sq(&self, x: &[f64], cap: usize, out: &mut Vec<(f64, usize)>) {
        out.clear();
        self.nearest_in(0, x, cap, out);
    }

    fn nearest_in(&self, node: usize, x: &[f64], cap: usize, out: &mut Vec<(f64, usize)>) {
        let nd = self.nodes[node];
        if nd.is_leaf() {
            let mut row = [0.0; LEAF];
            self.leaf_sq_distances(x, node, &mut row);
            for i in nd.start..nd.end {
                let dist = row[i - nd.start];
                let full = out.len() == cap;
                if full && (dist, i) >= *out.last().unwrap() {
                    continue;
                }
                let at = out.partition_point(|&e| e < (dist, i));
                if full {
                    out.pop();
                }
                out.insert(at, (dist, i));
            }
            return;
        }
        // Squared bounds against squared sums: the rounding of each is monotone, so a
        // box whose bound exceeds the current worst holds no point that could enter.
        let (dl, dr) = (
            self.min_sq_point(x, nd.left),
            self.min_sq_point(x, nd.right),
        );
        let (first, df, second, ds) = if dl <= dr {
            (nd.left, dl, nd.right, dr)
        } else {
            (nd.right, dr, nd.left, dl)
        };
        let worst = |out: &Vec<(f64, usize)>| {
            if out.len() == cap {
                out.last().unwrap().0
            } else {
                f64::INFINITY
            }
        };
        if df <= worst(out) {
            self.nearest_in(first, x, cap, out);
        }
        if ds <= worst(out) {
            self.nearest_in(second, x, cap, out);
        }
    }

    /// Every tree position within distance r of x (inclusive), appended to `out`.
    pub fn within(&self, x: &[f64], r: f64, out: &mut Vec<usize>) {
        let mut stack = vec![0usize];
        while let Some(node) = stack.pop() {
            if self.min_dist_point(x, node) > r {
                continue;
            }
            let nd = self.nodes[node];
            if nd.is_leaf() {
                out.extend((nd.start..nd.end).filter(|&i| euclidean(x, self.point(i)) <= r));
            } else {
                stack.push(nd.right);
                stack.push(nd.left);
            }
        }
    }
}

/// A lower bound of the distance between any point of node a of tree ta and any
/// point of node b of tree tb (two trees over the same dimension).
#[inline]
pub fn min_dist_across(ta: &KdTree, a: usize, tb: &KdTree, b: usize) -> f64 {
    let (alo, ahi) = ta.corners(a);
    let (blo, bhi) = tb.corners(b);
    let mut acc = 0.0;
    for k in 0..ta.d {
        let (below, above) = (blo[k] - ahi[k], alo[k] - bhi[k]);
        // At most one of them is positive (lo ≤ hi); adding 0 is exact.
        let t = below.max(0.0) + above.max(0.0);
        acc += t * t;
    }
    acc.sqrt()
}

/// Per point (tree order): the other points within its core distance, as tree
/// positions, in compressed rows: `of(i) = &list[offset[i]..offset[i + 1]]`.
pub struct Balls {
    pub offset: Vec<usize>,
    pub list: Vec<u32>,
}

impl Balls {
    #[inline]
    pub fn of(&self, i: usize) -> &[u32] {
        &self.list[self.offset[i]..self.offset[i + 1]]
    }
}

/// Points per rayon task in the k-NN pass.
const KNN_CHUNK: usize = 512;

/// c_k of every point (tree order) — the k-th nearest other point, duplicates at
/// distance 0 counting — and the balls {j ≠ i : d(i, j) ≤ c_k(i)}. 1 ≤ k ≤ n − 1.
///
/// Each query asks for the k + 2 nearest (the point itself included) by squared
/// distance: the `sqrt` of entry k is c_k (`sqrt` is monotone, so the k-th smallest
/// sum gives the k-th smallest distance); if the `sqrt` of entry k + 1 is larger, the
/// first k + 1 are the ball and the point itself; otherwise distances tie at c_k and a
/// range query collects the whole ball.
pub fn core_distances_and_balls(tree: &KdTree, k: usize) -> (Vec<f64>, Balls) {
    let n = tree.n;
    assert!(
        k >= 1 && k < n,
        "core distance k = {k} needs 1 <= k <= n - 1"
    );
    assert!(n <= u32::MAX as usize, "at most 2^32 points");
    let cap = (k + 2).min(n);
    let chunks: Vec<(Vec<f64>, Vec<usize>, Vec<u32>)> = (0..n)
        .into_par_iter()
        .step_by(KNN_CHUNK)
        .map(|first| {
            let last = (first + KNN_CHUNK).min(n);
            let (mut core, mut counts, mut list) = (Vec::new(), Vec::new(), Vec::new());
            let mut near = Vec::with_capacity(cap);
            let mut range = Vec::new();
            for i in first..last {
                let x = tree.point(i);
                tree.nearest_sq(x, cap, &mut near);
                let c = near[k].0.sqrt();
                let before = list.len();
                if near.len() > k + 1 && near[k + 1].0.sqrt() <= c {
                    range.clear();
                    tree.within(x, c, &mut range);
                    list.extend(range.iter().filter(|&&j| j != i).map(|&j| j as u32));
                } else {
                    list.extend(near[..=k].iter().filter(|e| e.1 != i).map(|e| e.1 as u32));
                }
                core.push(c);
                counts.push(list.len() - before);
            }
            (core, counts, list)
        })
        .collect();
    let mut core = Vec::with_capacity(n);
    let mut offset = Vec::with_capacity(n + 1);
    offset.push(0);
    let mut list = Vec::with_capacity(chunks.iter().map(|c| c.2.len()).sum());
    for (c, counts, l) in chunks {
        core.extend(c);
        for m in counts {
            offset.push(offset.last().unwrap() + m);
        }
        list.extend(l);
    }
    (core, Balls { offset, list })
}

#[cfg(test)]
mod tests {
    use super::super::distance::{core_distances, Distances};
    use super::*;

    fn scatter(n: usize, d: usize, modulo: usize) -> Vec<f64> {
        (0..n * d)
            .map(|i| ((i * 2654435761usize) % modulo) as f64 / 7.0)
            .collect()
    }

    #[test]
    fn tree_holds_every_point_once_inside_its_boxes() {
        let (n, d) = (1000, 3);
        let pts = scatter(n, d, 997);
        let t = KdTree::build(&pts, n, d);
        let mut seen = t.index.clone();
        seen.sort();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        for (id, nd) in t.nodes.iter().enumerate() {
            for i in nd.start..nd.end {
                assert_eq!(t.point(i), &pts[t.index[i] * d..(t.index[i] + 1) * d]);
                assert_eq!(t.min_dist_point(t.point(i), id), 0.0);
            }
            if !nd.is_leaf() {
                let (l, r) = (t.nodes[nd.left], t.nodes[nd.right]);
                assert_eq!(
                    (l.start, l.end, r.start, r.end),
                    (nd.start, r.start, l.end, nd.end)
                );
            } else {
                assert!(nd.end - nd.start <= LEAF);
            }
        }
    }

    #[test]
    fn core_distances_equal_the_dense_ones_bitwise_and_balls_are_complete() {
        // Many exact ties and duplicates (values on a coarse grid).
        for (n, d, modulo, k) in [(700, 2, 13, 3), (900, 4, 101, 5), (300, 1, 7, 6)] {
            let pts = scatter(n, d, modulo);
            let t = KdTree::build(&pts, n, d);
            let (core, balls) = core_distances_and_balls(&t, k);
            let dense = core_distances(&Distances::euclidean(&pts, n, d), k);
            for (i, &c) in core.iter().enumerate() {
                let orig = t.index[i];
                assert_eq!(c.to_bits(), dense[orig].to_bits(), "point {orig}");
                let mut want: Vec<usize> = (0..n)
                    .filter(|&j| j != i && euclidean(t.point(i), t.point(j)) <= c)
                    .collect();
                let mut got: Vec<usize> = balls.of(i).iter().map(|&j| j as usize).collect();
                want.sort();
                got.sort();
                assert_eq!(got, want, "ball of point {orig}");
            }
        }
    }
}
