#!/usr/bin/env bash
# Compare sskernel's CPU training throughput with the PyTorch reference on this machine,
# same thread count for both, one after the other.
#
#   scripts/compare-cpu.sh [--threads N]        (default 2, or $THREADS)
#
# PYTHON: the interpreter with torch + numpy (default python3), e.g.
#   PYTHON=.venv-torch/bin/python scripts/compare-cpu.sh --threads 2
# sskernel side: `cargo bench --bench train_throughput -- --threads N`, printing lines
#   sskernel stl images_per_s=...   /   sskernel mtl images_per_s=...
# PyTorch side: reference/bench.py, printing lines
#   torch stl eager images_per_s=...  /  torch mtl eager ...  /  torch mtl batched ...
# Prints sskernel/PyTorch per configuration. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --threads=*) THREADS=${1#--threads=}; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}

# Same threads for both sides: rayon for sskernel, OpenMP/MKL + torch.set_num_threads for torch.
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "# threads $THREADS; $(uname -m); $(getconf _NPROCESSORS_ONLN) cores; $(date -Is)"
echo "# load average: $(cut -d" " -f1-3 /proc/loadavg) (run on an idle machine: PyTorch's OpenMP threads spin, see reference/README.md)"
echo "# PyTorch: $PYTHON ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)' 2>&1))"

echo "# sskernel: cargo bench --bench train_throughput -- --threads $THREADS"
sk_ok=1
if ! cargo bench --bench train_throughput -- --threads "$THREADS" >"$tmp/sk.txt" 2>"$tmp/sk.err"; then
  sk_ok=0
  echo "# sskernel benchmark failed:" >&2
  tail -n 20 "$tmp/sk.err" >&2
fi
grep -E '^sskernel ' "$tmp/sk.txt" || true

echo "# torch: $PYTHON reference/bench.py --threads $THREADS"
"$PYTHON" reference/bench.py --threads "$THREADS" | tee "$tmp/pt.txt" | grep -E "^(torch |# )"

# ratio table: sskernel MODE vs every torch MODE VARIANT line
awk '
  function rate(line,   i, n, f) { n = split(line, f, " "); for (i = 1; i <= n; i++) if (f[i] ~ /^images_per_s=/) { sub(/^images_per_s=/, "", f[i]); return f[i] + 0 } return -1 }
  FILENAME == ARGV[1] { if ($1 == "sskernel") sk[$2] = rate($0); next }
  $1 == "torch" { pt = rate($0)
    if (($2 in sk) && pt > 0) printf "ratio %s sskernel/torch-%s = %.2f (sskernel %.1f, torch %.1f images/s)\n", $2, $3, sk[$2] / pt, sk[$2], pt
    else printf "ratio %s sskernel/torch-%s = n/a (no sskernel %s figure)\n", $2, $3, $2 }
' "$tmp/sk.txt" "$tmp/pt.txt"

[ "$sk_ok" = 1 ]
