#!/usr/bin/env bash
# Usage: iperf.sh dr|nat|tun|dr-flat [4|6]. iperf3 over TCP through the director to the
# iperf3 server of a real server (service VIP:5201, persistent so that iperf3's control and
# data connections meet on one server): 5 s from the client, then 3 s in reverse (-R: the
# real server sends; in nat those bytes cross the director's reply path). Each run:
#   - iperf3 reports no error and ran its whole duration (at least 90 % of it);
#   - the receiver got at least 90 % of what the sender sent, at 50 Mbit/s or more (a
#     path that works moves hundreds here; one that drops segments crawls at retransmit
#     timeouts);
#   - the director's counters agree: forward, its in_bytes for the service's real servers
#     grew by at least the bytes received; reverse, in nat its out_bytes did, in dr and
#     tun (the answers bypass it) it saw the client's ACKs come in.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: iperf.sh dr|nat|tun|dr-flat [4|6]}
FAM=${2:-4}
need iperf3
lab_up "$MODE-iperf$FAM" "$MODE"
TARGET=$VIP R1=$RS1 R2=$RS2
[[ $FAM == 6 ]] && TARGET=$VIP6 R1=$RS1_6 R2=$RS2_6
MIN_MBITS=50

# summary JSON: "ERROR SENT RECEIVED SECONDS MBITS RETRANSMITS" (ERROR "-" when none).
summary() {
    python3 -c 'import json, sys
j = json.load(sys.stdin)
e = j.get("end", {}); s = e.get("sum_sent", {}); r = e.get("sum_received", {})
err = j.get("error") or "-"
print(err.replace(" ", "_"), s.get("bytes", 0), r.get("bytes", 0), s.get("seconds", 0),
      round(r.get("bits_per_second", 0) / 1e6), s.get("retransmits", 0))'
}
# director_sum FIELD: FIELD summed over the service's two real servers.
director_sum() { echo $(( $(real_field tcp 5201 "$R1" "$1") + $(real_field tcp 5201 "$R2" "$1") )); }

for dir in forward reverse; do
    secs=5 args=()
    [[ $dir == reverse ]] && secs=3 args=(-R)
    IN0=$(director_sum in_bytes) OUT0=$(director_sum out_bytes) INP0=$(director_sum in_pkts)
    OUT=$(cx timeout $(( secs + 20 )) iperf3 "-$FAM" -c "$TARGET" -p 5201 -J -t "$secs" "${args[@]}" 2>&1) || true
    read -r ERR SENT RECV SECS MBITS RETR < <(summary <<<"$OUT" 2>/dev/null || echo "unreadable 0 0 0 0 0")
    log "iperf3 $dir: error $ERR, sent $SENT, received $RECV bytes in $SECS s, $MBITS Mbit/s, $RETR retransmits"
    [[ $ERR == - ]] || { tail -20 <<<"$OUT"; fail "iperf3 $dir: $ERR"; }
    python3 -c "import sys; sys.exit(0 if float('$SECS') >= 0.9 * $secs else 1)" \
        || fail "iperf3 $dir ran $SECS s of $secs"
    (( RECV * 10 >= SENT * 9 && RECV > 0 )) || fail "iperf3 $dir: received $RECV of $SENT bytes"
    (( MBITS >= MIN_MBITS )) || fail "iperf3 $dir: $MBITS Mbit/s, below $MIN_MBITS"
    IN=$(( $(director_sum in_bytes) - IN0 )) OUTB=$(( $(director_sum out_bytes) - OUT0 ))
    INP=$(( $(director_sum in_pkts) - INP0 ))
    log "director: in $IN bytes ($INP packets), out $OUTB bytes"
    if [[ $dir == forward ]]; then
        (( IN >= RECV )) || fail "director's in_bytes grew by $IN, less than the $RECV bytes received"
    elif [[ $MODE == nat ]]; then
        (( OUTB >= RECV )) || fail "director's out_bytes grew by $OUTB, less than the $RECV bytes received"
    else
        (( INP > 0 )) || fail "the director saw none of the client's ACKs"
    fi
    pass "iperf3 $dir over IPv$FAM: $RECV bytes, $MBITS Mbit/s, counters agree"
    echo "RATE mode=$MODE family=$FAM iperf3_${dir}_mbits=$MBITS retransmits=$RETR"
done
