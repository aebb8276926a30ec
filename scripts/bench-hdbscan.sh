#!/usr/bin/env bash
# HDBSCAN on the CPU against the Python libraries, same machine, one run, alternating
# (scripts/bench_hdbscan.py has the details). Installs fast_hdbscan into .venv when
# it is missing (it is not a test dependency), builds the release binary.
#
# Usage: scripts/bench-hdbscan.sh [--n 100000] [--d 8] [--rounds 2] [--no-exact] [--only ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-venv.sh >/dev/null
.venv/bin/python -c "import fast_hdbscan" 2>/dev/null \
  || .venv/bin/python -m pip install --quiet --disable-pip-version-check fast_hdbscan \
  || echo "bench-hdbscan: fast_hdbscan could not be installed; running without it" >&2
cargo build --release --quiet
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
exec .venv/bin/python scripts/bench_hdbscan.py "$@"
