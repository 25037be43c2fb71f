#!/usr/bin/env bash
# The in-process benchmarks on another machine that has no Rust toolchain (the 16-core runs
# in bench-results/multicore-16core.md were made this way).
#
#   tools/bench/prebuilt.sh pack DIR          here: build the multicore and pipeline benches
#                                             and put them in DIR with the commit and rustc
#   tools/bench/prebuilt.sh run DIR OUT       there: run both from DIR, results and logs to OUT
#
# `run` takes MC_LIMIT and PL_LIMIT (seconds, default 200 and 400) as each benchmark's
# limit, and FASTLB_BENCH_* as the benchmarks do. The benches write their results to OUT
# (FASTLB_BENCH_RESULTS) as multicore.{json,md} and pipeline.{json,md}, with logs beside them
# and the machine's description in machine.txt.
set -euo pipefail
case ${1:-} in
pack)
    dir=$2
    cd "$(dirname "$0")/../.."
    mkdir -p "$dir"
    cargo bench --bench multicore --bench pipeline --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("multicore", "pipeline"):
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$dir"
    git rev-parse --short HEAD >"$dir/HEAD"
    printf '#!/bin/sh\necho "%s"\n' "$(rustc --version)" >"$dir/rustc"
    chmod +x "$dir/rustc"
    cp "$0" "$dir/prebuilt.sh"
    ls -la "$dir"
    ;;
run)
    dir=$(realpath "$2") out=$(realpath -m "$3")
    mkdir -p "$out"
    {
        echo "head: $(cat "$dir/HEAD")"; date -u; uname -a; nproc
        grep -m1 "model name" /proc/cpuinfo || true; grep -m1 "cpu MHz" /proc/cpuinfo || true
        cat /sys/fs/cgroup/cpu.max 2>/dev/null || true; cat /proc/loadavg; free -g
    } 2>&1 | tee "$out/machine.txt"
    # The benches ask `$RUSTC --version` for the record: the rustc that built them.
    export RUSTC=$dir/rustc
    export FASTLB_BENCH_RESULTS=$out
    set +e
    (time timeout "${MC_LIMIT:-200}" "$dir/multicore") 2>&1 | tee "$out/multicore.log"
    (time timeout "${PL_LIMIT:-400}" "$dir/pipeline" --bench) 2>&1 | tee "$out/pipeline.log"
    cat /proc/loadavg
    ;;
*)
    sed -n 2,13p "$0"; exit 2 ;;
esac
