//! The four grouping criteria of DESIGN.md §5 step 5. Each turns the pairwise
//! distances between branch descriptors into groups of branches; a group of two or
//! more branches is merged into one.
//!
//! - *similarity*: every HDBSCAN cluster becomes a group; noise points stay alone.
//! - *dissimilarity*: HDBSCAN on d'(a,b) = max d − d(a,b) (a ≠ b), so far-apart
//!   branches become neighbours and are grouped.
//! - *variance*: start from the similarity groups (noise as singletons) and merge,
//!   Ward-style, the pair of groups whose union raises the within-group sum of
//!   squares least, while the between-group share of the total stays ≥ τ.
//!   Favours large groups.
//! - *random*: a control. k = the number of similarity clusters this epoch; every
//!   branch goes to one of k groups uniformly at random (seeded); singletons stay.

use super::hdbscan::{hdbscan_precomputed, ClusterError, Clustering, HdbscanParams};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    Similarity,
    Dissimilarity,
    Variance,
    Random,
}

impl Criterion {
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Similarity => "similarity",
            Criterion::Dissimilarity => "dissimilarity",
            Criterion::Variance => "variance",
            Criterion::Random => "random",
        }
    }
}

/// The groups a criterion chose, and the clustering it ran.
#[derive(Clone, Debug)]
pub struct Grouping {
    /// Every branch exactly once; groups of one are branches that stay alone.
    pub groups: Vec<Vec<usize>>,
    /// The HDBSCAN run the groups come from (on d' for dissimilarity); None when
    /// there were fewer than two branches.
    pub clustering: Option<Clustering>,
}

/// Groups `n` branches by `criterion` from their distances `dist` (`[n, n]`,
/// symmetric, zero diagonal).
pub fn group(
    criterion: Criterion,
    dist: &[f64],
    n: usize,
    params: &HdbscanParams,
    variance_tau: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Grouping, ClusterError> {
    if n < 2 {
        return Ok(Grouping {
            groups: (0..n).map(|b| vec![b]).collect(),
            clustering: None,
        });
    }
    let clustering = match criterion {
        Criterion::Dissimilarity => hdbscan_precomputed(&flipped(dist, n), n, params)?,
        _ => hdbscan_precomputed(dist, n, params)?,
    };
    let clusters = groups_of_labels(&clustering.labels);
    let groups = match criterion {
        Criterion::Similarity | Criterion::Dissimilarity => clusters,
        Criterion::Variance => ward_merge(clusters, dist, n, variance_tau),
        Criterion::Random => {
            let k = clustering
                .labels
                .iter()
                .filter(|&&l| l >= 0)
                .max()
                .map_or(0, |&m| m + 1);
            random_groups(n, k as usize, rng)
        }
    };
    Ok(Grouping {
        groups,
        clustering: Some(clustering),
    })
}

/// d'(a,b) = max d − d(a,b) off the diagonal, 0 on it.
fn flipped(dist: &[f64], n: usize) -> Vec<f64> {
    let max = dist.iter().cloned().fold(0.0, f64::max);
    (0..n * n)
        .map(|i| if i / n == i % n { 0.0 } else { max - dist[i] })
        .collect()
}

/// Clusters in label order, then each noise point (−1) alone.
fn groups_of_labels(labels: &[i64]) -> Vec<Vec<usize>> {
    let clusters = labels
        .iter()
        .filter(|&&l| l >= 0)
        .max()
        .map_or(0, |&m| m as usize + 1);
    let mut groups = vec![Vec::new(); clusters];
    let mut noise = Vec::new();
    for (b, &l) in labels.iter().enumerate() {
        if l >= 0 {
            groups[l as usize].push(b);
        } else {
            noise.push(vec![b]);
        }
    }
    groups.extend(noise);
    groups
}

/// Sum of squares of a group about its centroid, from pairwise distances:
/// SS(g) = (1/|g|) Σ_{a<b ∈ g} d(a,b)².
fn sum_of_squares(group: &[usize], dist: &[f64], n: usize) -> f64 {
    let mut pairs = 0.0;
    for (i, &a) in group.iter().enumerate() {
        for &b in &group[i + 1..] {
            pairs += dist[a * n + b] * dist[a * n + b];
        }
    }
    pairs / group.len() as f64
}

/// Ward-style agglomeration from `groups`: repeatedly merge the pair whose union
/// raises the within-group sum of squares least, as long as the between-group
/// share of the total sum of squares stays ≥ `tau`.
fn ward_merge(mut groups: Vec<Vec<usize>>, dist: &[f64], n: usize, tau: f64) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..n).collect();
    let total = sum_of_squares(&all, dist, n);
    if total <= 0.0 {
        return groups;
    }
    let mut within: f64 = groups.iter().map(|g| sum_of_squares(g, dist, n)).sum();
    while groups.len() > 1 {
        let mut best: Option<(f64, usize, usize)> = None;
        for i in 0..groups.len() {
            for j in i + 1..groups.len() {
                let union: Vec<usize> = groups[i].iter().chain(&groups[j]).copied().collect();
                let raise = sum_of_squares(&union, dist, n)
                    - sum_of_squares(&groups[i], dist, n)
                    - sum_of_squares(&groups[j], dist, n);
                if best.is_none_or(|(r, _, _)| raise < r) {
                    best = Some((raise, i, j));
                }
            }
        }
        let (raise, i, j) = best.expect("at least two groups");
        if 1.0 - (within + raise) / total < tau {
            break;
        }
        within += raise;
        let merged = groups.remove(j);
        groups[i].extend(merged);
        groups[i].sort_unstable();
    }
    groups
}

/// Each of `n` branches to one of `k` groups uniformly at random; empty groups
/// are dropped. k = 0 leaves every branch alone.
fn random_groups(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    if k == 0 {
        return (0..n).map(|b| vec![b]).collect();
    }
    let mut groups = vec![Vec::new(); k];
    for b in 0..n {
        groups[rng.random_range(0..k)].push(b);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Distances between points on a line.
    fn line(points: &[f64]) -> Vec<f64> {
        let n = points.len();
        (0..n * n)
            .map(|i| (points[i / n] - points[i % n]).abs())
            .collect()
    }

    fn params() -> HdbscanParams {
        HdbscanParams::new(2)
    }

    #[test]
    fn similarity_groups_close_branches_and_leaves_far_ones_alone() {
        // Two tight triples and one far point.
        let d = line(&[0.0, 0.01, 0.02, 5.0, 5.01, 5.02, 20.0]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let g = group(Criterion::Similarity, &d, 7, &params(), 0.5, &mut rng).unwrap();
        let mut groups = g.groups.clone();
        groups.sort();
        assert_eq!(groups, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    }

    #[test]
    fn dissimilarity_flips_the_metric() {
        let d = line(&[0.0, 0.01, 5.0, 5.01]);
        let f = flipped(&d, 4);
        assert_eq!(f[0], 0.0);
        assert!((f[1] - (5.01 - 0.01)).abs() < 1e-12);
        assert!(
            (f[3] - 0.0).abs() < 1e-12,
            "the farthest pair becomes the nearest"
        );
    }

    #[test]
    fn variance_merges_groups_while_the_between_share_stays_above_tau() {
        let d = line(&[0.0, 0.1, 1.0, 1.1, 10.0, 10.1]);
        let start = vec![vec![0, 1], vec![2, 3], vec![4, 5]];
        // τ = 0.5: merging {0,1} with {2,3} keeps almost all variance between groups.
        assert_eq!(
            ward_merge(start.clone(), &d, 6, 0.5),
            vec![vec![0, 1, 2, 3], vec![4, 5]]
        );
        // τ just under 1: no merge keeps that much.
        assert_eq!(ward_merge(start.clone(), &d, 6, 0.9999), start);
        // τ = 0: everything merges.
        assert_eq!(ward_merge(start, &d, 6, 0.0), vec![vec![0, 1, 2, 3, 4, 5]]);
    }

    #[test]
    fn random_uses_k_groups_and_the_seed() {
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        let ga = random_groups(10, 3, &mut a);
        assert_eq!(ga, random_groups(10, 3, &mut b));
        // This seed fills all three groups (a group stays empty only with
        // probability 3·(2/3)^10 ≈ 5%).
        assert_eq!(ga.len(), 3, "{ga:?}");
        let mut all: Vec<usize> = ga.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(
            random_groups(4, 0, &mut a),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
    }

    #[test]
    fn random_spreads_branches_uniformly_over_k_groups() {
        // 400 draws of 10 branches into k = 3 groups: never more than k groups,
        // almost always exactly k, and two given branches share a group about 1/3
        // of the time (σ ≈ 0.024 over 400 draws).
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (draws, mut full, mut together) = (400, 0, 0);
        for _ in 0..draws {
            let g = random_groups(10, 3, &mut rng);
            assert!(g.len() <= 3, "{g:?}");
            full += usize::from(g.len() == 3);
            together += usize::from(g.iter().any(|g| g.contains(&0) && g.contains(&9)));
        }
        assert!(
            full >= draws * 9 / 10,
            "{full} of {draws} draws used all 3 groups"
        );
        let share = together as f64 / draws as f64;
        assert!(
            (0.25..0.42).contains(&share),
            "branches 0 and 9 together in {share}"
        );
    }

    #[test]
    fn random_takes_k_from_the_similarity_clusters() {
        // Three clusters and a far point: k = 3, whatever the seed.
        let d = line(&[0.0, 0.01, 0.02, 5.0, 5.01, 5.02, 9.0, 9.01, 9.02, 20.0]);
        let mut sizes = Vec::new();
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let g = group(Criterion::Random, &d, 10, &params(), 0.5, &mut rng).unwrap();
            let labels = &g.clustering.as_ref().unwrap().labels;
            assert_eq!(labels.iter().max(), Some(&2), "{labels:?}");
            let mut all = g.groups.concat();
            all.sort();
            assert_eq!(all, (0..10).collect::<Vec<_>>());
            sizes.push(g.groups.len());
        }
        assert!(sizes.iter().all(|&k| k <= 3), "{sizes:?}");
        assert!(sizes.iter().filter(|&&k| k == 3).count() >= 15, "{sizes:?}");
    }
}
