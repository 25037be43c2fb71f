#!/usr/bin/env bash
# Tunnel-mode real server check (needs root): brings the lab up in tun mode, sends one
# IPIP packet (outer 10.80.2.1 -> rs1, inner UDP 10.80.1.10:40000 -> VIP:9999) from the
# director's kernel through a raw socket of protocol 4, and expects rs1's UDP socket on
# the VIP to receive the inner datagram after bpf/tun_decap.c stripped the outer header.
set -euo pipefail
if [[ $(id -u) != 0 ]]; then echo "SKIP: tun_decap e2e needs root"; exit 0; fi
LAB=$(cd "$(dirname "$0")/../.." && pwd)/tools/lab/lab.sh
export FLB_PREFIX=flbt-tundc- FLB_LAB_STATE=/tmp/flb-lab-tun-e2e
trap '"$LAB" down >/dev/null' EXIT
FASTLB_CMD= "$LAB" up --mode tun >/dev/null
OUT=$(mktemp)
ip netns exec flbt-tundc-rs1 python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.80.100.1", 9999)); s.settimeout(3)
try:
    d, a = s.recvfrom(100); print(d.decode(), a[0], a[1])
except OSError as e:
    print("nothing", e)
' >"$OUT" &
sleep 0.5
ip netns exec flbt-tundc-dir python3 -c '
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
payload = b"hello-tun"
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton("10.80.1.10"), socket.inet_aton("10.80.100.1"))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
socket.socket(socket.AF_INET, socket.SOCK_RAW, 4).sendto(ip + udp, ("10.80.2.11", 0))
'
wait
GOT=$(cat "$OUT"); rm -f "$OUT"
if [[ $GOT == "hello-tun 10.80.1.10 40000" ]]; then
    echo "PASS: rs1 decapsulated IPIP and received '$GOT'"; echo "1 passed, 0 failed"
else
    echo "FAIL: rs1 got '$GOT'"; echo "0 passed, 1 failed"; exit 1
fi
