#!/usr/bin/env bash
# The cluster simulation and its plots, as committed under bench-results/cluster-sim/.
#
#   tools/cluster-sim/run.sh                 # the full run (a few minutes on 2 cores)
#   tools/cluster-sim/run.sh --quick /tmp/x  # seconds; any directory
#
# Extra arguments after `--` go to cluster-sim (see `cluster-sim --help`). The plots need
# matplotlib (Debian: python3-matplotlib); PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."

args=()
out=bench-results/cluster-sim
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--quick); shift ;;
    --) shift; args+=("$@"); break ;;
    -*) echo "run.sh: unknown option $1 (cluster-sim options go after --)" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done

# The commit the numbers come from; -dirty when the code differs from it.
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock || commit="$commit-dirty"

cargo build --release --locked --bin cluster-sim
target/release/cluster-sim --commit "$commit" --out "$out" "${args[@]}"
"${PYTHON:-python3}" tools/cluster-sim/plot.py "$out"
