#!/usr/bin/env bash
# Usage: prometheus.sh nat. A real Prometheus (Debian's) scrapes the lab's director
# (`lab.sh up --prometheus`: in the director namespace, every second) while curl and wrk
# send traffic to the IPv4 VIP:80; the script asks Prometheus's HTTP API:
#   1. the target is up (`up{job="fastlb"} == 1`);
#   2. fastlb_real_server_in_packets_total of rs1 rises between two queries under load;
#   3. fastlb_drops_total has a series for every reason, fastlb_real_server_healthy says 1
#      for rs1 and rs2;
#   4. every query of the Grafana dashboard (tools/grafana/fastlb.json), with its variables
#      set ($service = all, $__rate_interval = 10s), is accepted and returns data.
source "$(dirname "$0")/lib.sh"
MODE=${1:-nat}
need prometheus wrk
lab_up "$MODE-prom" "$MODE" --prometheus

promql() { "$LAB" promql "$1"; }
# value EXPR: the first sample's value of an instant query, or "none".
value() {
    promql "$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "none")'
}

wait_for 20 sh -c "[ \"\$('$LAB' promql 'up{job=\"fastlb\"}' | python3 -c 'import json,sys; r=json.load(sys.stdin)[\"data\"][\"result\"]; print(r[0][\"value\"][1] if r else 0)')\" = 1 ]" \
    || { cat "$FLB_LAB_STATE/prometheus.log"; fail "Prometheus never scraped fastlb (up != 1)"; }
pass "Prometheus scrapes fastlb: up{job=\"fastlb\"} = 1"

# 2. A per-real-server counter rises under load.
RS1_IN="fastlb_real_server_in_packets_total{service=\"TCP $VIP:80\",real=\"$RS1:80\"}"
cx wrk -t1 -c4 -d40s --timeout 3s "http://$VIP/" >/dev/null 2>&1 &
WRK=$!
E2E_CLEANUP+=("kill $WRK")
wait_for 20 sh -c "[ \"\$('$LAB' promql '$RS1_IN' | python3 -c 'import json,sys; r=json.load(sys.stdin)[\"data\"][\"result\"]; print(r[0][\"value\"][1] if r else 0)')\" != 0 ]" \
    || fail "no packets of rs1 in Prometheus"
A=$(value "$RS1_IN")
sleep 3
B=$(value "$RS1_IN")
log "rs1 packets in: $A, then $B"
python3 -c "import sys; sys.exit(0 if float('$B') > float('$A') > 0 else 1)" \
    || fail "rs1's in_packets did not rise in Prometheus ($A then $B)"
RATE=$(value "rate($RS1_IN[5s])")
python3 -c "import sys; sys.exit(0 if float('$RATE') > 0 else 1)" || fail "rate of rs1's packets is $RATE"
pass "rs1's in_packets rise in Prometheus ($A, then $B; rate $RATE/s)"

# 3. Drops by reason, health.
REASONS=$(promql 'fastlb_drops_total' | python3 -c '
import json, sys
print(" ".join(sorted(s["metric"]["reason"] for s in json.load(sys.stdin)["data"]["result"])))')
log "drop reasons: $REASONS"
(( $(wc -w <<<"$REASONS") >= 5 )) || fail "fastlb_drops_total should have one series per reason"
[[ " $REASONS " == *" malformed "* ]] || fail "no malformed drop reason"
for rs in "$RS1" "$RS2"; do
    H=$(value "fastlb_real_server_healthy{service=\"TCP $VIP:80\",real=\"$rs:80\"}")
    [[ $H == 1 ]] || fail "healthy of $rs is $H"
done
pass "drops_total by reason ($(wc -w <<<"$REASONS") reasons), healthy 1 for rs1 and rs2"

# 4. The Grafana dashboard's queries.
python3 - "$E2E_ROOT/tools/grafana/fastlb.json" >"$E2E_TMP/exprs" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["panels"]:
    for t in p["targets"]:
        e = t["expr"].replace("$__rate_interval", "10s").replace('=~"$service"', '=~".*"')
        assert "$" not in e, e
        print(p["title"] + "\t" + e)
EOF
N=0
while IFS=$'\t' read -r title expr; do
    out=$(promql "$expr") || fail "Prometheus refused the query of \"$title\": $expr"
    n=$(python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["status"] == "success"; print(len(d["data"]["result"]))' <<<"$out") \
        || fail "bad answer for \"$title\": $out"
    (( n > 0 )) || fail "no data for \"$title\": $expr"
    log "$n series: $title: $expr"
    N=$((N + 1))
done <"$E2E_TMP/exprs"
(( N >= 10 )) || fail "only $N dashboard queries"
pass "all $N queries of the Grafana dashboard return data"

# The lab's down removes Prometheus with the namespace; its data directory with the state.
PROM_DIR=$FLB_LAB_STATE/prometheus
[[ -d $PROM_DIR ]] || fail "no Prometheus data directory $PROM_DIR"
"$LAB" down >/dev/null
[[ ! -e $PROM_DIR ]] || fail "$PROM_DIR left behind"
pgrep -f -- "--storage.tsdb.path=$PROM_DIR" >/dev/null && fail "Prometheus left running"
pass "lab down: Prometheus stopped, its data removed"
