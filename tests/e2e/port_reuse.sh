#!/usr/bin/env bash
# Usage: port_reuse.sh dr|nat|tun. Known difference from IPVS, kept as a failing check:
# 8 connections one after another from the same client port (curl --local-port, the server
# closing first so the client's port is free at once). The director's entry is in
# TIME_WAIT when the next SYN comes; IPVS (conn_reuse_mode=1, is_new_conn_expected)
# expires it and schedules the SYN as a new connection, so wrr 3:1 gives rs1 6, rs2 2 and
# 8 connections. fastlb continues the old entry: 8 x rs1, 1 connection.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: port_reuse.sh dr|nat|tun}
lab_up "$MODE-reuse" "$MODE"
for _ in $(seq 8); do
    cx curl -s --max-time 3 --local-port 40000 -H 'Connection: close' "http://$VIP/" || echo "(no answer)"
    sleep 0.2
done | sort | uniq -c
C1=$(real_field tcp 80 "$RS1" conns) C2=$(real_field tcp 80 "$RS2" conns)
log "director: rs1 $C1, rs2 $C2 connections"
[[ $C1 == 6 && $C2 == 2 ]] || fail "a SYN on a TIME_WAIT entry was not scheduled as a new connection (IPVS: rs1 6, rs2 2)"
pass "port reuse schedules anew"
