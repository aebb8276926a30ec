#!/usr/bin/env bash
# HDBSCAN at 50k points against the Python library (tests/hdbscan_parity.rs,
# `parity_at_50k_points_with_the_library`, #[ignore]d in the default `cargo test`):
# the library's prims_kdtree run (the same Prim as its generic algorithm) must give
# identical labels, condensed tree and MST; its exact Borůvka is compared by ARI.
# About ten minutes on two cores, most of it the library's O(n²) Prim.
#
# Usage: scripts/hdbscan-large-parity.sh      (SSKERNEL_PYTHON to choose the venv)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-venv.sh >/dev/null
exec cargo test --release --test hdbscan_parity parity_at_50k -- --ignored --nocapture
