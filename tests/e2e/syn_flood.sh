#!/usr/bin/env bash
# Usage: syn_flood.sh [FLOOD_SECONDS] [RESULTS_JSON] [SETTINGS]. A spoofed SYN flood against a VIP
# while established connections run through the same director (lab mode dr,
# tools/lab/synflood.toml: a 16,384-entry connection table, so that a short flood fills it).
#
#   - 8 long-lived TCP connections (tools/lab/longconn.py to tools/lab/tcp_echo.py on :7,
#     a line every 100 ms) and an iperf3 stream (:5201, 20 Mbit/s) are opened first;
#   - pktgen (AF_XDP, from the client's namespace) sends SYNs to VIP:80 at its full rate
#     for FLOOD_SECONDS (default 5), each from a new spoofed source (10.99.0.0/16 and up);
#   - meanwhile new legitimate connections (curl to VIP:80), one after another 200 ms
#     apart, 3 s allowed each;
#   - the director's metrics are scraped before and after: connection table entries,
#     evictions, refused inserts; then the connections run on for AFTER_SECS.
#
# Asserted: the table filled (entries at its capacity or evictions counted: the flood
# reached the bound) and no long-lived connection broke (reset, closed, or silent for 5 s
# at the end). Reported, not asserted (they depend on what else the machine runs): each
# long connection's longest stall, the iperf3 stream's longest stall and throughput, the
# share of new connections that succeeded and their connect times, the flood's rate. With
# RESULTS_JSON the figures are written there (tools/lab/synflood-bench.sh does).
# SYNFLOOD_CONFIG names another lab configuration (tools/lab/synflood-defences.toml: the
# same with IPVS's drop_packet and secure_tcp on); with drop_packet the table may stay
# below its bound, so new connections it refused also count as the flood reaching it.
# SETTINGS (or SYNFLOOD_SET), comma-separated `[director]` keys such as
# "drop_entry=1,amemthresh=4096", are added to that configuration; with drop_entry set it is
# also asserted that its walk ended some of the flood's half-open entries
# (fastlb_conn_table_dropped_entries_total). SYNFLOOD_RATE holds the generator to that many
# SYNs a second (pktgen --rate, with 200 ms of tokens so that a generator the busy machine
# descheduled catches up; default: flat out), so that runs compare at one rate.
source "$(dirname "$0")/lib.sh"
need iperf3 curl
FLOOD_SECS=${1:-5}
# After the flood the connections run on this long: a connection that lost every packet
# through the flood resumes when its retransmission timer, backed off meanwhile, fires
# (up to about twice the outage), and "broken" means silent for the last 5 s.
AFTER_SECS=$(( FLOOD_SECS * 2 + 5 > 15 ? FLOOD_SECS * 2 + 5 : 15 ))
RESULTS=${2:-}
SETTINGS=${3:-${SYNFLOOD_SET:-}}
RATE=${SYNFLOOD_RATE:-0}
PKTGEN=${PKTGEN:-$E2E_ROOT/target/release/pktgen}
[[ -x $PKTGEN ]] || skip "no pktgen binary at $PKTGEN (cargo build --release --bin pktgen)"
CONNS=8

CONFIG=${SYNFLOOD_CONFIG:-$E2E_ROOT/tools/lab/synflood.toml}
if [[ -n $SETTINGS ]]; then
    lab_init synflood
    # The settings go right under [director] (a key given twice is refused, so the base
    # configuration must not set them).
    awk -v set="$SETTINGS" '{print} /^\[director\]/ {n = split(set, kv, ","); for (i = 1; i <= n; i++) print kv[i]}' \
        "$CONFIG" >"$E2E_TMP/synflood.toml"
    CONFIG=$E2E_TMP/synflood.toml
fi
DROP_ENTRY=0
[[ $SETTINGS =~ drop_entry[[:space:]]*=[[:space:]]*[1-3] ]] && DROP_ENTRY=1
lab_up synflood dr --config "$CONFIG"

# The long connections' echo server (lab.sh starts it only in the ha modes).
for rs in "$NS_R1 rs1" "$NS_R2 rs2"; do
    set -- $rs
    ip netns exec "$1" python3 "$E2E_ROOT/tools/lab/tcp_echo.py" 0.0.0.0 7 "$2" \
        >"$E2E_TMP/tcp_echo-$2.log" 2>&1 &
    E2E_CLEANUP+=("kill $!")
done
for ns in "$NS_R1" "$NS_R2"; do
    wait_for 10 bash -c "[[ -n \$(ip netns exec $ns ss -ltnH 'sport = :7') ]]" \
        || fail "tcp_echo in $ns did not start"
done

# The lab's director serves its metrics here, in its namespace (tools/lab/lab.sh).
METRICS_ADDR=127.0.0.1:9108
# metric NAME: the value of an unlabelled family of the director's metrics (asked again
# for up to 30 s while a busy director does not answer).
metric() {
    local v= deadline=$(( $(now_ms) + 30000 ))
    while [[ -z $v ]] && (( $(now_ms) < deadline )); do
        v=$(dx curl -s --max-time 5 "http://$METRICS_ADDR/metrics" 2>/dev/null \
            | awk -v n="fastlb_$1" '$1 == n {print $2}') || true
        [[ -n $v ]] || sleep 0.5
    done
    [[ -n $v ]] || fail "the director's metrics do not answer (fastlb_$1)" >&2
    echo "$v"
}
# defence_drops: new connections the drop_packet defence refused so far (0 if none).
defence_drops() {
    dx curl -s --max-time 5 "http://$METRICS_ADDR/metrics" 2>/dev/null \
        | awk '$1 == "fastlb_drops_total{reason=\"defence_drop_packet\"}" {v = $2} END {print v + 0}'
}
CAPACITY=$(metric conn_table_capacity)
DROPPED0=$(metric conn_table_dropped_entries_total)
DEFDROP0=$(defence_drops)
EVICT0=$(metric conn_table_evictions_total)
FAIL0=$(metric conn_table_insert_failures_total)
log "connection table: capacity $CAPACITY, $(metric conn_table_entries) entries before the flood"

MARK=$E2E_TMP/flood.mark READY=$E2E_TMP/long.ready STOP=$E2E_TMP/long.stop
cx python3 "$E2E_ROOT/tools/lab/longconn.py" "$VIP" 7 --conns "$CONNS" --interval 0.1 \
    --duration $(( FLOOD_SECS + AFTER_SECS + 60 )) --mark-file "$MARK" --ready-file "$READY" \
    --stop-file "$STOP" --broken-after 5 --out "$E2E_TMP/long.json" >"$E2E_TMP/long.log" 2>&1 &
LONG=$!
E2E_CLEANUP+=("kill $LONG")
wait_for 30 test -f "$READY" || { cat "$E2E_TMP/long.log"; fail "the long connections did not open"; }
IPERF_SECS=$(( FLOOD_SECS + AFTER_SECS + 2 ))
cx timeout $(( IPERF_SECS + 30 )) iperf3 -c "$VIP" -p 5201 -t "$IPERF_SECS" -b 20M -i 0.1 \
    --snd-timeout 10000 -J >"$E2E_TMP/iperf.json" 2>"$E2E_TMP/iperf.err" &
IPERF=$!
IPERF_T0=$(now_ms)
E2E_CLEANUP+=("kill $IPERF")
sleep 2

# The table, sampled every 0.5 s from now until the end ("ms entries evictions refused").
( while :; do
    m=$(dx curl -s --max-time 2 "http://$METRICS_ADDR/metrics" 2>/dev/null) || true
    echo "$(now_ms) $(awk '$1 == "fastlb_conn_table_entries" {e=$2} $1 == "fastlb_conn_table_evictions_total" {v=$2}
        $1 == "fastlb_conn_table_insert_failures_total" {f=$2} END {print e+0, v+0, f+0}' <<<"$m")"
    sleep 0.5
  done ) >"$E2E_TMP/table.txt" 2>/dev/null &
SAMPLER=$!
E2E_CLEANUP+=("kill $SAMPLER")

# The flood: pktgen on the client's interface, to the director's MAC.
FLOOD_T0=$(now_ms)
DMAC=$(dx cat /sys/class/net/d0/address)
touch "$MARK"
cx "$PKTGEN" --mode tx --tx-iface c0 --dst-mac "$DMAC" --src-ip 10.99.0.1 \
    --dst-ip "$VIP" --dport 80 --pattern syn --duration "$FLOOD_SECS" --rate "$RATE" --burst-ms 200 --progress 0 \
    --json "$E2E_TMP/pktgen.json" >"$E2E_TMP/pktgen.log" 2>&1 &
GEN=$!
E2E_CLEANUP+=("kill $GEN")

# New legitimate connections during the flood.
: >"$E2E_TMP/new.txt"
t_end=$(( $(now_ms) + FLOOD_SECS * 1000 ))
while (( $(now_ms) < t_end )); do
    cx curl -s -o /dev/null --max-time 3 -H 'Connection: close' \
        -w '%{http_code} %{time_connect}\n' "http://$VIP/" >>"$E2E_TMP/new.txt" 2>/dev/null \
        || echo "000 -" >>"$E2E_TMP/new.txt"
    sleep 0.2
done
wait "$GEN" || { cat "$E2E_TMP/pktgen.log"; fail "pktgen failed"; }
FLOOD_T1=$(now_ms)
ENTRIES=$(metric conn_table_entries)
EVICT=$(( $(metric conn_table_evictions_total) - EVICT0 ))
FAILED=$(( $(metric conn_table_insert_failures_total) - FAIL0 ))
DEFDROP=$(( $(defence_drops) - DEFDROP0 ))
DROPPED=$(( $(metric conn_table_dropped_entries_total) - DROPPED0 ))
log "after the flood: $ENTRIES entries of $CAPACITY, $EVICT evictions, $FAILED inserts refused, $DEFDROP refused by drop_packet, $DROPPED ended by drop_entry"

# Let the connections run on after the flood (a connection whose retransmission timer
# backed off during it needs a few seconds to resume), then stop them.
sleep "$AFTER_SECS"
touch "$STOP"
wait "$LONG" || { cat "$E2E_TMP/long.log"; fail "longconn.py failed"; }
wait "$IPERF" || true
kill "$SAMPLER" 2>/dev/null || true
cat "$E2E_TMP/long.log"

python3 - "$E2E_TMP" "$FLOOD_SECS" "$CAPACITY" "$ENTRIES" "$EVICT" "$FAILED" "$RESULTS" \
    "$FLOOD_T0" "$FLOOD_T1" "$IPERF_T0" "$DEFDROP" "$DROPPED" "$SETTINGS" "$RATE" <<'PY'
import json, sys
(tmp, secs, cap, entries, evict, failed, results, t0, t1, it0, defdrop, dropped, settings,
 rate) = sys.argv[1:]
t0, t1, it0 = int(t0), int(t1), int(it0)
long = json.load(open(f"{tmp}/long.json"))
gen = json.load(open(f"{tmp}/pktgen.json"))
new = [l.split() for l in open(f"{tmp}/new.txt") if l.strip()]
ok = [float(t) for c, t in new if c == "200"]
try:
    ip = json.load(open(f"{tmp}/iperf.json"))
    ip_err = ip.get("error")
    iv = [i["sum"] for i in ip.get("intervals", [])]
    stall = run = 0.0
    for i in iv:
        run = run + i["seconds"] if i["bytes"] == 0 else 0.0
        stall = max(stall, run)
    end = ip.get("end", {})
    mbits = (end.get("sum_received") or end.get("sum_sent") or {}).get("bits_per_second")
    mbits = None if mbits is None else mbits / 1e6
    series = [[round(i["end"], 2), round(i["bits_per_second"] / 1e6, 2)] for i in iv]
except (OSError, ValueError, KeyError) as e:
    stall, mbits, ip_err, series = None, None, f"unreadable: {e}", []
if not series:
    stall = None
table = []
for l in open(f"{tmp}/table.txt"):
    f = l.split()
    if len(f) == 4:
        table.append([round((int(f[0]) - t0) / 1000, 2)] + [int(x) for x in f[1:]])
conns = [{k: r[k] for k in ("gap_ms", "gap_at_s", "broken")} for r in long["connections"]]
sent = gen["sent"]
out = {
    "settings": settings,
    "generator_rate": int(rate),
    "flood_seconds": int(secs),
    "flood_syns_sent": sent,
    "flood_pps": round(gen["tx_pps"]),
    "table_capacity": int(cap), "table_entries_after": int(entries),
    "evictions": int(evict), "inserts_refused": int(failed),
    "refused_by_drop_packet": int(defdrop),
    "ended_by_drop_entry": int(dropped),
    "long_connections": long["conns"],
    "long_broken": long["broken"],
    "long_stall_ms_max": long["gap_ms_max"], "long_stall_ms_median": long["gap_ms_median"],
    "iperf3_mbits": None if mbits is None else round(mbits, 1),
    "iperf3_stall_s": stall, "iperf3_error": ip_err,
    "new_connections": len(new), "new_succeeded": len(ok),
    "new_success_share": round(len(ok) / len(new), 3) if new else None,
    "new_connect_ms_median": round(sorted(ok)[len(ok) // 2] * 1000, 1) if ok else None,
    "new_connect_ms_max": round(max(ok) * 1000, 1) if ok else None,
}
print("FLOOD " + json.dumps(out))
# For the plot: times in seconds from the flood's start.
out.update(
    flood_window_s=[0, round((t1 - t0) / 1000, 2)],
    table_series=table,
    iperf3_series=[[round(t + (it0 - t0) / 1000, 2), m] for t, m in series],
    long_connection_stalls=conns,
    new_connect_s=[[c, t] for c, t in new],
)
if results:
    json.dump(out, open(results, "w"), indent=1)
PY

(( CAPACITY > 0 )) || fail "no connection table capacity in the metrics"
(( EVICT > 0 || ENTRIES * 10 >= CAPACITY * 9 || DEFDROP > 0 )) \
    || fail "the flood did not reach the table's bound ($ENTRIES of $CAPACITY entries, $EVICT evictions, $DEFDROP refused by drop_packet)"
if (( DROP_ENTRY )); then
    # The walk runs once a second while the table is nearly full, which it stays until the
    # flood's entries time out: on a busy machine the first may come after the flood.
    dropped_grew() { (( $(metric conn_table_dropped_entries_total) > DROPPED0 )); }
    wait_for 30 dropped_grew \
        || fail "drop_entry was set and ended no entry of the flood's"
    DROPPED=$(( $(metric conn_table_dropped_entries_total) - DROPPED0 ))
fi
BROKEN=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["broken"])' "$E2E_TMP/long.json")
[[ $BROKEN == 0 ]] || fail "$BROKEN of $CONNS established connections broke during the flood"
pass "a $FLOOD_SECS s SYN flood filled the table ($EVICT evictions${SETTINGS:+, $SETTINGS: $DROPPED ended by drop_entry}) and broke none of $CONNS established connections"
