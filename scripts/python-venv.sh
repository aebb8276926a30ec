#!/usr/bin/env bash
# Creates .venv in the repository root (if missing) with the Python reference
# libraries the parity tests compare against: hdbscan, scikit-learn (HDBSCAN),
# numpy, and tensorly (TT-SVD). Idempotent: when the pinned versions are already
# there it only checks them and returns in about a second.
#
# Usage: scripts/python-venv.sh          (PYTHON=python3.11 to choose the interpreter)
# Tests find the interpreter at $SSKERNEL_PYTHON, else .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: hdbscan 0.8.44 is the reference named in DESIGN.md §5; the others are the
# versions whose wheels install on CPython 3.11 (hdbscan 0.8.44 ships a cp311 wheel,
# so nothing is compiled).
PINS=(
  "hdbscan==0.8.44"
  "scikit-learn==1.8.0"
  "scipy==1.16.3"
  "numpy==2.3.5"
  "joblib==1.5.3"
  "tensorly==0.9.0"
  "nvidia-cuda-nvrtc-cu12==12.9.86"
)

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ]; then
  echo "python-venv: no python3 found; install Python 3.11 (or set PYTHON=...)" >&2
  exit 1
fi

# One install at a time: test binaries running at once may all call this.
exec 9>.venv.lock
flock 9

if [ ! -x .venv/bin/python ]; then
  echo "python-venv: creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi

# Fast path: every pin already satisfied.
if .venv/bin/python - "${PINS[@]}" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PYEOF
then
  echo "python-venv: .venv up to date (${PINS[*]})"
  exit 0
fi

echo "python-venv: installing ${PINS[*]}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
.venv/bin/python -c "import hdbscan, sklearn, numpy, tensorly; print('python-venv: ok: numpy', numpy.__version__, 'scikit-learn', sklearn.__version__, 'tensorly', tensorly.__version__)"
