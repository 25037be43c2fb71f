#!/usr/bin/env bash
# Usage: wrr.sh dr|nat|tun|dr-flat [4|6]. 200 curls from the client, one connection each,
# to the VIP of that address family, reach both real servers in the configured wrr ratio
# 3:1, and the director's counters agree.
#
# Tolerance: wrr is deterministic per worker. A service built as the kernel builds it (-A,
# then -a rs1 weight 3, -a rs2 weight 1) carries cw = 1 into its first pass, so one worker
# picks rs1 rs2 | rs1 | rs1 | rs1 rs2 | rs1 | ...: after n picks rs1 has between 3n/4 - 1/2
# and 3n/4 + 3/4. Summed over W workers (each with its own cursor; the kernel spreads flows
# over queues), rs1 gets between 150 - W/2 and 150 + 3W/4 of 200. Nothing else is scheduled
# on port 80 (health checks come from the director's own kernel, not through the datapath).
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: wrr.sh dr|nat|tun|dr-flat [4|6]}
FAM=${2:-4}
lab_up "$MODE-wrr$FAM" "$MODE"
URL=http://$VIP/ R1=$RS1 R2=$RS2
[[ $FAM == 6 ]] && URL=http://[$VIP6]/ R1=$RS1_6 R2=$RS2_6

N=200
T=$(curl_tally $N "$URL")
echo "$T"
A=$(count "served by rs1" "$T") B=$(count "served by rs2" "$T")
W=${WORKERS:-1}
MIN=$(( 150 - W / 2 )) MAX=$(( 150 + (3 * W + 3) / 4 ))
log "rs1 $A, rs2 $B of $N; $W worker(s): rs1 must be $MIN..$MAX"
(( A + B == N )) || fail "$(( N - A - B )) of $N requests not answered by a real server"
(( A >= MIN && A <= MAX )) || fail "rs1 got $A of $N, outside $MIN..$MAX (wrr 3:1)"
pass "wrr 3:1 over $N requests: rs1 $A, rs2 $B"

C1=$(real_field tcp 80 "$R1" conns) C2=$(real_field tcp 80 "$R2" conns)
log "director counters: rs1 conns $C1, rs2 conns $C2"
[[ $C1 == "$A" && $C2 == "$B" ]] || fail "ctl --stats conns ($C1, $C2) differ from what curl saw ($A, $B)"
pass "ctl counters match the answers"
