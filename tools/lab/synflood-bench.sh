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
#
#   tools/lab/synflood-bench.sh --compare RATE [FLOOD_SECONDS]
#     # the generator held to RATE SYNs a second (pktgen --rate) for four runs one after
#     # the other: no defence, then drop_packet, secure_tcp and drop_entry each alone at 1
#     # with amemthresh = 4096 (a quarter of the table); kept under
#     # bench-results/synflood/rate-RATE/<defence>/, compared in
#     # bench-results/synflood/rate-RATE/compare.{json,svg} (tools/lab/plot-synflood-compare.py)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ ${1:-} == --compare ]]; then
    RATE=${2:?--compare RATE}
    SECS=${3:-5}
    DIR=$ROOT/bench-results/synflood/rate-$RATE
    mkdir -p "$DIR"
    for run in none:"" drop_packet:"drop_packet=1,amemthresh=4096" \
               secure_tcp:"secure_tcp=1,amemthresh=4096" drop_entry:"drop_entry=1,amemthresh=4096"; do
        name=${run%%:*} set=${run#*:}
        mkdir -p "$DIR/$name"
        SYNFLOOD_RATE=$RATE SYNFLOOD_SET=$set bash "$ROOT/tests/e2e/syn_flood.sh" "$SECS" \
            "$DIR/$name/results.json" | tee "$DIR/$name/run.log"
        /usr/bin/python3 "$ROOT/tools/lab/plot-synflood.py" "$DIR/$name/results.json" \
            "$DIR/$name/results.svg"
    done
    /usr/bin/python3 "$ROOT/tools/lab/plot-synflood-compare.py" "$DIR"
    exit 0
fi
OUT=$ROOT/bench-results/synflood${SYNFLOOD_NAME:+/$SYNFLOOD_NAME}
mkdir -p "$OUT"
bash "$ROOT/tests/e2e/syn_flood.sh" "${1:-10}" "$OUT/results.json" | tee "$OUT/run.log"
/usr/bin/python3 "$ROOT/tools/lab/plot-synflood.py" "$OUT/results.json" "$OUT/results.svg"
