//! HDBSCAN's mutual-reachability ops on the CPU: the twin kernels/mreach.cu is
//! checked against (tests/common/parity.rs). Plain loops over every pair with the
//! same ordered squared sums (`distance::squared_euclidean`) and the same total
//! order of edges; the CPU's own clustering runs sharing::hdbscan's tree path instead.

use rayon::prelude::*;

use super::real::Real;
use super::CpuOf;
use crate::backend::{
    f64_of_words, profile, words_of_f64, Memory, Mreach, MreachOps, Nearest, MREACH_NONE,
};
use crate::sharing::hdbscan::distance::{mutual_reachability, squared_euclidean};

/// The points `[n, d]` from xt `[d, n]` (words).
fn points<T: Real>(dev: &CpuOf<T>, s: &Mreach, xt: &Vec<T>) -> Vec<f64> {
    let xt = f64_of_words(&dev.download_words(xt)[..2 * s.n * s.d]);
    let mut p = vec![0.0; s.n * s.d];
    for k in 0..s.d {
        for i in 0..s.n {
            p[i * s.d + k] = xt[k * s.n + i];
        }
    }
    p
}

/// Writes `words` into the front of buf, as words.
fn store<T: Real>(buf: &mut [T], words: &[u32]) {
    for (b, &w) in buf.iter_mut().zip(words) {
        *b = T::from_word(w);
    }
}

impl<T: Real> MreachOps for CpuOf<T> {
    fn mreach_knn(
        &self,
        s: &Mreach,
        xt: &Vec<T>,
        near_sq: &mut Vec<T>,
        near_idx: &mut Vec<T>,
        core: &mut Vec<T>,
    ) {
        let _span = profile::span("mreach_knn", || s.to_string());
        let (n, d, cap) = (s.n, s.d, s.cap);
        let p = points(self, s, xt);
        let lists: Vec<Vec<(f64, u32)>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let x = &p[i * d..(i + 1) * d];
                let mut all: Vec<(f64, u32)> = (0..n)
                    .map(|j| (squared_euclidean(x, &p[j * d..(j + 1) * d]), j as u32))
                    .collect();
                all.sort_by(|a, b| a.partial_cmp(b).unwrap());
                all.truncate(cap);
                all
            })
            .collect();
        let sq: Vec<f64> = lists.iter().flatten().map(|e| e.0).collect();
        let idx: Vec<u32> = lists.iter().flatten().map(|e| e.1).collect();
        let c: Vec<f64> = lists.iter().map(|l| l[s.k].0.sqrt()).collect();
        store(near_sq, &words_of_f64(&sq));
        store(near_idx, &idx);
        store(core, &words_of_f64(&c));
    }

    fn mreach_round(
        &self,
        s: &Mreach,
        xt: &Vec<T>,
        core: &Vec<T>,
        _near: Nearest<'_, Vec<T>>,
        comp: &Vec<T>,
        comp_edge: &mut Vec<T>,
    ) {
        let _span = profile::span("mreach_round", || s.to_string());
        // Every pair, not the kernel's nearest-list shortcut or tile boxes: the
        // parity tests then check them against the plain definition.
        let (n, d) = (s.n, s.d);
        let p = points(self, s, xt);
        let core = f64_of_words(&self.download_words(core)[..2 * n]);
        let comp = &self.download_words(comp)[..n];
        // Each point's lightest outgoing edge as (w, a, b), then the minimum per component.
        let best: Vec<Option<(f64, u32, u32)>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let x = &p[i * d..(i + 1) * d];
                (0..n)
                    .filter(|&j| comp[j] != comp[i])
                    .map(|j| {
                        let dist = squared_euclidean(x, &p[j * d..(j + 1) * d]).sqrt();
                        let w = mutual_reachability(dist, core[i], core[j]);
                        (w, i.min(j) as u32, i.max(j) as u32)
                    })
                    .min_by(|a, b| a.partial_cmp(b).unwrap())
            })
            .collect();
        let mut edge = vec![(f64::INFINITY, MREACH_NONE); n];
        for (i, b) in best.iter().enumerate() {
            if let Some((w, a, bb)) = *b {
                let key = (a as u64) << 32 | bb as u64;
                let slot = &mut edge[comp[i] as usize];
                if (w, key) < *slot {
                    *slot = (w, key);
                }
            }
        }
        let words: Vec<u32> = edge
            .iter()
            .flat_map(|&(_, key)| [key as u32, (key >> 32) as u32])
            .collect();
        store(comp_edge, &words);
    }
}
