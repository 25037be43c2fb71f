#!/usr/bin/env bash
# Usage: new_client.sh dr|nat|tun|dr-flat. A brand-new client, in IPv4 and IPv6: addresses
# the director has never seen, added to the client's interface (nothing resolves them in
# advance). Its first packet reaches the director, which (in nat) must send the answer to
# a neighbour it does not know yet; fastlb's copy of the kernel's neighbour table lags, so
# the answer must not be lost meanwhile (fastlb hands it to the kernel's IP output, which
# resolves the neighbour and queues it). In dr and tun the answers bypass fastlb, but the
# first SYN still has to be forwarded at once. Per family:
#   - the new client's first TCP connection: curl gets the page, connects and has its
#     first byte in under 0.9 s (a lost SYN or SYN-ACK costs a 1 s retransmit);
#   - a second new address's first UDP request is answered, in under 0.9 s.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: new_client.sh dr|nat|tun|dr-flat}
need socat
lab_up "$MODE-newcl" "$MODE"
if [[ $MODE == dr-flat ]]; then NEW4=(10.80.3.31 10.80.3.32) NEW6=(fd80:3::31 fd80:3::32) P4=24
else NEW4=(10.80.1.11 10.80.1.12) NEW6=(fd80:1::11 fd80:1::12) P4=24; fi
for a in "${NEW4[@]}"; do cx ip addr add "$a/$P4" dev c0; done
for a in "${NEW6[@]}"; do cx ip -6 addr add "$a/64" dev c0 nodad; done

for fam in 4 6; do
    if [[ $fam == 4 ]]; then TCP_SRC=${NEW4[0]} UDP_SRC=${NEW4[1]} URL=http://$VIP/ UDP=UDP4:$VIP:53
    else TCP_SRC=${NEW6[0]} UDP_SRC=[${NEW6[1]}] URL=http://[$VIP6]/ UDP=UDP6:[$VIP6]:53; fi
    OUT=$(cx curl -s --max-time 5 --interface "$TCP_SRC" -w '\n@ %{time_connect} %{time_starttransfer}' "$URL") || true
    BODY=$(head -1 <<<"$OUT")
    read -r _ CONNECT FIRST < <(grep '^@ ' <<<"$OUT" || echo "@ 9 9")
    log "IPv$fam new client $TCP_SRC: '$BODY', connected after $CONNECT s, first byte after $FIRST s"
    [[ $BODY == "served by rs"[12] ]] || fail "the new client's first TCP connection got '$BODY'"
    python3 -c "import sys; sys.exit(0 if $CONNECT < 0.9 and $FIRST < 0.9 else 1)" \
        || fail "the new client's first connection waited for a retransmit"
    pass "IPv$fam: a new client's first TCP connection is answered at once"

    T0=$(now_ms)
    A=$(printf first | cx timeout 5 socat -t 2 - "$UDP,bind=$UDP_SRC") || true
    MS=$(( $(now_ms) - T0 ))
    log "IPv$fam new client $UDP_SRC: first UDP answer '$A' (the exchange took $MS ms, socat lingers 2 s)"
    [[ $A == "rs"[12]" first" ]] || fail "the first UDP answer to a new client was lost"
    pass "IPv$fam: a new client's first UDP request is answered"
done
dx curl -s 127.0.0.1:9108/metrics | grep 'fastlb_drops_total{reason="no_neighbour"}' || true
