//! GLOSH outlier scores (Campello et al. 2015; the library's `outlier_scores`).
//!
//! For a point that leaves cluster C at λ_p: score = (λ_max − λ_p) / λ_max, where
//! λ_max is the largest λ anywhere in C's subtree (the density at which C's densest
//! part finally dissolves). 0 where λ_max is 0 or λ_p is infinite. Independent of
//! which clusters were selected. IEEE arithmetic as in the library: λ_max = ∞ with a
//! finite λ_p gives NaN (∞/∞), which happens when at least min_samples + 1 points
//! coincide.

use super::condense::{root_of, CondensedEdge};
use super::select::max_lambdas;

/// tree: the condensed tree → scores: [n].
pub fn outlier_scores(tree: &[CondensedEdge]) -> Vec<f64> {
    let root = root_of(tree);
    let mut deaths = max_lambdas(tree);
    // Children come after their parents in row order, so walking backwards carries
    // every subtree's maximum up to the root.
    for e in tree.iter().rev() {
        let child_death = deaths.get(e.child).copied().unwrap_or(0.0);
        if child_death > deaths[e.parent] {
            deaths[e.parent] = child_death;
        }
    }
    let mut out = vec![0.0; root];
    for e in tree.iter().filter(|e| e.child < root) {
        let lambda_max = deaths[e.parent];
        out[e.child] = if lambda_max == 0.0 || !e.lambda.is_finite() {
            0.0
        } else {
            (lambda_max - e.lambda) / lambda_max
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::hdbscan::condense::tests::ce;

    #[test]
    fn scores_by_hand() {
        // Root 4: point 0 leaves at λ 0.5; cluster 5 = {1,2,3} at 0.5; in 5 the points
        // leave at 1, 2, 4. λ_max(5) = 4 and it propagates to the root.
        let t = vec![
            ce(4, 0, 0.5, 1),
            ce(4, 5, 0.5, 3),
            ce(5, 1, 1.0, 1),
            ce(5, 2, 2.0, 1),
            ce(5, 3, 4.0, 1),
        ];
        assert_eq!(outlier_scores(&t), vec![0.875, 0.75, 0.5, 0.0]);
    }

    #[test]
    fn infinite_lambdas() {
        // Duplicates: λ = ∞ rows score 0; a finite row under λ_max = ∞ is NaN.
        let t = vec![
            ce(3, 0, 1.0, 1),
            ce(3, 1, f64::INFINITY, 1),
            ce(3, 2, f64::INFINITY, 1),
        ];
        let s = outlier_scores(&t);
        assert!(s[0].is_nan());
        assert_eq!(&s[1..], &[0.0, 0.0]);
    }
}
