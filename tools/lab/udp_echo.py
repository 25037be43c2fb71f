#!/usr/bin/env python3
"""DNS-style UDP responder for the namespace lab: answers each datagram with
"NAME <datagram>", so the client sees which real server answered. A datagram of more than
1024 bytes (tests/e2e/frag.sh: it arrived in fragments) is answered "NAME LENGTH SHA256"
instead, so the answer is small and the client can tell whether it arrived whole; if it
starts with "ECHO " the datagram itself follows (" " and its bytes), so the answer is as
large and comes back in fragments too.

Usage: udp_echo.py BIND_ADDRESS PORT NAME
BIND_ADDRESS is IPv4 or IPv6 (an IPv6 socket serves IPv6 only).
"""
import hashlib
import socket
import sys


def main():
    addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(65535)
        if len(data) > 1024:
            digest = hashlib.sha256(data).hexdigest().encode()
            echo = b" " + data if data.startswith(b"ECHO ") else b""
            data = b"%d %s%s" % (len(data), digest, echo)
        s.sendto(name + b" " + data, peer)


if __name__ == "__main__":
    main()
