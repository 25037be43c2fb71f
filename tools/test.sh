#!/usr/bin/env bash
# The test command from README: unit, golden replay and (as root) namespace end-to-end tests.
# As root it first installs the Debian packages the tests need when missing
# (tools/packages.sh). Ends with one line totalling every test binary's results: a test
# that could not run here (no root, a tool missing) counts as skipped, not passed, and is
# listed above the total.
#
# FASTLB_NO_SKIP=1 (CI) turns every such skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/packages.sh
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: not root: the namespace end-to-end tests will be skipped (they need root)" >&2
  missing=$(missing_packages build lab test kernel 2>/dev/null | tr '\n' ' ' || true)
  [ -z "$missing" ] || echo "test.sh: missing Debian packages (tests that need them skip): $missing" >&2
else
  ensure_packages build lab test kernel
fi
need_cargo
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
status=0
# --no-fail-fast: a failing test binary must not keep the later ones from running (and
# from the total).
FASTLB_SKIP_LOG=$skips cargo test --release --locked --no-fail-fast --lib --bins --tests \
  -- --test-threads=2 2>&1 | tee "$log" || status=$?
if [ -s "$skips" ]; then
  echo "skipped tests:"
  sort "$skips" | sed 's/^/  /'
fi
awk -v skipped="$(wc -l <"$skips")" '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
  END { printf "total: %d passed, %d failed, %d skipped\n", p - skipped, f, s + skipped }' "$log"
exit "$status"
