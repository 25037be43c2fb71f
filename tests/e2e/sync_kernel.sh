#!/usr/bin/env bash
# Usage: sync_kernel.sh. IPVS connection sync between fastlb and a real Linux IPVS (Debian's
# 6.1 in qemu, tools/kernel-ipvs/kipvs), both ways.
#
# One segment (a bridge in flbt-...-ksync-br): the kernel director (the VM's eth0,
# 10.80.8.2), fastlb (its XDP interface f0, 10.80.8.1), a client (10.80.8.10) and a DR real
# server (10.80.8.11, the VIP on its lo, echoing with socat). Both directors hold the same
# rules: TCP VIP:80 persistent (-p 300, so every connection has a template) and UDP VIP:53,
# DR to the real server. The client's route to the VIP picks which director is the master.
#   A. kernel master -> fastlb backup: 4 TCP connections (a line every 100 ms, echoed) and
#      a UDP flow through the VM; fastlb's `ctl -L -c -n` shows every connection and the
#      template the kernel's `ipvsadm -L -n -c` shows, with the same state and real server.
#   B. fastlb master -> kernel backup: the same through fastlb; the VM's `ipvsadm -L -n -c`
#      shows fastlb's connections and template.
# Skips (exit 77, with the reason) without qemu, busybox, ipvsadm, socat or /dev/net/tun.
source "$(dirname "$0")/lib.sh"
kernel_segment ksync 10.80.8 ks
SOCK=$E2E_TMP/ctl.sock
ip netns exec "$NS_RS" socat -u UDP-RECV:53 OPEN:/dev/null >/dev/null 2>&1 &

RULES="-A -t $VIP:80 -s rr -p 300
-a -t $VIP:80 -r $RS:80 -g -w 1
-A -u $VIP:53 -s rr
-a -u $VIP:53 -r $RS:53 -g -w 1"
kernel_boot "$RULES"
log "kernel director up"

ip netns exec "$NS_F" "$FASTLB_CMD" --iface f0 --config "$E2E_TMP/rules" --ctl-socket "$SOCK" >"$E2E_TMP/fastlb.log" 2>&1 &
FPID=$!
E2E_CLEANUP+=("stop_procs $FPID")
wait_for 20 grep -q serving "$E2E_TMP/fastlb.log" || { cat "$E2E_TMP/fastlb.log"; fail "fastlb did not start"; }
fctl() { "$FASTLB_CMD" ctl --socket "$SOCK" "$@"; }
kx() { "$K" exec "$VM" "$@"; }

# traffic: 4 TCP connections (a line every 100 ms for 15 s, echoed) and 6 UDP
# datagrams from one socket, from the client to the VIP; prints the client ports.
traffic() {
    ip netns exec "$NS_CL" python3 - "$VIP" <<'EOF'
import socket, sys, time
vip = sys.argv[1]
socks = [socket.create_connection((vip, 80), timeout=5) for _ in range(4)]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((vip, 53))
for i in range(6):
    u.send(b"q%d" % i)
    time.sleep(0.05)
print(" ".join(str(s.getsockname()[1]) for s in socks), u.getsockname()[1], flush=True)
end = time.time() + 15
while time.time() < end:
    for s in socks:
        s.sendall(b"line\n")
        s.recv(100)
    time.sleep(0.1)
EOF
}
# Lines "pro state source virtual destination" of the client's entries, sorted. A template's
# state is shown as TPL: the kernel marks a template ASSURED once a connection it controls
# is established (ip_vs_control_assure_ct), fastlb's templates have no such state yet, and
# sync carries the state as it is (docs/decisions.md).
entries() {
    awk -v cl="$CL:" '($1 == "TCP" || $1 == "UDP") && index($4, cl) == 1 {
        if ($4 ~ /:0$/) $3 = "TPL"; print $1, $3, $4, $5, $6}' | sort
}

# A. kernel master -> fastlb backup.
ip -n "$NS_CL" route add "$VIP/32" via "$KR"
kx ipvsadm --start-daemon master --mcast-interface eth0 --syncid 9 || fail "kernel --start-daemon master"
fctl --start-daemon backup --mcast-interface f0 --syncid 9 || fail "fastlb --start-daemon backup"
traffic >"$E2E_TMP/a.ports" 2>&1 &
TRAFFIC=$!
a_synced() {
    KL=$(kx ipvsadm -L -n -c | entries) FLL=$(fctl -L -c -n | entries)
    [[ $(grep -c ESTABLISHED <<<"$KL") == 4 && $(grep -c '^UDP' <<<"$KL") == 1 \
        && $(grep -c ' TPL ' <<<"$KL") == 1 && $KL == "$FLL" ]]
}
if ! wait_for 60 a_synced; then
    echo "kernel:"; kx ipvsadm -L -n -c; echo "fastlb:"; fctl -L -c -n; cat "$E2E_TMP/a.ports"
    fail "A: fastlb's backup does not hold the kernel master's connections"
fi
echo "$FLL"
log "template state: kernel $(kx ipvsadm -L -n -c | awk -v cl="$CL:0" '$4 == cl {print $3}'), fastlb $(fctl -L -c -n | awk -v cl="$CL:0" '$4 == cl {print $3}')"
wait "$TRAFFIC" || fail "A: the client's connections through the kernel failed: $(cat "$E2E_TMP/a.ports")"
pass "A: kernel master -> fastlb backup: 4 TCP, 1 UDP and the template, same states and real server"
kx ipvsadm --stop-daemon master
fctl --stop-daemon backup

# B. fastlb master -> kernel backup.
ip -n "$NS_CL" route replace "$VIP/32" via "$FL"
kx ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 9 || fail "kernel --start-daemon backup"
fctl --start-daemon master --mcast-interface f0 --syncid 9 || fail "fastlb --start-daemon master"
traffic >"$E2E_TMP/b.ports" 2>&1 &
TRAFFIC=$!
b_synced() {
    PORTS=$(head -1 "$E2E_TMP/b.ports")
    [[ -n $PORTS ]] || return 1
    FLL=$(fctl -L -c -n | entries | grep -E ":($(tr ' ' '|' <<<"$PORTS")|0) ") || return 1
    KL=$(kx ipvsadm -L -n -c | entries | grep -E ":($(tr ' ' '|' <<<"$PORTS")|0) ") || return 1
    [[ $(grep -c ESTABLISHED <<<"$FLL") == 4 && $(grep -c '^UDP' <<<"$FLL") == 1 \
        && $(grep -c ' TPL ' <<<"$FLL") == 1 && $KL == "$FLL" ]]
}
if ! wait_for 60 b_synced; then
    echo "fastlb:"; fctl -L -c -n; echo "kernel:"; kx ipvsadm -L -n -c; cat "$E2E_TMP/b.ports"
    fail "B: the kernel backup does not hold fastlb's connections"
fi
echo "$KL"
wait "$TRAFFIC" || fail "B: the client's connections through fastlb failed: $(cat "$E2E_TMP/b.ports")"
pass "B: fastlb master -> kernel backup: ipvsadm -L -n -c in the VM lists fastlb's connections and template"
