# Shared by the namespace end-to-end scenarios (tests/e2e/*.sh, run by tests/e2e_lab.rs).
# Source it, then `lab_up NAME MODE [--config FILE]`: a lab with its own namespaces
# (flbt-NAME-*, or flbt-TAG-NAME-* with FLBT_TAG=TAG so that several copies of the suite can
# run on one machine at once) and state directory, torn down on exit whatever happens.
#
# A scenario that cannot run here calls `skip REASON` (or `need TOOL...`): it prints
# `SKIP: REASON` and exits 77, which tests/e2e_lab.rs counts as a skip, never as a pass.
set -euo pipefail

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB=$E2E_ROOT/tools/lab/lab.sh
VIP=10.80.100.1
RS1=10.80.2.11 RS2=10.80.2.12 SORRY=10.80.2.20
# The lab's IPv6 plan (every mode is dual-stack; docs/lab.md).
VIP6=fd80:100::1
RS1_6=fd80:2::11 RS2_6=fd80:2::12 SORRY6=fd80:2::20
CLIENT6=fd80:1::10
# Exit status of a scenario that cannot run here (automake's convention).
E2E_SKIPPED=77
# The director binary (tests/e2e_lab.rs passes its own; lab.sh would build this one).
FASTLB_CMD=${FASTLB_CMD-$E2E_ROOT/target/release/fastlb}
export FASTLB_CMD

log() { echo "[$(date +%T.%3N)] $*"; }
pass() { log "PASS: $*"; }
fail() { log "FAIL: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit "$E2E_SKIPPED"; }
# need TOOL...: skips the scenario unless every TOOL is installed.
need() {
    local t
    for t; do command -v "$t" >/dev/null || skip "needs $t (tools/packages.sh installs it)"; done
}

[[ $(id -u) == 0 ]] || skip "needs root (network namespaces, XDP, AF_XDP)"

# Monotonic milliseconds, for the measured times.
now_ms() { local t; read -r t _ </proc/uptime; echo $(( ${t/./} * 10 )); }

# stop_procs PID...: SIGINT (a fastlb stops without holding its traffic for a restart or
# writing a state file), then waits up to 5 s for each to end, then SIGKILL. A plain `kill`
# returns at once: a fastlb ending later would write its state file into a scratch
# directory already removed, leaving it behind.
stop_procs() {
    local p i
    for p; do kill -INT "$p" 2>/dev/null || true; done
    for p; do
        for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
}

# Commands run on exit before the lab goes down (a scenario's own namespaces, processes).
E2E_CLEANUP=()
on_exit() {
    local rc=$? c
    if [[ $rc != 0 && $rc != "$E2E_SKIPPED" && -f ${FLB_LAB_STATE:-/nonexistent}/director.log ]]; then
        echo "---- director log (last 40 lines)"
        tail -40 "$FLB_LAB_STATE/director.log"
    fi
    for c in "${E2E_CLEANUP[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
    "$LAB" down >/dev/null 2>&1 || true
    [[ -n ${E2E_TMP:-} ]] && rm -rf "$E2E_TMP"
    case $rc in
        0) echo "RESULT: passed" ;;
        "$E2E_SKIPPED") echo "RESULT: skipped" ;;
        *) echo "RESULT: failed (exit $rc)" ;;
    esac
}

# lab_init NAME: names (namespaces flbt-NAME-client, ...-dir, ...), a scratch directory
# $E2E_TMP, and the trap that tears it all down. lab_up calls it if the script did not.
lab_init() {
    local name=$1
    export FLB_PREFIX=flbt-${FLBT_TAG:+$FLBT_TAG-}$name-
    export FLB_LAB_STATE=/tmp/${FLB_PREFIX%-}
    E2E_TMP=$(mktemp -d "/tmp/${FLB_PREFIX%-}.XXXXXX")
    trap on_exit EXIT
}

# kernel_segment NAME NET TAP: the one-bridge DR segment where a fastlb director and a
# kernel IPVS director (qemu, tools/kernel-ipvs/kipvs) meet: namespaces ${FLB_PREFIX}br (the
# bridge), ...fl (fastlb, f0 NET.1), ...cl (client, c0 NET.10), ...rs (a DR real server,
# r0 NET.11, holding the VIP NET.100 on lo, echoing TCP :80 with socat); sets NS_BR NS_F
# NS_CL NS_RS VM TAP VIP FL KR CL RS K and the clean-ups. The VM (address KR = NET.2) is
# booted by kernel_boot.
kernel_segment() {
    local name=$1 net=$2 ns
    need python3 socat qemu-system-x86_64 busybox ipvsadm
    [[ -e /dev/net/tun ]] || skip "no /dev/net/tun (the VM's NIC is a tap)"
    K=$E2E_ROOT/tools/kernel-ipvs/kipvs
    lab_init "$name"
    NS_BR=${FLB_PREFIX}br NS_F=${FLB_PREFIX}fl NS_CL=${FLB_PREFIX}cl NS_RS=${FLB_PREFIX}rs
    VM=${FLB_PREFIX}vm
    TAP=$3${FLBT_TAG:-}0
    VIP=$net.100 FL=$net.1 KR=$net.2 CL=$net.10 RS=$net.11
    E2E_CLEANUP+=("$K stop $VM")
    for ns in "$NS_F" "$NS_CL" "$NS_RS" "$NS_BR"; do
        E2E_CLEANUP+=("stop_procs \$(ip netns pids $ns)" "ip netns del $ns")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip -n "$NS_BR" link add br0 type bridge
    ip -n "$NS_BR" link set br0 up
    segment_port "$NS_F" f0 "$FL"
    segment_port "$NS_CL" c0 "$CL"
    segment_port "$NS_RS" r0 "$RS"
    # The DR real server holds the VIP and does not answer ARP for it.
    ip netns exec "$NS_RS" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    ip -n "$NS_RS" addr add "$VIP/32" dev lo
    ip netns exec "$NS_RS" socat TCP-LISTEN:80,fork,reuseaddr EXEC:cat >/dev/null 2>&1 &
}

# segment_port NS IF ADDR: a veth from NS (IF, ADDR/24) to kernel_segment's bridge.
segment_port() {
    ip -n "$NS_BR" link add "p$2" type veth peer name "$2" netns "$1"
    ip -n "$NS_BR" link set "p$2" master br0 up
    ip -n "$1" addr add "$3/24" dev "$2"
    ip -n "$1" link set "$2" up
}

# kernel_boot RULES [MORE]: boots kernel_segment's VM on the bridge, loads RULES (ipvsadm -R
# text) with the VIP on its lo and KR on eth0, then runs MORE (a shell line) in it.
kernel_boot() {
    log "booting the kernel director"
    "$K" boot "$VM" --netns "$NS_BR" --nic "$TAP,bridge=br0" --owner $$ >"$E2E_TMP/boot.json" \
        || fail "the VM did not boot"
    printf '%s\n' "$1" >"$E2E_TMP/rules"
    "$K" put "$VM" "$E2E_TMP/rules" /tmp/rules
    "$K" exec "$VM" "ip link set eth0 up; ip addr add $KR/24 dev eth0; ip addr add $VIP/32 dev lo; ipvsadm -R < /tmp/rules${2:+; $2}" \
        || fail "configuring the VM"
}

# backup_segment: a namespace ${FLB_PREFIX}bak for a second (backup) fastlb, joined to the
# lab's director by its own sync link (sym 10.80.9.1 in the director, syb 10.80.9.2 there),
# created inside the namespaces so nothing of it is ever in the root one. Sets NS_B and
# BAK_SOCK, the functions bx (run there) and bctl (ctl of the backup), and the clean-ups.
backup_segment() {
    NS_B=${FLB_PREFIX}bak
    BAK_SOCK=$E2E_TMP/bak.sock
    E2E_CLEANUP+=("stop_procs \$(ip netns pids $NS_B)" "ip netns del $NS_B")
    ip netns add "$NS_B"
    dx ip link add sym type veth peer name syb netns "$NS_B"
    dx ip addr add 10.80.9.1/24 dev sym
    dx ip link set sym up
    ip -n "$NS_B" addr add 10.80.9.2/24 dev syb
    ip -n "$NS_B" link set syb up
    ip -n "$NS_B" link set lo up
}
bx() { ip netns exec "$NS_B" "$@"; }
bctl() { "$FASTLB_CMD" ctl --socket "$BAK_SOCK" "$@"; }

# lab_up NAME MODE [lab.sh up options]
lab_up() {
    local name=$1 mode=$2; shift 2
    [[ ${FLB_PREFIX:-} == "flbt-${FLBT_TAG:+$FLBT_TAG-}$name-" ]] || lab_init "$name"
    NS_C=${FLB_PREFIX}client NS_D=${FLB_PREFIX}dir
    NS_R1=${FLB_PREFIX}rs1 NS_R2=${FLB_PREFIX}rs2 NS_S=${FLB_PREFIX}sorry
    if [[ $mode == dr-flat ]]; then
        # The seed's one-bridge layout (lab.sh): one subnet, the VIPs on the director.
        VIP=10.80.3.100 RS1=10.80.3.11 RS2=10.80.3.12 SORRY=10.80.3.20
        VIP6=fd80:3::100 RS1_6=fd80:3::11 RS2_6=fd80:3::12 SORRY6=fd80:3::20
        CLIENT6=fd80:3::10
    fi
    local t0; t0=$(now_ms)
    "$LAB" up --mode "$mode" --quiet "$@"
    log "lab up in $(( $(now_ms) - t0 )) ms"
    WORKERS=$(sed -n 's/.* with \([0-9]*\) worker(s).*/\1/p' "$FLB_LAB_STATE/director.log" 2>/dev/null || true)
    log "director: ${WORKERS:-?} worker(s)"
}

cx() { ip netns exec "$NS_C" "$@"; }
dx() { ip netns exec "$NS_D" "$@"; }
ctl() { "$LAB" ctl "$@"; }

# curl_tally N [URL]: N requests, a new connection each (one curl process for speed:
# `Connection: close` keeps it from reusing connections); prints "COUNT BODY" lines. A
# request that fails prints nothing, so the counts then add up to less than N.
curl_tally() {
    local n=$1 url=${2:-http://$VIP/}
    local urls=(); for _ in $(seq "$n"); do urls+=("$url"); done
    local t0; t0=$(now_ms)
    # -w adds each request's timings on its own line ("@ connect first-byte total"), kept
    # apart below; requests slower than 0.5 s are shown (a lost packet costs 0.2-1 s).
    local out
    out=$(cx curl -s --max-time 3 -H 'Connection: close' \
        -w '@ %{time_connect} %{time_starttransfer} %{time_total} %{local_port}\n' "${urls[@]}") || true
    local slow; slow=$(awk '$1 == "@" && $4 > 0.5 {printf " [port %s: connect %.2f, first byte %.2f, total %.2f s]", $5, $2, $3, $4}' <<<"$out")
    log "$n requests in $(( $(now_ms) - t0 )) ms${slow:+; slow:$slow}" >&2
    grep -v '^@ ' <<<"$out" | grep -v '^$' \
        | sort | uniq -c | awk '{c=$1; $1=""; sub(/^ /, ""); print c, $0}' || true
}

# count BODY TALLY: how many answers in TALLY (curl_tally's output) were BODY.
count() { awk -v b="$1" '{c=$1; $1=""; sub(/^ /, "")} $0 == b {print c; f=1} END {if (!f) print 0}' <<<"$2"; }

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds; fails the wait otherwise.
wait_for() {
    local deadline=$(( $(now_ms) + $1 * 1000 )); shift
    until "$@" >/dev/null 2>&1; do
        (( $(now_ms) < deadline )) || return 1
        sleep 0.1
    done
}

# run_wrk SECONDS CONNECTIONS URL [wrk args]: runs wrk from the client, prints its report
# and sets WRK_REQS, WRK_RPS, WRK_SOCKERR (connect+read+write+timeout), WRK_NON2XX.
run_wrk() {
    local secs=$1 conns=$2 url=$3; shift 3
    local out
    out=$(cx wrk -t2 -c"$conns" -d"${secs}s" --timeout 3s "$@" "$url" 2>&1) || true
    echo "$out"
    WRK_REQS=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out")
    WRK_RPS=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
    WRK_NON2XX=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")
    WRK_SOCKERR=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
    WRK_REQS=${WRK_REQS:-0} WRK_NON2XX=${WRK_NON2XX:-0} WRK_SOCKERR=${WRK_SOCKERR:-0}
}

# udp_ask [PAYLOAD] [ADDRESS]: one DNS-style request to ADDRESS:53 (default the VIP) from
# the client; prints the answer.
udp_ask() {
    cx python3 - "${1:-query}" "${2:-$VIP}" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[2], 53))
s.send(sys.argv[1].encode())
try:
    print(s.recv(2048).decode())
except OSError as e:
    print("(no answer: %s)" % e)
EOF
}

# xdp_on_director: prints the director interfaces that still carry an XDP program.
xdp_on_director() {
    dx ip -d link show | awk '/^[0-9]+:/ {dev=$2} /prog\/xdp|xdpgeneric|xdpdrv/ {print dev}' | sort -u
}

# real_field PROTO PORT REAL_ADDR FIELD: a real server's figure from `ctl -L -n --json`
# (FIELD: weight, active_conns, inactive_conns, persistent_conns, conns, in_pkts, ...);
# prints "absent" when the service or the real server is not in the table. The service is
# the one of REAL_ADDR's address family.
real_field() {
    ctl -L -n --json | python3 -c '
import json, sys
proto, port, addr, field = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
family = "ipv6" if ":" in addr else "ipv4"
for s in json.load(sys.stdin)["services"]:
    if s["protocol"] == proto and s["port"] == port and s["family"] == family:
        for r in s["reals"]:
            if r["address"] == addr:
                print(r["stats"][field] if field in r["stats"] else r[field])
                sys.exit()
print("absent")' "$@"
}

# answered_sum TALLY: how many requests of curl_tally's output got an answer.
answered_sum() { awk '{s+=$1} END {print s+0}' <<<"$1"; }
