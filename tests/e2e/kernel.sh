#!/usr/bin/env bash
# Usage: kernel.sh dr|nat|tun. Traffic that is not for a service reaches the director's
# kernel while fastlb runs: ping to d0 from the client and to d1 from rs1, and a TCP
# service of the director itself (a python3 listener on :2222) from both sides. The VIP
# service keeps working meanwhile.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: kernel.sh dr|nat|tun}
lab_up "$MODE-kernel" "$MODE"

cx ping -c3 -i0.2 -W1 10.80.1.1 >/dev/null || fail "ping from the client to the director's d0"
pass "ping client -> director d0"
ip netns exec "$NS_R1" ping -c3 -i0.2 -W1 10.80.2.1 >/dev/null || fail "ping from rs1 to the director's d1"
pass "ping rs1 -> director d1"

dx python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 2222)); s.listen(8); s.settimeout(10)
for _ in range(2):
    c, a = s.accept(); c.sendall(b"director kernel to %s\n" % a[0].encode()); c.close()
' &
LISTENER=$!
wait_for 5 dx sh -c 'ss -ltn | grep -q ":2222 "' || fail "listener did not start"
ask() { ip netns exec "$1" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 2222), timeout=3); print(s.recv(100).decode().strip())' "$2"; }
A=$(ask "$NS_C" 10.80.1.1) || true
[[ $A == "director kernel to 10.80.1.10" ]] || fail "TCP client -> director:2222 got '$A'"
pass "TCP client -> director:2222: $A"
A=$(ask "$NS_R1" 10.80.2.1) || true
[[ $A == "director kernel to 10.80.2.11" ]] || fail "TCP rs1 -> director:2222 got '$A'"
pass "TCP rs1 -> director:2222: $A"
wait "$LISTENER" || true

T=$(curl_tally 8)
(( $(awk '{s+=$1} END {print s}' <<<"$T") == 8 )) || fail "the service stopped answering: $T"
pass "the VIP service answers meanwhile"
