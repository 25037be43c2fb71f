#!/usr/bin/env bash
# Usage: ctl.sh nat|dr|tun. `fastlb ctl` on the live appliance. The service VIP:80 starts
# with rs1 only (weight 3). The VIP is also on the director's lo, with a python3 HTTP server
# of the director's own on VIP:80 ("served by the director"), as an IPVS director holds its
# VIPs: while the service exists fastlb takes its packets before the kernel sees them.
#   1. -a rs2 -w 1: the balance becomes 3:1; -e rs2 -w 3: it becomes 1:1.
#   2. under wrk load (Connection: close, so new connections all along), -a a third real
#      server (the sorry namespace's nginx): zero wrk errors, the new server gets traffic.
#   3. `ctl -S -n | ctl -R` on the live table is refused whole (Service already exists) and
#      changes nothing; `(echo -C; ctl -S -n) | ctl -R` replaces the table atomically with
#      itself: -S prints the same before and after, and traffic goes on.
#   4. SIGHUP with a broken config file is refused and the running table stays (-S, -L);
#      SIGHUP with a good one is applied.
#   5. Prometheus metrics over HTTP show the traffic.
#   6. -D of the service: its traffic goes to the director's kernel again, which answers
#      with its own server on VIP:80.
source "$(dirname "$0")/lib.sh"
MODE=${1:-nat}
need wrk
lab_init "$MODE-ctl"
CONFIG=$E2E_TMP/ctl.toml
cat > "$CONFIG" <<TOML
[[service]]
protocol = "tcp"
address = "$VIP"
port = 80
scheduler = "wrr"

[[service.real]]
address = "$RS1"
port = 80
weight = 3
method = "$MODE"
TOML
lab_up "$MODE-ctl" "$MODE" --config "$CONFIG"
M=$([[ $MODE == nat ]] && echo -m || { [[ $MODE == dr ]] && echo -g || echo -i; })
SVC="-t $VIP:80"

mkdir -p "$E2E_TMP/www" && echo "served by the director" > "$E2E_TMP/www/index.html"
dx ip addr add "$VIP/32" dev lo
dx python3 -m http.server 80 --bind "$VIP" --directory "$E2E_TMP/www" >/dev/null 2>&1 &
wait_for 5 dx sh -c "ss -ltnH 'sport = :80' | grep -q ." || fail "director's own HTTP server did not start"

T=$(curl_tally 12); echo "$T"
[[ $(count "served by rs1" "$T") == 12 ]] || fail "rs1 alone should answer everything"
pass "rs1 alone answers; the director's own server on VIP:80 sees nothing"

# 1. Add and edit.
ctl -a $SVC -r "$RS2:80" $M -w 1 || fail "-a rs2"
T=$(curl_tally 40); echo "$T"
A=$(count "served by rs1" "$T") B=$(count "served by rs2" "$T")
# Tolerance as in wrr.sh (3/4 per worker), plus one: a client port used by the 12 requests
# before can come round again and continue its TIME_WAIT entry on rs1 (port_reuse.sh).
(( A + B == 40 && A >= 30 && A <= 31 + ${WORKERS:-1} )) || fail "after -a: rs1 $A rs2 $B, want 30:10"
pass "-a: balance 3:1 (rs1 $A, rs2 $B)"
ctl -e $SVC -r "$RS2:80" $M -w 3 || fail "-e rs2"
T=$(curl_tally 40); echo "$T"
A=$(count "served by rs1" "$T") B=$(count "served by rs2" "$T")
(( A + B == 40 && A >= 20 && A <= 20 + ${WORKERS:-1} )) || fail "after -e: rs1 $A rs2 $B, want 20:20"
pass "-e weight 3: balance 1:1 (rs1 $A, rs2 $B)"

# 2. Add a real server under load.
cx wrk -t2 -c20 -d6s --timeout 3s -H "Connection: close" "http://$VIP/" >"$E2E_TMP/wrk.out" 2>&1 &
WRK=$!
sleep 2
ctl -a $SVC -r "$SORRY:80" $M -w 2 || fail "-a under load"
log "added $SORRY under load"
wait "$WRK" || true
cat "$E2E_TMP/wrk.out"
OUT=$(cat "$E2E_TMP/wrk.out")
REQS=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$OUT")
ERRS=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$OUT")
NON2XX=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$OUT")
(( ${REQS:-0} > 0 && ${ERRS:-0} == 0 && ${NON2XX:-0} == 0 )) || fail "wrk under -a: ${REQS:-0} requests, ${ERRS:-0} socket errors, ${NON2XX:-0} non-2xx"
NEW=$(real_field tcp 80 "$SORRY" conns)
(( NEW > 0 )) || fail "the server added under load got no connection"
pass "-a under load: $REQS requests, 0 errors; the new server took $NEW connections"
ctl -d $SVC -r "$SORRY:80" || fail "-d"

# 3. Save and restore.
S1=$(ctl -S -n)
echo "$S1"
set +e; R=$(ctl -S -n | ctl -R 2>&1); RC=$?; set -e
log "ctl -S -n | ctl -R: exit $RC: $R"
(( RC != 0 )) && grep -q 'Service already exists' <<<"$R" || fail "restoring over the live table was not refused"
[[ $(ctl -S -n) == "$S1" ]] || fail "a refused -R changed the table"
pass "-S | -R over the live table refused whole, table unchanged"
{ echo -C; ctl -S -n; } | ctl -R || fail "(-C; -S) | -R failed"
[[ $(ctl -S -n) == "$S1" ]] || { ctl -S -n; fail "-S differs after the round trip"; }
T=$(curl_tally 20); echo "$T"
(( $(count "served by rs1" "$T") + $(count "served by rs2" "$T") == 20 )) || fail "traffic after -R"
pass "(-C; -S -n) | -R round trip: same table, traffic goes on"

# 4. SIGHUP.
L1=$(ctl -L -n)
cp "$FLB_LAB_STATE/fastlb.toml" "$E2E_TMP/good.toml"
printf '[[service]]\nprotocol = "tcp"\naddress = "%s"\nport = 80\nweight = "heavy"\n' "$VIP" \
    > "$FLB_LAB_STATE/fastlb.toml"
"$LAB" reload
wait_for 5 grep -q 'reload refused' "$FLB_LAB_STATE/director.log" || fail "no 'reload refused' in the log"
grep 'reload refused' "$FLB_LAB_STATE/director.log"
[[ $(ctl -S -n) == "$S1" ]] || fail "a refused reload changed the table"
L2=$(ctl -L -n)
echo "$L2"
[[ $(grep -c -- '->' <<<"$L2") == $(grep -c -- '->' <<<"$L1") ]] || fail "-L lists other real servers after a refused reload"
T=$(curl_tally 20)
(( $(answered_sum "$T") == 20 )) || fail "traffic after a refused reload: $T"
pass "SIGHUP with a broken file: refused, table and traffic unchanged"
cp "$E2E_TMP/good.toml" "$FLB_LAB_STATE/fastlb.toml"
"$LAB" reload
wait_for 5 grep -q 'reloaded' "$FLB_LAB_STATE/director.log" || fail "good reload not applied"
[[ $(ctl -S -n | grep -c '^-a') == 1 ]] || { ctl -S -n; fail "after reloading the file (rs1 only), -S shows other servers"; }
pass "SIGHUP with a good file: applied (rs1 only again)"

# 5. Metrics.
MET=$(dx curl -s --max-time 3 "http://127.0.0.1:9108/metrics")
grep "^fastlb_service_connections_total\|^fastlb_service_in_packets_total\|^fastlb_worker_rx_frames_total\|^fastlb_real_server_connections_total" <<<"$MET"
# Label values hold blanks ("TCP 10.80.100.1:80"): match the series name, take the last field.
CONNS=$(grep -F "fastlb_service_connections_total{service=\"TCP $VIP:80\"}" <<<"$MET" | awk '{print $NF}')
RX=$(awk '/^fastlb_worker_rx_frames_total/ {s+=$2} END {print s+0}' <<<"$MET")
(( ${CONNS:-0} > 0 && RX > 0 )) || fail "metrics show no traffic (connections ${CONNS:-none}, rx frames $RX)"
pass "metrics: $CONNS connections on TCP $VIP:80, $RX frames received"

# 6. Delete the service: the kernel gets VIP:80 again.
ctl -D $SVC || fail "-D"
ctl -L -n
T=$(curl_tally 5); echo "$T"
[[ $(count "served by the director" "$T") == 5 ]] || fail "after -D the director's own server did not answer"
pass "-D: VIP:80 reaches the director's kernel (its own server answers)"
