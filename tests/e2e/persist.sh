#!/usr/bin/env bash
# Usage: persist.sh dr|nat|tun. Persistence: VIP:8080 is rr with persistence = 300 over
# rs1 and rs2. 40 requests from the client, each a new connection: without persistence rr
# would alternate; with it every one lands on the server the first one got, and the
# director holds a persistence template for it.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: persist.sh dr|nat|tun}
lab_up "$MODE-persist" "$MODE"

T=$(curl_tally 40 "http://$VIP:8080/")
echo "$T"
LINES=$(wc -l <<<"$T")
N=$(awk '{print $1}' <<<"$T" | head -1)
[[ $LINES == 1 && $N == 40 ]] || fail "40 requests spread over several servers or went unanswered"
WHO=$(sed 's/^[0-9]* served by //' <<<"$T")
ADDR=$([[ $WHO == rs1 ]] && echo "$RS1" || echo "$RS2")
pass "all 40 requests on $WHO"
P=$(real_field tcp 8080 "$ADDR" persistent_conns)
log "director: $WHO persistent connections (templates) $P"
(( P >= 1 )) || fail "no persistence template for $WHO"
# Control: the same client on port 80 (wrr, no persistence) reaches both servers.
T=$(curl_tally 8)
(( $(wc -l <<<"$T") == 2 )) || fail "port 80 (not persistent) did not spread: $T"
pass "templates cover VIP:8080 only"
