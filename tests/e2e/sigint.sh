#!/usr/bin/env bash
# Usage: sigint.sh dr|nat|tun|dr-flat. fastlb as an operator runs it (started here, so its
# exit status is ours to read) on the lab, with traffic, then SIGINT (Ctrl-C):
#   - it exits with status 0 within 5 s, and logs its totals (`stopped: rx N`, N > 0);
#   - it detached everything: no XDP program on its interfaces (`ip -d link`), its ctl
#     socket is gone, its metrics port closed, and each interface's link settings and
#     offloads (`ethtool -k`) are what they were before it started.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: sigint.sh dr|nat|tun|dr-flat}
need ethtool
FASTLB=$FASTLB_CMD
FASTLB_CMD= lab_up "$MODE-sigint" "$MODE"
IFACES=(d0); [[ $MODE == dr-flat ]] || IFACES+=(d1)
# link_state: what fastlb may change on its interfaces and must give back.
link_state() {
    local i
    for i in "${IFACES[@]}"; do
        echo "== $i"
        dx ip -d link show "$i" | sed -e 's/^[0-9]*: //' -e 's/ state [A-Z]*//' | grep -v 'link/ether'
        dx ethtool -k "$i"
    done
}
BEFORE=$(link_state)
[[ -z $(xdp_on_director) ]] || fail "XDP on the director before fastlb started"

ARGS=()
for i in "${IFACES[@]}"; do ARGS+=(--iface "$i"); done
# Not through dx: a backgrounded function is a subshell, $! would not be fastlb's pid
# (`ip netns exec` execs fastlb).
ip netns exec "$NS_D" "$FASTLB" "${ARGS[@]}" --config "$FLB_LAB_STATE/fastlb.toml" \
    --ctl-socket "$FLB_LAB_STATE/ctl.sock" --metrics 127.0.0.1:9108 >"$FLB_LAB_STATE/director.log" 2>&1 &
PID=$!
wait_for 10 grep -q serving "$FLB_LAB_STATE/director.log" || fail "fastlb did not start"
FASTLB_CMD=$FASTLB

T=$(curl_tally 8)
(( $(answered_sum "$T") == 8 )) || fail "no service before the stop: $T"
XDP=$(xdp_on_director)
log "XDP on the director while running: $(tr '\n' ' ' <<<"$XDP")"
for i in "${IFACES[@]}"; do grep -q "^$i" <<<"$XDP" || fail "fastlb runs without XDP on $i?"; done

T0=$(now_ms)
kill -INT "$PID"
for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null && fail "fastlb still runs 5 s after SIGINT"
set +e; wait "$PID"; RC=$?; set -e
log "fastlb exited with status $RC, $(( $(now_ms) - T0 )) ms after SIGINT"
tail -3 "$FLB_LAB_STATE/director.log"
(( RC == 0 )) || fail "fastlb exited with status $RC on SIGINT"
grep -q 'stopped: rx [1-9]' "$FLB_LAB_STATE/director.log" || fail "no 'stopped' line with traffic totals"
[[ ! -e $FLB_LAB_STATE/ctl.sock ]] || fail "ctl socket left behind"
XDP=$(xdp_on_director)
[[ -z $XDP ]] || { dx ip -d link show; fail "XDP left on: $XDP"; }
! dx curl -s --max-time 2 127.0.0.1:9108/metrics >/dev/null || fail "the metrics port still answers"
AFTER=$(link_state)
[[ $AFTER == "$BEFORE" ]] || { diff <(echo "$BEFORE") <(echo "$AFTER") || true; fail "interface settings differ after fastlb left"; }
pass "fastlb exited 0 and left its interfaces as it found them"
