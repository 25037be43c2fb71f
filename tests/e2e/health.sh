#!/usr/bin/env bash
# Usage: health.sh nat|dr|tun. Health checks on the live appliance, service VIP:80 wrr over
# rs1 (weight 3, HTTP GET / every 1 s, timeout 1 s, fall 2, rise 1) and rs2 (a script
# check with misc_dynamic: curl rs2, then exit with the code in a file, weight = code - 2),
# sorry server 10.80.2.20 ("served by sorry").
#   1. stop nginx on rs1: within the bound (fall-1) x interval + 2 x (interval + timeout)
#      = 3 s (docs/health.md) plus a 2 s margin rs1 leaves the table; afterwards every
#      request is answered, by rs2 only. The detection time is measured and printed.
#   2. start it again: rs1 is back within interval + timeout (+ margin) and gets traffic.
#   3. stop both: the sorry server enters the table and answers; start both: it leaves.
#   The metrics' fastlb_real_server_healthy follows 1 and 2.
#   4. the script returns 5 instead of 3: rs2's weight goes from 1 to 3 and the balance
#      from 3:1 to 1:1.
source "$(dirname "$0")/lib.sh"
MODE=${1:-nat}
lab_init "$MODE-health"
echo 3 > "$E2E_TMP/rs2-code"
CONFIG=$E2E_TMP/health.toml
cat > "$CONFIG" <<TOML
[[service]]
protocol = "tcp"
address = "$VIP"
port = 80
scheduler = "wrr"
sorry_server = "$SORRY:80"

[service.health]
check = "http"
path = "/"
interval = 1
timeout = 1
retries = 0
fall = 2
rise = 1

[[service.real]]
address = "$RS1"
port = 80
weight = 3
method = "$MODE"

[[service.real]]
address = "$RS2"
port = 80
weight = 1
method = "$MODE"

[service.real.health]
check = "script"
command = "curl -sf -m 1 -o /dev/null http://$RS2/ || exit 1; exit \$(cat $E2E_TMP/rs2-code)"
dynamic = true
timeout = 2
TOML
lab_up "$MODE-health" "$MODE" --config "$CONFIG"

in_table() { [[ $(real_field tcp 80 "$1" weight) != absent ]]; }
not_in_table() { ! in_table "$1"; }
has_weight() { [[ $(real_field tcp 80 "$1" weight) == "$2" ]]; }
# healthy RS: the director's fastlb_real_server_healthy for RS:80 (absent: "absent").
healthy() {
    local k="fastlb_real_server_healthy{service=\"TCP $VIP:80\",real=\"$1:80\"} " v
    v=$(dx curl -s 127.0.0.1:9108/metrics | grep -F "$k" | awk '{ print $NF }')
    echo "${v:-absent}"
}

T=$(curl_tally 40); echo "$T"
[[ $(count "served by rs1" "$T") -ge 30 && $(count "served by rs2" "$T") -ge 1 ]] || fail "no 3:1 balance at start"
pass "both up, balanced"

# 1. rs1 goes.
T0=$(now_ms)
"$LAB" web rs1 stop
wait_for 8 not_in_table "$RS1" || fail "rs1 still in the table 8 s after its nginx stopped"
GONE=$(( $(now_ms) - T0 ))
log "rs1 detected down after $GONE ms (bound 3000 ms + 2000 ms margin)"
grep "$RS1:80 is gone" "$FLB_LAB_STATE/director.log" | tail -1
(( GONE <= 5000 )) || fail "detection took $GONE ms"
T=$(curl_tally 40); echo "$T"
[[ $(count "served by rs2" "$T") == 40 ]] || fail "after rs1 went, not every request was answered by rs2"
pass "rs1 out after $GONE ms; 40/40 answered by rs2"
[[ $(healthy "$RS1") == 0 && $(healthy "$RS2") == 1 ]] \
    || fail "metrics: rs1 healthy $(healthy "$RS1"), rs2 $(healthy "$RS2"); want 0 and 1"
pass "metrics: fastlb_real_server_healthy 0 for rs1, 1 for rs2"

# 2. rs1 comes back.
T0=$(now_ms)
"$LAB" web rs1 start
wait_for 8 in_table "$RS1" || fail "rs1 not back 8 s after its nginx started"
BACK=$(( $(now_ms) - T0 ))
log "rs1 detected up after $BACK ms (bound 2000 ms + 2000 ms margin)"
(( BACK <= 4000 )) || fail "coming back took $BACK ms"
T=$(curl_tally 40); echo "$T"
(( $(count "served by rs1" "$T") >= 30 && $(answered_sum "$T") == 40 )) || fail "rs1 gets no traffic again"
pass "rs1 back after $BACK ms and serving"
[[ $(healthy "$RS1") == 1 ]] || fail "metrics: rs1 healthy $(healthy "$RS1") once back"

# 3. Everything down: the sorry server.
T0=$(now_ms)
"$LAB" web rs1 stop
"$LAB" web rs2 stop
wait_for 10 in_table "$SORRY" || fail "no sorry server 10 s after both real servers stopped"
log "sorry server in after $(( $(now_ms) - T0 )) ms"
ctl -L -n
T=$(curl_tally 10); echo "$T"
[[ $(count "served by sorry" "$T") == 10 ]] || fail "the sorry server did not answer every request"
pass "sorry server answers while nothing is up"
"$LAB" web rs1 start
"$LAB" web rs2 start
wait_for 10 not_in_table "$SORRY" || fail "sorry server still there 10 s after the real servers came back"
wait_for 10 in_table "$RS2" || fail "rs2 not back"
wait_for 10 in_table "$RS1" || fail "rs1 not back"
pass "real servers back, sorry server gone"

# 4. misc_dynamic: weight 1 -> 3.
has_weight "$RS2" 1 || fail "rs2's weight is $(real_field tcp 80 "$RS2" weight), not 1"
T0=$(now_ms)
echo 5 > "$E2E_TMP/rs2-code"
wait_for 8 has_weight "$RS2" 3 || fail "rs2's weight did not follow the script (still $(real_field tcp 80 "$RS2" weight))"
log "rs2 weight 3 after $(( $(now_ms) - T0 )) ms"
grep "$RS2:80 stays up" "$FLB_LAB_STATE/director.log" | tail -1 || true
T=$(curl_tally 40); echo "$T"
A=$(count "served by rs1" "$T") B=$(count "served by rs2" "$T")
# wrr 3:3 alternates per worker: rs1 gets 20, plus at most one per worker.
(( A + B == 40 && A >= 20 && A <= 20 + ${WORKERS:-1} )) || fail "balance after the weight change: rs1 $A, rs2 $B (want 20:20)"
pass "dynamic weight: balance 3:1 -> rs1 $A, rs2 $B"
echo "HEALTH mode=$MODE down_detect_ms=$GONE up_detect_ms=$BACK"
