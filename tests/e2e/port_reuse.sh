#!/usr/bin/env bash
# Usage: port_reuse.sh dr|nat|tun. 8 connections one after another from the same client
# port. The client closes each with a RST (SO_LINGER 0) so its own port is free at once
# (with curl --local-port a near-simultaneous close leaves the client's port in TIME_WAIT
# and the next bind fails, whatever the director does). The director's entry is in CLOSE
# or TIME_WAIT when the next SYN comes; IPVS (conn_reuse_mode=1, is_new_conn_expected)
# expires it and schedules the SYN as a new connection, so wrr 3:1 gives rs1 6, rs2 2 and
# 8 connections.
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: port_reuse.sh dr|nat|tun}
lab_up "$MODE-reuse" "$MODE"
for _ in $(seq 8); do
    cx python3 - "$VIP" <<'PY' || echo "(no answer)"
import socket, struct, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.settimeout(3)
s.bind(("", 40000))
s.connect((sys.argv[1], 80))
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
data = b""
while b"served by" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
s.close()
body = data.split(b"\r\n\r\n", 1)[-1].decode().strip()
print(body if body else "(no answer)")
PY
    sleep 0.2
done | sort | uniq -c
C1=$(real_field tcp 80 "$RS1" conns) C2=$(real_field tcp 80 "$RS2" conns)
log "director: rs1 $C1, rs2 $C2 connections"
[[ $C1 == 6 && $C2 == 2 ]] || fail "a SYN on a TIME_WAIT entry was not scheduled as a new connection (IPVS: rs1 6, rs2 2)"
pass "port reuse schedules anew"
