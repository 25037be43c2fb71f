#!/usr/bin/env bash
# A director pair (lab mode ha, or ha-nat with argument nat: two fastlb directors, real
# keepalived VRRP, connection sync following it) and what a failover does to traffic. 8
# long-lived TCP connections (tools/lab/longconn.py, a line every 100 ms to
# tools/lab/tcp_echo.py on the real servers) and an iperf3 stream (20 Mbit/s) run through
# the VIP while:
#   kill      the master dies: its link goes down, keepalived and fastlb get kill -9;
#   failback  it comes back (link up, fastlb and keepalived started): it preempts;
#   stop      the master stops gracefully (SIGTERM: keepalived gives the VIP up at once).
# For each: the VIP moves to the other director, whose fastlb follows within its loop, and
# new connections flow through it; the time until they do is measured (ms), and each long
# connection's longest silence and whether it survived. Before any of it, the standby is
# shown to forward nothing: with the client pointed at it, nothing is answered and its XDP
# filter counts the drops.
#
# Connections survive a failover only if the new master knows them: the lab's keepalived.conf
# has `@fastlb lvs_sync_daemon d0 VI_1`, so each fastlb runs the sync daemon in the role its
# VRRP state gives (docs/ha.md). Before the master is killed or stopped, the standby must
# list every long connection (synced). The standby's counters must show it transmitted
# nothing. FLB_HA_EXPECT=N (default 0; empty: no assertion) is how many connections (the
# iperf3 stream included) may break in each scenario.
# FLB_HA_RESULTS=DIR keeps the measurements (JSON per scenario, DIR/MODE-SCENARIO.json) in DIR.
#
# Usage: ha_failover.sh [dr|nat]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CONNS=${FLB_HA_CONNS:-8}
IPERF_SECS=25
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
# dir_n DIR: 1 or 2, as FLB_DIR wants it.
dir_n() { echo "${1#dir}"; }
# tx_frames DIR: what the director's workers transmitted so far (its metrics).
tx_frames() {
    local ns=$D1; [[ $1 == dir2 ]] && ns=$D2
    ip netns exec "$ns" curl -s --max-time 5 http://127.0.0.1:9108/metrics \
        | awk '/^fastlb_worker_tx_frames_total/ {s += $2} END {print s + 0}'
}
# synced DIR: how many connections to VIP:7 the director lists.
synced() {
    FLB_DIR=$(dir_n "$1") "$LAB" ctl -L -c -n | awk -v v="$VIP:7" '$1 == "TCP" && $5 == v' | wc -l
}
has_synced() { (( $(synced "$1") >= CONNS )); }

[[ $(ha who) == dir1 ]] || fail "dir1 should hold the VIP at start, held by: $(ha who)"
wait_for 10 grep -q 'VRRP instance VI_1 is MASTER here: forwarding' "$FLB_LAB_STATE/dir1/fastlb.log" \
    || fail "dir1's fastlb did not follow keepalived to MASTER"
grep -q 'VRRP instance VI_1 is BACKUP here: standby' "$FLB_LAB_STATE/dir2/fastlb.log" \
    || fail "dir2's fastlb does not say it is the standby"
pass "dir1 holds the VIP and forwards; dir2 is the standby"

# The sync daemons follow VRRP: master on dir1, backup on dir2.
d1=$("$LAB" ctl -L --daemon) d2=$(FLB_DIR=2 "$LAB" ctl -L --daemon)
grep -q '^master sync daemon (mcast=d0, syncid=' <<<"$d1" && ! grep -q backup <<<"$d1" \
    || fail "dir1 should run the master sync daemon only: $d1"
grep -q '^backup sync daemon (mcast=d0, syncid=' <<<"$d2" && ! grep -q master <<<"$d2" \
    || fail "dir2 should run the backup sync daemon only: $d2"
pass "sync daemons: dir1 $(head -c 40 <<<"$d1")..., dir2 $(head -c 40 <<<"$d2")..."

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
# The standby's workers transmitted nothing since it started (the connections it lists
# came by sync: the requests above).
tx=$(tx_frames dir2)
(( tx == 0 )) || fail "the standby's workers transmitted $tx frames"
pass "the standby transmitted nothing (fastlb_worker_tx_frames_total 0)"

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
    local lc=$! ip=
    # iperf3's control connection is idle while it measures, so a master sends it to a
    # backup only when it opens (a kernel master too: sync follows packets). A director that
    # starts later never learns it; so for failback the stream opens once the returning
    # director's backup daemon listens, before it preempts.
    start_iperf() {
        cx timeout $(( IPERF_SECS + 30 )) iperf3 -c "$VIP" -p 5201 -t "$IPERF_SECS" -b 20M \
            -i 0.1 --snd-timeout 10000 -J >"$E2E_TMP/$name.iperf.json" 2>"$E2E_TMP/$name.iperf.err" &
        ip=$!
    }
    [[ $action == start ]] || start_iperf
    wait_for 60 test -f "$ready" || { cat "$E2E_TMP/$name.log"; fail "$name: connections did not open"; }
    sleep 3
    local listening=0
    [[ $action == start ]] && listening=$(flog "$dir" | grep -c 'backup sync daemon (mcast' || true)
    # The director that takes over must already know the connections (by sync), unless it
    # is the one starting now (failback: it learns them as the master sends them again).
    if [[ $action != start ]]; then
        local other=dir2; [[ $dir == dir2 ]] && other=dir1
        wait_for 10 has_synced "$other" \
            || fail "$name: the standby $other lists $(synced "$other") of $CONNS connections"
        # A standby since the last scenario, it transmitted nothing meanwhile.
        if [[ -n ${STANDBY_TX:-} ]]; then
            local tx; tx=$(tx_frames "$other")
            (( tx == STANDBY_TX )) || fail "$name: the standby $other transmitted $(( tx - STANDBY_TX )) frames"
            pass "$name: the standby $other transmitted nothing while standby"
        fi
    fi
    local t0; t0=$(now_ms)
    touch "$mark"
    ha "$action" "$dir" &
    local act=$!
    if [[ $action == start ]]; then
        backup_listens() { (( $(flog "$dir" | grep -c 'backup sync daemon (mcast') > listening )); }
        wait_for 15 backup_listens || fail "$name: $dir's backup sync daemon did not start"
        start_iperf
    fi
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
    wait "$ip" || true
    local holder; holder=$(ha who)
    local summary; summary=$(cat "$E2E_TMP/$name.log")
    python3 - "$out" "$name" "$new_gap" "$holder" "$MODE" "$E2E_TMP/$name.iperf.json" \
        "$IPERF_SECS" <<'PY'
import json, sys
path, name, gap, holder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
d = json.load(open(path))
d.update(scenario=name, mode=sys.argv[5], new_connection_gap_ms=gap, vip_holder_after=holder)
# The iperf3 stream: its longest run of 100 ms intervals in which the sender moved no
# byte (the stall), and whether it ran its whole duration without an error.
try:
    r = json.load(open(sys.argv[6]))
except (OSError, ValueError) as e:
    r = {"error": f"no iperf3 report: {e}"}
run = stall = 0.0
for i in r.get("intervals", []):
    s = i["sum"]
    run = run + s["seconds"] if s["bytes"] == 0 else 0.0
    stall = max(stall, run)
secs = r.get("end", {}).get("sum_sent", {}).get("seconds", 0)
err = r.get("error")
d["iperf3"] = {
    "gap_ms": round(stall * 1000),
    "seconds": round(secs, 1),
    "bytes": r.get("end", {}).get("sum_received", {}).get("bytes", 0),
    "error": err,
    "broken": bool(err) or secs < 0.9 * int(sys.argv[7]),
}
d["broken_total"] = d["broken"] + d["iperf3"]["broken"]
json.dump(d, open(path, "w"), indent=1)
print(f"iperf3: stall {d['iperf3']['gap_ms']} ms, {secs:.1f} s, error {err}")
PY
    log "$name: VIP now on $holder; new connections answered after $new_gap ms; $summary"
    log "$name: per connection gap (ms): $(python3 -c "import json,sys; print(' '.join(str(c['gap_ms']) for c in json.load(open(sys.argv[1]))['connections']))" "$out")"
    [[ $holder == "$want" ]] || fail "$name: the VIP should be on $want, is on $holder"
    (( new_gap >= 0 )) || fail "$name: no new connection answered within 10 s"
    if [[ -n ${FLB_HA_EXPECT-0} ]]; then
        local broken; broken=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['broken_total'])" "$out")
        (( broken <= ${FLB_HA_EXPECT-0} )) || fail "$name: $broken of $CONNS connections and the iperf3 stream broke"
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
dir2_standby() { flog dir2 | tail -5 | grep -q 'VRRP instance VI_1 is BACKUP here: standby'; }
wait_for 10 dir2_standby \
    || fail "dir2's fastlb did not go back to standby"
sleep 1
STANDBY_TX=$(tx_frames dir2)
run_scenario stop stop dir1 dir2
pass "every failover moved the traffic"
