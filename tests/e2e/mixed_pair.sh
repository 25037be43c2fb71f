#!/usr/bin/env bash
# Usage: mixed_pair.sh. A mixed director pair survives the master's death: a Linux kernel
# IPVS master (Debian's 6.1 in qemu, tools/kernel-ipvs/kipvs) and a fastlb standby.
#
# One segment (a bridge in flbt-...-kmix-br): the kernel director (the VM's eth0,
# 10.80.9.2), fastlb (f0, 10.80.9.1), a client (10.80.9.10) and a DR real server
# (10.80.9.11, the VIP on its lo, echoing lines with socat). Both directors hold the same
# rule (TCP VIP:80, rr, DR). fastlb follows the pair as with keepalived: `[pair] addresses =
# [VIP]`, `sync_interface = "f0"`: without the VIP on f0 it is the standby, forwarding
# nothing, and its backup sync daemon takes the kernel master's connections (syncid 9).
#   1. 4 long-lived TCP connections (a line every 100 ms, echoed) through the kernel; fastlb
#      lists all of them, ESTABLISHED, to the same real server, and transmitted nothing.
#   2. The master dies (the VM is killed) and the VIP moves to fastlb's f0, as keepalived
#      would move it (the client's route to the VIP follows, as its ARP entry would after a
#      gratuitous ARP). fastlb becomes MASTER (its master sync daemon replaces the backup)
#      and carries every connection on: none breaks.
# Skips (exit 77, with the reason) without qemu, busybox, ipvsadm, socat or /dev/net/tun.
source "$(dirname "$0")/lib.sh"
kernel_segment kmix 10.80.9 km
SOCK=$E2E_TMP/ctl.sock
kernel_boot "-A -t $VIP:80 -s rr
-a -t $VIP:80 -r $RS:80 -g -w 1" "ipvsadm --start-daemon master --mcast-interface eth0 --syncid 9"
log "kernel director up, master sync daemon running"

cat >"$E2E_TMP/fastlb.toml" <<EOF
[pair]
instance = "VI_mixed"
interface = "f0"
addresses = ["$VIP"]
sync_interface = "f0"
syncid = 9

[[service]]
protocol = "tcp"
address = "$VIP"
port = 80
scheduler = "rr"
[[service.real]]
address = "$RS"
method = "dr"
EOF
ip netns exec "$NS_F" "$FASTLB_CMD" --iface f0 --config "$E2E_TMP/fastlb.toml" --ctl-socket "$SOCK" \
    --metrics 127.0.0.1:9108 >"$E2E_TMP/fastlb.log" 2>&1 &
E2E_CLEANUP+=("stop_procs $!")
wait_for 20 grep -q serving "$E2E_TMP/fastlb.log" || { cat "$E2E_TMP/fastlb.log"; fail "fastlb did not start"; }
fctl() { "$FASTLB_CMD" ctl --socket "$SOCK" "$@"; }
tx_frames() {
    ip netns exec "$NS_F" curl -s --max-time 5 http://127.0.0.1:9108/metrics \
        | awk '/^fastlb_worker_tx_frames_total/ {s += $2} END {print s + 0}'
}
wait_for 10 grep -q 'VRRP instance VI_mixed is BACKUP here: standby' "$E2E_TMP/fastlb.log" \
    || fail "fastlb does not say it is the standby"
fctl -L --daemon | grep -q '^backup sync daemon (mcast=f0, syncid=9' \
    || fail "fastlb should run the backup sync daemon: $(fctl -L --daemon)"
pass "fastlb is the standby with its backup sync daemon on f0"

# 4 connections, a line every 100 ms, until the stop file; each connection's longest wait
# for its echo (ms) and whether it failed, as JSON.
ip -n "$NS_CL" route add "$VIP/32" via "$KR"
ip netns exec "$NS_CL" python3 - "$VIP" "$E2E_TMP/stop" >"$E2E_TMP/traffic.json" 2>&1 <<'EOF' &
import json, os, socket, sys, time
vip, stop = sys.argv[1], sys.argv[2]
socks = [socket.create_connection((vip, 80), timeout=5) for _ in range(4)]
for s in socks:
    s.settimeout(30)
gaps, errors = [0.0] * 4, [None] * 4
last = [time.monotonic()] * 4
while not os.path.exists(stop):
    for i, s in enumerate(socks):
        if errors[i]:
            continue
        try:
            s.sendall(b"line\n")
            if s.recv(100) != b"line\n":
                errors[i] = "wrong echo"
            now = time.monotonic()
            gaps[i] = max(gaps[i], now - last[i])
            last[i] = now
        except OSError as e:
            errors[i] = str(e)
    time.sleep(0.1)
print(json.dumps({"gap_ms": [round(g * 1000) for g in gaps], "errors": errors}))
EOF
TRAFFIC=$!
synced() {
    [[ $(fctl -L -c -n | awk -v v="$VIP:80" -v r="$RS:80" \
        '$1 == "TCP" && $3 == "ESTABLISHED" && $5 == v && $6 == r' | wc -l) == 4 ]]
}
wait_for 60 synced || { fctl -L -c -n; "$K" exec "$VM" "ipvsadm -L -n -c"; fail "fastlb's backup does not hold the kernel master's 4 connections"; }
tx=$(tx_frames)
(( tx == 0 )) || fail "the standby transmitted $tx frames"
pass "fastlb (standby) lists the kernel master's 4 connections and transmitted nothing"
sleep 2

log "the kernel master dies; the VIP moves to fastlb"
"$K" stop "$VM"
ip -n "$NS_F" addr add "$VIP/32" dev f0
ip -n "$NS_CL" route replace "$VIP/32" via "$FL"
wait_for 10 grep -q 'VRRP instance VI_mixed is MASTER here: forwarding' "$E2E_TMP/fastlb.log" \
    || fail "fastlb did not become MASTER"
fctl -L --daemon | grep -q '^master sync daemon (mcast=f0, syncid=9' && ! fctl -L --daemon | grep -q backup \
    || fail "fastlb should now run the master sync daemon only: $(fctl -L --daemon)"
sleep 5
touch "$E2E_TMP/stop"
wait "$TRAFFIC" || fail "the client failed: $(cat "$E2E_TMP/traffic.json")"
result=$(cat "$E2E_TMP/traffic.json")
log "connections after the master's death: $result"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(any(d["errors"]))' "$result" \
    || fail "connections broke: $result"
tx=$(tx_frames)
(( tx > 0 )) || fail "fastlb, now MASTER, transmitted nothing"
pass "kernel master dead, fastlb MASTER: all 4 connections go on (longest echo wait per connection: $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["gap_ms"])' "$result") ms)"
