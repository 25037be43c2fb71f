#!/usr/bin/env bash
# Usage: udp.sh dr|nat|tun. DNS-style UDP through the director: 20 requests from the
# client to VIP:53 (rr over two real servers running tools/lab/udp_echo.py), each from a
# new source port, so each is a new UDP connection. Every request is answered with its own
# payload, from the VIP (the client's socket is connected to VIP:53, so the kernel would
# drop an answer from any other address), and both real servers answer.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: udp.sh dr|nat|tun}
lab_up "$MODE-udp" "$MODE"

declare -A BY=()
for i in $(seq 20); do
    A=$(udp_ask "query-$i")
    read -r WHO PAYLOAD <<<"$A"
    [[ $PAYLOAD == "query-$i" ]] || fail "request $i: answer '$A'"
    BY[$WHO]=$(( ${BY[$WHO]:-0} + 1 ))
done
log "answers: rs1 ${BY[rs1]:-0}, rs2 ${BY[rs2]:-0}"
(( ${BY[rs1]:-0} > 0 && ${BY[rs2]:-0} > 0 )) || fail "one real server never answered"
pass "20 UDP requests answered through the director"
C=$(real_field udp 53 "$RS1" conns)
log "director: rs1 UDP connections $C"
[[ $C == "${BY[rs1]}" ]] || fail "director counted $C UDP connections to rs1, rs1 answered ${BY[rs1]}"
