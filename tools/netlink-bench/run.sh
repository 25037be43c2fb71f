#!/usr/bin/env bash
# Route and neighbour dumps, measured: builds a table of 2,000 IPv4 and 2,000 IPv6 routes
# and as many neighbours in a namespace of its own, then runs the bench binary there (fastlb's
# own netlink code against netlink-packet-route; see src/main.rs). Needs root.
# Usage: tools/netlink-bench/run.sh [repetitions] > result.json
set -euo pipefail
cd "$(dirname "$0")"
ns="flnl-${FLBT_TAG:-b}-$$"
batch="$(mktemp)"
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -f "$batch"
}
trap cleanup EXIT
cargo build --release --quiet
ip netns add "$ns"
ip -n "$ns" link add nlb0 type veth peer name nlb1
ip -n "$ns" link set nlb0 up
ip -n "$ns" link set nlb1 up
ip -n "$ns" addr add 10.200.0.1/16 dev nlb0
ip -n "$ns" addr add fd00:200::1/64 dev nlb0 nodad
for i in $(seq 0 1999); do
    a=$((i / 250)) b=$((i % 250 + 1))
    echo "route add 172.16.$a.$b/32 via 10.200.0.2 dev nlb0"
    echo "route add fd01::$(printf %x "$i")/128 via fd00:200::2 dev nlb0"
    echo "neigh add 10.200.$((a + 1)).$b lladdr 02:00:00:00:$(printf %02x:%02x "$a" "$b") dev nlb0 nud permanent"
    echo "neigh add fd00:200::1:$(printf %x "$i") lladdr 02:00:00:01:$(printf %02x:%02x "$a" "$b") dev nlb0 nud permanent"
done > "$batch"
ip -n "$ns" -batch "$batch"
ip netns exec "$ns" target/release/fastlb-netlink-bench "${1:-200}"
