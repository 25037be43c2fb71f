#!/usr/bin/env bash
# Usage: wrk.sh dr|nat|tun|dr-flat. wrk through the director: 5 s over 20 kept-alive
# connections, then 3 s with `Connection: close` (a new connection, so a scheduling
# decision, per request). Both runs: no socket errors (connect, read, write, timeout), no
# non-2xx answer, and requests were answered. The director counted the connections: 20
# (or a few more, should wrk reconnect) for the first run; for the second at most one per
# completed request plus two per wrk connection (in flight as the run ends, or reopened
# while it started), and in nat at least one per request. (In dr and tun the director sees only the client's half: a connection
# the client closed stays in FIN_WAIT, and a SYN that reuses its ports continues it, as
# IPVS does with conn_reuse_mode=1, so there it counts fewer.) Prints the rates ("RATE"
# lines) for the record.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: wrk.sh dr|nat|tun|dr-flat}
need wrk
lab_up "$MODE-wrk" "$MODE"
conns() { echo $(( $(real_field tcp 80 "$RS1" conns) + $(real_field tcp 80 "$RS2" conns) )); }

run_wrk 5 20 "http://$VIP/"
KA_RPS=$WRK_RPS
(( WRK_REQS > 0 )) || fail "wrk completed no request"
(( WRK_SOCKERR == 0 )) || fail "keep-alive: $WRK_SOCKERR socket errors"
(( WRK_NON2XX == 0 )) || fail "keep-alive: $WRK_NON2XX non-2xx answers"
pass "keep-alive: $WRK_REQS requests, $KA_RPS req/s, 0 errors"
KA_CONNS=$(conns)
(( KA_CONNS >= 20 && KA_CONNS <= 40 )) || fail "keep-alive: the director counted $KA_CONNS connections for wrk's 20"

run_wrk 3 20 "http://$VIP/" -H "Connection: close"
CL_RPS=$WRK_RPS
(( WRK_REQS > 0 )) || fail "wrk completed no request"
(( WRK_SOCKERR == 0 )) || fail "connection-close: $WRK_SOCKERR socket errors"
(( WRK_NON2XX == 0 )) || fail "connection-close: $WRK_NON2XX non-2xx answers"
pass "connection-close: $WRK_REQS requests, $CL_RPS req/s, 0 errors"

# With `Connection: close` the client reuses its ports within the run. In nat a SYN on a
# closed (TIME_WAIT, CLOSE) entry is a new connection (IPVS conn_reuse_mode=1;
# tests/e2e/port_reuse.sh); in dr and tun the entry is in FIN_WAIT and continues.
CL_CONNS=$(( $(conns) - KA_CONNS ))
log "director counted $CL_CONNS connections for $WRK_REQS requests"
MIN=1; [[ $MODE == nat ]] && MIN=$WRK_REQS
(( CL_CONNS >= MIN && CL_CONNS <= WRK_REQS + 40 )) \
    || fail "connection-close: the director counted $CL_CONNS connections for $WRK_REQS requests"
pass "the director's connection count matches wrk's requests"
echo "RATE mode=$MODE wrk_keepalive_rps=$KA_RPS wrk_close_rps=$CL_RPS errors=0"
