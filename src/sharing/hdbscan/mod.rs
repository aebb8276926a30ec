//! HDBSCAN (Campello, Moulavi & Sander 2013), written to give the same clusters as
//! the Python `hdbscan` library 0.8.44 (`algorithm="generic"`, alpha 1, no epsilon)
//! on the same points and parameters (DESIGN.md §5.3–4).
//!
//! The steps mirror the library's split into pure functions over plain arrays:
//!
//! | step | here | library |
//! | --- | --- | --- |
//! | distances, core distances c_k, mutual reachability | `distance` | `_hdbscan_reachability.mutual_reachability` |
//! | Prim's MST of the mutual-reachability graph | `mst` | `_hdbscan_linkage.mst_linkage_core` |
//! | single-linkage hierarchy | `linkage` | `_hdbscan_linkage.label` |
//! | condensed tree, stability | `condense` | `_hdbscan_tree.condense_tree`, `compute_stability` |
//! | EOM / leaf selection, labels, probabilities | `select` | `_hdbscan_tree.get_clusters` |
//! | GLOSH outlier scores | `outlier` | `_hdbscan_tree.outlier_scores` |
//!
//! One deliberate difference: MST edges of equal weight are sorted stably; the
//! library's `np.argsort` is not stable (see `mst::sort_by_weight`). Clusters are the
//! same; the numbering of clusters that split at exactly the same height can differ.

pub mod condense;
pub mod distance;
pub mod linkage;
pub mod mst;
pub mod outlier;
pub mod select;

use std::time::Instant;

pub use condense::CondensedEdge;
pub use distance::Distances;
pub use linkage::LinkageRow;
pub use mst::MstEdge;
pub use select::Selection;

/// Parameters, with the library's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HdbscanParams {
    /// Smallest group of points that counts as a cluster (≥ 2).
    pub min_cluster_size: usize,
    /// k of the core distance: the k-th nearest *other* point. `None`: min_cluster_size.
    /// Values above n − 1 are lowered to n − 1, as the library does.
    pub min_samples: Option<usize>,
    pub selection: Selection,
    /// Let the root (all points) be the one cluster when it is the most stable.
    pub allow_single_cluster: bool,
}

impl Default for HdbscanParams {
    fn default() -> Self {
        HdbscanParams {
            min_cluster_size: 5,
            min_samples: None,
            selection: Selection::Eom,
            allow_single_cluster: false,
        }
    }
}

impl HdbscanParams {
    pub fn new(min_cluster_size: usize) -> Self {
        HdbscanParams {
            min_cluster_size,
            ..Default::default()
        }
    }
}

/// The result, with every intermediate a grouping log wants.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    /// [n]: cluster 0, 1, … (clusters in the library's order), −1 for noise.
    pub labels: Vec<i64>,
    /// [n]: membership strength in [0, 1]; 0 for noise.
    pub probabilities: Vec<f64>,
    /// [n]: GLOSH scores (larger = more outlying); NaN where the library gives NaN.
    pub outlier_scores: Vec<f64>,
    /// The condensed tree: the root is node n, clusters n + 1, …
    pub condensed_tree: Vec<CondensedEdge>,
    /// The MST of the mutual-reachability graph, (from, to, weight), by weight.
    pub mst: Vec<(usize, usize, f64)>,
    /// The single-linkage hierarchy (scipy format).
    pub single_linkage: Vec<LinkageRow>,
    /// [n]: c_k of every point.
    pub core_distances: Vec<f64>,
    /// Condensed-tree id of each label: label i is cluster `selected[i]`.
    pub selected: Vec<usize>,
    /// The k actually used: min(min_samples, n − 1).
    pub min_samples_used: usize,
}

impl Clustering {
    pub fn n_clusters(&self) -> usize {
        self.selected.len()
    }

    /// Points per cluster, by label.
    pub fn cluster_sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0; self.n_clusters()];
        for &l in self.labels.iter().filter(|&&l| l >= 0) {
            sizes[l as usize] += 1;
        }
        sizes
    }

    pub fn noise_count(&self) -> usize {
        self.labels.iter().filter(|&&l| l < 0).count()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClusterError {
    #[error("hdbscan needs at least 2 points, got {n}")]
    TooFewPoints { n: usize },

    #[error("points: {len} values is not n × d = {n} × {d}")]
    PointsShape { len: usize, n: usize, d: usize },

    #[error("points: d = 0 dimensions; each point needs at least one coordinate")]
    ZeroDimensions,

    #[error("distance matrix: {len} values is not n × n = {n} × {n}")]
    MatrixShape { len: usize, n: usize },

    #[error("min_cluster_size = {0}: must be at least 2")]
    MinClusterSize(usize),

    #[error("min_samples = 0: must be at least 1")]
    MinSamplesZero,

    #[error("point {row}, coordinate {col} is {value}: expected finite numbers")]
    NonFinitePoint { row: usize, col: usize, value: f64 },

    #[error("distance matrix [{i}, {j}] is {value}: expected finite, non-negative distances")]
    BadDistance { i: usize, j: usize, value: f64 },

    #[error("distance matrix [{i}, {i}] is {value}: the diagonal must be 0")]
    NonZeroDiagonal { i: usize, value: f64 },

    #[error("distance matrix is not symmetric: [{i}, {j}] = {dij} but [{j}, {i}] = {dji}")]
    NotSymmetric {
        i: usize,
        j: usize,
        dij: f64,
        dji: f64,
    },
}

/// Times of each step in seconds, for benchmarks and the summary.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StepTimes {
    pub core_distances: f64,
    pub mst: f64,
    pub tree: f64,
}

/// HDBSCAN on Euclidean points. points: [n, d].
pub fn hdbscan(
    points: &[f64],
    n: usize,
    d: usize,
    params: &HdbscanParams,
) -> Result<Clustering, ClusterError> {
    hdbscan_timed(points, n, d, params).map(|(c, _)| c)
}

/// `hdbscan`, also returning how long each step took.
pub fn hdbscan_timed(
    points: &[f64],
    n: usize,
    d: usize,
    params: &HdbscanParams,
) -> Result<(Clustering, StepTimes), ClusterError> {
    if points.len() != n * d {
        return Err(ClusterError::PointsShape {
            len: points.len(),
            n,
            d,
        });
    }
    if d == 0 {
        return Err(ClusterError::ZeroDimensions);
    }
    if let Some(k) = points.iter().position(|v| !v.is_finite()) {
        return Err(ClusterError::NonFinitePoint {
            row: k / d,
            col: k % d,
            value: points[k],
        });
    }
    run(&Distances::euclidean(points, n, d), params)
}

/// HDBSCAN on a precomputed distance matrix. dist: [n, n], symmetric, finite,
/// non-negative, zero diagonal.
pub fn hdbscan_precomputed(
    dist: &[f64],
    n: usize,
    params: &HdbscanParams,
) -> Result<Clustering, ClusterError> {
    hdbscan_precomputed_timed(dist, n, params).map(|(c, _)| c)
}

/// `hdbscan_precomputed`, also returning how long each step took.
pub fn hdbscan_precomputed_timed(
    dist: &[f64],
    n: usize,
    params: &HdbscanParams,
) -> Result<(Clustering, StepTimes), ClusterError> {
    if dist.len() != n * n {
        return Err(ClusterError::MatrixShape { len: dist.len(), n });
    }
    for i in 0..n {
        for j in 0..n {
            let v = dist[i * n + j];
            if !v.is_finite() || v < 0.0 {
                return Err(ClusterError::BadDistance { i, j, value: v });
            }
            if i == j && v != 0.0 {
                return Err(ClusterError::NonZeroDiagonal { i, value: v });
            }
            if j > i && v != dist[j * n + i] {
                return Err(ClusterError::NotSymmetric {
                    i,
                    j,
                    dij: v,
                    dji: dist[j * n + i],
                });
            }
        }
    }
    run(&Distances::precomputed(dist, n), params)
}

fn run(dist: &Distances, params: &HdbscanParams) -> Result<(Clustering, StepTimes), ClusterError> {
    let n = dist.n();
    if n < 2 {
        return Err(ClusterError::TooFewPoints { n });
    }
    if params.min_cluster_size < 2 {
        return Err(ClusterError::MinClusterSize(params.min_cluster_size));
    }
    let min_samples = params.min_samples.unwrap_or(params.min_cluster_size);
    if min_samples == 0 {
        return Err(ClusterError::MinSamplesZero);
    }
    let k = min_samples.min(n - 1);
    let mut times = StepTimes::default();

    let t = Instant::now();
    let core = distance::core_distances(dist, k);
    times.core_distances = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let sorted = mst::sort_by_weight(&mst::prim(dist, &core));
    times.mst = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let hierarchy = linkage::single_linkage(&sorted);
    let tree = condense::condense_tree(&hierarchy, params.min_cluster_size);
    let stability = condense::stability(&tree);
    let selected = select::select_clusters(
        &tree,
        &stability,
        params.selection,
        params.allow_single_cluster,
    );
    let labels = select::label_points(&tree, &selected, params.allow_single_cluster);
    let probabilities = select::probabilities(&tree, &labels, &selected);
    let outlier_scores = outlier::outlier_scores(&tree);
    times.tree = t.elapsed().as_secs_f64();

    Ok((
        Clustering {
            labels,
            probabilities,
            outlier_scores,
            condensed_tree: tree,
            mst: sorted.iter().map(|e| (e.from, e.to, e.weight)).collect(),
            single_linkage: hierarchy,
            core_distances: core,
            selected,
            min_samples_used: k,
        },
        times,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tight groups of 4 on a line and one far point.
    fn toy() -> Vec<f64> {
        vec![0.0, 0.1, 0.2, 0.3, 10.0, 10.1, 10.2, 10.3, 50.0]
    }

    #[test]
    fn two_groups_and_a_noise_point() {
        let c = hdbscan(&toy(), 9, 1, &HdbscanParams::new(3)).unwrap();
        assert_eq!(c.labels, vec![0, 0, 0, 0, 1, 1, 1, 1, -1]);
        assert_eq!(c.n_clusters(), 2);
        assert_eq!(c.cluster_sizes(), vec![4, 4]);
        assert_eq!(c.noise_count(), 1);
        assert_eq!(c.min_samples_used, 3);
        assert_eq!(c.mst.len(), 8);
        assert!(c.mst.windows(2).all(|w| w[0].2 <= w[1].2));
        assert_eq!(c.probabilities[8], 0.0);
        assert!(c.outlier_scores[8] > 0.9);
    }

    #[test]
    fn precomputed_equals_euclidean() {
        let p = toy();
        let d = distance::pairwise_euclidean(&p, 9, 1);
        let a = hdbscan(&p, 9, 1, &HdbscanParams::new(3)).unwrap();
        let b = hdbscan_precomputed(&d, 9, &HdbscanParams::new(3)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn min_samples_is_clamped_to_n_minus_1() {
        let c = hdbscan(
            &toy()[..3],
            3,
            1,
            &HdbscanParams {
                min_samples: Some(10),
                ..HdbscanParams::new(2)
            },
        )
        .unwrap();
        assert_eq!(c.min_samples_used, 2);
    }

    #[test]
    fn errors() {
        let p = HdbscanParams::new(2);
        assert_eq!(
            hdbscan(&[1.0], 1, 1, &p),
            Err(ClusterError::TooFewPoints { n: 1 })
        );
        assert_eq!(
            hdbscan(&[1.0, 2.0, 3.0], 2, 2, &p),
            Err(ClusterError::PointsShape { len: 3, n: 2, d: 2 })
        );
        let e = hdbscan(&[1.0, f64::NAN, 3.0, 4.0], 2, 2, &p).unwrap_err();
        assert!(
            matches!(e, ClusterError::NonFinitePoint { row: 0, col: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("NaN"));
        assert_eq!(
            hdbscan(&[1.0, 2.0], 2, 1, &HdbscanParams::new(1)),
            Err(ClusterError::MinClusterSize(1))
        );
        assert_eq!(
            hdbscan(
                &[1.0, 2.0],
                2,
                1,
                &HdbscanParams {
                    min_samples: Some(0),
                    ..p
                }
            ),
            Err(ClusterError::MinSamplesZero)
        );
        let asym = [0.0, 1.0, 2.0, 0.0];
        let e = hdbscan_precomputed(&asym, 2, &p).unwrap_err();
        assert!(e.to_string().contains("not symmetric"), "{e}");
        let diag = [1.0, 1.0, 1.0, 0.0];
        assert!(matches!(
            hdbscan_precomputed(&diag, 2, &p),
            Err(ClusterError::NonZeroDiagonal { i: 0, .. })
        ));
        let inf = [0.0, f64::INFINITY, f64::INFINITY, 0.0];
        assert!(matches!(
            hdbscan_precomputed(&inf, 2, &p),
            Err(ClusterError::BadDistance { .. })
        ));
        let neg = [0.0, -1.0, -1.0, 0.0];
        assert!(matches!(
            hdbscan_precomputed(&neg, 2, &p),
            Err(ClusterError::BadDistance { .. })
        ));
    }
}
