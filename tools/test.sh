#!/usr/bin/env bash
# The test command from README: unit, replay and (as root) namespace end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: not root: the namespace end-to-end tests will skip (they need root)" >&2
fi
cargo test --release --locked -- --test-threads=2
