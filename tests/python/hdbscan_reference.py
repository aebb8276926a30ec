#!/usr/bin/env python3
"""Reference HDBSCAN results for tests/hdbscan_parity.rs (and benches/hdbscan.rs).

Runs on one .npy input (points [n, d], or an [n, n] distance matrix with
--metric precomputed) and writes into --out DIR:

  generic_*   hdbscan.HDBSCAN(algorithm="generic", metric="minkowski", p=2): the
              dense exact algorithm that src/sharing/hdbscan mirrors, on distances
              computed by scipy's direct formula (bit-identical to ours): labels,
              probabilities, outlier_scores, condensed_tree [rows, 4] = parent,
              child, lambda, size, and mst [n-1, 3] = from, to, weight in Prim order.
  stable_*    the same with the library's np.argsort of MST weights made stable
              (kind="stable"); numpy's default sort is unstable (and SIMD-dependent)
              on ties, which can renumber clusters that split at the same height.
  euclid_*    hdbscan.HDBSCAN(algorithm="generic") with the class's default metric
              "euclidean": sklearn's pairwise_distances, the |x|^2 - 2x.y + |y|^2
              expansion, whose rounding puts duplicates ~1e-7 apart: labels.
  best_*      hdbscan.HDBSCAN() with every default (algorithm "best": Boruvka
              KD-tree with an approximate MST for d <= 60, Prim KD-tree above): labels.
  prims_*     hdbscan.HDBSCAN(algorithm="prims_kdtree"), stable MST sort: the same Prim
              as generic (same tie rules, same distance bits) over KD-tree core
              distances in O(n) memory, so it stands in for generic at sizes where an
              n x n matrix does not fit: labels, probabilities, outlier_scores,
              condensed_tree, mst. Not in the default --only list (O(n^2) time).
  boruvka_*   hdbscan.HDBSCAN(algorithm="boruvka_kdtree", approx_min_span_tree=False):
              the library's exact Boruvka (ties resolved its own way): labels.
              Not in the default --only list.
  sklearn_*   sklearn.cluster.HDBSCAN with min_samples = k + 1 (it counts the
              point itself): labels, probabilities.
  meta.json   versions, seconds per run, the number of tied MST weights.

Usage: hdbscan_reference.py POINTS.npy --out DIR [--min-cluster-size 5]
       [--min-samples K] [--selection eom|leaf] [--allow-single-cluster]
       [--metric euclidean|precomputed] [--only generic,best,...]
   or: hdbscan_reference.py --batch CASES.json
       (a JSON list of objects with the same keys, underscored: points, out,
       min_cluster_size, min_samples, selection, allow_single_cluster, metric, only;
       one interpreter start for many cases)
"""

import argparse
import json
import os
import sys
import time
import types
import warnings

import numpy as np


def save(out, name, arr):
    np.save(os.path.join(out, name + ".npy"), np.ascontiguousarray(arr))


def condensed_array(clusterer):
    t = clusterer.condensed_tree_.to_numpy()
    return np.stack(
        [t["parent"].astype(np.float64), t["child"].astype(np.float64),
         t["lambda_val"].astype(np.float64), t["child_size"].astype(np.float64)],
        axis=1,
    ) if len(t) else np.zeros((0, 4))


class _StableArgsortNumpy(types.ModuleType):
    """numpy, except that argsort defaults to a stable sort."""

    def __init__(self):
        super().__init__("numpy_stable_argsort")

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def argsort(a, axis=-1, kind=None, order=None):
        return np.argsort(a, axis=axis, kind="stable" if kind is None else kind, order=order)


def run_library(X, args, algorithm, stable_sort, metric, exact_boruvka=False):
    import hdbscan
    import hdbscan.hdbscan_ as impl

    kwargs = dict(
        min_cluster_size=args.min_cluster_size,
        min_samples=args.min_samples,
        cluster_selection_method=args.selection,
        allow_single_cluster=args.allow_single_cluster,
        gen_min_span_tree=(algorithm == "generic"),
    )
    if metric is not None:
        kwargs["metric"] = metric
        if metric == "minkowski":
            kwargs["p"] = 2
    if algorithm != "best":
        kwargs["algorithm"] = algorithm
    if exact_boruvka:
        kwargs["approx_min_span_tree"] = False
    if algorithm == "prims_kdtree":
        kwargs["gen_min_span_tree"] = True
    saved = impl.np
    if stable_sort:
        impl.np = _StableArgsortNumpy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            c = hdbscan.HDBSCAN(**kwargs).fit(X)
            seconds = time.perf_counter() - t0
    finally:
        impl.np = saved
    return c, seconds


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("points", nargs="?")
    p.add_argument("--out")
    p.add_argument("--min-cluster-size", type=int, default=5)
    p.add_argument("--min-samples", type=int, default=None)
    p.add_argument("--selection", choices=["eom", "leaf"], default="eom")
    p.add_argument("--allow-single-cluster", action="store_true")
    p.add_argument("--metric", choices=["euclidean", "precomputed"], default="euclidean")
    p.add_argument("--only", default="generic,stable,euclid,best,sklearn")
    p.add_argument("--batch", help="JSON list of cases; see the usage above")
    return p


def run_case(args):
    os.makedirs(args.out, exist_ok=True)
    runs = set(args.only.split(","))

    X = np.load(args.points).astype(np.float64)
    n = X.shape[0]
    k = args.min_samples if args.min_samples is not None else args.min_cluster_size
    k_used = max(1, min(k, n - 1))

    import hdbscan
    import sklearn

    meta = {
        "n": int(n),
        "d": int(X.shape[1]),
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "hdbscan": getattr(hdbscan, "__version__", None) or _dist_version("hdbscan"),
        },
        "min_samples_used": int(k_used),
        "seconds": {},
    }

    pre = args.metric == "precomputed"
    variants = [
        # name, algorithm, stable sort, metric (None: the library's default), full output
        ("generic", "generic", False, "precomputed" if pre else "minkowski", True),
        ("stable", "generic", True, "precomputed" if pre else "minkowski", True),
        ("euclid", "generic", False, "precomputed" if pre else "euclidean", False),
        ("best", "best", False, "precomputed" if pre else None, False),
        ("prims", "prims_kdtree", True, None, True),
        ("boruvka", "boruvka_kdtree", False, None, False),
    ]
    for name, algorithm, stable, metric, full in variants:
        if name not in runs:
            continue
        c, seconds = run_library(X, args, algorithm, stable, metric, name == "boruvka")
        meta["seconds"][name] = seconds
        save(args.out, name + "_labels", c.labels_.astype(np.int64))
        save(args.out, name + "_probabilities", c.probabilities_.astype(np.float64))
        if full:
            save(args.out, name + "_outlier_scores", c.outlier_scores_.astype(np.float64))
            save(args.out, name + "_condensed_tree", condensed_array(c))
            mst = np.asarray(c._min_spanning_tree, dtype=np.float64)
            save(args.out, name + "_mst", mst)
            w = np.sort(mst[:, 2])
            meta["tied_mst_weights"] = int(np.sum(w[1:] == w[:-1]))

    if "sklearn" in runs:
        from sklearn.cluster import HDBSCAN as SkHDBSCAN

        sk = SkHDBSCAN(
            min_cluster_size=args.min_cluster_size,
            min_samples=k_used + 1,
            cluster_selection_method=args.selection,
            allow_single_cluster=args.allow_single_cluster,
            metric=args.metric,
            copy=True,
        )
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk.fit(X)
        meta["seconds"]["sklearn"] = time.perf_counter() - t0
        save(args.out, "sklearn_labels", sk.labels_.astype(np.int64))
        save(args.out, "sklearn_probabilities", sk.probabilities_.astype(np.float64))

    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main():
    p = parser()
    args = p.parse_args()
    if args.batch:
        with open(args.batch) as f:
            cases = json.load(f)
        for case in cases:
            a = p.parse_args([])
            for key, value in case.items():
                if not hasattr(a, key):
                    p.error("--batch: unknown key %r" % key)
                setattr(a, key, value)
            run_case(a)
    else:
        if not args.points or not args.out:
            p.error("POINTS.npy and --out are required (or --batch)")
        run_case(args)


def _dist_version(name):
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
