#!/usr/bin/env bash
# Usage: tun_decap.sh. The lab's tunnel-mode real server on its own (bpf/tun_decap.c, the
# XDP program that stands in for the ipip/ip6tnl device this kernel lacks), with no
# director: the lab comes up in tun mode without fastlb, and the director namespace's
# kernel sends rs1 one IPv4-in-IPv4 packet (a raw socket of protocol 4; inner UDP
# 10.80.1.10:40000 -> VIP:9999) and one IPv6-in-IPv6 packet (protocol 41; inner UDP
# [fd80:1::10]:40000 -> [VIP6]:9999, checksum as IPv6 requires). rs1's UDP sockets on the
# VIPs must receive each inner datagram, from the inner source: the outer header was
# stripped and the inner packet reached the stack as if it had arrived plain.
source "$(dirname "$0")/lib.sh"
FASTLB_CMD= lab_up tundecap tun
ip netns exec "$NS_R1" python3 - "$VIP" "$VIP6" >"$E2E_TMP/got" <<'PY' &
import socket, sys
out = []
for fam, addr in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((addr, 9999))
    s.settimeout(10)
    out.append(s)
for s in out:
    try:
        d, a = s.recvfrom(100)
        print(d.decode(), a[0], a[1])
    except OSError as e:
        print("nothing", e)
PY
RECEIVER=$!
wait_for 5 ip netns exec "$NS_R1" sh -c "ss -lunH 'sport = :9999' | grep -c . | grep -q 2" \
    || fail "receiver did not start"
dx python3 - "$VIP" "$VIP6" <<'PY'
import socket, struct, sys
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s >> 16) + (s & 0xffff)
    return (~s) & 0xffff
vip, vip6 = sys.argv[1], sys.argv[2]
# IPv4 in IPv4.
payload = b"hello-tun4"
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton("10.80.1.10"), socket.inet_aton(vip))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
socket.socket(socket.AF_INET, socket.SOCK_RAW, 4).sendto(ip + udp, ("10.80.2.11", 0))
# IPv6 in IPv6: the kernel builds the outer header (next header 41) around the inner one.
payload = b"hello-tun6"
src, dst = socket.inet_pton(socket.AF_INET6, "fd80:1::10"), socket.inet_pton(socket.AF_INET6, vip6)
length = 8 + len(payload)
udp = struct.pack("!HHHH", 40000, 9999, length, 0) + payload
pseudo = src + dst + struct.pack("!I3xB", length, 17)
udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xffff) + udp[8:]
inner = struct.pack("!IHBB", 6 << 28, length, 17, 64) + src + dst + udp
socket.socket(socket.AF_INET6, socket.SOCK_RAW, 41).sendto(inner, ("fd80:2::11", 0))
PY
wait "$RECEIVER" || true
cat "$E2E_TMP/got"
grep -qx "hello-tun4 10.80.1.10 40000" "$E2E_TMP/got" || fail "rs1 did not receive the inner IPv4 datagram"
pass "IPv4 in IPv4: decapsulated, delivered from the inner source"
grep -q "^hello-tun6 fd80:1::10 40000" "$E2E_TMP/got" || fail "rs1 did not receive the inner IPv6 datagram"
pass "IPv6 in IPv6: decapsulated, delivered from the inner source"
