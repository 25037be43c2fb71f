#!/usr/bin/env bash
# A kernel IPVS director in the same ECMP group as three fastlb directors: the migration path
# from kernel LVS to fastlb without a maintenance window. tools/lab/ecmp.sh up MODE
# --kernel-director: Debian's 6.1 kernel in qemu (tools/kernel-ipvs/kipvs) with the same
# rules restored by ipvsadm -R, net.ipv4.vs.sloppy_tcp=1 and its own BIRD announcing the VIP
# by BGP; the fastlb directors run dest_order = "kernel" and sloppy_tcp. 200 long-lived
# connections to port 82 (mh, mh-port, over 100 real-server addresses: 10.81.2.100-199, the
# even ones on rs1, the odd ones on rs2; with only two real servers the kernel's order and
# the configuration's would give the same picks for 99.9 % of flows, with 100 they differ for
# 4.8 %) and 200 to port 81 (rr, two real servers), a line every 100 ms each, each checking
# its echo and the real server (rs1 or rs2) that sends it (tools/lab/line_clients.py).
# Four events, 3 s apart, each moving flows to or from the kernel director:
#   (a) the router's fib_multipath_hash_seed changes: flows move between all four directors
#   (b) the kernel director withdraws the VIP (its BIRD: disable the static route): its flows
#       move to the fastlb directors; IPVS keeps serving whatever still comes
#   (c) a new hash seed while it is out: flows move between the three fastlb directors
#   (d) the kernel director announces again: a new share of flows lands on it
# Asserted: no mh connection breaks and none changes real server (line_clients.py counts a
# changed server as broken); the kernel director took flows it never saw the SYN of in (a)
# and (d) (its Conns counter for the mh service grows; the clients open no new connection);
# no packet reaches it while it is withdrawn; every mh connection in its table goes to the
# real server the client has seen from its first line; every connection in both the kernel's
# table and a fastlb director's goes to the same real-server address in both (the sharper
# check: two addresses on one server would let a connection survive a wrong pick); rr
# beside it breaks connections (the proof that flows moved at all).
#
# Usage: ecmp_kernel.sh dr|tun. Skips (77, with the reason) without qemu, busybox, ipvsadm,
# bird, /dev/net/tun or a kernel with fib_multipath_hash_seed.
source "$(dirname "$0")/lib.sh"
need bird birdc python3 qemu-system-x86_64 busybox ipvsadm
MODE=${1:-dr}
[[ -e /dev/net/tun ]] || skip "no /dev/net/tun (the VM's NIC is a tap)"
source "$(dirname "$0")/ecmp_lib.sh"
# The VM goes with this script whatever happens (kipvs's supervisor watches this pid).
export FLB_KIPVS_OWNER=$$
kernel_bird_log() {
    echo "---- kernel director's BIRD log (last 10 lines)"
    "$ECMP" kernel exec tail -10 /tmp/bird.log 2>/dev/null
}
ecmp_init kecmp kernel_bird_log
# kstat FIELD: the kernel director's Conns (3) or InPkts (4) for the mh service.
kstat() {
    "$ECMP" kernel exec ipvsadm -L -n --stats --exact \
        | awk -v f="$1" '$1 == "TCP" && $2 == "10.81.100.1:82" {print $f}'
}

t0=$(now_ms)
"$ECMP" up "$MODE" --kernel-director
log "ecmp lab up ($MODE, kernel director) in $(( $(now_ms) - t0 )) ms: next hops $("$ECMP" route | tr '\n' ' ')"

ip netns exec "${FLB_PREFIX}e-cl" python3 "$E2E_ROOT/tools/lab/line_clients.py" --conns 200 \
    --interval 0.1 --timeout 5 --stop "$E2E_TMP/stop" --out "$E2E_TMP/out.json" \
    10.81.100.1:82 10.81.100.1:81 >"$E2E_TMP/clients.log" 2>&1 &
CLIENTS=$!
wait_for 60 grep -q ready "$E2E_TMP/clients.log" || fail "the 400 connections did not all answer"
log "400 connections up"
sleep 2.5
K0=$(kstat 3)
log "the kernel director holds $K0 of the 200 mh connections (scheduled from their SYN)"

EVENTS=()
event() { EVENTS+=("$1 $(clock_ms)"); log "event $1"; }

event a-seed
new_seed
sleep 3
KA=$(kstat 3)
log "(a) new hash seed: the kernel director's mh connections $K0 -> $KA"

event b-withdraw
"$ECMP" kernel withdraw >/dev/null || fail "the kernel director's BIRD did not withdraw"
ms=$(wait_hops 3) || fail "the router kept the kernel director after its withdrawal"
log "(b) withdraw: the router dropped the kernel director after $ms ms"
WITHDRAW_MS=$ms
# IPVS's counters as ipvsadm reads them are the estimator's copy, refreshed every 2 s
# (ip_vs_copy_stats reads kstats, which estimation_timer fills from the per-cpu counters):
# the first read comes a full period after the route change, so it holds every packet
# sent before it; the second two periods later, so it holds every packet since.
sleep 2.5
p0=$(kstat 4)
sleep 4.5
p1=$(kstat 4)
log "(b) packets reaching the kernel director while withdrawn, over 4.5 s: $(( p1 - p0 ))"
(( p1 == p0 )) || fail "the kernel director still gets packets after its withdrawal ($p0 -> $p1)"

event c-seed
new_seed
sleep 3
KC=$(kstat 3)

event d-announce
"$ECMP" kernel announce >/dev/null || fail "the kernel director's BIRD did not announce"
ms=$(wait_hops 4) || fail "the router did not take the kernel director back"
log "(d) announce: the router took the kernel director back after $ms ms"
sleep 3
KD=$(kstat 3)
log "(d) the kernel director's mh connections $KC -> $KD"
# The kernel's table (client port -> real server) before the clients stop.
"$ECMP" kernel exec ipvsadm -L -n -c >"$E2E_TMP/kconns"
event end

touch "$E2E_TMP/stop"
wait "$CLIENTS" || fail "line_clients.py failed: $(tail -5 "$E2E_TMP/clients.log")"
CLIENTS=

for n in 1 2 3; do "$ECMP" ctl "$n" -L -n -c >"$E2E_TMP/fconns$n"; done

# Broken connections per target and event, from the clients' report; the kernel's mh
# connections checked against the real server each client saw from its first line and
# against the fastlb directors' entries for the same client port.
report=$(python3 - "$E2E_TMP/out.json" "$E2E_TMP/kconns" "$E2E_TMP"/fconns{1,2,3} -- "${EVENTS[@]}" <<'PY'
import json, sys
args = sys.argv[1:]
cut = args.index("--")
out = json.load(open(args[0]))
events = [(e.split()[0], int(e.split()[1])) for e in args[cut + 1:]]
for target, name in (("10.81.100.1:82", "mh"), ("10.81.100.1:81", "rr")):
    r = out[target]
    per = []
    for (ev, start), (_, end) in zip(events, events[1:]):
        per.append(f"{ev}={sum(1 for t in r['broken_at_ms'] if start <= t < end)}")
    early = sum(1 for t in r["broken_at_ms"] if t < events[0][1])
    print(f"{name} conns={r['conns']} broken={r['broken']} before={early} {' '.join(per)} "
          f"servers={r['servers']} reasons={r['reasons'][:2]}")
def table(path):
    """client port -> real-server address of the mh service's entries in an -L -n -c listing."""
    t = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 6 and f[0] == "TCP" and f[4] == "10.81.100.1:82":
            t[f[3].rsplit(":", 1)[1]] = f[5].rsplit(":", 1)[0]
    return t
def server(addr):
    return "rs1" if int(addr.rsplit(".", 1)[1]) % 2 == 0 else "rs2"
seen = out["10.81.100.1:82"]["ports"]
kernel = table(args[1])
same = differ = 0
for port, addr in kernel.items():
    if port in seen:
        if seen[port] == server(addr):
            same += 1
        else:
            differ += 1
            print(f"mismatch: client port {port}: kernel sends to {addr}, client saw {seen[port]}")
print(f"kernel-table same={same} differ={differ}")
same = differ = 0
for path in args[2:cut]:
    for port, addr in table(path).items():
        if port in kernel:
            if kernel[port] == addr:
                same += 1
            else:
                differ += 1
                print(f"mismatch: client port {port}: kernel sends to {kernel[port]}, {path[-7:]} to {addr}")
print(f"kernel-fastlb same={same} differ={differ}")
PY
)
echo "$report"
mh=$(grep '^mh ' <<<"$report")
rr=$(grep '^rr ' <<<"$report")
kt=$(grep '^kernel-table ' <<<"$report")
kf=$(grep '^kernel-fastlb ' <<<"$report")
[[ $mh =~ conns=200\ broken=0\  ]] || fail "mh: connections broke or changed real server: $mh"
[[ $mh =~ rs1.*rs2|rs2.*rs1 ]] || fail "mh: not spread over both real servers: $mh"
(( KA > K0 )) || fail "(a) no flow moved to the kernel director ($K0 -> $KA)"
(( KD > KC )) || fail "(d) no flow moved to the kernel director ($KC -> $KD)"
[[ $kt =~ same=([0-9]+)\ differ=0$ ]] && (( BASH_REMATCH[1] > 0 )) \
    || fail "the kernel director's mh connections disagree with the clients' real servers: $kt"
[[ $kf =~ same=([0-9]+)\ differ=0$ ]] && (( BASH_REMATCH[1] > 0 )) \
    || fail "the kernel director and fastlb directors send the same flows to different real servers: $kf"
[[ $rr =~ broken=([0-9]+) ]] && (( BASH_REMATCH[1] > 0 )) \
    || fail "rr: no connection broke, so no flow moved: $rr"
pass "$MODE: 200 mh connections through a kernel IPVS director and three fastlb directors, flows moved by two new hash seeds, a withdrawal and a new announcement of the kernel director: none broken, none changed real server; the kernel director took flows mid-stream ($K0 -> $KA in (a), $KC -> $KD in (d)), its table agrees with the clients ($kt) and with the fastlb directors' ($kf); rr beside them: $(sed 's/ servers=.*//' <<<"$rr")"
log "router route change: ${WITHDRAW_MS} ms after the kernel director's withdrawal"
