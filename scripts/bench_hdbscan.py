#!/usr/bin/env python3
"""HDBSCAN side by side on one machine: sskernel (CPU tree path) against the Python
`hdbscan` library (its default: Boruvka KD-tree, approximate MST), scikit-learn's
HDBSCAN and fast_hdbscan (when installed), runs alternating, each tool in its own
process. Labels are compared by ARI with the library's exact Prim run
(`algorithm="prims_kdtree"`: the same Prim as its `generic` algorithm, without the
n x n matrix; MST weights sorted stably, as tests/hdbscan_parity.rs does), next to the library's own algorithms' agreement with it.

Data: `make_blobs` (10 centres in [-10, 10]^d, std 1, seed 42) plus 5% uniform noise
over the blobs' bounding box, shuffled. min_cluster_size 5, min_samples 5 (the
library's meaning; scikit-learn gets 6, as it counts the point itself).

Usage: scripts/bench-hdbscan.sh [--n 100000] [--d 8] [--rounds 2] [--no-exact]
       [--only sskernel,hdbscan,sklearn,fast_hdbscan,boruvka_exact]
(boruvka_exact, the library's Boruvka with approx_min_span_tree=False, is not in the
default list: it is there for the ARI column, the library agreeing with itself.)
Prints a markdown table; times exclude Python start-up, imports and numba's JIT
(fast_hdbscan is warmed up on 2000 points first); sskernel's is the whole CLI run,
reading the .npy and writing the outputs included, with /usr/bin/time -v's peak RSS.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

RUNNER = r'''
import sys, time, warnings, numpy as np
warnings.simplefilter("ignore")
tool, points, out = sys.argv[1], sys.argv[2], sys.argv[3]
X = np.load(points)
if tool == "hdbscan":
    import hdbscan
    fit = lambda: hdbscan.HDBSCAN(min_cluster_size=5, min_samples=5).fit(X).labels_
elif tool == "exact":
    # Prim with a stable sort of the MST weights: numpy's default argsort is not
    # stable, and on tied weights it changes the single-linkage tree (see
    # tests/python/hdbscan_reference.py).
    import types, hdbscan, hdbscan.hdbscan_ as impl
    stable = types.ModuleType("numpy_stable_argsort")
    stable.__getattr__ = lambda name: getattr(np, name)
    stable.argsort = lambda a, **kw: np.argsort(a, kind="stable")
    impl.np = stable
    fit = lambda: hdbscan.HDBSCAN(min_cluster_size=5, min_samples=5, algorithm="prims_kdtree").fit(X).labels_
elif tool == "boruvka_exact":
    # The library's Boruvka with its exact MST (approx_min_span_tree=False): its own
    # second exact algorithm, for the agreement-with-itself column.
    import hdbscan
    fit = lambda: hdbscan.HDBSCAN(min_cluster_size=5, min_samples=5, approx_min_span_tree=False).fit(X).labels_
elif tool == "sklearn":
    from sklearn.cluster import HDBSCAN
    fit = lambda: HDBSCAN(min_cluster_size=5, min_samples=6).fit(X).labels_
elif tool == "fast_hdbscan":
    import fast_hdbscan
    fast_hdbscan.HDBSCAN(min_cluster_size=5, min_samples=5).fit(X[:2000])
    fit = lambda: fast_hdbscan.HDBSCAN(min_cluster_size=5, min_samples=5).fit(X).labels_
t = time.perf_counter()
labels = fit()
print(time.perf_counter() - t)
np.save(out, labels.astype(np.int64))
'''


def make_data(n, d, path):
    from sklearn.datasets import make_blobs

    rng = np.random.default_rng(42)
    blobs = int(n * 0.95)
    X, _ = make_blobs(n_samples=blobs, n_features=d, centers=10, cluster_std=1.0,
                      center_box=(-10, 10), random_state=42)
    noise = rng.uniform(X.min(0), X.max(0), size=(n - blobs, d))
    X = np.vstack([X, noise])[rng.permutation(n)]
    np.save(path, X.astype(np.float64))


def run_sskernel(binary, points, out):
    r = subprocess.run(["/usr/bin/time", "-v", binary, "cluster", points, "--out", out, "--quiet"],
                       capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    h, m, s = wall.groups()
    seconds = int(h or 0) * 3600 + int(m) * 60 + float(s)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return seconds, rss, summary, np.load(os.path.join(out, "labels.npy"))


def run_python(tool, points, out):
    r = subprocess.run([sys.executable, "-c", RUNNER, tool, points, out],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, None
    return float(r.stdout.strip().splitlines()[-1]), np.load(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-exact", action="store_true")
    p.add_argument("--only", default="sskernel,hdbscan,sklearn,fast_hdbscan")
    p.add_argument("--sskernel", default="target/release/sskernel")
    args = p.parse_args()
    from sklearn.metrics import adjusted_rand_score

    tools = args.only.split(",")
    if "fast_hdbscan" in tools:
        try:
            import fast_hdbscan  # noqa: F401
        except ImportError:
            print("fast_hdbscan: not installed, skipped", file=sys.stderr)
            tools.remove("fast_hdbscan")
    tmp = tempfile.mkdtemp(prefix="bench-hdbscan-")
    points = os.path.join(tmp, "points.npy")
    make_data(args.n, args.d, points)
    times = {t: [] for t in tools}
    labels, extra = {}, {}
    for r in range(args.rounds):
        for tool in tools:
            out = os.path.join(tmp, f"{tool}-{r}")
            if tool == "sskernel":
                s, rss, summary, lab = run_sskernel(args.sskernel, points, out)
                extra = {"rss_mb": rss / 1024, "summary": summary}
            else:
                s, lab = run_python(tool, points, out + ".npy")
                if s is None:
                    print(f"{tool}: failed, skipped", file=sys.stderr)
                    continue
            times[tool].append(s)
            labels[tool] = lab
            print(f"round {r + 1}: {tool} {s:.2f} s", file=sys.stderr, flush=True)
    exact = None
    if not args.no_exact:
        s, exact = run_python("exact", points, os.path.join(tmp, "exact.npy"))
        print(f"exact (prims_kdtree): {s:.1f} s", file=sys.stderr)

    best = {t: min(v) for t, v in times.items() if v}
    fastest_other = min((v for t, v in best.items() if t != "sskernel"), default=None)
    print(f"\n{args.n} x {args.d} blobs + 5% noise; {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"{time.strftime('%Y-%m-%d')}; rounds {args.rounds} (alternating), best of them\n")
    print("| tool | seconds (each round) | best | sskernel speed-up | ARI vs library exact |")
    print("|---|---|---:|---:|---:|")
    for tool in tools:
        if not times[tool]:
            continue
        ari = adjusted_rand_score(exact, labels[tool]) if exact is not None else float("nan")
        same = " (identical)" if exact is not None and np.array_equal(exact, labels[tool]) else ""
        print(f"| {tool} | {', '.join(f'{s:.2f}' for s in times[tool])} | {best[tool]:.2f} | "
              f"{best[tool] / best['sskernel'] if 'sskernel' in best else float('nan'):.2f} | {ari:.6f}{same} |")
    if "sskernel" in best:
        sec = extra["summary"]["seconds"]
        print(f"\nsskernel: peak RSS {extra['rss_mb']:.0f} MB; path {extra['summary']['algorithm']}, "
              f"{extra['summary']['boruvka_rounds']} Borůvka rounds; seconds: core distances {sec['core_distances']:.2f}, "
              f"MST {sec['mst']:.2f}, tree {sec['tree']:.3f}, selection {sec['selection']:.3f}")
        if fastest_other:
            print(f"sskernel vs the fastest other: {fastest_other / best['sskernel']:.2f}x")


if __name__ == "__main__":
    main()
