#!/usr/bin/env bash
# The SYN flood measurement (tests/e2e/syn_flood.sh) with its figures kept: runs the
# scenario for FLOOD_SECONDS (default 10), writes bench-results/synflood/results.json and
# plots it (tools/lab/plot-synflood.py, needs python3-matplotlib) to results.svg.
# Needs root and a release build (cargo build --release --bin fastlb --bin pktgen).
#
#   tools/lab/synflood-bench.sh [FLOOD_SECONDS]
#   SYNFLOOD_CONFIG=tools/lab/synflood-defences.toml SYNFLOOD_NAME=defences \
#     tools/lab/synflood-bench.sh 10      # the same with drop_packet and secure_tcp on,
#                                          # kept under bench-results/synflood/defences/
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/bench-results/synflood${SYNFLOOD_NAME:+/$SYNFLOOD_NAME}
mkdir -p "$OUT"
bash "$ROOT/tests/e2e/syn_flood.sh" "${1:-10}" "$OUT/results.json" | tee "$OUT/run.log"
/usr/bin/python3 "$ROOT/tools/lab/plot-synflood.py" "$OUT/results.json" "$OUT/results.svg"
