#!/usr/bin/env bash
# Usage: restart.sh dr|nat. A restart of the active director loses no connection:
#   1. fastlb runs the lab (started here, as an operator would); 8 long-lived TCP
#      connections to VIP:7000 (tools/lab/line_clients.py: a line every 100 ms, each echoed
#      by the real server's tools/lab/line_echo.py) and an iperf3 stream to VIP:5201
#      (persistent: a template and two connections) run through it;
#   2. SIGTERM: fastlb writes its connection table to its state file and exits 0, leaving
#      its XDP program attached to hold the interfaces (it drops the services' traffic, so
#      nothing of it reaches the director's kernel: in NAT a real server's reply would be
#      routed on unrewritten and the client would reset); the same binary starts again,
#      reads the table back before its workers run, takes the held program over, and serves;
#   3. none of the 8 connections broke or moved to another real server, iperf3 finished
#      without error and moved data after the restart; the downtime and each connection's
#      longest gap are reported (RESTART line);
#   4. a damaged state file is refused whole with a clear message: fastlb starts with an
#      empty table and says so;
#   5. a hold nobody takes over ends: after --restart-hold seconds the program is detached
#      and the interfaces are clean.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: restart.sh dr|nat}
need python3 iperf3
FASTLB=$FASTLB_CMD
lab_init "$MODE-restart"
CONFIG=$E2E_TMP/restart.toml
cat > "$CONFIG" <<TOML
[[service]]
protocol = "tcp"
address = "$VIP"
port = 7000
scheduler = "rr"
[[service.real]]
address = "$RS1"
port = 7000
method = "$MODE"
[[service.real]]
address = "$RS2"
port = 7000
method = "$MODE"

[[service]]
protocol = "tcp"
address = "$VIP"
port = 5201
scheduler = "rr"
persistence = 60
[[service.real]]
address = "$RS1"
port = 5201
method = "$MODE"
[[service.real]]
address = "$RS2"
port = 5201
method = "$MODE"
TOML
FASTLB_CMD= lab_up "$MODE-restart" "$MODE" --config "$CONFIG"
FASTLB_CMD=$FASTLB
STATE=$FLB_LAB_STATE/ctl.state
LOG=$FLB_LAB_STATE/director.log

for rs in 1 2; do
    ns=${FLB_PREFIX}rs$rs
    ip netns exec "$ns" python3 "$E2E_ROOT/tools/lab/line_echo.py" "rs$rs" 7000 \
        >"$E2E_TMP/echo$rs.log" 2>&1 &
    E2E_CLEANUP+=("kill $!")
    wait_for 10 ip netns exec "$ns" ss -ltnH 'sport = :7000' || fail "line_echo did not start on rs$rs"
done

# start_director: fastlb in the director namespace, its pid in $PID (not through dx: `ip
# netns exec` execs fastlb, so $! is its pid); waits for "serving".
start_director() {
    ip netns exec "$NS_D" "$FASTLB" --iface d0 --iface d1 --config "$CONFIG" \
        --ctl-socket "$FLB_LAB_STATE/ctl.sock" "$@" >>"$LOG" 2>&1 &
    PID=$!
    E2E_CLEANUP+=("kill $PID")
    wait_for 20 served_more "$SERVED" || fail "fastlb did not start"
    SERVED=$(( SERVED + 1 ))
}
SERVED=0
served_more() { (( $(grep -c serving "$LOG") > $1 )); }
# stop_director: SIGTERM, and it must exit 0 within 5 s.
stop_director() {
    kill -TERM "$PID"
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null && fail "fastlb still runs 5 s after SIGTERM"
    local rc=0; wait "$PID" || rc=$?
    (( rc == 0 )) || fail "fastlb exited with status $rc on SIGTERM"
}

: >"$LOG"
start_director
grep -q "state: no $STATE; starting with an empty connection table" "$LOG" \
    || fail "the first start does not say it found no state file"

# 1. Traffic.
ip netns exec "$NS_C" python3 "$E2E_ROOT/tools/lab/line_clients.py" --conns 8 --interval 0.1 \
    --timeout 10 --stop "$E2E_TMP/stop" --out "$E2E_TMP/clients.json" "$VIP:7000" \
    >"$E2E_TMP/clients.log" 2>&1 &
CLIENTS=$!
E2E_CLEANUP+=("kill $CLIENTS")
wait_for 20 grep -q ready "$E2E_TMP/clients.log" || fail "the 8 connections did not open: $(cat "$E2E_TMP/clients.log")"
cx iperf3 -4 -c "$VIP" -p 5201 -J -t 12 -i 0.5 >"$E2E_TMP/iperf.json" 2>&1 &
IPERF=$!
E2E_CLEANUP+=("kill $IPERF")
sleep 3
BEFORE=$(ctl -L -c -n)
N_BEFORE=$(grep -c "ESTABLISHED.*$VIP:7000" <<<"$BEFORE" || true)
(( N_BEFORE == 8 )) || { echo "$BEFORE"; fail "$N_BEFORE of 8 line connections listed before the restart"; }
log "before the restart: $(grep -c . <<<"$BEFORE") lines of ctl -L -c -n"

# 2. Restart.
T0=$(now_ms)
stop_director
T1=$(now_ms)
grep 'state: wrote' "$LOG" | tail -1
grep -q "state: wrote [1-9][0-9]* connection(s) and [1-9][0-9]* template(s) to $STATE" "$LOG" \
    || fail "fastlb did not write its connections and the iperf3 template"
[[ -s $STATE ]] || fail "no state file at $STATE"
grep -q "hold: d0, d1 held by pid [0-9]* for the next start" "$LOG" || fail "fastlb did not hold its interfaces"
HELD=$(xdp_on_director)
(( $(grep -c . <<<"$HELD") == 2 )) || fail "XDP not on both interfaces while fastlb is down: '$HELD'"
start_director
grep -q "hold: took d0, d1 over from the previous run's XDP program" "$LOG" \
    || fail "the start did not take the held XDP program over"
wait_for 5 grep -q "hold: d0, d1 handed to the next start after [0-9]* ms" "$LOG" \
    || fail "the hold helper did not say it handed the interfaces over"
T2=$(now_ms)
READ=$(grep 'state: read' "$LOG" | tail -1)
echo "$READ"
[[ $READ =~ ([0-9]+)\ connection\(s\)\ and\ ([0-9]+)\ template ]] || fail "fastlb did not read its state back"
RESTORED=${BASH_REMATCH[1]}
(( RESTORED >= 10 && BASH_REMATCH[2] >= 1 )) || fail "restored $RESTORED connections and ${BASH_REMATCH[2]} templates"
grep -q "skipped 0 expired, 0 without their service or real server, 0 not installed" <<<"$READ" \
    || fail "entries skipped: $READ"
[[ ! -e $STATE ]] || fail "the state file was not removed once read"
AFTER=$(ctl -L -c -n)
N_AFTER=$(grep -c "ESTABLISHED.*$VIP:7000" <<<"$AFTER" || true)
(( N_AFTER == 8 )) || { echo "$AFTER"; fail "$N_AFTER of 8 line connections listed after the restart"; }
log "downtime: stop took $(( T1 - T0 )) ms, start $(( T2 - T1 )) ms"

# 3. Nothing broke.
wait "$IPERF" || true
touch "$E2E_TMP/stop"
wait_for 20 test -s "$E2E_TMP/clients.json" || fail "line_clients.py did not finish"
wait "$CLIENTS" || true
cat "$E2E_TMP/clients.json"; echo
read -r BROKEN GAPS < <(python3 -c 'import json, sys
r = list(json.load(open(sys.argv[1])).values())[0]
print(r["broken"], ",".join(map(str, r["max_gap_ms"])))' "$E2E_TMP/clients.json")
(( BROKEN == 0 )) || fail "$BROKEN of 8 connections broke across the restart"
read -r ERR MBITS AFTER_MB IGAP < <(python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
ivs = [i["sum"] for i in j.get("intervals", [])]
# The longest run of intervals without a byte, in ms, and the bytes of the last 3 s.
gap = run = 0
for i in ivs:
    run = run + i["seconds"] if i["bytes"] == 0 else 0
    gap = max(gap, run)
tail = sum(i["bytes"] for i in ivs if i["end"] > ivs[-1]["end"] - 3) if ivs else 0
err = (j.get("error") or "-").replace(" ", "_")
print(err, round(j.get("end", {}).get("sum_received", {}).get("bits_per_second", 0) / 1e6),
      tail, int(gap * 1000))' "$E2E_TMP/iperf.json")
log "iperf3: error $ERR, $MBITS Mbit/s over the run, $AFTER_MB bytes in its last 3 s, longest stall $IGAP ms"
[[ $ERR == - ]] || fail "iperf3: $ERR"
(( AFTER_MB > 0 )) || fail "iperf3 moved nothing after the restart"
MAXGAP=${GAPS##*,}
echo "RESTART mode=$MODE downtime_ms=$(( T2 - T0 )) conns_broken=0 line_max_gap_ms=$MAXGAP line_gaps_ms=$GAPS iperf3_stall_ms=$IGAP restored=$RESTORED"
pass "restart: 0 of 8 line connections broken (longest gap $MAXGAP ms), iperf3 went on, downtime $(( T2 - T0 )) ms"

# 4. A damaged file is refused whole.
stop_director
[[ -s $STATE ]] || fail "no state file after the second stop"
python3 -c 'import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[60] ^= 0x10
open(p, "wb").write(b)' "$STATE"
start_director --restart-hold 2
grep "state: .*refused" "$LOG" | tail -1
grep -q "state: $STATE refused, nothing restored (checksum mismatch.*starting with an empty connection table" "$LOG" \
    || fail "a damaged state file was not refused with a clear message"
[[ -z $(ctl -L -c -n | grep -E 'TCP|UDP' || true) ]] || fail "entries in the table after a refused state file"
stop_director
pass "a damaged state file is refused whole: fastlb starts with an empty table and says why"

# 5. Nobody takes the hold over: it ends after --restart-hold (2 s), and the interfaces are
# clean.
grep -q "hold: d0, d1 held by pid [0-9]* for the next start (up to 2 s)" "$LOG" \
    || fail "the last stop did not hold its interfaces"
wait_for 15 grep -q "hold: no start took d0, d1 within 2 s; letting the interfaces go" "$LOG" \
    || fail "the hold did not end"
wait_for 5 test -z "$(xdp_on_director)" || fail "XDP left on after the hold ended: $(xdp_on_director)"
pass "a hold nobody takes over ends after --restart-hold and leaves the interfaces clean"
