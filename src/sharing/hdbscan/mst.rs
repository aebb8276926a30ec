//! Step 2: minimum spanning tree of the mutual-reachability graph (Prim, dense).
//!
//! The library's `mst_linkage_core` (0.8.44) on the dense matrix m:
//! start at node 0; every step adds the node j outside the tree with the smallest
//! `current[j] = min over tree nodes t of m(t, j)`, ties going to the smallest j;
//! `current[j]` and its source t change only on a strictly smaller value, so the
//! source is the earliest tree node reaching it. The row it emits is
//! `[source, j, current[j]]`. We do the same, computing m(current, j) on the fly
//! from the distances and core distances: O(n²) time, O(n·d) memory (no n×n matrix).
//!
//! Nodes outside the tree live in compacted "slots" (swap-remove on insertion); the
//! argmin compares (value, node id), so the slot order never changes the result.

use rayon::prelude::*;

use super::distance::{mutual_reachability, row_kernel, Distances, PARALLEL_MIN};

/// One MST edge: `from` was in the tree when `to` joined it with this weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MstEdge {
    pub from: usize,
    pub to: usize,
    pub weight: f64,
}

/// Slots per rayon task.
const CHUNK: usize = 2048;

/// Prim's MST of m(a,b) = max(c(a), c(b), d(a,b)); core: [n]. Edges in the order the
/// nodes joined the tree (the library's row order before sorting). n − 1 edges.
pub fn prim(dist: &Distances, core: &[f64]) -> Vec<MstEdge> {
    let n = dist.n();
    assert_eq!(core.len(), n);
    if n < 2 {
        return Vec::new();
    }
    // Slot s holds node ids[s]; its coordinates (Euclidean) are column s of xt.
    let mut ids: Vec<usize> = (0..n).collect();
    let mut core_s = core.to_vec();
    let mut best = vec![f64::MAX; n];
    let mut source = vec![0usize; n];
    let (mut xt, d) = match dist {
        Distances::Euclidean { transposed, d, .. } => (transposed.clone(), *d),
        Distances::Precomputed { .. } => (Vec::new(), 0),
    };
    let mut slot_of: Vec<usize> = (0..n).collect();
    let mut len = n;
    let mut current = 0usize;
    let mut edges = Vec::with_capacity(n - 1);

    for _ in 1..n {
        // Take `current` out of the slots: the last slot moves into its place.
        let s = slot_of[current];
        let last = len - 1;
        if s != last {
            ids.swap(s, last);
            core_s.swap(s, last);
            best.swap(s, last);
            source.swap(s, last);
            for k in 0..d {
                xt.swap(k * n + s, k * n + last);
            }
            slot_of[ids[s]] = s;
        }
        len -= 1;

        let core_c = core[current];
        let x_c: Vec<f64> = match dist {
            Distances::Euclidean { points, d, .. } => {
                points[current * d..(current + 1) * d].to_vec()
            }
            Distances::Precomputed { .. } => Vec::new(),
        };
        // One chunk of slots: relax, then the chunk's (value, node) argmin.
        let relax = |first: usize, best: &mut [f64], source: &mut [usize]| -> (f64, usize) {
            let m = best.len();
            let mut row = vec![0.0; m];
            match dist {
                Distances::Euclidean { .. } => row_kernel(&x_c, &xt, n, first, &mut row),
                Distances::Precomputed { dist, n } => {
                    let r = &dist[current * n..(current + 1) * n];
                    for (o, &j) in row.iter_mut().zip(&ids[first..first + m]) {
                        *o = r[j];
                    }
                }
            }
            let mut arg = (f64::MAX, usize::MAX);
            for i in 0..m {
                let w = mutual_reachability(row[i], core_s[first + i], core_c);
                if w < best[i] {
                    best[i] = w;
                    source[i] = current;
                }
                let node = ids[first + i];
                if best[i] < arg.0 || (best[i] == arg.0 && node < arg.1) {
                    arg = (best[i], node);
                }
            }
            arg
        };
        let pick = |a: (f64, usize), b: (f64, usize)| {
            if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
                b
            } else {
                a
            }
        };
        let (weight, next) = if len < PARALLEL_MIN {
            relax(0, &mut best[..len], &mut source[..len])
        } else {
            best[..len]
                .par_chunks_mut(CHUNK)
                .zip(source[..len].par_chunks_mut(CHUNK))
                .enumerate()
                .map(|(c, (b, s))| relax(c * CHUNK, b, s))
                .reduce(|| (f64::MAX, usize::MAX), pick)
        };
        // The library starts every step from DBL_MAX and keeps node 0 when nothing is
        // smaller; finite inputs (checked upstream) never get here with usize::MAX.
        let next = if next == usize::MAX { ids[0] } else { next };
        edges.push(MstEdge {
            from: source[slot_of[next]],
            to: next,
            weight,
        });
        current = next;
    }
    edges
}

/// The edges sorted by weight, ties kept in Prim order (a stable sort).
///
/// The library sorts with `np.argsort` (numpy's default "quicksort"), which is not
/// stable and on AVX-512 machines orders ties differently again; ties can change
/// the shape of the single-linkage tree at equal heights and with it the cluster
/// numbering. A stable sort is the reproducible choice.
pub fn sort_by_weight(edges: &[MstEdge]) -> Vec<MstEdge> {
    let mut sorted = edges.to_vec();
    sorted.sort_by(|a, b| a.weight.partial_cmp(&b.weight).unwrap());
    sorted
}

/// Prim on a dense symmetric weight matrix w: [n, n] (for tests and small inputs);
/// same tie rules as `prim`.
pub fn prim_dense(w: &[f64], n: usize) -> Vec<MstEdge> {
    let mut in_tree = vec![false; n];
    let mut best = vec![f64::MAX; n];
    let mut source = vec![0usize; n];
    let mut current = 0;
    let mut edges = Vec::with_capacity(n.saturating_sub(1));
    for _ in 1..n {
        in_tree[current] = true;
        let (mut new_w, mut new_node) = (f64::MAX, 0);
        for j in 0..n {
            if in_tree[j] {
                continue;
            }
            let x = w[current * n + j];
            if x < best[j] {
                best[j] = x;
                source[j] = current;
            }
            if best[j] < new_w {
                new_w = best[j];
                new_node = j;
            }
        }
        edges.push(MstEdge {
            from: source[new_node],
            to: new_node,
            weight: new_w,
        });
        current = new_node;
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::super::distance::{core_distances, mutual_reachability_matrix, pairwise_euclidean};
    use super::*;

    fn e(from: usize, to: usize, weight: f64) -> MstEdge {
        MstEdge { from, to, weight }
    }

    #[test]
    fn mst_of_four_points_by_hand() {
        // A unit square's corners 0=(0,0) 1=(1,0) 2=(0,1) 3=(5,5); with core distances
        // all 0 (a dense matrix of plain distances).
        let w = [
            0.0,
            1.0,
            1.0,
            50f64.sqrt(), //
            1.0,
            0.0,
            2f64.sqrt(),
            41f64.sqrt(),
            1.0,
            2f64.sqrt(),
            0.0,
            41f64.sqrt(),
            50f64.sqrt(),
            41f64.sqrt(),
            41f64.sqrt(),
            0.0,
        ];
        // From 0: 1 and 2 tie at 1 → 1 first (smaller index), then 2 (its source stays
        // 0, reached first), then 3 from 1 (√41 < √50; 1 before 2 on the tie).
        let got = prim_dense(&w, 4);
        assert_eq!(got, vec![e(0, 1, 1.0), e(0, 2, 1.0), e(1, 3, 41f64.sqrt())]);
    }

    #[test]
    fn on_the_fly_prim_matches_dense_prim() {
        // Deterministic scatter with many exact ties (integer grid), k = 3.
        let n = 1500; // above PARALLEL_MIN: exercises the parallel chunks too
        let pts: Vec<f64> = (0..n * 2)
            .map(|i| ((i * 2654435761usize) % 23) as f64)
            .collect();
        let dist = Distances::euclidean(&pts, n, 2);
        let core = core_distances(&dist, 3);
        let d = pairwise_euclidean(&pts, n, 2);
        let m = mutual_reachability_matrix(&d, &core, n);
        assert_eq!(prim(&dist, &core), prim_dense(&m, n));
        let pre = Distances::precomputed(&d, n);
        assert_eq!(prim(&pre, &core), prim_dense(&m, n));
    }

    #[test]
    fn sort_is_stable_on_ties() {
        let edges = [e(0, 1, 2.0), e(1, 2, 1.0), e(2, 3, 2.0), e(3, 4, 1.0)];
        let s = sort_by_weight(&edges);
        assert_eq!(
            s,
            vec![e(1, 2, 1.0), e(3, 4, 1.0), e(0, 1, 2.0), e(2, 3, 2.0)]
        );
    }
}
