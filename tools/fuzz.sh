#!/usr/bin/env bash
# Runs fastlb's fuzz targets (fuzz/fuzz_targets) with libFuzzer for a bounded time each.
#
#   tools/fuzz.sh                       every target, 60 s each
#   FUZZ_SECONDS=3600 tools/fuzz.sh ctl one target for an hour
#
# The targets are built with the stable toolchain and the same coverage instrumentation
# cargo-fuzz uses (no AddressSanitizer: the code they reach is safe Rust; see
# docs/fuzzing.md), so neither nightly nor cargo-fuzz is needed. Each target starts from its
# committed corpus (fuzz/corpus/<target>); inputs it finds go to a scratch directory, crashes
# to fuzz/artifacts/<target>/. Prints executions and crashes per target and exits non-zero
# if any target crashed. Needs a C++ compiler (libFuzzer is built from source): the `build`
# package group of tools/packages.sh has one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${FUZZ_SECONDS:-60}
all=(parse_rewrite pipeline config_toml config_ipvsadm config_keepalived ctl sync state_file)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz: no target '$t' (targets: ${all[*]})" >&2; exit 2; }
done
if ! command -v cargo >/dev/null; then
  echo "fuzz: cargo is not on PATH" >&2
  exit 2
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
# What cargo-fuzz passes for `--sanitizer none`. Given with --target, so build scripts and
# proc macros are built without it.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "fuzz: building ${#targets[@]} target(s) for $triple"
(cd fuzz && cargo build --locked --release --target "$triple" $(printf -- '--bin %s ' "${targets[@]}"))

scratch=$(mktemp -d /tmp/fastlb-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
failed=0
printf '%-18s %10s %12s %8s %8s  %s\n' target seconds executions exec/s crashes corpus
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
  log="$scratch/$t.log"
  set +e
  "fuzz/target/$triple/release/$t" -max_total_time="$secs" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$root/fuzz/artifacts/$t/" \
    "$scratch/$t" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(( $(ls "$scratch/$t" | wc -l) + $(ls "fuzz/corpus/$t" | wc -l) ))
  if [ "$rc" != 0 ]; then
    failed=1
    crashes=$(ls "fuzz/artifacts/$t" | wc -l)
    echo "fuzz: $t failed (exit $rc); the panic, then the end of its log:" >&2
    # The panic message first: the log's tail alone can be all backtrace.
    grep -a -A12 -m1 'panicked at' "$log" | cat -v | cut -c1-300 >&2 || true
    echo "..." >&2
    tail -25 "$log" | cat -v | cut -c1-300 >&2
    # The input itself, so a crash found on a machine whose files are gone can be replayed:
    # base64 -d > crash; fuzz/target/<triple>/release/$t crash
    for f in "fuzz/artifacts/$t"/*; do
      [ -f "$f" ] || continue
      if [ "$(stat -c %s "$f")" -le 8192 ]; then
        echo "fuzz: input $(basename "$f") as base64:" >&2
        base64 -w 100 "$f" >&2
      fi
    done
  else
    crashes=0
  fi
  printf '%-18s %10s %12s %8s %8s  %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$crashes" "$corpus"
done
if [ "$failed" != 0 ]; then
  echo "fuzz: a target crashed: inputs under fuzz/artifacts/ (replay one: fuzz/target/$triple/release/<target> <file>)" >&2
  exit 1
fi
