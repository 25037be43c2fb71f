#!/usr/bin/env bash
# Does a sync pair keep up with new connections? A live master and backup fastlb, a
# generator opening new TCP connections at the master at a set rate, and what the backup
# holds over time against what the master created and sent. Writes
# bench-results/ha/sync-rate-PROTON.json (tcp3: the defaults) and plots it beside it
# (tools/lab/plot-sync-rate.py, needs python3-matplotlib) as sync-rate-PROTON.svg.
#
#   tools/lab/sync-rate-bench.sh [SECONDS] [CONNS_PER_SECOND] [OUT_DIR]
#                                (defaults 5, 100000, bench-results/ha)
#   PROTO=udp CONN_PACKETS=1 tools/lab/sync-rate-bench.sh ...
#                                each connection one UDP datagram, the pair's
#                                sync_threshold [1, 50] (sent at its first packet)
#
# The pair is tests/e2e/sync.sh's: the lab's director (mode dr) is the master; a second
# fastlb, the backup, runs in its own namespace with the same rules, its only interface
# the end of a veth pair to the director that carries the sync datagrams (multicast
# 224.0.0.81:8848, as the kernel's). Both daemons start with `fastlb ctl --start-daemon`,
# the sync sysctls at the kernel's defaults (sync_threshold 3 50).
#
# The generator is pktgen (AF_XDP, in the client's namespace) in its `open` pattern: each
# new connection is a SYN, then two ACKs, from a source never used before in the run, so
# that each reaches ESTABLISHED and the packet (the 3rd) at which a master with the
# kernel's defaults sends it: CONNS_PER_SECOND connections is three times as many packets.
# The real servers get the packets (DR) and answer them with resets nobody reads.
#
# Sampled every 0.25 s from both directors' metrics: connection table entries and every
# sync counter. At the end: the backup's kernel UDP counters (datagrams received, dropped
# for a full socket buffer), the master's and the backup's sync counters, and the
# connections the backup lacks (master sent - backup installed). With PERF=1, the master's
# profile over the generator's window (perf, cpu-clock) beside the results. Nothing is asserted: a
# benchmark, run by hand (needs root and `cargo build --release --bin fastlb --bin pktgen`).
# A session of its own with the highest autogroup weight, as tools/bench/harness.sh (the
# machine is shared: without it the master's worker got 15 % of a core from the others'
# builds and its AF_XDP ring overflowed).
if [[ -z ${FLBS_SESSION:-} && -e /proc/self/autogroup ]]; then
    export FLBS_SESSION=1
    exec setsid -w bash "$0" "$@"
fi
echo -20 >/proc/self/autogroup 2>/dev/null || true
source "$(dirname "$0")/../../tests/e2e/lib.sh"
SECS=${1:-5}
RATE=${2:-100000}
OUT_DIR=${3:-$E2E_ROOT/bench-results/ha}
PKTGEN=${PKTGEN:-$E2E_ROOT/target/release/pktgen}
[[ -x $PKTGEN ]] || skip "no pktgen binary at $PKTGEN (cargo build --release --bin pktgen)"
need python3 curl
# Each director's table holds the whole run with room to spare (the generator's
# connections all come in on one queue, so one worker's share of the slots takes them).
CAPACITY=$(( SECS * RATE * 4 > 1048576 ? SECS * RATE * 4 : 1048576 ))
PORT=9
PROTO=${PROTO:-tcp}
CONN_PACKETS=${CONN_PACKETS:-3}
[[ $PROTO == tcp || $PROTO == udp ]] || fail "PROTO=$PROTO: tcp or udp"
(( CONN_PACKETS >= 1 && CONN_PACKETS < 50 )) || fail "CONN_PACKETS=$CONN_PACKETS: 1 to 49"

lab_init syncrate
CONFIG=$E2E_TMP/sync-rate.toml
cat > "$CONFIG" <<TOML
[director]
conn_capacity = $CAPACITY
sync_threshold = [$CONN_PACKETS, 50]

[[service]]
protocol = "$PROTO"
address = "$VIP"
port = $PORT
scheduler = "rr"

[[service.real]]
address = "$RS1"
port = $PORT
method = "dr"

[[service.real]]
address = "$RS2"
port = $PORT
method = "dr"
TOML
lab_up syncrate dr --config "$CONFIG"

backup_segment
# Not through bx: a backgrounded function is a subshell, and $! would be its pid.
ip netns exec "$NS_B" "$FASTLB_CMD" --iface syb --config "$CONFIG" --ctl-socket "$BAK_SOCK" \
    --metrics 127.0.0.1:9109 >"$E2E_TMP/backup.log" 2>&1 &
BAK_PID=$!
wait_for 30 grep -q serving "$E2E_TMP/backup.log" || { cat "$E2E_TMP/backup.log"; fail "the backup fastlb did not start"; }
ctl --start-daemon master --mcast-interface sym --syncid 9 || fail "--start-daemon master"
bctl --start-daemon backup --mcast-interface syb --syncid 9 || fail "--start-daemon backup"
log "pair up: master $(ctl -L --daemon); backup $(bctl -L --daemon)"

# scrape NS ADDR: "entries sync_event=value ..." from one director's metrics ("-" if it
# did not answer).
scrape() {
    ip netns exec "$1" curl -s --max-time 2 "http://$2/metrics" 2>/dev/null | awk '
        $1 == "fastlb_conn_table_entries" {e = $2}
        $1 ~ /^fastlb_sync_events_total\{/ {
            match($1, /event="[a-z_0-9]*"/); s = s " " substr($1, RSTART + 7, RLENGTH - 8) "=" $2 }
        END {print (e == "" ? "-" : e) s}'
}
T0=$(now_ms)
( while :; do
    # Stamped when the answer is in: a busy director's metrics may take a while.
    m=$(scrape "$NS_D" 127.0.0.1:9108); echo "$(( $(now_ms) - T0 )) M $m"
    b=$(scrape "$NS_B" 127.0.0.1:9109); echo "$(( $(now_ms) - T0 )) B $b"
    sleep 0.25
  done ) >"$E2E_TMP/samples.txt" 2>/dev/null &
SAMPLER=$!
E2E_CLEANUP+=("kill $SAMPLER")
sleep 1

# cpu PID: "thread-name ticks" for each thread of PID (utime + stime, summed by name).
cpu() {
    local t
    for t in /proc/"$1"/task/*; do
        awk '{sub(/^[0-9]+ \(/, ""); n = $0; sub(/\).*/, "", n); sub(/^[^)]*\) /, "");
              print n, $12 + $13}' "$t/stat" 2>/dev/null
    done | awk '{c[$1] += $2} END {for (n in c) print n, c[n]}'
}
# The master's d0 as the kernel counts it (frames in, dropped).
d0_stats() { dx cat /sys/class/net/d0/statistics/rx_packets /sys/class/net/d0/statistics/rx_dropped | tr '\n' ' '; }
MASTER_PID=$(cat "$FLB_LAB_STATE/director.pid")
cpu "$MASTER_PID" >"$E2E_TMP/cpu-m0.txt"; cpu "$BAK_PID" >"$E2E_TMP/cpu-b0.txt"
D0_BEFORE=$(d0_stats)
# PERF=1: where the master's threads spend the generator's window (perf, cpu-clock).
if [[ -n ${PERF:-} ]]; then
    perf record -q -e cpu-clock -F 2000 -p "$MASTER_PID" -o "$E2E_TMP/perf.data" -- sleep "$SECS" \
        >"$E2E_TMP/perf.log" 2>&1 &
    PERF_PID=$!
fi
DMAC=$(dx cat /sys/class/net/d0/address)
GEN_T0=$(( $(now_ms) - T0 ))
cx "$PKTGEN" --mode tx --tx-iface c0 --dst-mac "$DMAC" --src-ip 10.99.0.1 \
    --dst-ip "$VIP" --dport "$PORT" --proto "$PROTO" --pattern open --conn-packets "$CONN_PACKETS" \
    --rate $(( RATE * CONN_PACKETS )) --duration "$SECS" --progress 0 \
    --json "$E2E_TMP/pktgen.json" >"$E2E_TMP/pktgen.log" 2>&1 || { cat "$E2E_TMP/pktgen.log"; fail "pktgen failed"; }
GEN_T1=$(( $(now_ms) - T0 ))
log "generator done: $(cat "$E2E_TMP/pktgen.json" | python3 -c 'import json,sys; g=json.load(sys.stdin); print(g["sent"], "packets,", round(g["tx_pps"]), "pps")')"

# The backup has caught up when the master's sent entries are installed there (or,
# failing that, when its count stops moving for 2 s; 30 s at most).
installed() { awk '$2 == "B" {for (i = 4; i <= NF; i++) if ($i ~ /^(created|updated)=/) {split($i, a, "="); n += a[2]}; last = n; n = 0} END {print last + 0}' "$E2E_TMP/samples.txt"; }
sent() { awk '$2 == "M" {for (i = 4; i <= NF; i++) if ($i ~ /^sent_conns=/) {split($i, a, "="); v = a[2]}} END {print v + 0}' "$E2E_TMP/samples.txt"; }
deadline=$(( $(now_ms) + 30000 )) last=-1 still_since=$(now_ms)
while (( $(now_ms) < deadline )); do
    sleep 0.5
    n=$(installed) s=$(sent)
    (( n >= s && s > 0 )) && break
    if (( n != last )); then last=$n still_since=$(now_ms); fi
    (( $(now_ms) - still_since >= 2000 )) && break
done
sleep 1
cpu "$MASTER_PID" >"$E2E_TMP/cpu-m1.txt"; cpu "$BAK_PID" >"$E2E_TMP/cpu-b1.txt"
echo "$D0_BEFORE $(d0_stats)" >"$E2E_TMP/d0.txt"
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
# The backup's kernel UDP counters (its own namespace): datagrams taken, and dropped
# because the sync socket's buffer was full.
bx cat /proc/net/snmp | awk '$1 == "Udp:" {if (h) {print; exit} h = 1; print}' >"$E2E_TMP/udp.txt"
P=${PROTO^^}
master_conns=$(ctl -L -c -n | grep -c "^$P .*$VIP:$PORT" || true)
backup_conns=$(bctl -L -c -n | grep -c "^$P .*$VIP:$PORT" || true)
# What reached the master's worker, and what it dropped (by reason).
dx curl -s --max-time 5 http://127.0.0.1:9108/metrics | awk '
    $1 ~ /^fastlb_worker_rx_frames_total/ {rx += $2}
    $1 ~ /^fastlb_drops_total\{/ && $2 > 0 {match($1, /reason="[a-z_0-9]*"/); d = d " " substr($1, RSTART + 8, RLENGTH - 9) "=" $2}
    END {print rx + 0 d}' >"$E2E_TMP/master.txt"

mkdir -p "$OUT_DIR"
if [[ -n ${PERF:-} ]]; then
    wait "$PERF_PID" || true
    { perf report -i "$E2E_TMP/perf.data" --no-children --sort comm,dso --stdio 2>/dev/null \
        | grep -v '^$' | head -30
      perf report -i "$E2E_TMP/perf.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null \
        | grep -v '^$' | grep -v '^#' | head -50
    } >"$OUT_DIR/sync-rate-$PROTO$CONN_PACKETS-perf.txt" || true
fi
python3 - "$E2E_TMP" "$SECS" "$RATE" "$GEN_T0" "$GEN_T1" "$master_conns" "$backup_conns" \
    "$OUT_DIR/sync-rate-$PROTO$CONN_PACKETS.json" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)" "$PROTO" "$CONN_PACKETS" <<'PY'
import json, sys
tmp, secs, rate, g0, g1, mconns, bconns, out, cpus, load, proto, per = sys.argv[1:]
per = int(per)
gen = json.load(open(f"{tmp}/pktgen.json"))
series = {"M": [], "B": []}
for line in open(f"{tmp}/samples.txt"):
    f = line.split()
    if len(f) < 3 or f[2] == "-":
        continue
    ev = dict(x.split("=", 1) for x in f[3:])
    series[f[1]].append({"t_s": int(f[0]) / 1000, "entries": int(f[2]),
                         **{k: int(float(v)) for k, v in ev.items()}})
m, b = series["M"][-1], series["B"][-1]
h, v = [l.split() for l in open(f"{tmp}/udp.txt")]
udp = dict(zip(h[1:], map(int, v[1:])))
opened = gen["sent"] // per
mrx, *mdrops = open(f"{tmp}/master.txt").read().split()
d0 = [int(x) for x in open(f"{tmp}/d0.txt").read().split()]
def cpu(who):
    """CPU seconds each thread (by name) spent between the two readings (ticks of 10 ms)."""
    read = lambda f: {l.split()[0]: int(l.split()[1]) for l in open(f) if l.strip()}
    a, b = read(f"{tmp}/cpu-{who}0.txt"), read(f"{tmp}/cpu-{who}1.txt")
    return {n: round((b[n] - a.get(n, 0)) / 100, 2) for n in b if b[n] - a.get(n, 0) > 0}
sent = m.get("sent_conns", 0)
installed = b.get("created", 0) + b.get("updated", 0)
r = {
    "seconds": int(secs), "target_conns_per_s": int(rate),
    "protocol": proto, "packets_per_connection": per, "sync_threshold": [per, 50],
    "generator_packets": gen["sent"], "generator_pps": round(gen["tx_pps"]),
    "connections_opened": opened,
    "conns_per_s": round(gen["tx_pps"] / per),
    "master_d0_rx_packets": d0[2] - d0[0], "master_d0_rx_dropped": d0[3] - d0[1],
    "master_rx_frames": int(float(mrx)),
    "master_cpu_s": cpu("m"), "backup_cpu_s": cpu("b"),
    "master_drops": {k: int(float(v)) for k, v in (x.split("=") for x in mdrops)},
    "master_table_entries": m["entries"], "master_listed": int(mconns),
    "master_queued": m.get("queued", 0), "master_queue_full": m.get("queue_full", 0),
    "master_sent_conns": sent, "master_sent_messages": m.get("sent_messages", 0),
    "master_send_errors": m.get("send_errors", 0), "master_gone": m.get("gone", 0),
    "backup_received": b.get("received", 0), "backup_accepted": b.get("accepted", 0),
    "backup_created": b.get("created", 0), "backup_updated": b.get("updated", 0),
    "backup_install_queue_full": b.get("install_queue_full", 0),
    "backup_table_full": b.get("table_full", 0), "backup_no_destination": b.get("no_destination", 0),
    "backup_table_entries": b["entries"], "backup_listed": int(bconns),
    "backup_udp_in_datagrams": udp.get("InDatagrams"),
    "backup_udp_rcvbuf_errors": udp.get("RcvbufErrors"),
    "messages_lost": m.get("sent_messages", 0) - b.get("received", 0),
    "connections_missing_at_backup": sent - installed,
    "not_synced_at_master": opened - sent,
    "machine_cpus": int(cpus), "load_average_after": float(load),
    "generator_window_s": [int(g0) / 1000, int(g1) / 1000],
    "master_series": series["M"], "backup_series": series["B"],
}
print("SYNC-RATE " + json.dumps({k: v for k, v in r.items() if not k.endswith("series")}))
json.dump(r, open(out, "w"), indent=1)
PY
/usr/bin/python3 "$E2E_ROOT/tools/lab/plot-sync-rate.py" "$OUT_DIR/sync-rate-$PROTO$CONN_PACKETS.json" \
    || log "no plot (python3-matplotlib missing?)"
