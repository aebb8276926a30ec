//! Step 5: choosing the flat clustering from the condensed tree, labelling points,
//! membership probabilities (the library's `get_clusters`, `do_labelling`,
//! `get_probabilities`).
//!
//! - Excess of mass (`Eom`): from the deepest cluster up, keep a cluster if its own
//!   stability is at least the sum of its selected descendants'; else pass that sum
//!   up. The root takes part only with `allow_single_cluster`. The library keeps
//!   the running sum in a C `float` (`cdef float subtree_stability`), adding each
//!   child in double and rounding to f32; we do the same, since that rounding
//!   decides near-ties and what a rejected cluster passes up.
//! - Leaf: the clusters with no child clusters.
//! - Labels: selected clusters in increasing id order get 0, 1, …; each point gets
//!   the label of its nearest selected ancestor, −1 if there is none.

use std::collections::HashMap;

use super::condense::{root_of, CondensedEdge};

/// How clusters are picked from the condensed tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Excess of mass (the library's default).
    #[default]
    Eom,
    /// The leaves of the cluster tree.
    Leaf,
}

/// Children clusters of every cluster, in row order.
fn cluster_children(tree: &[CondensedEdge]) -> HashMap<usize, Vec<usize>> {
    let mut map: HashMap<usize, Vec<usize>> = HashMap::new();
    for e in tree.iter().filter(|e| e.size > 1) {
        map.entry(e.parent).or_default().push(e.child);
    }
    map
}

/// The selected cluster ids, increasing (label i is cluster `selected[i]`).
/// stability: indexed by `id − root` (from `condense::stability`).
pub fn select_clusters(
    tree: &[CondensedEdge],
    stability: &[f64],
    selection: Selection,
    allow_single_cluster: bool,
) -> Vec<usize> {
    let root = root_of(tree);
    let last = root + stability.len() - 1;
    let children = cluster_children(tree);
    let first = if allow_single_cluster { root } else { root + 1 };
    // is_cluster over the candidates first..=last (the root only when allowed).
    let mut is_cluster = vec![true; last + 1 - root];
    is_cluster[..first - root].fill(false);

    match selection {
        Selection::Eom => {
            let mut stab = stability.to_vec();
            for node in (first..=last).rev() {
                let mut subtree: f32 = 0.0;
                for &ch in children.get(&node).map(Vec::as_slice).unwrap_or(&[]) {
                    subtree = (subtree as f64 + stab[ch - root]) as f32;
                }
                if subtree as f64 > stab[node - root] {
                    is_cluster[node - root] = false;
                    stab[node - root] = subtree as f64;
                } else {
                    // Deselect every descendant cluster.
                    let mut stack: Vec<usize> = children.get(&node).cloned().unwrap_or_default();
                    while let Some(c) = stack.pop() {
                        is_cluster[c - root] = false;
                        if let Some(cs) = children.get(&c) {
                            stack.extend_from_slice(cs);
                        }
                    }
                }
            }
        }
        Selection::Leaf => {
            // With no cluster tree at all there are no leaves and nothing is selected
            // (the library marks the root, then overwrites it with the empty leaf set).
            for (i, flag) in is_cluster.iter_mut().enumerate() {
                let id = root + i;
                *flag = id != root && !children.contains_key(&id);
            }
        }
    }
    (root..=last).filter(|&c| is_cluster[c - root]).collect()
}

/// The max λ of each cluster's own rows (the library's `max_lambdas`), indexed by
/// node id (points included, at 0) up to the largest parent.
pub(crate) fn max_lambdas(tree: &[CondensedEdge]) -> Vec<f64> {
    let last = tree.iter().map(|e| e.parent).max().unwrap_or(0);
    let mut deaths = vec![0.0f64; last + 1];
    let mut seen = vec![false; last + 1];
    for e in tree {
        let d = &mut deaths[e.parent];
        if !seen[e.parent] {
            *d = e.lambda;
            seen[e.parent] = true;
        } else if e.lambda > *d {
            *d = e.lambda;
        }
    }
    deaths
}

/// Labels: [n] in {−1, 0, …, selected.len() − 1}.
pub fn label_points(
    tree: &[CondensedEdge],
    selected: &[usize],
    allow_single_cluster: bool,
) -> Vec<i64> {
    let root = root_of(tree);
    let n = root;
    let last = tree.iter().map(|e| e.parent).max().unwrap();
    let label_of: HashMap<usize, i64> = selected
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as i64))
        .collect();

    // parent of every node, and each point's own λ.
    let mut parent = vec![usize::MAX; last.max(tree.iter().map(|e| e.child).max().unwrap()) + 1];
    let mut point_lambda = vec![0.0; n];
    let mut root_max_lambda = 0.0f64;
    for e in tree {
        parent[e.child] = e.parent;
        if e.child < n {
            point_lambda[e.child] = e.lambda;
        }
        if e.parent == root && e.lambda > root_max_lambda {
            root_max_lambda = e.lambda;
        }
    }
    // top[c]: the selected cluster c belongs to (itself if selected), else the root.
    // Ids increase down the tree, so a parent is resolved before its children.
    let mut top = vec![root; last + 1 - root];
    for c in root + 1..=last {
        top[c - root] = if label_of.contains_key(&c) {
            c
        } else {
            top[parent[c] - root]
        };
    }
    let single = selected.len() == 1 && allow_single_cluster && label_of.contains_key(&root);
    (0..n)
        .map(|p| {
            let t = top[parent[p] - root];
            if t != root {
                label_of[&t]
            } else if single && point_lambda[p] >= root_max_lambda {
                label_of[&root]
            } else {
                -1
            }
        })
        .collect()
}

/// Membership strength of each point in its cluster: λ_point / λ_max(cluster),
/// with λ_max the largest λ among the cluster's own rows; 1 where that is 0 or the
/// point's λ is infinite; 0 for noise.
pub fn probabilities(tree: &[CondensedEdge], labels: &[i64], selected: &[usize]) -> Vec<f64> {
    let root = root_of(tree);
    let deaths = max_lambdas(tree);
    let mut out = vec![0.0; labels.len()];
    for e in tree.iter().filter(|e| e.child < root) {
        let label = labels[e.child];
        if label < 0 {
            continue;
        }
        let max_lambda = deaths[selected[label as usize]];
        out[e.child] = if max_lambda == 0.0 || !e.lambda.is_finite() {
            1.0
        } else {
            e.lambda.min(max_lambda) / max_lambda
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::condense::stability;
    use super::*;
    use crate::sharing::hdbscan::condense::tests::ce;

    /// 6 points. Root 6 splits at λ 0.1 into 7 = {0,1,2} and 8 = {3,4,5}; 8 splits at
    /// λ 0.5 into nothing (its points fall out at 0.5, 0.6, 2.0); 7's at 1.0.
    fn toy() -> Vec<CondensedEdge> {
        vec![
            ce(6, 7, 0.1, 3),
            ce(6, 8, 0.1, 3),
            ce(7, 0, 1.0, 1),
            ce(7, 1, 1.0, 1),
            ce(7, 2, 1.0, 1),
            ce(8, 3, 0.5, 1),
            ce(8, 4, 0.6, 1),
            ce(8, 5, 2.0, 1),
        ]
    }

    #[test]
    fn eom_picks_both_children_and_labels_in_id_order() {
        let t = toy();
        let s = stability(&t);
        let sel = select_clusters(&t, &s, Selection::Eom, false);
        assert_eq!(sel, vec![7, 8]);
        let labels = label_points(&t, &sel, false);
        assert_eq!(labels, vec![0, 0, 0, 1, 1, 1]);
        let p = probabilities(&t, &labels, &sel);
        assert_eq!(p, vec![1.0, 1.0, 1.0, 0.25, 0.3, 1.0]);
    }

    #[test]
    fn single_cluster_when_the_root_is_more_stable() {
        // 5 points; root 5 loses point 0 at λ 10 and splits at λ 1 into 6 = {1,2} and
        // 7 = {3,4}. The root's own stability (14) dwarfs its children's (0.2 each).
        let t = vec![
            ce(5, 0, 10.0, 1),
            ce(5, 6, 1.0, 2),
            ce(5, 7, 1.0, 2),
            ce(6, 1, 1.1, 1),
            ce(6, 2, 1.1, 1),
            ce(7, 3, 1.1, 1),
            ce(7, 4, 1.1, 1),
        ];
        let s = stability(&t);
        assert_eq!(select_clusters(&t, &s, Selection::Eom, false), vec![6, 7]);
        let sel = select_clusters(&t, &s, Selection::Eom, true);
        assert_eq!(sel, vec![5]);
        // The root's rows reach λ 10 (point 0): only point 0 is in; the rest is noise.
        assert_eq!(label_points(&t, &sel, true), vec![0, -1, -1, -1, -1]);
    }

    #[test]
    fn leaf_selection_and_no_clusters() {
        let t = toy();
        let s = stability(&t);
        assert_eq!(select_clusters(&t, &s, Selection::Leaf, false), vec![7, 8]);
        // Everything falls out of the root: no clusters, all noise, for both methods.
        let flat = vec![ce(3, 0, 1.0, 1), ce(3, 1, 1.0, 1), ce(3, 2, 0.5, 1)];
        let s = stability(&flat);
        for sel in [Selection::Eom, Selection::Leaf] {
            let c = select_clusters(&flat, &s, sel, false);
            assert!(c.is_empty());
            assert_eq!(label_points(&flat, &c, false), vec![-1, -1, -1]);
        }
        // allow_single_cluster with eom: the root is the one cluster; λ ≥ 1 → in.
        let c = select_clusters(&flat, &s, Selection::Eom, true);
        assert_eq!(c, vec![3]);
        assert_eq!(label_points(&flat, &c, true), vec![0, 0, -1]);
        // leaf with no cluster tree selects nothing even when allowed (as the library).
        assert!(select_clusters(&flat, &s, Selection::Leaf, true).is_empty());
    }

    #[test]
    fn subtree_sum_is_rounded_to_f32() {
        // Root 6 → P = 7 {0..3}, 8 {4,5}; P → A = 9 {0,1}, B = 10 {2,3}.
        let t = vec![
            ce(6, 7, 0.1, 4),
            ce(6, 8, 0.1, 2),
            ce(7, 9, 0.5, 2),
            ce(7, 10, 0.5, 2),
            ce(8, 4, 1.0, 1),
            ce(8, 5, 1.0, 1),
            ce(9, 0, 1.0, 1),
            ce(9, 1, 1.0, 1),
            ce(10, 2, 1.0, 1),
            ce(10, 3, 1.0, 1),
        ];
        // S(A) + S(B) = 1 + 2⁻²⁹ > S(P) = 1 + 2⁻³⁰ in f64, but the f32 running sum is
        // exactly 1.0, so the library keeps P.
        let s = [0.0, 1.0 + 2f64.powi(-30), 5.0, 0.5, 0.5 + 2f64.powi(-29)];
        assert_eq!(select_clusters(&t, &s, Selection::Eom, false), vec![7, 8]);
        let s64 = [0.0, 1.0 + 2f64.powi(-30), 5.0, 0.5, 0.5 + 2f64.powi(-22)];
        assert_eq!(
            select_clusters(&t, &s64, Selection::Eom, false),
            vec![8, 9, 10]
        );
    }
}
