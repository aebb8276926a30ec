#!/usr/bin/env python3
"""Reference TT-SVD results for tests/ttsvd_parity.rs (DESIGN.md §5.2-3, §6).

Reads DIR/cases.json, a JSON list of cases:

  {"name": "lowrank_a", "kind": "tensor",   "max_rank": 4}
      DIR/<name>.npy is a d-way float64 tensor. Writes
        <name>.numpy.npy     reconstruction of the plain numpy TT-SVD below
        <name>.tensorly.npy  reconstruction of tensorly.decomposition.tensor_train(
                             tensor, rank=[1, R, ..., R, 1])
  {"name": "grads", "kind": "branches", "max_rank": 4}
      DIR/<name>.npy is [branches, out, in] (the capture buffer, as float64). Each
      branch is reshaped to [n1, n2, n3, n4] (near-square factors of out and in, as
      written again below) and factorised with the numpy TT-SVD. Writes
        <name>.numpy.npy     reconstructions [branches, out, in]
        <name>.distances.npy [B, B]: ||Ga/|Ga| - Gb/|Gb||| from the expanded
                             reconstructions (zero branch: its descriptor is 0)

and DIR/results.json: versions, and per case the ranks, relative errors
||T - T^||/||T|| and seconds of each implementation.

The numpy TT-SVD is Oseledets 2011, Alg. 1 with a maximum rank only: reshape, thin
np.linalg.svd (LAPACK gesdd), keep min(R, rows, cols) singular triplets, U as the
core and S V^T as the remainder. It does not cut at the numerical rank, so on
exactly rank-deficient inputs its ranks can exceed ours while the reconstructions
agree to rounding.

Usage: ttsvd_reference.py DIR
"""

import json
import os
import sys
import time

import numpy as np
import tensorly
from tensorly.decomposition import tensor_train


def near_square_factors(n):
    a = int(np.floor(np.sqrt(n)))
    while a * a > n:
        a -= 1
    while (a + 1) * (a + 1) <= n:
        a += 1
    while n % a:
        a -= 1
    return a, n // a


def tt_svd(t, max_rank):
    """Returns the list of cores [r_{k-1}, n_k, r_k]."""
    dims = t.shape
    cores = []
    r = 1
    c = t.reshape(-1)
    for n in dims[:-1]:
        c = c.reshape(r * n, -1)
        u, s, vt = np.linalg.svd(c, full_matrices=False)
        rk = min(max_rank, len(s))
        cores.append(u[:, :rk].reshape(r, n, rk))
        c = s[:rk, None] * vt[:rk]
        r = rk
    cores.append(c.reshape(r, dims[-1], 1))
    return cores


def tt_reconstruct(cores):
    acc = np.ones((1, 1))
    for core in cores:
        r, n, rn = core.shape
        acc = (acc @ core.reshape(r, n * rn)).reshape(-1, rn)
    return acc.reshape([core.shape[1] for core in cores])


def rel_error(t, rec):
    return float(np.linalg.norm(t - rec) / np.linalg.norm(t))


def run_tensor(dirname, case):
    name, r = case["name"], case["max_rank"]
    t = np.load(os.path.join(dirname, name + ".npy"))
    d = t.ndim

    t0 = time.perf_counter()
    cores = tt_svd(t, r)
    rec = tt_reconstruct(cores)
    t_numpy = time.perf_counter() - t0

    t0 = time.perf_counter()
    tt = tensor_train(t, rank=[1] + [r] * (d - 1) + [1])
    rec_tl = tensorly.tt_to_tensor(tt)
    t_tl = time.perf_counter() - t0

    np.save(os.path.join(dirname, name + ".numpy.npy"), np.ascontiguousarray(rec))
    np.save(os.path.join(dirname, name + ".tensorly.npy"), np.ascontiguousarray(rec_tl))
    return {
        "numpy_ranks": [1] + [c.shape[2] for c in cores],
        "numpy_rel_error": rel_error(t, rec),
        "numpy_seconds": t_numpy,
        "tensorly_ranks": [int(x) for x in tt.rank],
        "tensorly_rel_error": rel_error(t, rec_tl),
        "tensorly_seconds": t_tl,
    }


def run_branches(dirname, case):
    name, r = case["name"], case["max_rank"]
    g = np.load(os.path.join(dirname, name + ".npy"))
    b, out, inp = g.shape
    dims = near_square_factors(out) + near_square_factors(inp)

    t0 = time.perf_counter()
    recs = np.stack([tt_reconstruct(tt_svd(g[i].reshape(dims), r)).reshape(out, inp) for i in range(b)])
    t_numpy = time.perf_counter() - t0

    flat = recs.reshape(b, -1)
    norms = np.linalg.norm(flat, axis=1)
    units = np.where(norms[:, None] > 0, flat / np.where(norms > 0, norms, 1.0)[:, None], 0.0)
    dist = np.linalg.norm(units[:, None, :] - units[None, :, :], axis=2)

    np.save(os.path.join(dirname, name + ".numpy.npy"), np.ascontiguousarray(recs))
    np.save(os.path.join(dirname, name + ".distances.npy"), np.ascontiguousarray(dist))
    return {
        "dims": list(dims),
        "numpy_rel_errors": [rel_error(g[i], recs[i]) for i in range(b)],
        "numpy_seconds": t_numpy,
    }


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    dirname = sys.argv[1]
    with open(os.path.join(dirname, "cases.json")) as f:
        cases = json.load(f)
    results = {
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "tensorly": tensorly.__version__,
        },
        "cases": {},
    }
    for case in cases:
        run = {"tensor": run_tensor, "branches": run_branches}[case["kind"]]
        results["cases"][case["name"]] = run(dirname, case)
    with open(os.path.join(dirname, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
