#!/usr/bin/env bash
# The lab in DR mode with the bare forwarder as director (needs root and a release build
# of xdp-fwd): every curl from the client to the VIP must be answered by rs1's nginx,
# having crossed the director through AF_XDP (d0 -> d1, destination MAC rewritten).
set -euo pipefail
if [[ $(id -u) != 0 ]]; then echo "SKIP: lab e2e needs root"; exit 0; fi
LAB=$(cd "$(dirname "$0")/../.." && pwd)/tools/lab/lab.sh
export FLB_PREFIX=flbt-labdr- FLB_LAB_STATE=/tmp/flb-lab-dr-e2e
trap '"$LAB" down >/dev/null' EXIT
FASTLB_CMD= "$LAB" up --mode dr >/dev/null
GOT=$("$LAB" test 4)
echo "$GOT"
if [[ $(echo "$GOT" | awk '{$1=$1};1') == "4 served by rs1" ]]; then
    echo "1 passed, 0 failed"
else
    echo "0 passed, 1 failed"; exit 1
fi
