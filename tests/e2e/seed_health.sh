#!/usr/bin/env bash
# Usage: seed_health.sh. The seed's real-server health-check script (tests/e2e/seed/
# ipvsmonitor.sh, as the seed's notes give it: a loop on the director that curls each
# real server and runs `ipvsadm -d` / `ipvsadm -a ... -w W` on a change), run unchanged
# but for its settings block against fastlb, through a link named ipvsadm on its PATH.
# The lab is the seed's DR layout (dr-flat) with VIP:80 over rs1 (weight 2) and rs2
# (weight 1) and no health checks of fastlb's own.
#   1. both up: the script leaves the table alone, both servers answer;
#   2. nginx on rs1 stops: the script logs "is gone" and `ipvsadm -d`s it: rs1 leaves the
#      table and rs2 answers everything;
#   3. nginx on rs1 starts: the script logs "is back" and adds it with weight 2 again.
source "$(dirname "$0")/lib.sh"
lab_init seed-health
cat > "$E2E_TMP/fastlb.toml" <<TOML
[[service]]
protocol = "tcp"
address = "10.80.3.100"
port = 80
scheduler = "wrr"

[[service.real]]
address = "10.80.3.11"
port = 80
weight = 2
method = "dr"

[[service.real]]
address = "10.80.3.12"
port = 80
weight = 1
method = "dr"
TOML
lab_up seed-health dr-flat --config "$E2E_TMP/fastlb.toml"
MONITOR=$E2E_TMP/ipvsmonitor.sh
sed -e "s|^VIP=[^ ]*|VIP=$VIP|" -e "s|^RS=([^)]*)|RS=(\"$RS1\" \"$RS2\")|" \
    -e "s|^LOG=[^ ]*|LOG=$E2E_TMP/ipvsmonitor.log|" "$E2E_ROOT/tests/e2e/seed/ipvsmonitor.sh" > "$MONITOR"
diff "$E2E_ROOT/tests/e2e/seed/ipvsmonitor.sh" "$MONITOR" || true
export PATH=$FLB_LAB_STATE/bin:$PATH FASTLB_CTL_SOCKET=$FLB_LAB_STATE/ctl.sock
[[ $(command -v ipvsadm) == "$FLB_LAB_STATE/bin/ipvsadm" ]] || fail "ipvsadm on PATH is not fastlb's link"
dx bash "$MONITOR" >"$E2E_TMP/monitor.out" 2>&1 &
MON=$!
E2E_CLEANUP+=("kill $MON")
gone_logged() { grep -q "$1 is gone" "$E2E_TMP/ipvsmonitor.log"; }
back_logged() { grep -q "$1 is back" "$E2E_TMP/ipvsmonitor.log"; }

# 1.
sleep 1
T=$(curl_tally 12); echo "$T"
A=$(count "served by rs1" "$T") B=$(count "served by rs2" "$T")
(( A + B == 12 && A >= 8 && A <= 8 + ${WORKERS:-1} )) || fail "both up: rs1 $A, rs2 $B, want 8:4 (wrr 2:1)"
[[ ! -s $E2E_TMP/ipvsmonitor.log ]] || fail "the script changed something while both were up"
pass "both up: the script leaves the table alone"

# 2. The script checks every 5 s (3 tries each), so a change shows within about 8 s.
T0=$(now_ms)
"$LAB" web rs1 stop
wait_for 15 gone_logged "$RS1" || { cat "$E2E_TMP/monitor.out"; fail "the script never logged rs1 as gone"; }
cat "$E2E_TMP/ipvsmonitor.log"
wait_for 2 sh -c "! ipvsadm -L -n | grep -q ' $RS1:80 '" || fail "rs1 still in the table"
log "rs1 out after $(( $(now_ms) - T0 )) ms"
ipvsadm -L -n
T=$(curl_tally 10); echo "$T"
[[ $(count "served by rs2" "$T") == 10 ]] || fail "rs2 did not answer everything"
pass "rs1 down: the script ran ipvsadm -d, rs2 answers everything"

# 3.
"$LAB" web rs1 start
wait_for 15 back_logged "$RS1" || { cat "$E2E_TMP/monitor.out"; fail "the script never logged rs1 as back"; }
cat "$E2E_TMP/ipvsmonitor.log"
ipvsadm -L -n
[[ $(real_field tcp 80 "$RS1" weight) == 2 ]] || fail "rs1 is back with weight $(real_field tcp 80 "$RS1" weight), not 2"
T=$(curl_tally 12); echo "$T"
(( $(count "served by rs1" "$T") >= 7 && $(answered_sum "$T") == 12 )) || fail "rs1 gets no traffic again"
pass "rs1 back: the script ran ipvsadm -a -w 2, traffic returns"
