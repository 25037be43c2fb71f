#!/usr/bin/env bash
# Usage: top.sh nat. `fastlb top` as an operator sees it: it runs in a tmux pane (200x50)
# against the lab's director (tools/lab/nat.toml, health-checked HTTP) while wrk loads the
# IPv4 VIP:80; the script reads the screen with `tmux capture-pane` and types keys.
#   1. The screen shows the VIP's service, its real servers with health "up", and packets
#      per second above zero on rs1's row (the rate of the last second, not a total).
#   2. s s s: sort by pkt/s, the loaded service first; r reverses it (another first).
#   3. / 10.80.2.12 Enter: only rs2's row of that service is shown; Esc shows all again.
#   4. q: top exits 0, the pane leaves the alternate screen, the cursor shows again and the
#      terminal's settings (stty -g) are those from before top started.
#   5. A second top in another pane, sent SIGTERM: it exits and restores the terminal too.
source "$(dirname "$0")/lib.sh"
MODE=${1:-nat}
need tmux wrk
lab_init "$MODE-top"
TMUX_SOCK=${FLB_PREFIX}tmux
tx() { tmux -L "$TMUX_SOCK" "$@"; }
E2E_CLEANUP+=("tmux -L '$TMUX_SOCK' kill-server")
lab_up "$MODE-top" "$MODE"

# Each pane runs top between two readings of the terminal settings, then stays open.
PANE_CMD="before=\$(stty -g); FASTLB_CTL_SOCKET='$FLB_LAB_STATE/ctl.sock' '$FASTLB_CMD' top; rc=\$?;
[ \"\$before\" = \"\$(stty -g)\" ] && echo TTY-RESTORED || echo TTY-CHANGED; echo TOP-EXIT=\$rc; exec sleep 600"
screen() { tx capture-pane -p -t "$1"; }
# row PANE REAL: the fields of REAL's row on the screen, blanks squeezed.
row() { screen "$1" | awk -v r="$2" '$1 == "->" && $2 == r {$1 = $1; print; exit}'; }
# shows PANE TEXT: whether the screen of PANE contains TEXT.
shows() { screen "$1" | grep -qF -- "$2"; }

cx wrk -t1 -c4 -d60s --timeout 3s "http://$VIP/" >/dev/null 2>&1 &
WRK=$!
E2E_CLEANUP+=("kill $WRK")

tx new-session -d -s top -x 200 -y 50 "$PANE_CMD"
wait_for 15 shows top "TCP $VIP:80" || { screen top; fail "top did not show the service"; }
[[ $(tx display -p -t top '#{alternate_on} #{cursor_flag}') == "1 0" ]] \
    || fail "top should draw on the alternate screen with the cursor hidden"
pass "top draws on the alternate screen"

# 1. Real servers, health, rates.
# Field 10 of a real server's row is INPKT/s (after ->, address, FWD, WEIGHT, HEALTH,
# ACTIVE, INACT, PERSIST, CONN/s).
rs1_pps() { row top "$RS1:80" | awk '{print $10}'; }
rs1_moving() { local p; p=$(rs1_pps); [[ -n $p && $p != 0 ]]; }
wait_for 15 rs1_moving || { screen top; fail "rs1's INPKT/s stayed 0 under wrk"; }
screen top
R1=$(row top "$RS1:80") R2=$(row top "$RS2:80")
log "rs1: $R1"; log "rs2: $R2"
[[ $R1 == "-> $RS1:80 Masq 3 up "* && $R2 == "-> $RS2:80 Masq 1 up "* ]] \
    || fail "rows of rs1/rs2 should read: Masq, weight 3/1, health up"
shows top "Drops by reason" || fail "no drops section"
shows top "frames rx " || fail "no frame rates in the title"
pass "VIP, real servers (weight, health up) and rates: rs1 at $(rs1_pps) packets/s in"

# 2. Sort.
first_service() { screen top | awk '/SERVICE \/ REAL/ {getline; print $1, $2; exit}'; }
tx send-keys -t top s s s
wait_for 5 shows top "sort: pkt/s" || { screen top; fail "s s s should sort by pkt/s"; }
sleep 1.5
[[ $(first_service) == "TCP $VIP:80" ]] || { screen top; fail "sorted by pkt/s, the loaded service should come first, not $(first_service)"; }
tx send-keys -t top r
wait_for 5 shows top "sort: pkt/s (reversed)" || fail "r should reverse"
[[ $(first_service) != "TCP $VIP:80" ]] || { screen top; fail "reversed, the loaded service should not come first"; }
pass "s sorts by pkt/s (the loaded service first), r reverses"

# 3. Filter.
tx send-keys -t top / "$RS2" Enter
wait_for 5 shows top "filter: $RS2 " || { screen top; fail "the filter is not shown"; }
[[ -n $(row top "$RS2:80") && -z $(row top "$RS1:80") ]] \
    || { screen top; fail "filtered on $RS2: rs2's row only"; }
tx send-keys -t top Escape
wait_for 5 shows top "-> $RS1:80" || { screen top; fail "Esc should clear the filter"; }
pass "/ filters to one real server, Esc clears it"

# 4. q.
tx send-keys -t top q
wait_for 10 shows top "TOP-EXIT=" || { screen top; fail "q did not end top"; }
screen top
shows top "TOP-EXIT=0" || fail "top exited non-zero"
shows top "TTY-RESTORED" || fail "terminal settings changed after top"
! shows top "Services and real servers" || fail "top's screen is still there after q"
[[ $(tx display -p -t top '#{alternate_on} #{cursor_flag}') == "0 1" ]] \
    || fail "after q: still on the alternate screen or cursor hidden"
pass "q: exit 0, main screen back, cursor shown, stty settings as before"

# 5. SIGTERM.
tx new-session -d -s top2 -x 200 -y 50 "$PANE_CMD"
wait_for 15 shows top2 "TCP $VIP:80" || fail "second top did not start"
TOP_PID=$(pgrep -P "$(tx display -p -t top2 '#{pane_pid}')" -x fastlb || true)
[[ -n $TOP_PID ]] || TOP_PID=$(pgrep -P "$(tx display -p -t top2 '#{pane_pid}')")
kill -TERM "$TOP_PID"
wait_for 10 shows top2 "TOP-EXIT=" || { screen top2; fail "SIGTERM did not end top"; }
shows top2 "TTY-RESTORED" || fail "terminal settings changed after SIGTERM"
[[ $(tx display -p -t top2 '#{alternate_on} #{cursor_flag}') == "0 1" ]] \
    || fail "after SIGTERM: still on the alternate screen or cursor hidden"
pass "SIGTERM: top exits and restores the terminal"

# The director cannot be read: a clear error, before the terminal is touched.
OUT=$(FASTLB_CTL_SOCKET=$E2E_TMP/none.sock "$FASTLB_CMD" top 2>&1 </dev/null) && fail "top without a director should fail"
[[ $OUT == *"cannot talk to fastlb at $E2E_TMP/none.sock"* ]] || fail "unclear error: $OUT"
pass "without a director: $OUT"
