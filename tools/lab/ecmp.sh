#!/usr/bin/env bash
# The ecmp lab: three fastlb directors behind a router's ECMP, each announcing the VIP by BGP
# through its own BIRD (fastlb's [bgp]), BFD on every session; two real servers; a client.
#
#   P cl (client) c0 10.81.1.10 --- r0 10.81.1.1  P rt (router: BIRD, multipath)
#                                   r1 10.81.2.1 --- br0 (P sw) --- P d1..d3 e0 10.81.2.11-13
#                                                               \-- P rs1, P rs2 e0 10.81.2.21-22
#
# P is ${FLB_PREFIX:-flb-}e- (namespaces ${P}cl, ${P}rt, ${P}sw, ${P}d1..d3, ${P}rs1, ${P}rs2).
# Each director runs fastlb (one-armed, --iface e0) with [bgp] toward the router (directors
# AS 65001, router AS 65000, BFD 5 x 100 ms: a margin on a loaded 2-core machine); fastlb
# runs its own BIRD. The router's BIRD installs one multipath route to 10.81.100.1/32 (kernel protocol, merge paths on), and the
# kernel hashes each flow over the next hops with fib_multipath_hash_policy 3 and fields
# 0x0037 (addresses, protocol, ports: an L4 hash computed from the headers; policy 1 would
# reuse the hash of the client's own socket, which TCP re-rolls on a retransmission timeout
# and which ignores fib_multipath_hash_seed, DESIGN.md). The real servers hold the VIP on lo
# (arp_ignore) and answer the client directly through the router (DR), after stripping the
# director's IPIP header with bpf/tun_decap.c (TUN). Every director runs the same rules
# (tools/lab/ecmp.toml.in): port 80 mh, port 81 rr, sloppy_tcp on. The real servers run
# tools/lab/line_echo.py on both ports.
#
# Usage (lab.sh up --mode ecmp runs `ecmp.sh up dr`):
#   tools/lab/ecmp.sh up [dr|tun]     build it; returns once the router has three next hops
#   tools/lab/ecmp.sh ctl N ARGS      fastlb ctl against director N (1-3), e.g. --drain
#   tools/lab/ecmp.sh route           the router's next hops to the VIP
#   tools/lab/ecmp.sh kill N          SIGKILL director N's fastlb (its BIRD goes with it)
#   tools/lab/ecmp.sh start N         start director N again
#   tools/lab/ecmp.sh down            remove everything (idempotent)
# Environment: FLB_PREFIX, FLB_LAB_STATE (default /tmp/${P}lab), FASTLB_CMD as for lab.sh.
set -euo pipefail

P=${FLB_PREFIX:-flb-}e-
STATE=${FLB_LAB_STATE:-/tmp/${P}lab}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FASTLB=${FASTLB_CMD:-$ROOT/target/release/fastlb}
NS_C=${P}cl NS_R=${P}rt NS_SW=${P}sw
DIRS="1 2 3"
ALL_NS="$NS_C $NS_R $NS_SW ${P}d1 ${P}d2 ${P}d3 ${P}rs1 ${P}rs2"
VIP=10.81.100.1

die() { echo "ecmp: $*" >&2; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
[[ $STATE == /* && $STATE != / && ! $STATE =~ (^|/)\.\.(/|$) ]] || die "FLB_LAB_STATE must be absolute"

router_bird() {
    local n conf=$STATE/router/bird.conf
    {
        echo 'router id 10.81.2.1;'
        echo 'log stderr { info, remote, warning, error, auth, fatal, bug };'
        echo 'protocol device {}'
        echo 'protocol kernel { ipv4 { import none; export all; }; merge paths on; }'
        echo 'protocol bfd { interface "*" { interval 100 ms; multiplier 5; }; }'
        for n in $DIRS; do
            echo "protocol bgp d$n {"
            echo "  local 10.81.2.1 as 65000; neighbor 10.81.2.1$n as 65001;"
            echo "  hold time 9; connect retry time 1; error wait time 1, 5; bfd on;"
            echo "  ipv4 { import all; export none; };"
            echo "  debug { states, events };"
            echo "}"
        done
    } > "$conf"
    ip netns exec "$NS_R" bird -f -c "$conf" -s "$STATE/router/bird.ctl" \
        -P "$STATE/router/bird.pid" >"$STATE/router/bird.log" 2>&1 &
}

start_director() {
    local n=$1 mode
    mode=$(cat "$STATE/mode")
    sed -e "s/@N@/$n/g" -e "s|@STATE@|$STATE|g" -e "s/@METHOD@/$mode/g" \
        "$ROOT/tools/lab/ecmp.toml.in" > "$STATE/d$n/fastlb.toml"
    : > "$STATE/d$n/director.log"
    # Not through nsx: `ip netns exec` execs, so $! is fastlb itself.
    ip netns exec "${P}d$n" "$FASTLB" --iface e0 --config "$STATE/d$n/fastlb.toml" \
        --ctl-socket "$STATE/d$n/ctl.sock" >>"$STATE/d$n/director.log" 2>&1 &
    echo $! > "$STATE/d$n/pid"
    for _ in $(seq 100); do
        grep -q 'serving' "$STATE/d$n/director.log" 2>/dev/null && return
        sleep 0.1
    done
    cat "$STATE/d$n/director.log" >&2
    die "director $n did not start"
}

# The next hops of the router's route to the VIP, one per line.
hops() {
    nsx "$NS_R" ip -4 route show "$VIP/32" 2>/dev/null | grep -o 'via 10\.81\.2\.1[0-9]*' \
        | awk '{print $2}' | sort || true
}

wait_hops() {
    local want=$1
    for _ in $(seq 600); do
        [[ $(hops | wc -l) == "$want" ]] && return
        sleep 0.05
    done
    nsx "$NS_R" ip route >&2
    die "the router has not $want next hops for $VIP after 30 s"
}

up() {
    local mode=${1:-dr} n rs ns
    [[ $mode =~ ^(dr|tun)$ ]] || die "mode must be dr or tun"
    command -v bird >/dev/null || die "needs bird (Debian bird2)"
    [[ -x $FASTLB ]] || die "no fastlb at $FASTLB (cargo build --release)"
    down quiet
    mkdir -p "$STATE/router"
    echo "$mode" > "$STATE/mode"
    for ns in $ALL_NS; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done
    nsx "$NS_SW" ip link add br0 type bridge
    nsx "$NS_SW" ip link set br0 up
    ip link add c0 netns "$NS_C" type veth peer name r0 netns "$NS_R"
    ip link add r1 netns "$NS_R" type veth peer name sw-r netns "$NS_SW"
    nsx "$NS_SW" ip link set sw-r master br0 up
    nsx "$NS_C" ip addr add 10.81.1.10/24 dev c0
    nsx "$NS_C" ip link set c0 up
    nsx "$NS_C" ip route add default via 10.81.1.1
    nsx "$NS_R" ip addr add 10.81.1.1/24 dev r0
    nsx "$NS_R" ip addr add 10.81.2.1/24 dev r1
    nsx "$NS_R" ip link set r0 up
    nsx "$NS_R" ip link set r1 up
    nsx "$NS_R" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=3 \
        net.ipv4.fib_multipath_hash_fields=0x0037
    for n in $DIRS; do
        mkdir -p "$STATE/d$n"
        ip link add e0 netns "${P}d$n" type veth peer name sw-d$n netns "$NS_SW"
        nsx "$NS_SW" ip link set sw-d$n master br0 up
        nsx "${P}d$n" ip addr add 10.81.2.1$n/24 dev e0
        nsx "${P}d$n" ip link set e0 up
        nsx "${P}d$n" ip route add default via 10.81.2.1
    done
    if [[ $mode == tun ]]; then
        clang -O2 -g -Wall -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
            -c "$ROOT/bpf/tun_decap.c" -o "$STATE/tun_decap.o"
    fi
    for rs in 1 2; do
        ns=${P}rs$rs
        mkdir -p "$STATE/rs$rs"
        ip link add e0 netns "$ns" type veth peer name sw-rs$rs netns "$NS_SW"
        nsx "$NS_SW" ip link set sw-rs$rs master br0 up
        nsx "$ns" ip addr add 10.81.2.2$rs/24 dev e0
        nsx "$ns" ip addr add $VIP/32 dev lo
        nsx "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
            net.ipv4.conf.e0.arp_ignore=1 net.ipv4.conf.e0.arp_announce=2
        nsx "$ns" ip link set e0 up
        nsx "$ns" ip route add default via 10.81.2.1
        if [[ $mode == tun ]]; then
            nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                net.ipv4.conf.e0.rp_filter=0 net.ipv4.conf.lo.rp_filter=0
            nsx "$ns" ip link set dev e0 xdp obj "$STATE/tun_decap.o" sec xdp
        fi
        ip netns exec "$ns" python3 "$ROOT/tools/lab/line_echo.py" "rs$rs" 80 81 \
            >"$STATE/rs$rs/echo.log" 2>&1 &
    done
    router_bird
    for n in $DIRS; do start_director "$n"; done
    wait_hops 3
    for rs in 1 2; do
        for _ in $(seq 100); do
            (( $(nsx "${P}rs$rs" ss -ltnH 'sport = :80 or sport = :81' | wc -l) >= 2 )) && continue 2
            sleep 0.1
        done
        die "line_echo did not start on rs$rs"
    done
    echo "ecmp lab up ($mode): the router's next hops for $VIP: $(hops | tr '\n' ' ')"
}

down() {
    local n pid ns
    for n in $DIRS; do
        pid=$(cat "$STATE/d$n/pid" 2>/dev/null) || continue
        kill -INT "$pid" 2>/dev/null || true
    done
    for n in $DIRS; do
        pid=$(cat "$STATE/d$n/pid" 2>/dev/null) || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    for ns in $ALL_NS; do ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
    for ns in $ALL_NS; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$STATE"
    [[ ${1:-} == quiet ]] || echo "ecmp lab down"
}

[[ $(id -u) == 0 ]] || die "needs root"
cmd=${1:-}
shift || true
case $cmd in
    up) up "$@" ;;
    down) down ;;
    ctl) n=$1; shift; FASTLB_CTL_SOCKET=$STATE/d$n/ctl.sock "$FASTLB" ctl "$@" ;;
    route) hops ;;
    wait-hops) wait_hops "$1" ;;
    kill) kill -9 "$(cat "$STATE/d$1/pid")" ;;
    start) start_director "$1" ;;
    *) sed -n '2,30p' "$0"; exit 2 ;;
esac
