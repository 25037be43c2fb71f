#!/usr/bin/env bash
# Usage: iperf.sh dr|nat|tun. A 6 s iperf3 TCP stream from the client through the director
# to the iperf3 server of a real server (service VIP:5201, persistent so that iperf3's
# control and data connections meet on one server), then 3 s in reverse (-R: the real
# server sends; in nat mode those bytes cross the director's reply path). Both complete
# with bytes > 0.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: iperf.sh dr|nat|tun}
lab_up "$MODE-iperf" "$MODE"

# bytes_and_rate JSON: "BYTES MBITS" of what the receiving side got.
bytes_and_rate() {
    python3 -c 'import json,sys; e=json.load(sys.stdin).get("end",{}); r=e.get("sum_received",{})
print(r.get("bytes",0), round(r.get("bits_per_second",0)/1e6))'
}
for dir in forward reverse; do
    args=(-t 6); [[ $dir == reverse ]] && args=(-t 3 -R)
    OUT=$(cx timeout 20 iperf3 -c "$VIP" -p 5201 -J "${args[@]}" 2>&1) || true
    read -r BYTES MBITS < <(bytes_and_rate <<<"$OUT" 2>/dev/null || echo "0 0")
    if [[ ${BYTES:-0} -le 0 ]]; then
        echo "$OUT" | tail -20
        fail "iperf3 $dir: no bytes received"
    fi
    pass "iperf3 $dir: $BYTES bytes, $MBITS Mbit/s"
    echo "RATE mode=$MODE iperf3_${dir}_mbits=$MBITS"
done
