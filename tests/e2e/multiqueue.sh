#!/usr/bin/env bash
# Usage: multiqueue.sh dr|nat|tun. The director's links get two queues each end
# (lab.sh --queues 2), so fastlb runs two workers, one per AF_XDP queue, sharing one
# connection table; the client's kernel spreads its connections over the two queues by
# flow hash (a veth delivers on the receive queue of the sender's transmit queue, RSS's
# part here). 200 curls, a new connection each: every one answered by a real server, in
# wrr's 3:1 within the two-cursor bound of wrr.sh, the ctl counters agree with what curl
# saw, the active and inactive counts (summed over the workers' shards) cover every
# connection, and both workers carried a real share of the frames both ways. In NAT a reply
# comes back on d1, whose queue the real server's side picks on its own: it is often not
# the worker that scheduled the connection, so every answer shows that the shared table
# works across workers.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: multiqueue.sh dr|nat|tun}
lab_up "$MODE-mq" "$MODE" --queues 2
QUEUES=$(dx ip -d link show d0 | grep -o 'numrxqueues [0-9]*' | awk '{print $2}')
[[ $QUEUES == 2 ]] || fail "d0 has $QUEUES receive queues, not 2"
grep -q "with 2 worker(s)" "$FLB_LAB_STATE/director.log" \
    || fail "fastlb did not start two workers: $(grep serving "$FLB_LAB_STATE/director.log")"
pass "two queues on d0, two workers"

N=200
T=$(curl_tally $N "http://$VIP/")
echo "$T"
A=$(count "served by rs1" "$T") B=$(count "served by rs2" "$T")
MIN=$(( 150 - 2 / 2 )) MAX=$(( 150 + (3 * 2 + 3) / 4 ))
(( A + B == N )) || fail "$(( N - A - B )) of $N requests not answered by a real server"
(( A >= MIN && A <= MAX )) || fail "rs1 got $A of $N, outside $MIN..$MAX (wrr 3:1, two cursors)"
pass "$N connections over two workers answered, rs1 $A, rs2 $B"

C1=$(real_field tcp 80 "$RS1" conns) C2=$(real_field tcp 80 "$RS2" conns)
[[ $C1 == "$A" && $C2 == "$B" ]] || fail "ctl --stats conns ($C1, $C2) differ from what curl saw ($A, $B)"
pass "ctl counters match the answers"

# Each worker counts the connections it opens, moves and ends in its own shard of the real
# servers' counters, and ctl sums the shards: every connection made is still in the table
# (FIN_WAIT or TIME_WAIT, two minutes), active or inactive at its real server.
field_sum() { echo $(( $(real_field tcp 80 "$RS1" "$1") + $(real_field tcp 80 "$RS2" "$1") )); }
AC=$(field_sum active_conns) IC=$(field_sum inactive_conns)
(( AC + IC == C1 + C2 )) || fail "ctl -L counts $AC active + $IC inactive, not the $(( C1 + C2 )) connections made"
pass "ctl sums the two workers' counts: $AC active + $IC inactive connections"

# Each worker's share of the frames, from the metrics (worker="0" and worker="1").
metric() { dx curl -s "http://127.0.0.1:9108/metrics" | awk -v m="$1{worker=\"$2\"}" '$1 == m {print $2}'; }
for dir in rx tx; do
    W0=$(metric "fastlb_worker_${dir}_frames_total" 0) W1=$(metric "fastlb_worker_${dir}_frames_total" 1)
    log "$dir frames: worker 0 ${W0:-none}, worker 1 ${W1:-none}"
    [[ -n $W0 && -n $W1 ]] || fail "no $dir frame counter for one of the workers"
    # 200 connections hashed over two queues: each side well above a fifth of the frames
    # unless the spreading is broken (a share under 20 % has a chance below 1e-15).
    (( W0 * 5 > W0 + W1 && W1 * 5 > W0 + W1 )) \
        || fail "the $dir frames are not spread over the two workers ($W0, $W1)"
done
pass "both workers carried traffic both ways"
