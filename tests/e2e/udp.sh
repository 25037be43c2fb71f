#!/usr/bin/env bash
# Usage: udp.sh dr|nat|tun|dr-flat [4|6]. DNS-style UDP through the director with socat as
# the client: 20 requests to VIP:53 of that address family (rr over two real servers
# running tools/lab/udp_echo.py), each from its own socat, so from a new source port and a
# new UDP connection. Every request is answered with its own payload, from the VIP
# (socat's socket is connected to VIP:53, so the kernel would drop an answer from any
# other address), both real servers answer, and the director counted one connection per
# request to each.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: udp.sh dr|nat|tun|dr-flat [4|6]}
FAM=${2:-4}
need socat
lab_up "$MODE-udp$FAM" "$MODE"
TARGET=UDP4:$VIP:53 R1=$RS1 R2=$RS2
[[ $FAM == 6 ]] && TARGET=UDP6:[$VIP6]:53 R1=$RS1_6 R2=$RS2_6

N=20
for i in $(seq $N); do
    # -t 3: after sending, socat listens 3 s for the answer (the runs overlap).
    printf 'query-%s' "$i" | cx timeout 10 socat -t 3 - "$TARGET" >"$E2E_TMP/answer-$i" 2>&1 &
done
wait
declare -A BY=()
for i in $(seq $N); do
    A=$(cat "$E2E_TMP/answer-$i")
    read -r WHO PAYLOAD <<<"$A"
    [[ $PAYLOAD == "query-$i" ]] || fail "request $i: answer '$A'"
    BY[$WHO]=$(( ${BY[$WHO]:-0} + 1 ))
done
log "answers: rs1 ${BY[rs1]:-0}, rs2 ${BY[rs2]:-0}"
(( ${BY[rs1]:-0} > 0 && ${BY[rs2]:-0} > 0 )) || fail "one real server never answered"
pass "$N UDP requests over IPv$FAM answered through the director"
C1=$(real_field udp 53 "$R1" conns) C2=$(real_field udp 53 "$R2" conns)
log "director: UDP connections rs1 $C1, rs2 $C2"
[[ $C1 == "${BY[rs1]}" && $C2 == "${BY[rs2]:-0}" ]] \
    || fail "director counted $C1 + $C2 UDP connections, the servers answered ${BY[rs1]} + ${BY[rs2]}"
pass "the director's counts match the answers"
