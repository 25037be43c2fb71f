#!/usr/bin/env bash
# The bare AF_XDP forwarder on fastlb's own ring layer (xdp-fwd) against the same forwarder
# on the xsk-rs crate (xsk-fwd, src/main.rs here), measured in one run: builds both, then
# tools/bench/harness.sh --xsk-compare runs them alternating on the live benchmark's
# topology, at full rate and at half of xdp-fwd's best rate, and report.py here writes the
# medians, spreads and per-run ratios. Needs root.
#
# Building xsk-rs compiles the vendored libxdp and libbpf C sources (the cc crate) and runs
# bindgen: it needs clang (libclang), libelf-dev, zlib1g-dev and pkg-config (Debian:
# apt-get install clang libelf-dev zlib1g-dev pkg-config). The bench is not part of the
# product build or of CI.
#
# Usage: tools/xsk-bench/run.sh [repetitions (3)] [seconds per run (5)] [out dir]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=${1:-3}
dur=${2:-5}
out=${3:-$root/bench-results/xsk}
(cd "$here" && cargo build --release --quiet)
rm -rf "$out/raw"
"$root/tools/bench/harness.sh" --xsk-compare "$here/target/release/xsk-fwd" \
    --repeat "$reps" --duration "$dur" --out "$out"
python3 "$here/report.py" "$out"
