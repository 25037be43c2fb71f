#!/usr/bin/env bash
# Three fastlb directors behind a router's ECMP (tools/lab/ecmp.sh, mode dr or tun), 200
# long-lived connections to port 80 (mh, mh-port) and 200 to port 81 (rr) of the VIP, each
# sending a line every 100 ms and checking the echo and the real server that sends it
# (tools/lab/line_clients.py). Four events, 3 s apart:
#   (a) director 1 drained (fastlb ctl --drain): its flows move to directors 2 and 3
#   (b) director 1 undrained: flows move back
#   (c) the router's fib_multipath_hash_seed changes: flows move between all three
#   (d) director 3's fastlb killed with SIGKILL (its BIRD goes with it)
# Every director runs the same rules with sloppy_tcp, so a moved mh flow keeps its real
# server: no mh connection may break in any event (in (d) only the dead director's
# in-flight packets are lost, which TCP sends again). rr, the same steps beside it, breaks
# connections in (a), (c) and (d): the proof that flows did move. (In (b) every flow
# returns to the director it had before (a), which still holds its connection.) Prints the time from each
# withdrawal (drain, kill) to the router's route change.
#
# Usage: ecmp.sh dr|tun
source "$(dirname "$0")/lib.sh"
need bird birdc python3
MODE=${1:-dr}
source "$(dirname "$0")/ecmp_lib.sh"
ecmp_init ecmp

t0=$(now_ms)
"$ECMP" up "$MODE"
log "ecmp lab up ($MODE) in $(( $(now_ms) - t0 )) ms: next hops $("$ECMP" route | tr '\n' ' ')"

ip netns exec "${FLB_PREFIX}e-cl" python3 "$E2E_ROOT/tools/lab/line_clients.py" --conns 200 \
    --interval 0.1 --timeout 5 --stop "$E2E_TMP/stop" --out "$E2E_TMP/out.json" \
    10.81.100.1:80 10.81.100.1:81 >"$E2E_TMP/clients.log" 2>&1 &
CLIENTS=$!
wait_for 60 grep -q ready "$E2E_TMP/clients.log" || fail "the 400 connections did not all answer"
log "400 connections up"
sleep 2

EVENTS=()
event() { EVENTS+=("$1 $(clock_ms)"); log "event $1"; }

event a-drain
"$ECMP" ctl 1 --drain | grep -q 'announced: nothing' || fail "--drain did not withdraw"
ms=$(wait_hops 2) || fail "the router kept director 1 after --drain"
log "(a) drain: the router dropped director 1 after $ms ms"
DRAIN_MS=$ms
sleep 3

event b-undrain
"$ECMP" ctl 1 --undrain | grep -q 'announced: 10.81.100.1' || fail "--undrain did not announce"
ms=$(wait_hops 3) || fail "the router did not take director 1 back"
log "(b) undrain: the router took director 1 back after $ms ms"
sleep 3

event c-seed
before=$(ip netns exec "$NS_RT" sysctl -n net.ipv4.fib_multipath_hash_seed)
new_seed
log "(c) hash seed: '$before' -> '$(ip netns exec "$NS_RT" sysctl -n net.ipv4.fib_multipath_hash_seed)'"
sleep 3

event d-kill
"$ECMP" kill 3
ms=$(wait_hops 2) || fail "the router kept director 3 after its fastlb was killed"
log "(d) kill -9: the router dropped director 3 after $ms ms"
KILL_MS=$ms
sleep 4
event end

touch "$E2E_TMP/stop"
wait "$CLIENTS" || fail "line_clients.py failed: $(tail -5 "$E2E_TMP/clients.log")"
CLIENTS=

# Broken connections per target and event, from the clients' report.
report=$(python3 - "$E2E_TMP/out.json" "${EVENTS[@]}" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
events = [(e.split()[0], int(e.split()[1])) for e in sys.argv[2:]]
for target, name in (("10.81.100.1:80", "mh"), ("10.81.100.1:81", "rr")):
    r = out[target]
    per = []
    for (ev, start), (_, end) in zip(events, events[1:]):
        per.append(f"{ev}={sum(1 for t in r['broken_at_ms'] if start <= t < end)}")
    early = sum(1 for t in r["broken_at_ms"] if t < events[0][1])
    print(f"{name} conns={r['conns']} broken={r['broken']} before={early} {' '.join(per)} "
          f"servers={r['servers']} reasons={r['reasons'][:2]}")
PY
)
echo "$report"
mh=$(grep '^mh ' <<<"$report")
rr=$(grep '^rr ' <<<"$report")
[[ $mh =~ conns=200\ broken=0\  ]] || fail "mh: connections broke: $mh"
# Both real servers served mh flows (mh-port spreads one client's ports).
[[ $mh =~ rs1.*rs2|rs2.*rs1 ]] || fail "mh: not spread over both real servers: $mh"
# Not (b): every flow then returns to the director it had before (a), which still holds
# its connection (ESTABLISHED, 900 s), so rr's flows keep their servers too.
for ev in a-drain c-seed d-kill; do
    [[ $rr =~ $ev=([0-9]+) ]] || fail "rr: no count for $ev"
    (( BASH_REMATCH[1] > 0 )) || fail "rr: no connection broke in $ev, so no flow moved: $rr"
done
pass "$MODE: 200 mh connections through drain, undrain, a new hash seed and a killed director: none broken; rr beside them: $(sed 's/ servers=.*//' <<<"$rr")"
log "router route change: ${DRAIN_MS} ms after --drain, ${KILL_MS} ms after kill -9"
