#!/usr/bin/env python3
"""DNS-style UDP responder for the namespace lab: answers each datagram with
"NAME <datagram>", so the client sees which real server answered.

Usage: udp_echo.py BIND_ADDRESS PORT NAME
"""
import socket
import sys


def main():
    addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(name + b" " + data, peer)


if __name__ == "__main__":
    main()
