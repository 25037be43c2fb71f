#!/usr/bin/env bash
# Usage: sigint.sh dr|nat|tun. After traffic, SIGINT (Ctrl-C) stops fastlb: it exits 0
# within 5 s, logs its totals, removes its ctl socket, and no XDP program stays on d0 or
# d1 (`ip -d link show` has no prog/xdp); the peers' own XDP_PASS programs are not ours.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: sigint.sh dr|nat|tun}
lab_up "$MODE-sigint" "$MODE"

T=$(curl_tally 8)
(( $(awk '{s+=$1} END {print s}' <<<"$T") == 8 )) || fail "no service before the stop: $T"
XDP=$(xdp_on_director)
log "XDP on the director while running: $(tr '\n' ' ' <<<"$XDP")"
grep -q '^d0' <<<"$XDP" && grep -q '^d1' <<<"$XDP" || fail "fastlb runs without XDP on d0 and d1?"

PID=$(cat "$FLB_LAB_STATE/director.pid")
# The lab started fastlb through `ip netns exec`, which execs: PID is fastlb itself.
[[ $(ps -o comm= -p "$PID") == fastlb ]] || fail "pid $PID is $(ps -o comm= -p "$PID"), not fastlb"
T0=$(now_ms)
kill -INT "$PID"
for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null && fail "fastlb still runs 5 s after SIGINT"
log "fastlb exited $(( $(now_ms) - T0 )) ms after SIGINT"
tail -3 "$FLB_LAB_STATE/director.log"
grep -q 'stopped: rx [1-9]' "$FLB_LAB_STATE/director.log" || fail "no 'stopped' line with traffic totals"
[[ ! -e $FLB_LAB_STATE/ctl.sock ]] || fail "ctl socket left behind"
XDP=$(xdp_on_director)
[[ -z $XDP ]] || { dx ip -d link show; fail "XDP left on: $XDP"; }
pass "fastlb stopped, no XDP program on the director"
