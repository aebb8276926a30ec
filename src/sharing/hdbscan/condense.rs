//! Step 4: the condensed tree and cluster stability (the library's `condense_tree`
//! and `compute_stability`).
//!
//! Walk the single-linkage tree from the root breadth-first. At each merge of
//! distance δ (λ = 1/δ, ∞ for δ = 0): if both sides have ≥ `min_cluster_size`
//! points, each becomes a new cluster; if only one does, it continues its parent's
//! cluster and the other side's points "fall out" at λ; if neither does, all
//! points fall out. Clusters are numbered n (the root), n + 1, … in the order they
//! are created, so a parent's id is always smaller than its children's.
//!
//! Rows come in the library's order (and so do the points of a falling-out side:
//! breadth-first within it), which fixes the summation order of stabilities.

use std::collections::VecDeque;

use super::linkage::LinkageRow;

/// One edge of the condensed tree: `child` (a point < n, or a cluster ≥ n) leaves
/// cluster `parent` at `lambda` = 1/distance, carrying `size` points.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CondensedEdge {
    pub parent: usize,
    pub child: usize,
    pub lambda: f64,
    pub size: usize,
}

impl CondensedEdge {
    pub fn new(parent: usize, child: usize, lambda: f64, size: usize) -> Self {
        Self {
            parent,
            child,
            lambda,
            size,
        }
    }
}

/// Node ids of the subtree at `root` in breadth-first order (left before right),
/// as the library's `bfs_from_hierarchy`.
fn bfs(hierarchy: &[LinkageRow], root: usize, n: usize, out: &mut Vec<usize>) {
    out.clear();
    let mut queue = VecDeque::from([root]);
    while let Some(node) = queue.pop_front() {
        out.push(node);
        if node >= n {
            let row = &hierarchy[node - n];
            queue.push_back(row.left);
            queue.push_back(row.right);
        }
    }
}

/// λ for a merge distance, as the library: 1/δ for δ > 0, else ∞.
fn lambda_of(distance: f64) -> f64 {
    if distance > 0.0 {
        1.0 / distance
    } else {
        f64::INFINITY
    }
}

/// hierarchy: n − 1 linkage rows → the condensed tree's rows.
pub fn condense_tree(hierarchy: &[LinkageRow], min_cluster_size: usize) -> Vec<CondensedEdge> {
    let n = hierarchy.len() + 1;
    let root = 2 * hierarchy.len();
    let size_of = |node: usize| {
        if node >= n {
            hierarchy[node - n].size
        } else {
            1
        }
    };

    let mut order = Vec::with_capacity(root + 1);
    bfs(hierarchy, root, n, &mut order);
    let mut relabel = vec![0usize; root + 1];
    relabel[root] = n;
    let mut next_label = n + 1;
    let mut ignore = vec![false; root + 1];
    let mut out = Vec::with_capacity(2 * n);
    let mut sub = Vec::new();

    // Points of the subtree at `side` fall out of `cluster` at `lambda`.
    let mut fall_out = |side: usize,
                        cluster: usize,
                        lambda: f64,
                        out: &mut Vec<CondensedEdge>,
                        ignore: &mut [bool]| {
        bfs(hierarchy, side, n, &mut sub);
        for &node in &sub {
            if node < n {
                out.push(CondensedEdge {
                    parent: cluster,
                    child: node,
                    lambda,
                    size: 1,
                });
            }
            ignore[node] = true;
        }
    };

    for &node in &order {
        if ignore[node] || node < n {
            continue;
        }
        let row = hierarchy[node - n];
        let lambda = lambda_of(row.distance);
        let (left, right) = (row.left, row.right);
        let (left_count, right_count) = (size_of(left), size_of(right));
        let cluster = relabel[node];
        let big_left = left_count >= min_cluster_size;
        let big_right = right_count >= min_cluster_size;
        if big_left && big_right {
            relabel[left] = next_label;
            next_label += 1;
            out.push(CondensedEdge {
                parent: cluster,
                child: relabel[left],
                lambda,
                size: left_count,
            });
            relabel[right] = next_label;
            next_label += 1;
            out.push(CondensedEdge {
                parent: cluster,
                child: relabel[right],
                lambda,
                size: right_count,
            });
        } else if !big_left && !big_right {
            fall_out(left, cluster, lambda, &mut out, &mut ignore);
            fall_out(right, cluster, lambda, &mut out, &mut ignore);
        } else if !big_left {
            relabel[right] = cluster;
            fall_out(left, cluster, lambda, &mut out, &mut ignore);
        } else {
            relabel[left] = cluster;
            fall_out(right, cluster, lambda, &mut out, &mut ignore);
        }
    }
    out
}

/// The root cluster's id (n) and the number of points.
pub fn root_of(tree: &[CondensedEdge]) -> usize {
    tree.iter()
        .map(|e| e.parent)
        .min()
        .expect("empty condensed tree")
}

/// Stability of every cluster, indexed by `id − root`:
/// S(C) = Σ over C's rows (λ_row − λ_birth(C)) · size_row, summed in row order;
/// λ_birth is the λ of the row where C is a child (0 for the root).
pub fn stability(tree: &[CondensedEdge]) -> Vec<f64> {
    let root = root_of(tree);
    let last = tree.iter().map(|e| e.parent).max().unwrap();
    let mut birth = vec![f64::NAN; last - root + 1];
    birth[0] = 0.0;
    for e in tree {
        if e.child > root && e.child <= last {
            let b = &mut birth[e.child - root];
            // min over rows naming this child (there is exactly one)
            *b = if b.is_nan() {
                e.lambda
            } else {
                b.min(e.lambda)
            };
        }
    }
    let mut s = vec![0.0; last - root + 1];
    for e in tree {
        s[e.parent - root] += (e.lambda - birth[e.parent - root]) * e.size as f64;
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::linkage::single_linkage;
    use super::super::mst::MstEdge;
    use super::*;

    /// Two tight pairs far apart on a line: {0,1} at distance 1, {2,3} at 1, joined at 10.
    fn two_pairs() -> Vec<LinkageRow> {
        let e = |from, to, weight| MstEdge { from, to, weight };
        single_linkage(&[e(0, 1, 1.0), e(2, 3, 1.0), e(1, 2, 10.0)])
    }

    pub(crate) fn ce(parent: usize, child: usize, lambda: f64, size: usize) -> CondensedEdge {
        CondensedEdge::new(parent, child, lambda, size)
    }

    #[test]
    fn two_clusters_by_hand() {
        let tree = condense_tree(&two_pairs(), 2);
        // Root 4 splits at λ = 0.1 into 5 = {0,1} and 6 = {2,3}; their points fall out at λ = 1.
        assert_eq!(
            tree,
            vec![
                ce(4, 5, 0.1, 2),
                ce(4, 6, 0.1, 2),
                ce(5, 0, 1.0, 1),
                ce(5, 1, 1.0, 1),
                ce(6, 2, 1.0, 1),
                ce(6, 3, 1.0, 1),
            ]
        );
        let s = stability(&tree);
        // Root: 2·(0.1 − 0)·2 = 0.4; each pair: 2·(1 − 0.1) = 1.8.
        assert!(
            (s[0] - 0.4).abs() < 1e-15 && (s[1] - 1.8).abs() < 1e-15 && (s[2] - 1.8).abs() < 1e-15
        );
    }

    #[test]
    fn small_sides_fall_out() {
        // min_cluster_size 3: no split qualifies, every point falls out of the root.
        let tree = condense_tree(&two_pairs(), 3);
        assert_eq!(tree.len(), 4);
        assert!(tree.iter().all(|e| e.parent == 4 && e.size == 1));
        // The root's top merge (δ = 10) has sides of 2 and 2 → all four points at λ = 0.1,
        // in breadth-first order of each side.
        assert_eq!(
            tree.iter().map(|e| e.child).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(tree.iter().all(|e| e.lambda == 0.1));
    }

    #[test]
    fn zero_distance_is_infinite_lambda() {
        let e = |from, to, weight| MstEdge { from, to, weight };
        let h = single_linkage(&[e(0, 1, 0.0), e(0, 2, 0.0), e(0, 3, 2.0)]);
        let tree = condense_tree(&h, 2);
        // Root: 3 falls out at 0.5, then {0,1,2} continues the root: all at ∞.
        assert_eq!(tree[0], ce(4, 3, 0.5, 1));
        assert!(tree[1..]
            .iter()
            .all(|e| e.parent == 4 && e.lambda == f64::INFINITY));
    }
}
