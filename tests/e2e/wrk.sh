#!/usr/bin/env bash
# Usage: wrk.sh dr|nat|tun. wrk through the director: 5 s over 20 kept-alive connections,
# then 3 s with `Connection: close` (a new connection, so a scheduling decision, per
# request). Both runs: no socket errors (connect, read, write, timeout), no non-2xx
# answer, and requests were answered. Prints the rates ("RATE" lines) for the record.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: wrk.sh dr|nat|tun}
lab_up "$MODE-wrk" "$MODE"

run_wrk 5 20 "http://$VIP/"
KA_RPS=$WRK_RPS
(( WRK_REQS > 0 )) || fail "wrk completed no request"
(( WRK_SOCKERR == 0 )) || fail "keep-alive: $WRK_SOCKERR socket errors"
(( WRK_NON2XX == 0 )) || fail "keep-alive: $WRK_NON2XX non-2xx answers"
pass "keep-alive: $WRK_REQS requests, $KA_RPS req/s, 0 errors"

run_wrk 3 20 "http://$VIP/" -H "Connection: close"
CL_RPS=$WRK_RPS
(( WRK_REQS > 0 )) || fail "wrk completed no request"
(( WRK_SOCKERR == 0 )) || fail "connection-close: $WRK_SOCKERR socket errors"
(( WRK_NON2XX == 0 )) || fail "connection-close: $WRK_NON2XX non-2xx answers"
pass "connection-close: $WRK_REQS requests, $CL_RPS req/s, 0 errors"

# Not asserted: with `Connection: close` the client reuses its ports (even ports only, for
# connect) within the run, and fastlb continues a TIME_WAIT entry where IPVS
# (conn_reuse_mode=1) would schedule a new connection, so it counts fewer connections
# than requests (tests/e2e/port_reuse.sh).
C1=$(real_field tcp 80 "$RS1" conns) C2=$(real_field tcp 80 "$RS2" conns)
log "director counted $C1 + $C2 = $(( C1 + C2 )) connections"
echo "RATE mode=$MODE wrk_keepalive_rps=$KA_RPS wrk_close_rps=$CL_RPS errors=0"
