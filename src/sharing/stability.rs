//! How far two groupings of the same tasks agree: the adjusted Rand index
//! (Hubert & Arabie 1985) in the pair-counting form scikit-learn's
//! `adjusted_rand_score` uses. `reproduce` reports it between seeds' final
//! groupings: 1 = the same partition, ≈ 0 = no more alike than chance.

/// Task → group index, from the tasks of each group (every task exactly once).
pub fn labels_of_groups(groups: &[Vec<usize>]) -> Vec<usize> {
    let tasks = groups.iter().map(Vec::len).sum();
    let mut labels = vec![usize::MAX; tasks];
    for (g, group) in groups.iter().enumerate() {
        for &t in group {
            labels[t] = g;
        }
    }
    assert!(
        labels.iter().all(|&l| l != usize::MAX),
        "groups {groups:?} do not cover tasks 0..{tasks}"
    );
    labels
}

/// ARI of two labelings of the same items. Both partitions trivial in the same
/// way (one group, or all singletons) count as a perfect match, as in scikit-learn.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    assert_eq!(a.len(), b.len(), "two labelings of different lengths");
    // Pairs of items: together in both (tp), only in a (fn_), only in b (fp), neither (tn).
    let (mut tp, mut fn_, mut fp, mut tn) = (0f64, 0f64, 0f64, 0f64);
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            match (a[i] == a[j], b[i] == b[j]) {
                (true, true) => tp += 1.0,
                (true, false) => fn_ += 1.0,
                (false, true) => fp += 1.0,
                (false, false) => tn += 1.0,
            }
        }
    }
    if fn_ == 0.0 && fp == 0.0 {
        return 1.0;
    }
    2.0 * (tp * tn - fn_ * fp) / ((tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn))
}

/// Mean and minimum of the ARI over every pair of `groupings`; None with fewer than two.
pub fn pairwise_ari(groupings: &[Vec<Vec<usize>>]) -> Option<(f64, f64)> {
    let labels: Vec<Vec<usize>> = groupings.iter().map(|g| labels_of_groups(g)).collect();
    let mut values = Vec::new();
    for i in 0..labels.len() {
        for j in i + 1..labels.len() {
            values.push(adjusted_rand_index(&labels[i], &labels[j]));
        }
    }
    (!values.is_empty()).then(|| {
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        (mean, values.iter().copied().fold(f64::INFINITY, f64::min))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of scikit-learn's `adjusted_rand_score` documentation, and
    /// hand-checked cases.
    #[test]
    fn matches_scikit_learn_on_its_documented_examples() {
        let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 1]),
            1.0
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]),
            1.0
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 2], &[0, 0, 1, 1]),
            0.5714285714285714
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]),
            0.5714285714285714
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 0, 0], &[0, 1, 2, 3]),
            0.0
        ));
        assert!(close(
            adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]),
            -0.5
        ));
        assert!(close(adjusted_rand_index(&[0, 1, 2], &[2, 0, 1]), 1.0));
    }

    #[test]
    fn pairwise_over_seeds_gives_mean_and_min() {
        let a = vec![vec![0, 1], vec![2, 3]];
        let b = vec![vec![1, 0], vec![3, 2]];
        let c = vec![vec![0, 2], vec![1, 3]];
        // a = b (1), a vs c and b vs c (−0.5 each).
        let (mean, min) = pairwise_ari(&[a.clone(), b, c]).unwrap();
        assert!((mean - 0.0).abs() < 1e-12 && (min + 0.5).abs() < 1e-12);
        assert_eq!(pairwise_ari(&[a]), None);
        assert_eq!(labels_of_groups(&[vec![2], vec![0, 1]]), vec![1, 1, 0]);
    }
}
