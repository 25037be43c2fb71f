#!/usr/bin/env bash
# Usage: foreign_mac.sh. Two fastlb directors on one bridge, each balancing the same VIP in
# DR (A to rs1, B to rs2), the client routing the VIP through A. Before each request the
# bridge forgets what it has learned (`fdb_flush`, as MAC ageing or a failover does), so the
# client's SYN to A's MAC is unknown unicast and the bridge floods it to every port, B's
# included. The kernel drops such a frame at B (PACKET_OTHERHOST); fastlb must too:
#   - every request is answered by rs1 (A's), none by rs2;
#   - rs2 receives no TCP segment at all while A is in use (B balanced nothing);
#   - tcpdump at B saw the flooded SYNs (the flood happened: the check above is not empty);
#   - the bridge never learns A's MAC on B's port (B sent nothing with A's MAC as source);
#   - then the client routes the VIP through B: rs2 answers (B is a working director).
# Every namespace keeps the kernel's defaults (offloads, bridge ageing); nothing is tuned.
source "$(dirname "$0")/lib.sh"
P=flbt-${FLBT_TAG:+$FLBT_TAG-}fmac-
NS_SW=${P}sw NS_C=${P}client NS_A=${P}dira NS_B=${P}dirb NS_R1=${P}rs1 NS_R2=${P}rs2
ALL_NS="$NS_SW $NS_C $NS_A $NS_B $NS_R1 $NS_R2"
FASTLB=${FASTLB_CMD:-$E2E_ROOT/target/release/fastlb}
VIP=10.81.100.1 A_IP=10.81.0.10 B_IP=10.81.0.11
ROUNDS=8
TMP=$(mktemp -d "/tmp/${P}XXXXXX")

cleanup() {
    local rc=$?
    for f in "$TMP"/*.pid; do
        [[ -f $f ]] && kill -INT "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$TMP"/dir*.pid; do
        [[ -f $f ]] || continue
        for _ in $(seq 30); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
    done
    if [[ $rc != 0 ]]; then
        for l in "$TMP"/*.log; do [[ -f $l ]] && { echo "---- $l"; tail -20 "$l"; }; done
    fi
    for ns in $ALL_NS; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    for ns in $ALL_NS; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP"
    if [[ $rc == 0 ]]; then echo "RESULT: passed"; else echo "RESULT: failed (exit $rc)"; fi
}
trap cleanup EXIT

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
for ns in $ALL_NS; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done
nsx "$NS_SW" ip link add br0 type bridge
nsx "$NS_SW" ip link set br0 up
# One port per host: HOST_NS HOST_IF PORT ADDRESS.
for l in "$NS_C c0 p-c 10.81.0.2" "$NS_A d0 p-a $A_IP" "$NS_B d0 p-b $B_IP" \
         "$NS_R1 e0 p-r1 10.81.0.21" "$NS_R2 e0 p-r2 10.81.0.22"; do
    set -- $l
    ip link add "$2" netns "$1" type veth peer name "$3" netns "$NS_SW"
    nsx "$NS_SW" ip link set "$3" master br0 up
    nsx "$1" ip addr add "$4/24" dev "$2"
    nsx "$1" ip link set "$2" up
done
for r in 1 2; do
    ns=${P}rs$r
    nsx "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    nsx "$ns" ip addr add "$VIP/32" dev lo
    mkdir -p "$TMP/www$r"; echo "rs$r" > "$TMP/www$r/index.html"
    ip netns exec "$ns" python3 -m http.server 80 --bind 0.0.0.0 --directory "$TMP/www$r" \
        >"$TMP/http$r.log" 2>&1 &
    echo $! > "$TMP/http$r.pid"
done
nsx "$NS_C" ip route add "$VIP/32" via "$A_IP"

# Director X (a or b) balancing VIP:80 to real server N.
director() {
    local x=$1 n=$2 ns=${P}dir$1
    printf '[[service]]\nprotocol = "tcp"\naddress = "%s"\nport = 80\nscheduler = "rr"\n[[service.real]]\naddress = "10.81.0.2%s"\nport = 80\nweight = 1\nmethod = "dr"\n' \
        "$VIP" "$n" > "$TMP/dir$x.toml"
    ip netns exec "$ns" "$FASTLB" --iface d0 --config "$TMP/dir$x.toml" \
        --ctl-socket "$TMP/dir$x.sock" --metrics 127.0.0.1:9108 >"$TMP/dir$x.log" 2>&1 &
    echo $! > "$TMP/dir$x.pid"
    wait_for 10 grep -q serving "$TMP/dir$x.log" || fail "director $x did not start"
}
director a 1
director b 2
for r in 1 2; do
    wait_for 10 nsx "${P}rs$r" sh -c 'ss -ltn | grep -q ":80 "' || fail "rs$r's server did not start"
done
A_MAC=$(nsx "$NS_A" cat /sys/class/net/d0/address)
B_MAC=$(nsx "$NS_B" cat /sys/class/net/d0/address)
log "director A $A_MAC, director B $B_MAC"

tcp_in() { nsx "$1" awk '$1 == "Tcp:" && $11 ~ /^[0-9]+$/ {print $11}' /proc/net/snmp; }
# The flooded SYNs that reach B: frames to A's MAC (tcpdump sees what XDP passed up).
ip netns exec "$NS_B" tcpdump -i d0 -nn -l -e "ether dst $A_MAC and tcp dst port 80 and tcp[tcpflags] & tcp-syn != 0" \
    >"$TMP/flood.txt" 2>"$TMP/tcpdump.log" &
echo $! > "$TMP/tcpdump.pid"
wait_for 10 grep -q "listening on" "$TMP/tcpdump.log" || fail "tcpdump did not start"

# A first request lets A resolve rs1 (fastlb has the kernel resolve it meanwhile).
wait_for 10 sh -c "ip netns exec $NS_C curl -s --max-time 1 http://$VIP/ | grep -q rs1" \
    || fail "no answer through A"
rs2_before=$(tcp_in "$NS_R2")
answers=""
for i in $(seq "$ROUNDS"); do
    nsx "$NS_SW" ip link set br0 type bridge fdb_flush
    a=$(nsx "$NS_C" curl -s --max-time 3 -H 'Connection: close' "http://$VIP/") || true
    answers+="${a:-none} "
    # A's MAC is learned where A's frames come from; never on B's port.
    if nsx "$NS_SW" bridge fdb show br br0 | grep -i "^$A_MAC dev p-b " ; then
        fail "the bridge learned A's MAC on B's port"
    fi
done
log "answers: $answers"
rs2_after=$(tcp_in "$NS_R2")
sleep 0.5
kill -INT "$(cat "$TMP/tcpdump.pid")" 2>/dev/null || true
wait "$(cat "$TMP/tcpdump.pid")" 2>/dev/null || true
flooded=$(grep -c . "$TMP/flood.txt" || true)
log "flooded SYNs seen at B: $flooded; rs2 TCP segments in: $(( rs2_after - rs2_before ))"
[[ $answers == "$(printf 'rs1 %.0s' $(seq "$ROUNDS"))" ]] || fail "answers: $answers"
(( flooded >= 1 )) || fail "no flooded SYN reached B: the test would prove nothing"
(( rs2_after == rs2_before )) || fail "rs2 got $(( rs2_after - rs2_before )) TCP segments: B balanced A's frames"
b_tx=$(nsx "$NS_B" curl -s 127.0.0.1:9108/metrics | awk '/^fastlb_worker_tx_frames_total/ {s += $2} END {print s + 0}')
(( b_tx == 0 )) || fail "B transmitted $b_tx frames"
pass "only the addressed director balanced the flooded SYNs ($flooded reached B, B sent nothing)"

# B is a working director: through it, rs2 answers.
nsx "$NS_C" ip route replace "$VIP/32" via "$B_IP"
wait_for 10 sh -c "ip netns exec $NS_C curl -s --max-time 1 http://$VIP/ | grep -q rs2" \
    || fail "no answer through B"
pass "B balances the frames sent to it"
