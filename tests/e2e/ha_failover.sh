#!/usr/bin/env bash
# A director pair (lab mode ha, or ha-nat with argument nat: two fastlb directors, real
# keepalived VRRP) and what a failover does to traffic. 100 long-lived TCP connections (tools/lab/longconn.py, a line
# every 100 ms to tools/lab/tcp_echo.py on the real servers) run through the VIP while:
#   kill      the master dies: its link goes down, keepalived and fastlb get kill -9;
#   failback  it comes back (link up, fastlb and keepalived started): it preempts;
#   stop      the master stops gracefully (SIGTERM: keepalived gives the VIP up at once).
# For each: the VIP moves to the other director, whose fastlb follows within its loop, and
# new connections flow through it; the time until they do is measured (ms), and each long
# connection's longest silence and whether it survived. Before any of it, the standby is
# shown to forward nothing: with the client pointed at it, nothing is answered and its XDP
# filter counts the drops.
#
# Connections survive a failover only if the new master knows them (connection sync,
# docs/ha.md). Without it they break, and this test reports how many. FLB_HA_EXPECT=0
# asserts that none broke (with sync); the default asserts nothing about them.
# FLB_HA_RESULTS=DIR keeps the measurements (JSON per scenario, DIR/MODE-SCENARIO.json) in DIR.
#
# Usage: ha_failover.sh [dr|nat]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CONNS=${FLB_HA_CONNS:-100}
MODE=${1:-dr}
case $MODE in
    dr) lab_up ha ha; VIP=10.80.3.100 ;;          # tools/lab/ha.conf
    nat) lab_up hanat ha-nat; VIP=10.80.5.100 ;;  # tools/lab/ha-nat.conf
    *) fail "mode must be dr or nat" ;;
esac
D1=${FLB_PREFIX}dir D2=${FLB_PREFIX}dir2
ha() { "$LAB" ha "$@"; }
mac_of() { ip netns exec "$1" cat /sys/class/net/d0/address; }
flog() { cat "$FLB_LAB_STATE/$1/fastlb.log"; }
RESULTS=${FLB_HA_RESULTS:-$E2E_TMP}
mkdir -p "$RESULTS"

[[ $(ha who) == dir1 ]] || fail "dir1 should hold the VIP at start, held by: $(ha who)"
wait_for 10 grep -q 'VRRP instance VI_1 is MASTER here: forwarding' "$FLB_LAB_STATE/dir1/fastlb.log" \
    || fail "dir1's fastlb did not follow keepalived to MASTER"
grep -q 'VRRP instance VI_1 is BACKUP here: standby' "$FLB_LAB_STATE/dir2/fastlb.log" \
    || fail "dir2's fastlb does not say it is the standby"
pass "dir1 holds the VIP and forwards; dir2 is the standby"

tally=$(curl_tally 10)
(( $(count "served by rs1" "$tally") + $(count "served by rs2" "$tally") == 10 )) \
    || fail "10 requests through dir1: $tally"
pass "10 requests through the master: $(tr '\n' ' ' <<<"$tally")"

# The standby forwards nothing: point the client at dir2's MAC for the VIP.
cx ip neigh replace "$VIP" lladdr "$(mac_of "$D2")" dev c0 nud permanent
if out=$(cx curl -s --max-time 2 "http://$VIP/"); then
    fail "the standby answered: $out"
fi
cx ip neigh del "$VIP" dev c0
pass "a request sent to the standby's MAC is not answered"
[[ -z $(FLB_DIR=2 "$LAB" ctl -L -c -n | awk 'NR > 2') ]] || fail "the standby made connections"

# switched ACTION: whether the old master can no longer forward, so an answer now came
# through the new one: after kill, dir1's link is down; after stop, dir1 no longer holds
# the VIP; after start, dir1 holds it again and dir2 does not.
switched() {
    local who; who=$(ha who)
    case $1 in
        kill) [[ $(ip netns exec "$D1" cat /sys/class/net/d0/operstate) == down ]] ;;
        stop) [[ $who != *dir1* ]] ;;
        start) [[ $who == dir1 ]] ;;
    esac
}

# run_scenario NAME ACTION DIR EXPECTED_HOLDER: long connections through the VIP, ACTION on
# DIR 3 s in, measured until 8 s after the new master forwards (a TCP connection silent
# for 5 s retransmits within the next 6.4 s: one that is still silent 5 s before the end
# is broken).
run_scenario() {
    local name=$1 action=$2 dir=$3 want=$4
    local mark=$E2E_TMP/$name.mark ready=$E2E_TMP/$name.ready out=$RESULTS/$MODE-$name.json
    local stop=$E2E_TMP/$name.stop
    rm -f "$mark" "$ready" "$stop"
    cx python3 "$E2E_ROOT/tools/lab/longconn.py" "$VIP" 7 --conns "$CONNS" --interval 0.1 \
        --duration 120 --mark-file "$mark" --ready-file "$ready" --stop-file "$stop" \
        --broken-after 5 --out "$out" \
        >"$E2E_TMP/$name.log" 2>&1 &
    local lc=$!
    wait_for 60 test -f "$ready" || { cat "$E2E_TMP/$name.log"; fail "$name: connections did not open"; }
    sleep 3
    local t0; t0=$(now_ms)
    touch "$mark"
    ha "$action" "$dir" &
    local act=$!
    # The gap for new connections: from the action until a request through the VIP is
    # answered by way of the new master (the action runs meanwhile; answers that the old
    # master gave before it went do not count).
    local new_gap=-1
    for _ in $(seq 200); do
        if switched "$action" && cx curl -s --max-time 0.5 -H 'Connection: close' \
            "http://$VIP/" | grep -q 'served by'; then
            new_gap=$(( $(now_ms) - t0 )); break
        fi
        sleep 0.05
    done
    wait "$act" || fail "$name: lab.sh ha $action $dir failed"
    sleep 8
    touch "$stop"
    wait "$lc" || { cat "$E2E_TMP/$name.log"; fail "$name: longconn.py failed"; }
    local holder; holder=$(ha who)
    local summary; summary=$(cat "$E2E_TMP/$name.log")
    python3 - "$out" "$name" "$new_gap" "$holder" "$MODE" <<'PY'
import json, sys
path, name, gap, holder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
d = json.load(open(path))
d.update(scenario=name, mode=sys.argv[5], new_connection_gap_ms=gap, vip_holder_after=holder)
json.dump(d, open(path, "w"), indent=1)
PY
    log "$name: VIP now on $holder; new connections answered after $new_gap ms; $summary"
    [[ $holder == "$want" ]] || fail "$name: the VIP should be on $want, is on $holder"
    (( new_gap >= 0 )) || fail "$name: no new connection answered within 10 s"
    if [[ -n ${FLB_HA_EXPECT:-} ]]; then
        local broken; broken=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['broken'])" "$out")
        (( broken <= FLB_HA_EXPECT )) || fail "$name: $broken of $CONNS connections broke"
    fi
    pass "$name"
}

run_scenario kill kill dir1 dir2
grep -q 'VRRP instance VI_1 is MASTER here: forwarding' "$FLB_LAB_STATE/dir2/fastlb.log" \
    || fail "dir2's fastlb did not follow keepalived to MASTER"
drops=$(sed -n 's/.*VRRP instance VI_1 is MASTER here.*XDP standby drops so far: \([0-9]*\).*/\1/p' \
    "$FLB_LAB_STATE/dir2/fastlb.log" | tail -1)
(( ${drops:-0} > 0 )) || fail "dir2's XDP filter counted no standby drops (the request sent to it)"
pass "dir2 took over; as the standby its XDP filter had dropped $drops packets"

run_scenario failback start dir1 dir1
grep -q 'VRRP instance VI_1 is BACKUP here: standby' <(flog dir2 | tail -3) \
    || fail "dir2's fastlb did not go back to standby"
run_scenario stop stop dir1 dir2
pass "every failover moved the traffic"
