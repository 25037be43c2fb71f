#!/usr/bin/env bash
# End-to-end test of the AF_XDP I/O layer with the bare forwarder (needs root).
#
#   ns A (sender)                ns D (xdp-fwd on d0 and d1)              ns B (receiver)
#   a0 10.77.1.1/24 ---- veth ---- d0 10.77.1.2/24   d1 10.77.2.2/24 ---- veth ---- b0 10.77.2.1/24
#
# A routes 10.77.2.0/24 via D. D's XDP filter redirects TCP to 10.77.2.1:8080 and UDP to
# 10.77.2.1:9 into AF_XDP; xdp-fwd rewrites the destination MAC to b0's and the source to
# d1's and transmits on d1 (rx on one socket, tx on another: the multi-interface path).
# Replies from B take D's kernel (ip_forward), which the filter leaves alone: curl from A
# to B's HTTP server only works if the AF_XDP path forwards.
#
# Usage: tests/e2e/xdp_fwd.sh [path/to/xdp-fwd] [--mode native|generic|auto] [--flood SECS]
set -euo pipefail

if [[ $(id -u) != 0 ]]; then
    echo "SKIP: xdp_fwd e2e needs root (network namespaces, XDP)"
    exit 0
fi

FWD=${1:-target/debug/xdp-fwd}
shift || true
MODE=auto
FLOOD=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --mode) MODE=$2; shift 2 ;;
        --flood) FLOOD=$2; shift 2 ;;
        *) echo "unknown argument $1"; exit 2 ;;
    esac
done

P=flbxf$$
A=${P}a D=${P}d B=${P}b
WORK=$(mktemp -d)
FWD_PID=
cleanup() {
    [[ -n $FWD_PID ]] && kill "$FWD_PID" 2>/dev/null && wait "$FWD_PID" 2>/dev/null
    for ns in $A $D $B; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null; done
    for ns in $A $D $B; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for ns in $A $D $B; do ip netns add "$ns"; done
ip link add a0 netns "$A" type veth peer name d0 netns "$D"
ip link add b0 netns "$B" type veth peer name d1 netns "$D"
ip -n "$A" addr add 10.77.1.1/24 dev a0
ip -n "$D" addr add 10.77.1.2/24 dev d0
ip -n "$D" addr add 10.77.2.2/24 dev d1
ip -n "$B" addr add 10.77.2.1/24 dev b0
for l in "$A a0" "$D d0" "$D d1" "$B b0"; do set -- $l; ip -n "$1" link set "$2" up; ip -n "$1" link set lo up; done
ip -n "$A" route add 10.77.2.0/24 via 10.77.1.2
ip -n "$B" route add 10.77.1.0/24 via 10.77.2.2
ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=1
# Offloads: GSO frames would not fit a UMEM frame, and with tx checksum offload a veth
# hands XDP packets whose checksum is still partial (AF_XDP would forward them broken).
for l in "$A a0" "$D d0" "$D d1" "$B b0"; do set -- $l; ip netns exec "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true; done

B_MAC=$(ip netns exec "$B" cat /sys/class/net/b0/address)
mkdir -p "$WORK/www" && echo "hello from B" > "$WORK/www/index.html"
ip netns exec "$B" python3 -m http.server 8080 --bind 10.77.2.1 --directory "$WORK/www" >/dev/null 2>&1 &
ip netns exec "$A" ping -c1 -W2 10.77.1.2 >/dev/null   # ARP for D before the filter is up

ip netns exec "$D" "$FWD" --iface d0 --iface d1 --cross --mode "$MODE" \
    --service tcp:10.77.2.1:8080 --service udp:10.77.2.1:9 --dst-mac "$B_MAC" \
    >"$WORK/fwd.out" 2>"$WORK/fwd.err" &
FWD_PID=$!
for _ in $(seq 50); do grep -q running "$WORK/fwd.err" 2>/dev/null && break; sleep 0.1; done
grep -q running "$WORK/fwd.err" || { cat "$WORK/fwd.err"; echo "FAIL: xdp-fwd did not start"; exit 1; }
cat "$WORK/fwd.err"

# Kernel traffic still works through the filter: ICMP echo to D passes.
ip netns exec "$A" ping -c1 -W2 10.77.1.2 >/dev/null || { echo "FAIL: ping to D"; exit 1; }

for _ in $(seq 30); do ip netns exec "$B" ss -ltn | grep -q 8080 && break; sleep 0.1; done
BODY=$(ip netns exec "$A" curl -s --max-time 5 http://10.77.2.1:8080/ || true)
ok=1
if [[ $BODY == "hello from B" ]]; then echo "PASS: curl A -> B through AF_XDP"; else echo "FAIL: curl got '$BODY'"; ok=0; fi

if [[ $FLOOD != 0 ]]; then
    # Small UDP packets with iperf3 (no pktgen here); B counts with iperf3's server.
    ip netns exec "$B" iperf3 -s -B 10.77.2.1 -p 9 -1 >/dev/null 2>&1 &
    sleep 0.5
    ip netns exec "$A" iperf3 -c 10.77.2.1 -p 9 -u -b 0 -l 22 -t "$FLOOD" -B 10.77.1.1 2>&1 | tail -4 || true
fi

kill -INT "$FWD_PID"; wait "$FWD_PID" || true; FWD_PID=
cat "$WORK/fwd.out"
RX=$(sed -n 's/.* rx \([0-9]*\) tx.*/\1/p' "$WORK/fwd.out")
if [[ ${RX:-0} -gt 0 ]]; then echo "PASS: xdp-fwd received $RX frames"; else echo "FAIL: xdp-fwd saw no frames"; ok=0; fi
[[ $ok == 1 ]] && echo "1 passed, 0 failed" || { echo "0 passed, 1 failed"; exit 1; }
