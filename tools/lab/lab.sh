#!/usr/bin/env bash
# The fastlb namespace lab: a client, a director, two real servers and a sorry server, in
# IPv4 and IPv6 at once (every mode is dual-stack).
#
# Modes dr, nat, tun: the director between the client's network and the servers' bridge.
#
#   flb-client                 flb-dir (director)                 flb-sw (bridge)      flb-rs1 / flb-rs2 / flb-sorry
#   c0 10.80.1.10/24 -- veth -- d0 10.80.1.1/24   d1 10.80.2.1/24 -- veth -- sw-d  br0  sw-r1 -- e0 10.80.2.11/24
#      fd80:1::10/64              fd80:1::1/64       fd80:2::1/64                       sw-r2 -- e0 10.80.2.12/24
#                                                                                   sw-s  -- e0 10.80.2.20/24
#                                                  (servers: fd80:2::11, fd80:2::12, fd80:2::20)
#
# The VIPs 10.80.100.1 and fd80:100::1 are routed VIPs: the client reaches them through
# its default route (the director), as a VIP announced by BGP would be; they are on no
# director interface, so replies that the real servers send back through the director's
# kernel (their default gateway) are plain forwarding.
#   dr   VIPs on the real servers' lo (/32, /128), arp_ignore=1, arp_announce=2; the
#        director only rewrites the destination MAC.
#   nat  the real servers hold no VIP; the director is their default gateway and rewrites
#        both directions.
#   tun  the real servers hold the VIPs on lo and strip the director's outer IPv4 or IPv6
#        header with bpf/tun_decap.c (XDP) on e0, rp_filter off.
#
# Mode dr-flat: the seed's DR lab. One bridge; the director has a single interface and
# holds the VIPs on it; the client, the director and the servers share one subnet.
#
#   flb-client c0 10.80.3.10/24  fd80:3::10/64 ---\
#   flb-dir    d0 10.80.3.1/24   fd80:3::1/64  ---- sw-* -- br0 (flb-sw)
#                 + VIP 10.80.3.100, fd80:3::100     |
#   flb-rs1/rs2/sorry e0 10.80.3.11/.12/.20, fd80:3::11/::12/::20 (VIPs on lo, arp_ignore=1,
#                 arp_announce=2)
#
# Mode ha: a director pair (docs/ha.md). dr-flat's segment with a second director; neither
# holds the VIP by itself: real keepalived (VRRP only, `keepalived -P`) runs on each and
# moves 10.80.3.100 between them, and each fastlb follows it, forwarding while its director
# holds the VIP and dropping service traffic as the standby otherwise. One file,
# tools/lab/ha.conf, configures both keepalived processes and both fastlb directors. IPv4.
#
#   flb-dir  d0 10.80.3.1/24  (keepalived -i dir1, priority 150: MASTER at start)
#   flb-dir2 d0 10.80.3.2/24  (keepalived -i dir2, priority 100)
#   the real servers also run tools/lab/tcp_echo.py on :7 (VIP:7 is balanced too).
#
# Mode ha-nat: the pair in NAT. Two bridges: the client's (br0: client 10.80.5.10, the
# directors' d0 10.80.5.1 and .2, the VIP 10.80.5.100) and the servers' (br1: the
# directors' d1 10.80.4.2 and .3, the servers 10.80.4.11, .12, .20). The servers' default
# gateway 10.80.4.1 is a second address of the same VRRP instance, on the MASTER's d1, so
# their replies follow the VIP (tools/lab/ha-nat.conf).
#
# Every real server (and the sorry server) runs nginx on :80 and :8080 ("served by rs1"),
# a UDP echo on :53 (tools/lab/udp_echo.py, answers "rs1 <request>"); rs1 and rs2 also run
# an iperf3 server on :5201. tools/lab/<mode>.toml balances all of them (docs/lab.md).
# Nothing is tuned for fastlb: default offloads, no neighbour entries made in advance.
#
# Usage:
#   tools/lab/lab.sh up --mode ecmp    three directors behind a BGP router: tools/lab/ecmp.sh
#   tools/lab/lab.sh up --mode ecmp --kernel-director
#                                      and a kernel IPVS director (qemu) in the same group
#   tools/lab/lab.sh up [--mode dr|nat|tun|dr-flat|ha|ha-nat] [--config FILE]
#                        [--quiet] [--prometheus] [--queues N]
#                        install missing Debian packages (tools/packages.sh), build fastlb,
#                        build the lab, start the servers and the director; unless
#                        --quiet, send 20 requests per address family and print who
#                        answered and the director's counters. --prometheus: also a real
#                        Prometheus (Debian's) in the director namespace, on
#                        127.0.0.1:9090 there, scraping fastlb's metrics every second,
#                        its data in $FLB_LAB_STATE/prometheus (removed by `down`).
#                        --queues N (modes dr, nat, tun): the director's veths get N
#                        queues each end, fastlb one pinned worker per queue
#   tools/lab/lab.sh promql EXPR   an instant query to the lab's Prometheus: its JSON answer
#   tools/lab/lab.sh test [N] [4|6]   N curls from the client to the VIP, shows who answered
#   tools/lab/lab.sh ctl ARGS    fastlb ctl (ipvsadm language) against the lab's director
#   tools/lab/lab.sh ipvsadm ARGS  the same through a link named ipvsadm ($STATE/bin)
#   tools/lab/lab.sh reload      SIGHUP the director (it rereads $FLB_LAB_STATE/fastlb.toml)
#   tools/lab/lab.sh web NAME stop|start   stop or start nginx on rs1, rs2 or sorry
#   tools/lab/lab.sh status      namespaces, addresses, XDP programs, processes
#   tools/lab/lab.sh ha ACTION DIR   mode ha: on director dir1 or dir2, `kill` (kill -9 its
#                        keepalived and fastlb, take d0 down: the director dies), `stop`
#                        (SIGTERM both: keepalived gives the VIP up at once), `start`
#                        (d0 up, fastlb and keepalived started again), `who` (DIR: any;
#                        prints the director holding the VIP). `lab.sh ctl` talks to dir1,
#                        FLB_DIR=2 lab.sh ctl to dir2.
#   tools/lab/lab.sh down        remove everything (idempotent)
#
# Environment:
#   FLB_PREFIX     namespace name prefix (default flb-): FLB_PREFIX=flbt-dr- gives
#                  flbt-dr-client, flbt-dr-dir, ... so several labs can coexist.
#   FLB_LAB_STATE  state directory (default /tmp/${FLB_PREFIX}lab): configs, logs, pids,
#                  the ctl socket (ctl.sock), bin/ipvsadm.
#   FASTLB_CMD     the director, run in the director namespace as `$FASTLB_CMD --iface d0
#                  [--iface d1] --config $FLB_LAB_STATE/fastlb.toml --ctl-socket ...
#                  --metrics 127.0.0.1:9108`. Unset: target/release/fastlb, built if
#                  missing. Set but empty: no director (the lab alone).
set -euo pipefail

P=${FLB_PREFIX:-flb-}
NS_C=${P}client NS_D=${P}dir NS_SW=${P}sw NS_R1=${P}rs1 NS_R2=${P}rs2 NS_S=${P}sorry
NS_D2=${P}dir2
ALL_NS="$NS_C $NS_D $NS_D2 $NS_SW $NS_R1 $NS_R2 $NS_S"
STATE=${FLB_LAB_STATE:-/tmp/${P}lab}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FASTLB_DEFAULT=$ROOT/target/release/fastlb
FASTLB=${FASTLB_CMD-$FASTLB_DEFAULT}
METRICS=127.0.0.1:9108

die() { echo "lab: $*" >&2; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

[[ $P =~ ^[A-Za-z0-9_.-]{1,32}$ ]] || die "FLB_PREFIX must be 1-32 characters of [A-Za-z0-9_.-]"
# `down` removes the state directory: refuse anything that is not plainly a directory of ours.
[[ $STATE == /* && $STATE != / && ! $STATE =~ (^|/)\.\.(/|$) ]] \
    || die "FLB_LAB_STATE must be an absolute path below /"

# The address plan of a mode: sets VIP, VIP6, the servers' addresses and prefixes.
plan() {
    case $1 in
        ha-nat)
            NET=10.80.4 NET6=fd80:4:: VIP=10.80.5.100 VIP6=fd80:5::100
            DIR_ADDR=10.80.5.1 DIR_ADDR6=fd80:5::1 CLIENT=10.80.5.10 CLIENT6=fd80:5::10 ;;
        dr-flat|ha)
            NET=10.80.3 NET6=fd80:3:: VIP=10.80.3.100 VIP6=fd80:3::100
            DIR_ADDR=10.80.3.1 DIR_ADDR6=fd80:3::1 CLIENT=10.80.3.10 CLIENT6=fd80:3::10 ;;
        *)
            NET=10.80.2 NET6=fd80:2:: VIP=10.80.100.1 VIP6=fd80:100::1
            DIR_ADDR=10.80.1.1 DIR_ADDR6=fd80:1::1 CLIENT=10.80.1.10 CLIENT6=fd80:1::10 ;;
    esac
}

compile_bpf() {
    mkdir -p "$STATE"
    command -v clang >/dev/null || die "clang is needed to build bpf/*.c"
    clang -O2 -g -Wall -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
        -c "$ROOT/bpf/tun_decap.c" -o "$STATE/tun_decap.o"
}

# Adds address $3 (IPv6 without duplicate address detection: the lab's addresses are
# unique by construction, and a tentative address cannot be used for a second or two).
addr() {
    local ns=$1 dev=$2 a=$3
    if [[ $a == *:* ]]; then nsx "$ns" ip -6 addr add "$a" dev "$dev" nodad
    else nsx "$ns" ip addr add "$a" dev "$dev"; fi
}

# Starts nginx (:80 and :8080), the UDP echo (:53) and iperf3 (:5201, real servers only) in
# namespace $1, answering as $2. $3 and $4: the IPv4 and IPv6 addresses the UDP echo binds
# (the VIPs in dr/tun, so its answers leave from the VIP; any address in nat, where the
# director rewrites them).
start_servers() {
    local ns=$1 name=$2 udp_bind=$3 udp_bind6=$4
    local dir=$STATE/$name
    mkdir -p "$dir/www" "$dir/logs" "$dir/tmp"
    echo "served by $name" > "$dir/www/index.html"
    chmod -R a+rX "$STATE"
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
    server {
        listen 80 backlog=4096; listen [::]:80 backlog=4096;
        listen 8080; listen [::]:8080;
        root $dir/www;
    }
}
EOF
    nsx "$ns" nginx -c "$dir/nginx.conf" -p "$dir" || die "nginx failed in $ns"
    nsx "$ns" python3 "$ROOT/tools/lab/udp_echo.py" "$udp_bind" 53 "$name" \
        >"$dir/logs/udp_echo.log" 2>&1 &
    nsx "$ns" python3 "$ROOT/tools/lab/udp_echo.py" "$udp_bind6" 53 "$name" \
        >"$dir/logs/udp_echo6.log" 2>&1 &
    if [[ $name != sorry ]]; then
        nsx "$ns" iperf3 -s -p 5201 -D --pidfile "$dir/iperf3.pid" --logfile "$dir/logs/iperf3.log"
    fi
}

# Waits until every server listens (python3 takes a moment to start on a busy machine) and
# every IPv6 link-local address has finished duplicate address detection.
wait_servers() {
    local ns want
    for ns in $NS_R1 $NS_R2 $NS_S; do
        # nginx :80 and :8080 in both families, two UDP echoes, iperf3 on the real servers.
        want=6; [[ $ns == "$NS_S" ]] || want=7
        for _ in $(seq 100); do
            (( $(nsx "$ns" ss -ltnuH 'sport = :80 or sport = :8080 or sport = :53 or sport = :5201' \
                | wc -l) >= want )) && continue 2
            sleep 0.1
        done
        nsx "$ns" ss -ltnu >&2
        die "servers in $ns did not start"
    done
    for ns in $ALL_NS; do
        [[ -e /run/netns/$ns ]] || continue    # dir2: mode ha only
        for _ in $(seq 50); do
            [[ -z $(nsx "$ns" ip -6 addr show tentative) ]] && continue 2
            sleep 0.1
        done
        die "IPv6 addresses in $ns still tentative after 5 s"
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

# The real servers' side: addresses, default routes through $1 and $2 (none if empty),
# the VIPs on lo with ARP kept quiet about them (dr, tun, dr-flat), decapsulation (tun).
setup_servers() {
    local mode=$1 gw=$2 gw6=$3 rs last
    for rs in "$NS_R1 11" "$NS_R2 12" "$NS_S 20"; do
        set -- $rs
        addr "$1" e0 "$NET.$2/24"
        addr "$1" e0 "$NET6$2/64"
        nsx "$1" ip link set e0 up
        [[ -z $gw ]] || nsx "$1" ip route add default via "$gw"
        [[ -z $gw6 ]] || nsx "$1" ip -6 route add default via "$gw6"
        if [[ $mode != nat && $mode != ha-nat ]]; then
            addr "$1" lo "$VIP/32"
            addr "$1" lo "$VIP6/128"
            nsx "$1" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
            nsx "$1" sysctl -qw net.ipv4.conf.e0.arp_ignore=1 net.ipv4.conf.e0.arp_announce=2
        fi
        if [[ $mode == tun ]]; then
            # The inner packet's source (the client) is not reachable through e0.
            nsx "$1" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                net.ipv4.conf.e0.rp_filter=0 net.ipv4.conf.lo.rp_filter=0
            nsx "$1" ip link set dev e0 xdp obj "$STATE/tun_decap.o" sec xdp
        fi
    done
}

up() {
    local mode=$1 config=$2 quiet=$3 prometheus=${4:-0}
    [[ $mode =~ ^(dr|nat|tun|dr-flat|ha|ha-nat)$ ]] \
        || die "mode must be dr, nat, tun, dr-flat, ha or ha-nat"
    local default=$ROOT/tools/lab/$mode.toml
    [[ $mode == ha* ]] && default=$ROOT/tools/lab/$mode.conf
    config=${config:-$default}
    [[ -f $config ]] || die "no config file $config"
    FASTLB_PACKAGES_WHO=lab ensure_packages build lab || die "missing Debian packages"
    [[ -z $FASTLB ]] || fastlb_bin
    down quiet
    trap up_failed EXIT
    compile_bpf
    plan "$mode"
    echo "$mode" > "$STATE/mode"
    cp "$config" "$STATE/fastlb.toml"
    local namespaces=$ALL_NS
    [[ $mode == ha* ]] || namespaces=${ALL_NS/ $NS_D2/}
    for ns in $namespaces; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done

    nsx "$NS_SW" ip link add br0 type bridge
    local ports="sw-d sw-r1 sw-r2 sw-s"
    ip link add e0 netns "$NS_R1" type veth peer name sw-r1 netns "$NS_SW"
    ip link add e0 netns "$NS_R2" type veth peer name sw-r2 netns "$NS_SW"
    ip link add e0 netns "$NS_S" type veth peer name sw-s netns "$NS_SW"
    if [[ $mode == ha-nat ]]; then
        # The servers on their own bridge, br1; the client and the directors' d0 on br0.
        nsx "$NS_SW" ip link add br1 type bridge
        ip link add c0 netns "$NS_C" type veth peer name sw-c netns "$NS_SW"
        ip link add d0 netns "$NS_D" type veth peer name sw-d netns "$NS_SW"
        ip link add d0 netns "$NS_D2" type veth peer name sw-d2 netns "$NS_SW"
        ip link add d1 netns "$NS_D" type veth peer name sw-e netns "$NS_SW"
        ip link add d1 netns "$NS_D2" type veth peer name sw-e2 netns "$NS_SW"
        for port in sw-r1 sw-r2 sw-s sw-e sw-e2; do
            nsx "$NS_SW" ip link set "$port" master br1 up
        done
        nsx "$NS_SW" ip link set br1 up
        ports="sw-c sw-d sw-d2"
    elif [[ $mode == dr-flat || $mode == ha ]]; then
        ip link add c0 netns "$NS_C" type veth peer name sw-c netns "$NS_SW"
        ip link add d0 netns "$NS_D" type veth peer name sw-d netns "$NS_SW"
        ports+=" sw-c"
        if [[ $mode == ha ]]; then
            ip link add d0 netns "$NS_D2" type veth peer name sw-d2 netns "$NS_SW"
            ports+=" sw-d2"
        fi
    else
        # --queues N: the director's links (both ends) get N queues, so fastlb opens N
        # AF_XDP sockets and runs N workers; a veth delivers a frame on the receive queue
        # of the sender's transmit queue, which the sender picks by flow hash (RSS's role).
        local q=()
        [[ $QUEUES == 1 ]] || q=(numtxqueues "$QUEUES" numrxqueues "$QUEUES")
        ip link add c0 netns "$NS_C" "${q[@]}" type veth peer name d0 netns "$NS_D" "${q[@]}"
        ip link add d1 netns "$NS_D" "${q[@]}" type veth peer name sw-d netns "$NS_SW" "${q[@]}"
    fi
    for port in $ports; do nsx "$NS_SW" ip link set "$port" master br0 up; done
    nsx "$NS_SW" ip link set br0 up

    addr "$NS_C" c0 "$CLIENT/24"
    addr "$NS_C" c0 "$CLIENT6/64"
    nsx "$NS_C" ip link set c0 up
    addr "$NS_D" d0 "$DIR_ADDR/24"
    addr "$NS_D" d0 "$DIR_ADDR6/64"
    nsx "$NS_D" ip link set d0 up
    if [[ $mode == ha ]]; then
        # The VIP is keepalived's to add: none here.
        addr "$NS_D2" d0 10.80.3.2/24
        nsx "$NS_D2" ip link set d0 up
        setup_servers "$mode" "" ""
    elif [[ $mode == ha-nat ]]; then
        # The VIP and the servers' gateway 10.80.4.1 are keepalived's to add.
        addr "$NS_D2" d0 10.80.5.2/24
        addr "$NS_D" d1 10.80.4.2/24
        addr "$NS_D2" d1 10.80.4.3/24
        for l in "$NS_D2 d0" "$NS_D d1" "$NS_D2 d1"; do set -- $l; nsx "$1" ip link set "$2" up; done
        setup_servers "$mode" 10.80.4.1 ""
    elif [[ $mode == dr-flat ]]; then
        # The seed's director: the VIPs on its one interface, answering ARP and neighbour
        # solicitations for them; the servers answer the client directly on the segment.
        # The IPv6 VIP is deprecated (preferred_lft 0): still the director's, but never
        # chosen as the source of its own connections (health checks), which the real
        # servers, holding the VIP themselves, would drop; IPv6 source selection prefers
        # it to the /64 address otherwise (longest matching prefix).
        addr "$NS_D" d0 "$VIP/32"
        nsx "$NS_D" ip -6 addr add "$VIP6/128" dev d0 nodad preferred_lft 0
        setup_servers "$mode" "" ""
    else
        addr "$NS_D" d1 "10.80.2.1/24"
        addr "$NS_D" d1 "fd80:2::1/64"
        nsx "$NS_D" ip link set d1 up
        nsx "$NS_C" ip route add default via "$DIR_ADDR"
        nsx "$NS_C" ip -6 route add default via "$DIR_ADDR6"
        nsx "$NS_D" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
        setup_servers "$mode" 10.80.2.1 fd80:2::1
    fi

    local udp_bind=0.0.0.0 udp_bind6=::
    [[ $mode == nat || $mode == ha-nat ]] || udp_bind=$VIP udp_bind6=$VIP6
    start_servers "$NS_R1" rs1 "$udp_bind" "$udp_bind6"
    start_servers "$NS_R2" rs2 "$udp_bind" "$udp_bind6"
    start_servers "$NS_S" sorry "$udp_bind" "$udp_bind6"
    wait_servers
    if [[ $mode == ha* ]]; then
        for rs in "$NS_R1 rs1" "$NS_R2 rs2"; do
            set -- $rs
            nsx "$1" python3 "$ROOT/tools/lab/tcp_echo.py" 0.0.0.0 7 "$2" \
                >"$STATE/$2/logs/tcp_echo.log" 2>&1 &
        done
        for ns in $NS_R1 $NS_R2; do
            for _ in $(seq 100); do
                [[ -n $(nsx "$ns" ss -ltnH 'sport = :7') ]] && continue 2
                sleep 0.1
            done
            die "tcp_echo in $ns did not start"
        done
    fi
    mkdir -p "$STATE/bin"
    [[ -z $FASTLB ]] || ln -sf "$(realpath "$FASTLB")" "$STATE/bin/ipvsadm"
    if [[ $mode == ha* ]]; then
        mv "$STATE/fastlb.toml" "$STATE/keepalived.conf"
        ha_start dir1
        ha_start dir2
        ha_wait_master
    else
        start_director "$mode"
    fi
    [[ $prometheus == 0 ]] || start_prometheus
    echo "lab up (mode $mode, namespaces ${P}*, state $STATE): curl from $NS_C to http://$VIP/ or http://[$VIP6]/"
    if [[ $quiet == 0 && -S $STATE/ctl.sock ]]; then
        echo "== 20 requests from $NS_C to http://$VIP/"
        test_curl 20 4
        if [[ $mode != ha* ]]; then
            echo "== 20 requests from $NS_C to http://[$VIP6]/"
            test_curl 20 6
        fi
        echo "== fastlb ctl -L -n --stats"
        ctl -L -n --stats
    fi
    trap - EXIT
}

fastlb_bin() {
    # Build the default binary on first use: `lab.sh up` alone must run fastlb.
    if [[ $FASTLB == "$FASTLB_DEFAULT" && ! -x $FASTLB_DEFAULT ]]; then
        FASTLB_PACKAGES_WHO=lab need_cargo || exit 1
        echo "lab: building $FASTLB_DEFAULT" >&2
        (cd "$ROOT" && cargo build --release --bin fastlb) >&2 || die "cargo build failed"
    fi
}

start_director() {
    local mode=$1 cmd
    if [[ -z $FASTLB ]]; then
        echo "lab: no director started (FASTLB_CMD is empty)"
        return
    fi
    cmd="$FASTLB --iface d0"
    [[ $mode == dr-flat ]] || cmd+=" --iface d1"
    cmd+=" --config $STATE/fastlb.toml --ctl-socket $STATE/ctl.sock --metrics $METRICS"
    echo "lab: director: $cmd"
    # Not through nsx: a backgrounded shell function is a subshell, and its pid would not
    # be the director's (`ip netns exec` execs, so $! is the director itself).
    # shellcheck disable=SC2086
    ip netns exec "$NS_D" $cmd >"$STATE/director.log" 2>&1 &
    echo $! > "$STATE/director.pid"
    # fastlb logs "serving ..." once its workers, ctl socket and health checks are up.
    for _ in $(seq 100); do
        grep -q 'serving' "$STATE/director.log" 2>/dev/null && return
        kill -0 "$(cat "$STATE/director.pid")" 2>/dev/null || break
        sleep 0.1
    done
    cat "$STATE/director.log" >&2
    kill -0 "$(cat "$STATE/director.pid")" 2>/dev/null || die "director exited"
    die "director did not start within 10 s"
}

# Prometheus in the director namespace (where fastlb's metrics listen, on its loopback),
# scraping every second. The namespace makes its port the lab's own.
PROM_ADDR=127.0.0.1:9090
start_prometheus() {
    command -v prometheus >/dev/null || die "--prometheus needs Debian's prometheus (tools/packages.sh, group test)"
    cat > "$STATE/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fastlb
    static_configs:
      - targets: ['$METRICS']
YML
    mkdir -p "$STATE/prometheus"
    ip netns exec "$NS_D" prometheus --config.file="$STATE/prometheus.yml" \
        --storage.tsdb.path="$STATE/prometheus" --web.listen-address=$PROM_ADDR \
        >"$STATE/prometheus.log" 2>&1 &
    echo $! > "$STATE/prometheus.pid"
    for _ in $(seq 150); do
        nsx "$NS_D" curl -sf "http://$PROM_ADDR/-/ready" >/dev/null 2>&1 && {
            echo "lab: prometheus on $PROM_ADDR in $NS_D, scraping $METRICS"
            return
        }
        kill -0 "$(cat "$STATE/prometheus.pid")" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$STATE/prometheus.log" >&2
    die "prometheus did not become ready within 15 s"
}

promql() {
    [[ -f $STATE/prometheus.pid ]] || die "no prometheus in this lab (up --prometheus)"
    nsx "$NS_D" curl -sfG --max-time 5 "http://$PROM_ADDR/api/v1/query" --data-urlencode "query=$1"
}

# ---- mode ha: the director pair -----------------------------------------------------------

# The namespace, state directory and ctl socket of director $1 (dir1 or dir2).
ha_dir() {
    case $1 in
        dir1) HA_NS=$NS_D HA_ID=dir1 HA_CTL=$STATE/ctl.sock ;;
        dir2) HA_NS=$NS_D2 HA_ID=dir2 HA_CTL=$STATE/ctl2.sock ;;
        *) die "director must be dir1 or dir2" ;;
    esac
    HA_STATE=$STATE/$HA_ID
    mkdir -p "$HA_STATE"
}

# Starts fastlb, then keepalived (VRRP only), on director $1; fastlb starts as the standby
# and forwards once keepalived gives its director the VIP.
ha_start() {
    ha_dir "$1"
    [[ -n $FASTLB ]] || die "mode ha needs fastlb (FASTLB_CMD is empty)"
    local cmd="$FASTLB --iface d0" dev
    for dev in d0 d1; do
        nsx "$HA_NS" test -e "/sys/class/net/$dev" || continue
        nsx "$HA_NS" ip link set "$dev" up
        if [[ $dev == d1 ]]; then cmd+=" --iface d1"; fi
    done
    cmd+=" --config $STATE/keepalived.conf --ctl-socket $HA_CTL"
    cmd+=" --metrics $METRICS"
    # shellcheck disable=SC2086
    ip netns exec "$HA_NS" $cmd >>"$HA_STATE/fastlb.log" 2>&1 &
    echo $! > "$HA_STATE/fastlb.pid"
    local n=$(( $(grep -c 'serving' "$HA_STATE/fastlb.log" 2>/dev/null || true) ))
    for _ in $(seq 100); do
        (( $(grep -c 'serving' "$HA_STATE/fastlb.log" || true) > n )) && break
        kill -0 "$(cat "$HA_STATE/fastlb.pid")" 2>/dev/null || { cat "$HA_STATE/fastlb.log" >&2; die "fastlb on $1 exited"; }
        sleep 0.1
    done
    (( $(grep -c 'serving' "$HA_STATE/fastlb.log" || true) > n )) || die "fastlb on $1 did not start within 10 s"
    ip netns exec "$HA_NS" keepalived -P -n -l -D -f "$STATE/keepalived.conf" -i "$HA_ID" \
        -p "$HA_STATE/keepalived.pid" -r "$HA_STATE/vrrp.pid" >>"$HA_STATE/keepalived.log" 2>&1 &
    echo $! > "$HA_STATE/keepalived.main.pid"
}

# Prints the director (dir1, dir2) holding the VIP, or "none".
ha_who() {
    local who=none d
    for d in dir1 dir2; do
        ha_dir "$d"
        [[ -e /run/netns/$HA_NS ]] || continue
        # A director whose link is down holds nothing on the segment, whatever addresses
        # it still has (a killed keepalived had no time to remove the VIP).
        [[ $(nsx "$HA_NS" cat /sys/class/net/d0/operstate 2>/dev/null) == down ]] && continue
        nsx "$HA_NS" ip -br addr show dev d0 2>/dev/null | grep -qw "$VIP/32" && who="$who $d"
    done
    who=${who#none }
    echo "$who"
}

ha_wait_master() {
    for _ in $(seq 150); do
        [[ $(ha_who) == dir? ]] && return
        sleep 0.1
    done
    die "no director holds the VIP after 15 s: $(ha_who)"
}

# ha ACTION DIR: see the usage at the top.
ha() {
    local action=$1 d=${2:-}
    local mode; mode=$(cat "$STATE/mode" 2>/dev/null || true)
    [[ $mode == ha* ]] || die "the lab is not up in mode ha or ha-nat"
    plan "$mode"
    case $action in
        who) ha_who; return ;;
        kill|stop|start) ha_dir "$d" ;;
        *) die "ha kill|stop|start dir1|dir2, or ha who" ;;
    esac
    local sig=TERM f pid
    [[ $action == kill ]] && sig=KILL
    case $action in
        kill|stop)
            # A dying director: its link goes first, so that nothing it does while killed
            # (keepalived's VRRP child giving the VIP up) reaches the segment.
            if [[ $action == kill ]]; then
                for dev in d0 d1; do
                    nsx "$HA_NS" test -e "/sys/class/net/$dev" || continue
                    nsx "$HA_NS" ip link set "$dev" down
                done
            fi
            if [[ $action == kill ]]; then
                pid=$(cat "$HA_STATE/vrrp.pid" 2>/dev/null) && kill -KILL "$pid" 2>/dev/null || true
            fi
            # keepalived first: on a clean stop it gives the VIP up (priority 0 advert) while
            # fastlb still forwards, then fastlb, already the standby, stops.
            for f in keepalived.main fastlb; do
                pid=$(cat "$HA_STATE/$f.pid" 2>/dev/null) || continue
                kill -"$sig" "$pid" 2>/dev/null || true
                for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            done ;;
        start) ha_start "$d" ;;
    esac
}

down() {
    local f pid
    for f in "$STATE/director.pid" "$STATE"/dir?/keepalived.main.pid "$STATE"/dir?/fastlb.pid; do
        [[ -f $f ]] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid" 2>/dev/null || true
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    for ns in $ALL_NS; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    # Let them go (Prometheus flushes its data) before their files are removed.
    for _ in $(seq 50); do
        local left=
        for ns in $ALL_NS; do left+=$(ip netns pids "$ns" 2>/dev/null || true); done
        [[ -z $left ]] && break
        sleep 0.1
    done
    for ns in $ALL_NS; do ip netns del "$ns" 2>/dev/null || true; done
    [[ ${1:-} == keep-state ]] && return
    rm -rf "$STATE"
    [[ ${1:-} == quiet ]] || echo "lab down"
}

# EXIT trap of `up`: a failed `up` removes the namespaces and processes it made, and keeps
# the state directory (logs) for the reader; the next `up` or `down` removes that too.
up_failed() {
    local rc=$?
    [[ $rc == 0 ]] && return
    echo "lab: up failed: removing the partial lab (its logs stay in $STATE)" >&2
    down keep-state
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
    if [[ $(cat "$STATE/mode" 2>/dev/null) == ha* ]]; then
        plan "$(cat "$STATE/mode")"
        echo "== VIP held by: $(ha_who)"
        local f
        for f in "$STATE"/dir?/fastlb.log; do echo "== $f"; grep VRRP "$f" | tail -3; done
    fi
    return 0
}

# test_curl [N] [4|6]: N requests from the client to the VIP of that family.
test_curl() {
    local n=${1:-6} family=${2:-4} out url
    [[ -f $STATE/mode ]] || die "lab is down"
    plan "$(cat "$STATE/mode")"
    url=http://$VIP/
    [[ $family == 6 ]] && url=http://[$VIP6]/
    for _ in $(seq "$n"); do
        out=$(nsx "$NS_C" curl -s --max-time 3 "$url" || echo "(no answer)")
        echo "$out"
    done | sort | uniq -c
}

ctl() {
    [[ -n $FASTLB ]] || die "ctl needs fastlb (FASTLB_CMD is empty)"
    local sock=$STATE/ctl.sock
    [[ ${FLB_DIR:-1} == 2 ]] && sock=$STATE/ctl2.sock
    FASTLB_CTL_SOCKET=$sock "$FASTLB" ctl "$@"
}

ipvsadm_cmd() {
    [[ -x $STATE/bin/ipvsadm ]] || die "no director (no $STATE/bin/ipvsadm)"
    FASTLB_CTL_SOCKET=$STATE/ctl.sock "$STATE/bin/ipvsadm" "$@"
}

reload() {
    [[ -f $STATE/director.pid ]] || die "no director"
    kill -HUP "$(cat "$STATE/director.pid")"
}

[[ $(id -u) == 0 ]] || die "needs root"
source "$ROOT/tools/packages.sh"
# Mode ecmp (three directors behind a BGP router) is its own script: tools/lab/ecmp.sh.
if [[ ${1:-} == up && " $* " == *" --mode ecmp "* ]]; then
    ECMP_ARGS=(dr) GROUPS_NEEDED=(build lab)
    if [[ " $* " == *" --kernel-director "* ]]; then
        ECMP_ARGS+=(--kernel-director) GROUPS_NEEDED+=(kernel)
    fi
    FASTLB_PACKAGES_WHO=lab ensure_packages "${GROUPS_NEEDED[@]}" || die "missing Debian packages"
    [[ -z $FASTLB ]] || fastlb_bin
    exec "$ROOT/tools/lab/ecmp.sh" up "${ECMP_ARGS[@]}"
fi
cmd=${1:-}
shift || true
case $cmd in
    ctl) ctl "$@"; exit ;;
    ipvsadm) ipvsadm_cmd "$@"; exit ;;
    promql) promql "$@"; exit ;;
    web) web "$@"; exit ;;
    ha) ha "$@"; exit ;;
esac
MODE=dr CONFIG= QUIET=0 PROMETHEUS=0 QUEUES=1
ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --mode) MODE=$2; shift 2 ;;
        --config) CONFIG=$(realpath "$2"); shift 2 ;;
        --quiet) QUIET=1; shift ;;
        --prometheus) PROMETHEUS=1; shift ;;
        --queues) QUEUES=$2; shift 2
            [[ $QUEUES =~ ^[1-9][0-9]?$ ]] || die "--queues takes 1-99" ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
case $cmd in
    up) up "$MODE" "$CONFIG" "$QUIET" "$PROMETHEUS" ;;
    down) down ;;
    status) status ;;
    test) test_curl "${ARGS[@]}" ;;
    reload) reload ;;
    *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 2 ;;
esac
