#!/usr/bin/env bash
# The fastlb namespace lab: a client, a director, two real servers and a sorry server.
#
#   flb-client                 flb-dir (director)                 flb-sw (bridge)      flb-rs1 / flb-rs2 / flb-sorry
#   c0 10.80.1.10/24 -- veth -- d0 10.80.1.1/24   d1 10.80.2.1/24 -- veth -- sw-d  br0  sw-r1 -- e0 10.80.2.11/24
#                                                                                   sw-r2 -- e0 10.80.2.12/24
#                                                                                   sw-s  -- e0 10.80.2.20/24
#
# The VIP 10.80.100.1 is a routed VIP: the client reaches it through its default route (the
# director), as a VIP announced by BGP would be; it is on no director interface, so replies
# that the real servers send back through the director's kernel (their default gateway)
# are plain forwarding.
#   dr   VIP on the real servers' lo/32, arp_ignore=1, arp_announce=2; the director only
#        rewrites the destination MAC.
#   nat  the real servers hold no VIP; the director is their default gateway and rewrites
#        both directions.
#   tun  the real servers hold the VIP on lo, strip the director's outer IP header with
#        bpf/tun_decap.c (XDP) on e0, rp_filter off.
#
# Every real server (and the sorry server) runs nginx on :80 and :8080 ("served by rs1"),
# a UDP echo on :53 (tools/lab/udp_echo.py, answers "rs1 <request>"); rs1 and rs2 also run
# an iperf3 server on :5201. tools/lab/<mode>.toml balances all of them (docs/lab.md).
#
# Usage:
#   tools/lab/lab.sh up [--mode dr|nat|tun] [--config FILE] [--quiet]
#                        build the lab, start the servers and the director; unless --quiet,
#                        send 20 requests and print who answered and the director's counters
#   tools/lab/lab.sh test [N]    N curls from the client to the VIP, shows who answered
#   tools/lab/lab.sh ctl ARGS    fastlb ctl (ipvsadm language) against the lab's director
#   tools/lab/lab.sh reload      SIGHUP the director (it rereads $FLB_LAB_STATE/fastlb.toml)
#   tools/lab/lab.sh status      namespaces, addresses, XDP programs, processes
#   tools/lab/lab.sh down        remove everything (idempotent)
#
# Environment:
#   FLB_PREFIX     namespace name prefix (default flb-): FLB_PREFIX=flbt-dr- gives
#                  flbt-dr-client, flbt-dr-dir, ... so several labs can coexist.
#   FLB_LAB_STATE  state directory (default /tmp/${FLB_PREFIX}lab): configs, logs, pids,
#                  the ctl socket (ctl.sock).
#   FASTLB_CMD     the director, run in the director namespace as `$FASTLB_CMD --iface d0
#                  --iface d1 --config $FLB_LAB_STATE/fastlb.toml --ctl-socket ...
#                  --metrics 127.0.0.1:9108`. Unset: target/release/fastlb, built if
#                  missing. Set but empty: mode dr runs the bare forwarder instead (XDP_FWD,
#                  default target/release/xdp-fwd), sending every VIP:80 packet to rs1.
#
# Needs root, iproute2, ethtool, clang (for the XDP objects), curl, python3, and nginx (else
# python3 serves HTTP on :80 only) and iperf3 (else no iperf3 server).
set -euo pipefail

P=${FLB_PREFIX:-flb-}
NS_C=${P}client NS_D=${P}dir NS_SW=${P}sw NS_R1=${P}rs1 NS_R2=${P}rs2 NS_S=${P}sorry
ALL_NS="$NS_C $NS_D $NS_SW $NS_R1 $NS_R2 $NS_S"
VIP=10.80.100.1
STATE=${FLB_LAB_STATE:-/tmp/${P}lab}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
XDP_FWD=${XDP_FWD:-$ROOT/target/release/xdp-fwd}
FASTLB_DEFAULT=$ROOT/target/release/fastlb
FASTLB=${FASTLB_CMD-$FASTLB_DEFAULT}
METRICS=127.0.0.1:9108

die() { echo "lab: $*" >&2; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

[[ $P =~ ^[A-Za-z0-9_.-]{1,32}$ ]] || die "FLB_PREFIX must be 1-32 characters of [A-Za-z0-9_.-]"
# `down` removes the state directory: refuse anything that is not plainly a directory of ours.
[[ $STATE == /* && $STATE != / && ! $STATE =~ (^|/)\.\.(/|$) ]] \
    || die "FLB_LAB_STATE must be an absolute path below /"

compile_bpf() {
    mkdir -p "$STATE"
    command -v clang >/dev/null || die "clang is needed to build bpf/*.c"
    for p in tun_decap xdp_pass; do
        clang -O2 -g -Wall -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
            -c "$ROOT/bpf/$p.c" -o "$STATE/$p.o"
    done
}

no_offloads() {
    # A veth hands locally generated packets to XDP with their checksum still partial and
    # GSO frames larger than an AF_XDP frame: turn both off on every lab interface.
    nsx "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
}

# Starts nginx (:80 and :8080), the UDP echo (:53) and iperf3 (:5201, real servers only) in
# namespace $1, answering as $2. $3: the address the UDP echo binds (the VIP in dr/tun, so
# its answers leave from the VIP; any address in nat, where the director rewrites them).
start_servers() {
    local ns=$1 name=$2 udp_bind=$3
    local dir=$STATE/$name
    mkdir -p "$dir/www" "$dir/logs" "$dir/tmp"
    echo "served by $name" > "$dir/www/index.html"
    chmod -R a+rX "$STATE"
    if command -v nginx >/dev/null; then
        cat > "$dir/nginx.conf" <<EOF
daemon on;
user www-data;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 1000000;
    server { listen 80 backlog=4096; listen 8080; root $dir/www; }
}
EOF
        nsx "$ns" nginx -c "$dir/nginx.conf" -p "$dir" || die "nginx failed in $ns"
    else
        nsx "$ns" python3 -m http.server 80 --directory "$dir/www" >/dev/null 2>&1 &
    fi
    nsx "$ns" python3 "$ROOT/tools/lab/udp_echo.py" "$udp_bind" 53 "$name" \
        >"$dir/logs/udp_echo.log" 2>&1 &
    if [[ $name != sorry ]] && command -v iperf3 >/dev/null; then
        nsx "$ns" iperf3 -s -p 5201 -D --pidfile "$dir/iperf3.pid" --logfile "$dir/logs/iperf3.log"
    fi
}

# Waits until every server listens: python3 takes a moment to start on a busy machine.
wait_servers() {
    local ns want
    for ns in $NS_R1 $NS_R2 $NS_S; do
        want=3; [[ $ns == "$NS_S" ]] || want=4
        command -v iperf3 >/dev/null || want=$(( want > 3 ? 3 : want ))
        for _ in $(seq 100); do
            (( $(nsx "$ns" ss -ltnuH 'sport = :80 or sport = :8080 or sport = :53 or sport = :5201' \
                | wc -l) >= want )) && continue 2
            sleep 0.1
        done
        die "servers in $ns did not start"
    done
}

# Brings the web server of real server $1 (rs1, rs2, sorry) down or up: health check tests.
web() {
    local name=$1 action=$2 ns=${P}$1
    local dir=$STATE/$name
    case $action in
        stop) nsx "$ns" nginx -c "$dir/nginx.conf" -p "$dir" -s stop 2>/dev/null || true
              for _ in $(seq 50); do [[ -f $dir/nginx.pid ]] || break; sleep 0.1; done ;;
        start) nsx "$ns" nginx -c "$dir/nginx.conf" -p "$dir" ;;
        *) die "web NAME stop|start" ;;
    esac
}

up() {
    local mode=$1 config=$2 quiet=$3
    [[ $mode =~ ^(dr|nat|tun)$ ]] || die "mode must be dr, nat or tun"
    config=${config:-$ROOT/tools/lab/$mode.toml}
    [[ -f $config ]] || die "no config file $config"
    down quiet
    compile_bpf
    echo "$mode" > "$STATE/mode"
    cp "$config" "$STATE/fastlb.toml"
    for ns in $ALL_NS; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done

    ip link add c0 netns "$NS_C" type veth peer name d0 netns "$NS_D"
    ip link add d1 netns "$NS_D" type veth peer name sw-d netns "$NS_SW"
    ip link add e0 netns "$NS_R1" type veth peer name sw-r1 netns "$NS_SW"
    ip link add e0 netns "$NS_R2" type veth peer name sw-r2 netns "$NS_SW"
    ip link add e0 netns "$NS_S" type veth peer name sw-s netns "$NS_SW"
    nsx "$NS_SW" ip link add br0 type bridge
    for port in sw-d sw-r1 sw-r2 sw-s; do
        nsx "$NS_SW" ip link set "$port" master br0 up
        no_offloads "$NS_SW" "$port"
    done
    nsx "$NS_SW" ip link set br0 up

    nsx "$NS_C" ip addr add 10.80.1.10/24 dev c0
    nsx "$NS_D" ip addr add 10.80.1.1/24 dev d0
    nsx "$NS_D" ip addr add 10.80.2.1/24 dev d1
    nsx "$NS_R1" ip addr add 10.80.2.11/24 dev e0
    nsx "$NS_R2" ip addr add 10.80.2.12/24 dev e0
    nsx "$NS_S" ip addr add 10.80.2.20/24 dev e0
    for l in "$NS_C c0" "$NS_D d0" "$NS_D d1" "$NS_R1 e0" "$NS_R2 e0" "$NS_S e0"; do
        set -- $l
        nsx "$1" ip link set "$2" up
        no_offloads "$1" "$2"
    done
    nsx "$NS_C" ip route add default via 10.80.1.1
    nsx "$NS_D" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    for rs in $NS_R1 $NS_R2 $NS_S; do nsx "$rs" ip route add default via 10.80.2.1; done
    # XDP_TX or a redirect out of a veth needs an XDP program on the peer: put XDP_PASS
    # on the peers of the director's interfaces.
    nsx "$NS_C" ip link set dev c0 xdp obj "$STATE/xdp_pass.o" sec xdp
    nsx "$NS_SW" ip link set dev sw-d xdp obj "$STATE/xdp_pass.o" sec xdp

    local udp_bind=0.0.0.0
    case $mode in
        dr|tun)
            udp_bind=$VIP
            for rs in $NS_R1 $NS_R2 $NS_S; do
                nsx "$rs" ip addr add "$VIP/32" dev lo
                nsx "$rs" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
                nsx "$rs" sysctl -qw net.ipv4.conf.e0.arp_ignore=1 net.ipv4.conf.e0.arp_announce=2
            done ;;
    esac
    if [[ $mode == tun ]]; then
        for rs in $NS_R1 $NS_R2 $NS_S; do
            nsx "$rs" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                net.ipv4.conf.e0.rp_filter=0 net.ipv4.conf.lo.rp_filter=0
            nsx "$rs" ip link set dev e0 xdp obj "$STATE/tun_decap.o" sec xdp
        done
    fi

    start_servers "$NS_R1" rs1 "$udp_bind"
    start_servers "$NS_R2" rs2 "$udp_bind"
    start_servers "$NS_S" sorry "$udp_bind"
    wait_servers
    # Resolve the real servers' MACs in the director before anything needs them, and
    # let the director's kernel learn the client's: fastlb reads the kernel's neighbours
    # once a second, so without this the first answer to a brand-new client is dropped
    # (no_neighbour) and its first TCP connection waits for a SYN retransmit
    # (tests/e2e/new_client.sh).
    for a in 10.80.2.11 10.80.2.12 10.80.2.20; do
        nsx "$NS_D" ping -c1 -W1 "$a" >/dev/null 2>&1 || true
    done
    nsx "$NS_C" ping -c1 -W1 10.80.1.1 >/dev/null 2>&1 || true
    start_director "$mode"
    echo "lab up (mode $mode, namespaces ${P}*, state $STATE): curl from $NS_C to http://$VIP/"
    if [[ $quiet == 0 && -S $STATE/ctl.sock ]]; then
        echo "== 20 requests from $NS_C to http://$VIP/"
        test_curl 20
        echo "== fastlb ctl -L -n --stats"
        ctl -L -n --stats
    fi
}

fastlb_bin() {
    # Build the default binary on first use: `lab.sh up` alone must run fastlb.
    if [[ $FASTLB == "$FASTLB_DEFAULT" && ! -x $FASTLB_DEFAULT ]]; then
        echo "lab: building $FASTLB_DEFAULT" >&2
        (cd "$ROOT" && cargo build --release --bin fastlb) >&2 || die "cargo build failed"
    fi
}

start_director() {
    local mode=$1 cmd
    if [[ -n $FASTLB ]]; then
        fastlb_bin
        cmd="$FASTLB --iface d0 --iface d1 --config $STATE/fastlb.toml"
        cmd+=" --ctl-socket $STATE/ctl.sock --metrics $METRICS"
    elif [[ $mode == dr ]]; then
        [[ -x $XDP_FWD ]] || die "no $XDP_FWD: cargo build --release --bin xdp-fwd, or unset FASTLB_CMD"
        local mac
        mac=$(nsx "$NS_R1" cat /sys/class/net/e0/address)
        cmd="$XDP_FWD --iface d0 --iface d1 --cross --service tcp:$VIP:80 --dst-mac $mac"
    else
        echo "lab: no director started (FASTLB_CMD is empty)"
        return
    fi
    echo "lab: director: $cmd"
    # Not through nsx: a backgrounded shell function is a subshell, and its pid would not
    # be the director's (`ip netns exec` execs, so $! is the director itself).
    # shellcheck disable=SC2086
    ip netns exec "$NS_D" $cmd >"$STATE/director.log" 2>&1 &
    echo $! > "$STATE/director.pid"
    # fastlb logs "serving ..." once its workers, ctl socket and health checks are up;
    # xdp-fwd logs "running".
    for _ in $(seq 100); do
        grep -q 'serving\|running' "$STATE/director.log" 2>/dev/null && return
        kill -0 "$(cat "$STATE/director.pid")" 2>/dev/null || break
        sleep 0.1
    done
    cat "$STATE/director.log" >&2
    kill -0 "$(cat "$STATE/director.pid")" 2>/dev/null || die "director exited"
    die "director did not start within 10 s"
}

down() {
    if [[ -f $STATE/director.pid ]]; then
        local pid; pid=$(cat "$STATE/director.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid" 2>/dev/null || true
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    fi
    for ns in $ALL_NS; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    for ns in $ALL_NS; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$STATE"
    [[ ${1:-} == quiet ]] || echo "lab down"
}

status() {
    [[ -f $STATE/mode ]] && echo "mode: $(cat "$STATE/mode")" || echo "lab is down"
    for ns in $ALL_NS; do
        ip netns list 2>/dev/null | grep -qw "$ns" || continue
        echo "== $ns"
        nsx "$ns" ip -br addr | grep -v '^lo .*127.0.0.1/8 ::1/128' || true
        nsx "$ns" ip link | grep -o 'prog/xdp id [0-9]* name [a-z_]*\|xdpgeneric.*' | sed 's/^/   /' || true
        ip netns pids "$ns" | xargs -r ps -o pid=,comm= -p 2>/dev/null | sed 's/^/   /' || true
    done
    if [[ -S $STATE/ctl.sock ]]; then echo "== fastlb ctl -L -n"; ctl -L -n || true; fi
    [[ -f $STATE/director.log ]] && { echo "== director log"; tail -5 "$STATE/director.log"; }
    return 0
}

test_curl() {
    local n=${1:-6} out
    for _ in $(seq "$n"); do
        out=$(nsx "$NS_C" curl -s --max-time 3 "http://$VIP/" || echo "(no answer)")
        echo "$out"
    done | sort | uniq -c
}

ctl() {
    [[ -n $FASTLB ]] || die "ctl needs fastlb (FASTLB_CMD is empty)"
    # shellcheck disable=SC2086
    $FASTLB ctl --socket "$STATE/ctl.sock" "$@"
}

reload() {
    [[ -f $STATE/director.pid ]] || die "no director"
    kill -HUP "$(cat "$STATE/director.pid")"
}

[[ $(id -u) == 0 ]] || die "needs root"
cmd=${1:-}
shift || true
case $cmd in
    ctl) ctl "$@"; exit ;;
    web) web "$@"; exit ;;
esac
MODE=dr CONFIG= QUIET=0
ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --mode) MODE=$2; shift 2 ;;
        --config) CONFIG=$(realpath "$2"); shift 2 ;;
        --quiet) QUIET=1; shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
case $cmd in
    up) up "$MODE" "$CONFIG" "$QUIET" ;;
    down) down ;;
    status) status ;;
    test) test_curl "${ARGS[@]}" ;;
    reload) reload ;;
    *) sed -n '2,42p' "$0"; exit 2 ;;
esac
