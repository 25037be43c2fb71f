#!/usr/bin/env bash
# Usage: new_client.sh dr|nat|tun. A new directly connected client (here a second
# address, 10.80.1.11, on the client's interface) ARPs for the director with its first
# packet and the real server answers within a millisecond, before fastlb's copy of the
# kernel's neighbour table (refreshed every second) knows the client's MAC. The answer must
# not be lost: fastlb hands it to the kernel's IP output, which resolves the neighbour and
# queues the packet meanwhile, as it would for a packet it forwarded itself. One UDP
# request (DNS-style) must be answered at once, and a TCP connection must not wait for a
# SYN retransmit. (In dr and tun the real servers answer directly, so only nat shows it.)
source "$(dirname "$0")/lib.sh"
MODE=${1:?usage: new_client.sh dr|nat|tun}
lab_up "$MODE-newcl" "$MODE"
cx ip addr add 10.80.1.11/24 dev c0
A=$(cx python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.bind(("10.80.1.11", 0)); s.connect(("10.80.100.1", 53)); s.send(b"first")
try: print(s.recv(100).decode())
except OSError as e: print("(no answer: %s)" % e)')
log "first UDP request from a new client: $A"
dx curl -s 127.0.0.1:9108/metrics | grep 'fastlb_drops_total{reason="no_neighbour"}' || true
[[ $A == *" first" ]] || fail "the first answer to a new client was lost"
pass "a new client's first request is answered"
