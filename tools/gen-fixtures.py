#!/usr/bin/python3
"""Regenerates the input side of pcap-fixtures/: in.pcap, config and next-hop files.

Every fixture replays on one fixed, one-armed topology:

    clients (198.51.100.0/24, 203.0.113.0/24, 2001:db8:ff::/64)
        |  router 192.0.2.254 / 2001:db8::fe   02:00:00:00:00:fe
    director 192.0.2.1, 10.0.0.1, 2001:db8::1, 2001:db8:1::1   02:00:00:00:00:01
        |  VIPs 192.0.2.100-101, 2001:db8::100
    real servers 10.0.0.11-13 / 2001:db8:1::11-13   02:00:00:00:01:11-13

Run from the repository root:  tools/gen-fixtures.py
The expected outputs (expected.pcap, report.json) are written by the replay test in bless
mode (FASTLB_BLESS=1 cargo test --test replay) and checked by hand; see pcap-fixtures/README.md.
"""
import os
import shutil
import textwrap
from socket import AF_INET, AF_INET6, inet_pton

from decimal import Decimal

from scapy.all import (ARP, DNS, DNSQR, ICMP, IP, IPv6, TCP, UDP, Dot1Q, Ether, ICMPv6DestUnreach,
                       ICMPv6PacketTooBig, IPv6ExtHdrFragment, Raw, wrpcap, conf, fragment,
                       fragment6)

conf.verb = 0
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pcap-fixtures")

DIRECTOR = "02:00:00:00:00:01"
ROUTER = "02:00:00:00:00:fe"
RS_MAC = {1: "02:00:00:00:01:11", 2: "02:00:00:00:01:12", 3: "02:00:00:00:01:13"}
RS4 = {1: "10.0.0.11", 2: "10.0.0.12", 3: "10.0.0.13"}
RS6 = {1: "2001:db8:1::11", 2: "2001:db8:1::12", 3: "2001:db8:1::13"}
VIP4, VIP4B, VIP6 = "192.0.2.100", "192.0.2.101", "2001:db8::100"

ROUTES = """\
default via 192.0.2.254 dev eth0 proto static
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.1
10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1
2001:db8::/64 dev eth0 proto kernel metric 256 pref medium
2001:db8:1::/64 dev eth0 proto kernel metric 256 pref medium
default via 2001:db8::fe dev eth0 metric 1024 pref medium
local 10.0.0.1 dev eth0 table local proto kernel scope host src 10.0.0.1
local 192.0.2.1 dev eth0 table local proto kernel scope host src 192.0.2.1
local 2001:db8::1 dev eth0 table local proto kernel metric 0 pref medium
local 2001:db8:1::1 dev eth0 table local proto kernel metric 0 pref medium
"""
NEIGH = """\
192.0.2.254 dev eth0 lladdr 02:00:00:00:00:fe REACHABLE
10.0.0.11 dev eth0 lladdr 02:00:00:00:01:11 REACHABLE
10.0.0.12 dev eth0 lladdr 02:00:00:00:01:12 STALE
10.0.0.13 dev eth0 lladdr 02:00:00:00:01:13 REACHABLE
2001:db8::fe dev eth0 lladdr 02:00:00:00:00:fe router REACHABLE
2001:db8:1::11 dev eth0 lladdr 02:00:00:00:01:11 REACHABLE
2001:db8:1::12 dev eth0 lladdr 02:00:00:00:01:12 REACHABLE
2001:db8:1::13 dev eth0 lladdr 02:00:00:00:01:13 REACHABLE
"""
LINKS = """\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP mode DEFAULT group default qlen 1000
    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff
"""
# Another director on the same segment, and keepalived's VRRP virtual MACs (RFC 5798:
# 00:00:5e:00:01:VRID for IPv4, 00:00:5e:00:02:VRID for IPv6) of VRID 51 (ours) and 52.
OTHER_DIRECTOR = "02:00:00:00:00:02"
VMAC4_51, VMAC6_51, VMAC4_52 = "00:00:5e:00:01:33", "00:00:5e:00:02:33", "00:00:5e:00:01:34"


def ip(src, dst, **kw):
    return IPv6(src=src, dst=dst, **kw) if ":" in src else IP(src=src, dst=dst, **kw)


def from_client(src, dst, l4, vlan=None, mac=DIRECTOR, **ipkw):
    eth = Ether(src=ROUTER, dst=mac)
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    return eth / ip(src, dst, **ipkw) / l4


def from_real(n, src, dst, l4):
    return Ether(src=RS_MAC[n], dst=DIRECTOR) / ip(src, dst) / l4


def query(ident):
    return DNS(id=ident, rd=1, qd=DNSQR(qname="www.example.org"))


def tcp(sport, dport, flags, seq=1000, ack=0, payload=b""):
    p = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240)
    return p / Raw(payload) if payload else p


class Capture:
    """Frames with a virtual clock: `at(t)` sets the time of the frames added next."""

    def __init__(self):
        self.frames, self.t = [], Decimal(1_700_000_000)

    def at(self, secs):
        self.t = Decimal(1_700_000_000) + Decimal(str(secs))
        return self

    def add(self, *pkts):
        for p in pkts:
            p.time = self.t
            self.t += Decimal("0.001")
            self.frames.append(p)
        return self


def real(addr, weight=1, method="dr", port=80, extra=""):
    return f'[[service.real]]\naddress = "{addr}"\nport = {port}\nweight = {weight}\nmethod = "{method}"\n{extra}'


def service(addr, port=80, sched="wlc", proto="tcp", extra=""):
    return f'[[service]]\nprotocol = "{proto}"\naddress = "{addr}"\nport = {port}\nscheduler = "{sched}"\n{extra}'


def write(name, config, cap, doc, config_name="fastlb.toml"):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, config_name), "w") as f:
        f.write(config)
    wrpcap(os.path.join(d, "in.pcap"), cap.frames)
    with open(os.path.join(d, "ABOUT"), "w") as f:
        f.write(doc.strip() + "\n")


def reflow(text):
    """One paragraph, wrapped as the hand-written ABOUT texts are."""
    return textwrap.fill(" ".join(text.split()), 95, break_on_hyphens=False)


def ones_sum(data):
    """One's-complement sum of big-endian 16-bit words, folded, not complemented."""
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return s


def l4_of(pkt):
    return pkt[TCP] if TCP in pkt else pkt[UDP]


def pseudo_sum(pkt):
    """The pseudo-header sum of pkt's TCP/UDP segment (addresses, protocol, length)."""
    l4 = l4_of(pkt)
    seglen = len(bytes(l4))
    under = l4.underlayer
    while not isinstance(under, (IP, IPv6)):
        under = under.underlayer
    if isinstance(under, IP):
        addrs = inet_pton(AF_INET, under.src) + inet_pton(AF_INET, under.dst)
    else:
        addrs = inet_pton(AF_INET6, under.src) + inet_pton(AF_INET6, under.dst)
    proto = 6 if TCP in pkt else 17
    return ones_sum(addrs + proto.to_bytes(2, "big") + seglen.to_bytes(4, "big"))


def partial(pkt):
    """pkt as a sender with checksum offload hands it over (CHECKSUM_PARTIAL): its TCP/UDP
    checksum field holds only the pseudo-header sum."""
    pkt = pkt.__class__(bytes(pkt))
    l4_of(pkt).chksum = pseudo_sum(pkt)
    return pkt.__class__(bytes(pkt))


def coincident(pkt, word_at):
    """pkt with payload bytes word_at..word_at+2 (an even offset) chosen so that its complete,
    valid checksum equals its pseudo-header sum: the chance match a partial-checksum test
    must survive."""
    pkt = pkt.__class__(bytes(pkt))
    l4 = l4_of(pkt)
    payload = bytearray(bytes(l4.payload))
    assert word_at % 2 == 0 and word_at + 2 <= len(payload)
    payload[word_at:word_at + 2] = b"\0\0"
    l4.remove_payload()
    l4.add_payload(Raw(bytes(payload)))
    l4.chksum = 0
    pkt = pkt.__class__(bytes(pkt))
    p = pseudo_sum(pkt)
    rest = ones_sum(bytes(l4_of(pkt)))
    # The checksum is ~(P + S); it equals P when S = ~P + ~P (one's complement -2P).
    want = ones_sum(((0xffff ^ p) * 2).to_bytes(4, "big"))
    x = ones_sum((want + (0xffff ^ rest)).to_bytes(4, "big"))
    payload[word_at:word_at + 2] = x.to_bytes(2, "big")
    l4 = l4_of(pkt)
    l4.remove_payload()
    l4.add_payload(Raw(bytes(payload)))
    l4.chksum = None
    pkt = pkt.__class__(bytes(pkt))
    assert l4_of(pkt).chksum == pseudo_sum(pkt), "checksum equals the pseudo-header sum"
    return pkt


def handshake_dr(cap, client, cport, vip, vport=80):
    cap.add(from_client(client, vip, tcp(cport, vport, "S", seq=1000)))


# What the destination schedulers' fixtures show.
DEST_ABOUT = {
    "dh": "dh hashes the destination (hash_32, 8 bits) onto buckets A B C A B C ...: .110 and "
          ".111 to A, .112 to C, .113 to B (tools/kernel-ipvs/hashing.py).",
    "lblc": "lblc gives each new destination the wlc pick (.110 A, .111 B, .112 C, .113 A) and "
            "keeps it: no server is ever overloaded in lblc's sense (active > weight while "
            "another has active * 2 < weight).",
    "lblcr": "lblcr gives each destination a set with the wlc pick (.110 A, .111 B, .112 C, "
             ".113 A); no set grows, since no member is ever overloaded in lblcr's sense.",
}

# What each scheduler fixture shows (see its expect.txt for the worked sequence).
SCHED_ABOUT = {
    "rr": "rr ignores the weights: A B C in turn from the head of the list.",
    "wrr": "wrr adds the servers in order (-A, then one -a each, as `ipvsadm -R` does); each -a "
           "runs ip_vs_wrr_dest_changed, which carries the current weight cw (1 once A alone "
           "is in: di 3, mw 1) instead of restarting at the maximum: A B C at cw 1, then A | A B "
           "| A B C at cw 3, 2, 1.",
    "lc": "lc: least (active << 8) + inactive, ties to the first: A B C in turn.",
    "wlc": "wlc: least overhead / weight, ties to the first: A B C C B C, then again.",
    "sed": "sed: least (active + 1) / weight, ties to the first: C B C A B C C B C A B C.",
    "nq": "nq: an idle server first (A B C), then as sed: C B C C B C A B C.",
    "sh": "sh: 256 buckets filled in list order, A taking two in a row (A A B C A A B C ...); "
          "each client's address picks a bucket through hash_32. The servers in expect.txt are "
          "what tools/kernel-ipvs/hashing.py, written from the kernel's source, computes.",
    "mh": "mh: the Maglev table of 4093 slots built from the servers' hsiphash offsets and "
          "skips; each client's address picks a slot. The servers in expect.txt are what "
          "tools/kernel-ipvs/hashing.py, written from the kernel's source, computes.",
    "fo": "fo: always the highest weight, B.",
    "ovf": "ovf: the highest weight with active <= weight: B four times, A three, C twice; then "
           "every server is over its weight and the last three SYNs are dropped "
           "(no_destination), the last RST with them (no_connection).",
    "twos": "twos: two weighted random picks, the less loaded per weight wins (the kernel's "
            "ip_vs_twos.c, 6.7 and later). The kernel draws from its random generator; fastlb "
            "from a xorshift64* seeded by the service key, so the picks are reproducible: "
            "expect.txt holds what tools/kernel-ipvs/hashing.py computes from that documented "
            "generator and the kernel's rule.",
}


def fixtures():
    # ---- forwarding modes -------------------------------------------------------------
    cap = Capture()
    for i in range(9):
        cap.at(1 + i * 0.1).add(from_client(f"198.51.100.{10 + i}", VIP4, tcp(40000 + i, 80, "S")))
    for i in range(9):
        cap.at(2 + i * 0.1).add(from_client(f"198.51.100.{10 + i}", VIP4, tcp(40000 + i, 80, "A", 1001, 5001)))
    write("dr-v4-wrr", service(VIP4, sched="wrr") + real(RS4[1], 4) + real(RS4[2], 3) + real(RS4[3], 2), cap, """
DR, IPv4, wrr with weights 4,3,2 (list order A=.11, B=.12, C=.13). Nine clients open one
connection each: the SYNs go to A A B A B C A B C (the kernel's gcd stepping); each client's
ACK then follows its SYN to the same real server. Only the destination MAC changes.""")

    cap = Capture()
    for i in range(4):
        cap.at(1 + i).add(from_client(f"2001:db8:ff::{10 + i}", VIP6, tcp(50000 + i, 443, "S")))
        cap.add(from_client(f"2001:db8:ff::{10 + i}", VIP6, tcp(50000 + i, 443, "A", 1001, 1)))
    write("dr-v6-rr", service(VIP6, 443, "rr") + real(RS6[1], port=443) + real(RS6[2], port=443), cap, """
DR, IPv6, rr over two real servers: SYNs alternate .11 .12 .11 .12, each ACK follows its
connection.""")

    for fam, client, vip, rs in (("v4", "198.51.100.7", VIP4, RS4), ("v6", "2001:db8:ff::7", VIP6, RS6)):
        cap = Capture().at(1)
        for c, (cport, n) in enumerate(((41000, 1), (41001, 2))):
            cap.add(from_client(client, vip, tcp(cport, 80, "S", 100)))
            cap.add(from_real(n, rs[n], client, tcp(8080, cport, "SA", 900, 101)))
            cap.add(from_client(client, vip, tcp(cport, 80, "A", 101, 901)))
            cap.add(from_client(client, vip, tcp(cport, 80, "PA", 101, 901, b"GET / HTTP/1.0\r\n\r\n")))
            cap.add(from_real(n, rs[n], client, tcp(8080, cport, "PA", 901, 119, b"HTTP/1.0 200 OK\r\n\r\nhi")))
            cap.add(from_real(n, rs[n], client, tcp(8080, cport, "FA", 921, 119)))
            cap.add(from_client(client, vip, tcp(cport, 80, "FA", 119, 922)))
            cap.add(from_real(n, rs[n], client, tcp(8080, cport, "A", 922, 120)))
        write(f"nat-{fam}-rr", service(vip, sched="rr") + real(rs[1], method="nat", port=8080)
              + real(rs[2], method="nat", port=8080), cap, f"""
NAT, IP{fam}, rr, port translation 80 -> 8080. Two complete TCP connections (handshake, a
request, a response, FIN both ways): inbound frames are DNATed to the real server, replies from
the real server are SNATed back to the VIP and sent to the router; checksums are updated
incrementally. The first connection goes to .11, the second to .12.""")

    cap = Capture().at(1)
    for i in range(3):
        cap.add(from_client(f"198.51.100.{20 + i}", VIP4, tcp(42000 + i, 80, "S"), flags="DF"))
    cap.add(from_client("198.51.100.20", VIP4, tcp(42000, 80, "PA", 1001, 1, b"x" * 1000), flags="DF"))
    cap.add(from_client("198.51.100.21", VIP4, tcp(42001, 80, "PA", 1001, 1, b"y" * 1460), flags="DF"))
    cap.add(from_client("198.51.100.22", VIP4, tcp(42002, 80, "PA", 1001, 1, b"z" * 1460)))
    write("tun-v4-wlc", service(VIP4) + real(RS4[1], 1, "tun") + real(RS4[2], 2, "tun"), cap, """
TUN, IPv4-in-IPv4, wlc with weights 1 and 2. Three SYNs: wlc sends the first to .11 (both
idle: the first in list wins the tie), then .12, .12. A 1040-byte packet is encapsulated
(outer source 10.0.0.1, the route's preferred source; TTL, TOS and DF copied). A full-size
1500-byte packet with DF no longer fits: the client gets ICMP fragmentation-needed with MTU
1480. The same size without DF is dropped (too_big): the kernel would fragment the outer
packet; fastlb does not fragment (see docs/decisions.md).""")

    cap = Capture().at(1)
    for i in range(3):
        cap.add(from_client(f"2001:db8:ff::{20 + i}", VIP6, tcp(43000 + i, 80, "S")))
    cap.add(from_client("2001:db8:ff::20", VIP6, tcp(43000, 80, "PA", 1001, 1, b"v" * 500)))
    cap.add(from_client("2001:db8:ff::21", VIP6, tcp(43001, 80, "PA", 1001, 1, b"w" * 1440)))
    write("tun-v6-sh", service(VIP6, sched="sh") + real(RS6[1], 1, "tun") + real(RS6[2], 1, "tun")
          + real(RS6[3], 1, "tun"), cap, """
TUN, IPv6-in-IPv6, sh. Three clients hashed onto three real servers (.20 to .12, .21 and .22
to .11, as tools/kernel-ipvs/hashing.py computes from the kernel's source); a 560-byte packet is
encapsulated (outer source 2001:db8:1::1: IPv6 routes carry no `src`, so the director's
own address on the output device inside the connected prefix, as source address selection
picks it); a full 1500-byte packet does not fit after the 40-byte outer header: the client
gets ICMPv6 packet-too-big with MTU 1460.""")

    # ---- every scheduler --------------------------------------------------------------
    weights = {"rr": (1, 1, 1), "wrr": (3, 2, 1), "lc": (1, 1, 1), "wlc": (1, 2, 3), "sed": (1, 2, 3),
               "nq": (1, 2, 3), "sh": (2, 1, 1), "mh": (1, 1, 1), "fo": (1, 3, 2), "ovf": (2, 3, 1),
               "twos": (1, 2, 3)}
    for sched, w in weights.items():
        cap = Capture().at(1)
        for i in range(12):
            cap.add(from_client(f"198.51.100.{30 + i}", VIP4, tcp(44000 + i, 80, "S")))
            if i % 3 == 2:
                # every third connection is reset at once, so it turns inactive
                cap.add(from_client(f"198.51.100.{30 + i}", VIP4, tcp(44000 + i, 80, "R", 1001)))
        write(f"sched-{sched}", service(VIP4, sched=sched)
              + "".join(real(RS4[n], w[n - 1]) for n in (1, 2, 3)), cap, reflow(f"""
Scheduler {sched}, DR, weights A={w[0]} B={w[1]} C={w[2]} (A=.11, B=.12, C=.13, in list order).
Twelve new connections from twelve clients; every third is reset right after its SYN. A RST
in SYN_RECV leaves a DR connection in SYN_RECV (the kernel's INPUT-ONLY table), and SYN_RECV
counts as active (`tcp_state_active`), so every connection is active throughout.
{SCHED_ABOUT[sched]}"""))

    for sched in ("dh", "lblc", "lblcr"):
        cap = Capture().at(1)
        for i in range(12):
            dst = f"192.0.2.{110 + i % 4}"
            cap.add(from_client(f"198.51.100.{50 + i}", dst, tcp(45000 + i, 80, "S")))
        cfg = ('[[classifier]]\nprotocol = "tcp"\ndestination = "192.0.2.96/27"\nports = "80"\nmark = 7\n'
               f'[[service]]\nfwmark = 7\nscheduler = "{sched}"\n'
               + "".join(real(RS4[n], 1, port=0) for n in (1, 2, 3)))
        write(f"sched-{sched}", cfg, cap, reflow(f"""
Scheduler {sched} on a firewall-mark service (mark 7 for TCP port 80 to 192.0.2.96/27), DR,
weights 1,1,1. Twelve clients connect to four destination addresses in turn: every
connection to one destination goes to the same real server. {DEST_ABOUT[sched]}"""))

    # ---- persistence, fwmark, port 0, quiesce -----------------------------------------
    cap = Capture().at(1)
    for i, client in enumerate(("198.51.100.10", "198.51.100.10", "198.51.100.20", "203.0.113.5")):
        cap.add(from_client(client, VIP4, tcp(46000 + i, 80, "S")))
        cap.add(from_client(client, VIP4, tcp(46000 + i, 80, "R", 1001)))
    cap.at(200).add(from_client("198.51.100.10", VIP4, tcp(46100, 80, "S")))
    cap.add(from_client("198.51.100.10", VIP4, tcp(46100, 80, "R", 1001)))
    cap.at(800).add(from_client("198.51.100.10", VIP4, tcp(46200, 80, "S")))
    write("persist-v4", service(VIP4, sched="rr", extra="persistence = 300\npersistence_netmask = 24\n")
          + "".join(real(RS4[n]) for n in (1, 2, 3)), cap, """
Persistence -p 300 -M 255.255.255.0 over rr. Two connections from 198.51.100.10 and one from
198.51.100.20 (same /24) share one template and one real server (.11); 203.0.113.5 gets its own
(.12). At t=200 s the template (refreshed by use) still holds: .11 again. At t=800 s it has
expired: rr runs again and picks .13.""")

    cap = Capture().at(1)
    cap.add(from_client("198.51.100.60", VIP4, tcp(47000, 80, "S")))
    cap.add(from_client("198.51.100.60", VIP4, tcp(47001, 443, "S")))
    cap.add(from_client("198.51.100.61", VIP4, tcp(47002, 443, "S")))
    cap.add(from_client("198.51.100.61", VIP4, tcp(47003, 80, "S")))
    cap.add(from_client("198.51.100.62", VIP4, tcp(47004, 8080, "S")))
    cfg = ('[[classifier]]\nprotocol = "tcp"\ndestination = "192.0.2.100/32"\nports = "80-443"\nmark = 1\n'
           '[[service]]\nfwmark = 1\nscheduler = "rr"\npersistence = 600\n'
           + "".join(real(RS4[n], port=0) for n in (1, 2)))
    write("fwmark-v4", cfg, cap, """
A firewall-mark service: the classifier marks TCP 192.0.2.100 ports 80-443 with mark 1;
persistence keeps HTTP and HTTPS of one client on one real server (.60 -> .11 for both ports,
.61 -> .12 for both). Port 8080 is outside the rule and no other service matches: passed to the
kernel (the XDP filter would not have sent it to fastlb at all).""")

    cap = Capture().at(1)
    for i, port in enumerate((22, 8080, 5432)):
        cap.add(from_client("198.51.100.70", VIP4B, tcp(48000 + i, port, "S")))
    cap.add(from_client("198.51.100.71", VIP4B, tcp(48010, 22, "S")))
    write("port0-v4", service(VIP4B, 0, "rr", extra="persistence = 300\n")
          + "".join(real(RS4[n], port=0) for n in (1, 2)), cap, """
A port-0 (all ports) persistent service on 192.0.2.101, DR: one client's connections to ports
22, 8080 and 5432 all go to .11 (one template keyed on VPORT 0); the next client gets .12.""")

    cap = Capture().at(1)
    for i in range(6):
        cap.add(from_client(f"198.51.100.{80 + i}", VIP4, tcp(49000 + i, 80, "S")))
    write("quiesce-v4", service(VIP4, sched="rr") + real(RS4[1]) + real(RS4[2], 0) + real(RS4[3]), cap, """
Weight 0 quiesces .12: rr skips it, so six new connections alternate .11 and .13.""")

    # ---- timeouts ---------------------------------------------------------------------
    cap = Capture()
    q = UDP(sport=53000, dport=53) / query(0x1234)
    cap.at(1).add(from_client("198.51.100.90", VIP4, q))
    cap.at(200).add(from_client("198.51.100.90", VIP4, q))
    cap.at(600).add(from_client("198.51.100.90", VIP4, q))
    cap.at(700).add(from_client("198.51.100.91", VIP4, tcp(53100, 80, "S")))
    cap.at(790).add(from_client("198.51.100.91", VIP4, tcp(53100, 80, "A", 1001, 1)))
    cap.at(800).add(from_client("198.51.100.92", VIP4, tcp(53200, 80, "S")))
    cap.at(801).add(from_client("198.51.100.92", VIP4, tcp(53200, 80, "A", 1001, 1)))
    cap.at(1000).add(from_client("198.51.100.92", VIP4, tcp(53200, 80, "A", 1001, 1)))
    write("timeouts-v4", service(VIP4, 53, "rr", "udp") + real(RS4[1], port=53) + real(RS4[2], port=53)
          + service(VIP4, 80, "rr") + real(RS4[1]) + real(RS4[2]), cap, """
Timeouts inside a capture (DR, defaults UDP 300 s, SYN_RECV 60 s, ESTABLISHED 900 s). A UDP
flow: t=1 -> .11, t=200 same connection (.11), t=600 the entry (idle 400 s) has expired: a
new connection, rr's next pick .12. TCP: a SYN at t=700 and its ACK 90 s later: the SYN_RECV
entry expired after 60 s, the ACK has no connection and is dropped (no_connection). A SYN at
t=800 then ACK at t=801 (ESTABLISHED) and another ACK at t=1000: forwarded.""")

    # ---- ICMP relay -------------------------------------------------------------------
    for fam, client, vip, rs in (("v4", "198.51.100.95", VIP4, RS4), ("v6", "2001:db8:ff::95", VIP6, RS6)):
        cap = Capture().at(1)
        cap.add(from_client(client, vip, tcp(54000, 80, "S", 100)))
        cap.add(from_real(1, rs[1], client, tcp(8080, 54000, "SA", 900, 101)))
        reply = ip(vip, client) / tcp(80, 54000, "PA", 901, 101, b"x" * 8)
        router = "192.0.2.254" if fam == "v4" else "2001:db8::fe"
        if fam == "v4":
            err = IP(src=router, dst=vip) / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(reply)[:28]
        else:
            err = IPv6(src=router, dst=vip) / ICMPv6PacketTooBig(mtu=1400) / bytes(reply)
        cap.add(Ether(src=ROUTER, dst=DIRECTOR) / err)
        uq = ip(client, vip) / UDP(sport=54001, dport=53) / query(7)
        cap.add(Ether(src=ROUTER, dst=DIRECTOR) / uq)
        sent = ip(client, rs[1]) / UDP(sport=54001, dport=5353) / query(7)
        if fam == "v4":
            unreach = IP(src=rs[1], dst=client) / ICMP(type=3, code=3) / bytes(sent)
        else:
            unreach = IPv6(src=rs[1], dst=client) / ICMPv6DestUnreach(code=4) / bytes(sent)
        cap.add(Ether(src=RS_MAC[1], dst=DIRECTOR) / unreach)
        stray = ip(vip, "198.51.100.250" if fam == "v4" else "2001:db8:ff::250") / tcp(80, 1, "A")
        if fam == "v4":
            cap.add(Ether(src=ROUTER, dst=DIRECTOR) / IP(src=router, dst=vip) / ICMP(type=3, code=1) / bytes(stray)[:28])
        else:
            cap.add(Ether(src=ROUTER, dst=DIRECTOR) / IPv6(src=router, dst=vip) / ICMPv6DestUnreach(code=3) / bytes(stray))
        write(f"icmp-nat-{fam}", service(vip, sched="rr") + real(rs[1], method="nat", port=8080)
              + service(vip, 53, "rr", "udp") + real(rs[1], method="nat", port=5353), cap, f"""
ICMP relay for NAT, IP{fam}. A TCP connection to .11:8080; the router reports that a reply
(VIP:80 -> client) did not fit: the error is relayed to the real server with the outer
destination and the quoted source translated to 10.0.0.11:8080 / 2001:db8:1::11. A UDP flow
to port 53 (.11:5353): the real server's port-unreachable quoting client -> RS:5353 is
translated back to VIP:53 and sent to the client. An error quoting no connection is dropped
(icmp_no_connection).""")

    cap = Capture().at(1)
    cap.add(from_client("198.51.100.96", VIP4, tcp(55000, 80, "S")))
    reply = IP(src=VIP4, dst="198.51.100.96") / tcp(80, 55000, "SA", 1, 1001)
    cap.add(Ether(src=ROUTER, dst=DIRECTOR) / IP(src="192.0.2.254", dst=VIP4)
            / ICMP(type=3, code=4, nexthopmtu=1280) / bytes(reply)[:28])
    write("icmp-dr-v4", service(VIP4, sched="rr") + real(RS4[2]), cap, """
ICMP relay for DR: the real server answers clients directly, so errors about its replies
reach the director (they are addressed to the VIP). The error quoting VIP:80 -> client is
forwarded unchanged to the real server (.12) that owns the connection.""")

    cap = Capture().at(1)
    cap.add(from_client("198.51.100.130", VIP4, tcp(60000, 80, "S")))
    cap.add(from_client("198.51.100.130", VIP4, tcp(60000, 80, "A", 1001, 1)))
    cap.add(from_client("198.51.100.130", VIP4, tcp(60000, 80, "R", 1001)))
    cap.add(from_client("198.51.100.130", VIP4, tcp(60000, 80, "S", 5000)))
    cap.add(from_client("198.51.100.130", VIP4, tcp(60000, 80, "A", 5001, 1)))
    cap.add(from_client("198.51.100.131", VIP4, tcp(60001, 80, "S")))
    cap.at(2).add(from_client("198.51.100.131", VIP4, tcp(60001, 80, "S")))
    write("port-reuse-v4", service(VIP4, sched="rr") + real(RS4[1]) + real(RS4[2]), cap, """
Port reuse, DR, rr. A connection from 198.51.100.130:60000 is established, then reset
(ESTABLISHED + RST = CLOSE; a RST in SYN_RECV would leave it in SYN_RECV); a new SYN from the
same port is a new connection (IPVS conn_reuse_mode 1: an entry in TIME_WAIT or CLOSE is
expired and the SYN scheduled anew): .11, then .12 for the new one and its ACK. A retransmitted
SYN of a connection still in SYN_RECV is not a new connection: both go to .11.""")

    # ---- sloppy_tcp: flows that another director saw open ------------------------------
    # mh over .11-.13 (the sched-mh service): clients .30-.35 pick B C C C A B.
    cap = Capture().at(1)
    cap.add(from_client("198.51.100.30", VIP4, tcp(44000, 80, "PA", 5001, 7001, b"hello")))
    cap.add(from_client("198.51.100.30", VIP4, tcp(44000, 80, "A", 5006, 7001)))
    cap.add(from_client("198.51.100.31", VIP4, tcp(44001, 80, "A", 5001, 7001)))
    cap.add(from_client("198.51.100.32", VIP4, tcp(44002, 80, "FA", 5001, 7001)))
    cap.add(from_client("198.51.100.33", VIP4, tcp(44003, 80, "RA", 5001, 7001)))
    cap.add(from_client("198.51.100.34", VIP4, tcp(44004, 80, "P", 5001, 0, b"hello")))
    cap.add(from_client("198.51.100.35", VIP4, tcp(44005, 80, "S", 5000)))
    mh = service(VIP4, sched="mh") + real(RS4[1]) + real(RS4[2]) + real(RS4[3])
    write("sloppy-mh-v4", "[director]\nsloppy_tcp = true\n\n" + mh, cap, """
sloppy_tcp, DR, mh (the sched-mh service: clients .30-.35 pick B C C C A B). Flows that
another director saw open arrive here mid-way, as after an ECMP change: each is scheduled
like a SYN, to the server its SYN got on any director with the same rules, and its
connection starts in the state the packet implies (tcp_states, NONE column): data with ACK
and a bare ACK ESTABLISHED (active), a FIN CLOSE and a segment with no SYN/FIN/ACK/RST flag
CLOSE (inactive). A RST never opens a connection (tcp_conn_schedule): dropped, no_connection.
A SYN is scheduled as always (SYN_RECV).""")
    write("sloppy-off-v4", mh, cap, """
The sloppy-mh-v4 capture without sloppy_tcp (the default): only the SYN opens a connection;
the other six segments find none and are dropped (no_connection).""")

    cap = Capture().at(1)
    cap.add(from_client("198.51.100.50", VIP4, tcp(45000, 80, "PA", 101, 901, b"GET / HTTP/1.0\r\n\r\n")))
    cap.add(from_real(1, RS4[1], "198.51.100.50", tcp(8080, 45000, "PA", 901, 119, b"HTTP/1.0 200 OK\r\n\r\n")))
    cap.add(from_client("198.51.100.50", VIP4, tcp(45000, 80, "FA", 119, 920)))
    cap.add(from_client("198.51.100.51", VIP4, tcp(45001, 80, "A", 101, 901)))
    cap.add(from_real(2, RS4[2], "198.51.100.51", tcp(8080, 45001, "A", 901, 101)))
    write("sloppy-nat-v4", "[director]\nsloppy_tcp = true\n\n" + service(VIP4, sched="rr")
          + real(RS4[1], method="nat", port=8080) + real(RS4[2], method="nat", port=8080), cap, """
sloppy_tcp, NAT, rr. A client's request arrives with no connection (its SYN went through
another director): scheduled to .11:8080, ESTABLISHED through the INPUT table; the reply is
translated back from the VIP; the client's FIN then takes it to CLOSE_WAIT. A second flow's
bare ACK goes to .12 (rr), ESTABLISHED, and its reply is translated back.""")

    # ---- VLAN, rule file --------------------------------------------------------------
    cap = Capture().at(1)
    for i in range(2):
        cap.add(from_client(f"198.51.100.{100 + i}", VIP4, tcp(56000 + i, 80, "S"), vlan=42))
    write("vlan-dr-v4", service(VIP4, sched="rr") + real(RS4[1]) + real(RS4[3]), cap, """
802.1Q: frames tagged VLAN 42 are balanced like untagged ones and leave with their tag.""")

    cap = Capture().at(1)
    for i in range(4):
        cap.add(from_client(f"198.51.100.{110 + i}", VIP4, UDP(sport=57000 + i, dport=53) / query(i)))
    rules = ("-A -u 192.0.2.100:53 -s wrr\n-a -u 192.0.2.100:53 -r 10.0.0.11:5353 -m -w 1\n"
             "-a -u 192.0.2.100:53 -r 10.0.0.12:5353 -m -w 3\n")
    write("rules-nat-v4", rules, cap, """
The configuration is an `ipvsadm -S -n` rule file: UDP NAT, wrr 1:3, four queries go
.12 .12 .11 .12 (wrr with cw stepping 3, 2, 1: B, B, A+B...).""", config_name="ipvsadm.rules")

    # ---- partial checksums (CHECKSUM_PARTIAL from a sender on the same host) ------------
    for fam, vip, rs in (("v4", VIP4, RS4), ("v6", VIP6, RS6)):
        v4 = fam == "v4"
        router = "192.0.2.254" if v4 else "2001:db8::fe"

        def c(i):
            return f"198.51.100.{140 + i}" if v4 else f"2001:db8:ff::{140 + i}"

        def too_big(reply):
            # What the router sends back about a reply that did not fit its next link.
            if v4:
                return Ether(src=ROUTER, dst=DIRECTOR) / IP(src=router, dst=vip) \
                    / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(reply)[:28]
            return Ether(src=ROUTER, dst=DIRECTOR) / IPv6(src=router, dst=vip) \
                / ICMPv6PacketTooBig(mtu=1400) / bytes(reply)

        get = b"GET / HTTP/1.0\r\n\r\n"
        no_csum = ", and a UDP datagram without checksum (0) stays without" if v4 else ""
        third = ", .11" if v4 else ""
        cap = Capture().at(1)
        cap.add(partial(from_client(c(0), vip, tcp(61000, 80, "S", 100))))
        cap.add(partial(from_client(c(0), vip, tcp(61000, 80, "A", 101, 901))))
        cap.add(partial(from_client(c(0), vip, tcp(61000, 80, "PA", 101, 901, get))))
        cap.add(from_client(c(1), vip, tcp(61001, 80, "S", 100)))
        cap.add(coincident(from_client(c(0), vip, tcp(61000, 80, "PA", 119, 901, b"X-Pad: 01234567890\0\0\r\n\r\n")), 18))
        cap.add(partial(from_client(c(2), vip, UDP(sport=61002, dport=53) / query(1))))
        cap.add(from_client(c(3), vip, UDP(sport=61003, dport=53) / query(2)))
        if v4:
            cap.add(from_client(c(4), vip, UDP(sport=61004, dport=53, chksum=0) / query(3)))
        cap.add(too_big(partial(ip(vip, c(0)) / tcp(80, 61000, "PA", 901, 139, b"x" * 8))))
        write(f"csum-dr-{fam}", service(vip, sched="rr") + real(rs[1]) + real(rs[2])
              + service(vip, 53, "rr", "udp") + real(rs[1], port=53) + real(rs[2], port=53), cap, f"""
Partial checksums, DR, IP{fam}. The client sits on the director's host (a veth, a
container): its TCP and UDP checksums hold only the pseudo-header sum. Each leaves complete
(only the destination MAC, the TTL and that field change); checksums that arrive complete
leave byte for byte as they came, including one whose value happens to equal the
pseudo-header sum (the client's second data segment){no_csum}. TCP rr: the first client's
connection to .11, the second's to .12; UDP rr: .11, .12{third}. An ICMP error quoting a
partial reply is relayed to .11 as it is (DR relays errors unchanged).""")

        cap = Capture().at(1)
        cap.add(partial(from_client(c(0), vip, tcp(62000, 80, "S", 100))))
        cap.add(partial(from_real(1, rs[1], c(0), tcp(8080, 62000, "SA", 900, 101))))
        cap.add(partial(from_client(c(0), vip, tcp(62000, 80, "A", 101, 901))))
        cap.add(partial(from_client(c(0), vip, tcp(62000, 80, "PA", 101, 901, get))))
        cap.add(partial(from_real(1, rs[1], c(0), tcp(8080, 62000, "PA", 901, 119, b"HTTP/1.0 200 OK\r\n\r\nhi"))))
        cap.add(from_real(1, rs[1], c(0), tcp(8080, 62000, "PA", 922, 119, b"complete")))
        cap.add(coincident(from_client(c(0), vip, tcp(62000, 80, "PA", 119, 930, b"X-Pad: 01234567890\0\0\r\n\r\n")), 18))
        cap.add(partial(from_client(c(1), vip, UDP(sport=62001, dport=53) / query(4))))
        cap.add(partial(from_real(1, rs[1], c(1), UDP(sport=5353, dport=62001) / query(4))))
        if v4:
            cap.add(from_client(c(2), vip, UDP(sport=62002, dport=53, chksum=0) / query(5)))
        # The real server's port-unreachable quotes the query as fastlb forwarded it (complete).
        sent = ip(c(1), rs[1]) / UDP(sport=62001, dport=5353) / query(4)
        if v4:
            unreach = IP(src=rs[1], dst=c(1)) / ICMP(type=3, code=3) / bytes(sent)
        else:
            unreach = IPv6(src=rs[1], dst=c(1)) / ICMPv6DestUnreach(code=4) / bytes(sent)
        cap.add(Ether(src=RS_MAC[1], dst=DIRECTOR) / unreach)
        # The router's error quotes a reply as fastlb sent it (complete, from the VIP).
        cap.add(too_big(ip(vip, c(0)) / tcp(80, 62000, "PA", 901, 119, b"HTTP/1.0 200 OK\r\n\r\nhi")))
        write(f"csum-nat-{fam}", service(vip, sched="rr") + real(rs[1], method="nat", port=8080)
              + service(vip, 53, "rr", "udp") + real(rs[1], method="nat", port=5353), cap, f"""
Partial checksums, NAT, IP{fam}, both directions. Client and real server both sit on the
director's host: their TCP and UDP checksums hold only the pseudo-header sum. fastlb
completes each before the incremental NAT update (an update of a partial sum goes the
wrong way): inbound to 10.0.0.11:8080 / :5353, replies from the VIP. A reply and a request
that arrive complete are updated incrementally as before, one of them with a checksum that
happens to equal the pseudo-header sum{no_csum}. ICMP relay: the real server's port-unreachable quoting the
(completed) query goes to the client with the quote translated back to VIP:53, its quoted
UDP checksum still valid; the router's error about a reply goes to the real server with the
quote translated to RS:8080.""")

        cap = Capture().at(1)
        cap.add(partial(from_client(c(0), vip, tcp(63000, 80, "S", 100))))
        cap.add(partial(from_client(c(0), vip, tcp(63000, 80, "PA", 101, 901, b"p" * 100))))
        cap.add(from_client(c(0), vip, tcp(63000, 80, "PA", 201, 901, b"c" * 100)))
        cap.add(partial(from_client(c(1), vip, UDP(sport=63001, dport=53) / query(6))))
        cap.add(too_big(partial(ip(vip, c(0)) / tcp(80, 63000, "PA", 901, 301, b"x" * 8))))
        inner = "IPv4-in-IPv4" if v4 else "IPv6-in-IPv6"
        write(f"csum-tun-{fam}", service(vip, sched="rr") + real(rs[1], method="tun")
              + service(vip, 53, "rr", "udp") + real(rs[1], method="tun", port=53), cap, f"""
Partial checksums, TUN ({inner}). The inner TCP and UDP checksums of a client on the
director's host hold only the pseudo-header sum: fastlb completes them before it
encapsulates (the real server's decapsulation hands the inner packet up without any
"checksum partial" flag, so it must be whole). A segment that arrives complete is
encapsulated as it is. An ICMP error quoting a partial reply is encapsulated to .11 as
it is.""")

    # ---- malformed and foreign frames -------------------------------------------------
    cap = Capture().at(1)
    good = from_client("198.51.100.120", VIP4, tcp(58000, 80, "S"))
    raw = bytes(good)
    cap.add(Ether(raw[:20]))                                   # truncated inside IPv4
    bad_ihl = bytearray(raw); bad_ihl[14] = 0x43               # IHL 3 < 5
    cap.add(Ether(bytes(bad_ihl)))
    bad_csum = bytearray(raw); bad_csum[24] ^= 0xff            # IPv4 header checksum wrong
    cap.add(Ether(bytes(bad_csum)))
    bad_len = bytearray(raw); bad_len[16:18] = (2000).to_bytes(2, "big")  # total length > frame
    cap.add(Ether(bytes(bad_len)))
    cap.add(Ether(raw[:14 + 20 + 10]))                         # TCP header cut short
    cap.add(Ether(src=ROUTER, dst=DIRECTOR, type=0x88b5) / Raw(b"\x00" * 46))  # local experimental type
    cap.add(Ether(src=ROUTER, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.254", pdst="192.0.2.1"))
    cap.add(from_client("198.51.100.120", "192.0.2.1", ICMP(type=8) / Raw(b"ping")))  # echo to director
    cap.add(from_client("198.51.100.120", VIP4, Raw(b"f" * 64), frag=1, proto=6))  # a later fragment
    cap.add(Ether(src=ROUTER, dst=DIRECTOR) / IPv6(src="2001:db8:ff::9", dst=VIP6)
            / IPv6ExtHdrFragment(offset=8, m=0, id=7, nh=6) / Raw(b"g" * 16))
    cap.add(from_client("198.51.100.120", VIP4, tcp(58003, 80, "A", 5, 5)))  # no connection
    cap.add(from_client("198.51.100.120", VIP4, tcp(58004, 80, "S"), ttl=1))
    cap.add(good)
    write("malformed-v4", service(VIP4, sched="rr") + real(RS4[1], method="nat") + real(RS4[2], method="nat")
          + service(VIP6, sched="rr") + real(RS6[1]), cap, """
Frames the director must not forward, each dropped and counted, and foreign frames passed to
the kernel: IPv4 truncated, IHL 3, wrong header checksum, total length beyond the frame, TCP
header cut short (malformed); an unknown ethertype, ARP and a ping to the director (passed);
an IPv4 TCP fragment at offset 8 (fragment: RFC 1858); an IPv6 later fragment whose first
never came is held (the capture ends within its hold time); an ACK matching no connection
(no_connection); a SYN with TTL 1 on a NAT service (ttl_exceeded). The last, valid SYN is
forwarded: bad input loses nothing else.""")


    # ---- IP fragments ------------------------------------------------------------------
    for fam, c, vip, vipn, rs in (("v4", "198.51.100.160", VIP4, VIP4B, RS4),
                                  ("v6", "2001:db8:ff::160", VIP6, "2001:db8::101", RS6)):
        def frags(dst, sport, ident, size=3000):
            data = bytes((i * 7 + 3) % 256 for i in range(size))
            if fam == "v4":
                pkt = IP(src=c, dst=dst, id=ident) / UDP(sport=sport, dport=7) / Raw(data)
                out = fragment(pkt, fragsize=1480)
            else:
                pkt = (IPv6(src=c, dst=dst) / IPv6ExtHdrFragment(id=ident)
                       / UDP(sport=sport, dport=7) / Raw(data))
                out = fragment6(pkt, 1500)
            return [Ether(src=ROUTER, dst=DIRECTOR) / f for f in out]
        a, b, r, lost, n = (frags(vip, 56000, 100), frags(vip, 56001, 101), frags(vip, 56002, 102),
                            frags(vip, 56003, 103), frags(vipn, 56004, 104))
        assert len(a) == 3
        cap = Capture().at(1)
        cap.add(a[0], b[0], a[1], b[1], b[2], a[2])   # two datagrams interleaved, in order
        cap.add(r[1], r[0], r[2])                     # reordered: a later fragment first (held)
        cap.add(lost[1], lost[2])                     # the first fragment lost
        cap.add(*n)                                   # NAT
        cap.at(10).add(frags(vip, 56005, 105)[1])     # long after: no first fragment
        write(f"frag-{fam}", service(vip, 7, "rr", "udp") + real(rs[1], port=7) + real(rs[2], port=7)
              + service(vipn, 7, "rr", "udp") + real(rs[3], method="nat", port=7007), cap, f"""
UDP datagrams of 3000 bytes in fragments (IP{fam}, MTU 1500: three fragments each), the
later fragments following their first fragment (see docs/decisions.md, "Fragments"). DR
(rr over .11 and .12): two datagrams interleaved go whole to .11 and .12; a datagram whose
second fragment arrives before its first has it held and sent to .11 right after the first
(then the third); a datagram whose first fragment was lost sends nothing (its two fragments
are held, and dropped as fragment_no_first when the hold time is up, counted at the next
frame, 9 s later). UDP port 7 (echo: tshark reads the data as data). NAT (.13:7007): every
fragment's destination becomes .13, the port and the UDP checksum change in the first
fragment only, and the reassembled datagram's checksum verifies (tshark reassembles it). A
lone later fragment 9 s later is held (the capture ends before its hold time).""")

        # Fragments out of order, held until their first fragment comes.
        d, nat, late = frags(vip, 56010, 110), frags(vipn, 56011, 111), frags(vip, 56012, 112)
        cap = Capture().at(1)
        cap.add(d[2], d[0], d[1])                     # DR: the last first, then the first
        cap.add(nat[2], nat[1], nat[0])               # NAT: both later fragments first
        cap.add(late[1])                              # held; its first comes too late
        cap.at(3).add(late[0], late[2])
        write(f"frag-hold-{fam}", service(vip, 7, "rr", "udp") + real(rs[1], port=7) + real(rs[2], port=7)
              + service(vipn, 7, "rr", "udp") + real(rs[3], method="nat", port=7007), cap, f"""
Later fragments that arrive before their first one (IP{fam}, UDP datagrams of 3000 bytes in
three fragments) are held in the worker's hold pool and sent as soon as the first fragment
has gone out, the same way and with the same rewrite (see docs/decisions.md, "Fragments").
DR (rr over .11 and .12): the last fragment first, then the first, then the middle one: all
three to .11, the held one right after the first. NAT (.13:7007): the last and the middle
fragment before the first: the first goes out DNATed, then the two held ones in the order
they were released, every fragment's destination .13; the UDP checksum verifies once tshark
reassembles the datagram. A middle fragment whose first comes 2 s later (after the 1 s hold
time) is dropped (fragment_no_first, counted when the hold time has passed); the first and
the last then go to .12 (rr), the datagram incomplete.""")

    # ---- frames for other hosts' MACs -------------------------------------------------
    cap = Capture().at(1)
    a, b, c = "198.51.100.150", "198.51.100.151", "198.51.100.152"
    cap.add(from_client(a, VIP4, tcp(59000, 80, "S"), mac=OTHER_DIRECTOR))
    cap.add(from_client(a, VIP4, tcp(59000, 80, "S")))
    cap.add(from_client(a, VIP4, tcp(59000, 80, "A", 1001, 5001), mac=OTHER_DIRECTOR))
    cap.add(from_client(a, VIP4, tcp(59000, 80, "A", 1001, 5001)))
    cap.add(from_client(b, VIP4, UDP(sport=59001, dport=53) / query(9), mac=OTHER_DIRECTOR))
    cap.add(from_client(b, VIP4, tcp(59002, 80, "S"), mac=VMAC4_51))
    cap.add(from_client("2001:db8:ff::150", VIP6, tcp(59003, 80, "S"), mac=OTHER_DIRECTOR))
    cap.add(from_client(b, VIP4, tcp(59004, 80, "S")))
    cap.add(from_client(c, VIP4, tcp(59005, 80, "S"), mac="ff:ff:ff:ff:ff:ff"))
    write("mac-foreign-v4", service(VIP4, sched="rr") + real(RS4[1]) + real(RS4[2])
          + service(VIP4, 53, "rr", "udp") + real(RS4[1], port=53)
          + service(VIP6, sched="rr") + real(RS6[1]), cap, """
Frames addressed to another host's MAC: another director on the segment (02:00:00:00:00:02)
whose frames a switch floods (unknown unicast), and a VRRP virtual MAC this director was not
told to accept. The kernel would see them as PACKET_OTHERHOST and never give them to IP, so
IPVS never balances them: fastlb drops and counts each (other_host) and schedules nothing for
it. Client .150's SYN to the other MAC is dropped, its SYN to ours goes to .11 (rr's first
pick: the dropped SYN did not move rr), its ACK to the other MAC is dropped even though the
connection exists, its ACK to ours follows to .11. A UDP query, a SYN to the unlisted vmac
00:00:5e:00:01:33 and an IPv6 SYN, all to other MACs: dropped. Client .151's SYN to ours goes
to .12. A SYN sent to the broadcast MAC is taken (the kernel's PACKET_BROADCAST reaches IP):
.11. Every frame leaves with the director's own MAC as source, never the one it was sent
to.""")

    cap = Capture().at(1)
    cap.add(from_client("198.51.100.160", VIP4, tcp(59100, 80, "S"), mac=VMAC4_51))
    cap.add(from_client("198.51.100.161", VIP4, tcp(59101, 80, "S"), mac=VMAC4_52))
    cap.add(from_client("198.51.100.162", VIP4, tcp(59102, 80, "S")))
    cap.add(from_client("198.51.100.160", VIP4, tcp(59100, 80, "A", 1001, 5001), mac=VMAC4_51))
    cap.add(from_client("2001:db8:ff::160", VIP6, tcp(59103, 80, "S"), mac=VMAC6_51))
    cap.add(from_client("198.51.100.163", VIP4, tcp(59104, 80, "S"), mac=OTHER_DIRECTOR))
    write("mac-vmac-v4", f"""\
! keepalived.conf: VRRP instance 51 with use_vmac, so the VIP answers ARP from the virtual
! MAC 00:00:5e:00:01:33 and clients send to it.
vrrp_instance VI_1 {{
    state MASTER
    interface eth0
    use_vmac
    virtual_router_id 51
    priority 100
    virtual_ipaddress {{
        {VIP4}
    }}
}}

virtual_server {VIP4} 80 {{
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server {RS4[1]} 80 {{
    }}
    real_server {RS4[2]} 80 {{
    }}
}}

virtual_server {VIP6} 80 {{
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server {RS6[1]} 80 {{
    }}
}}
""", cap, """
keepalived's VRRP virtual MAC (use_vmac, virtual_router_id 51): the configuration is a
keepalived.conf, and fastlb takes frames sent to 00:00:5e:00:01:33 (IPv4) and
00:00:5e:00:02:33 (IPv6) besides its own MAC. The SYN to the vmac goes to .11 and leaves from
the director's own MAC 02:00:00:00:00:01, not from the vmac; a SYN to VRID 52's vmac (another
director's instance) is dropped (other_host); the SYN to our own MAC goes to .12; the first
client's ACK to the vmac follows to .11; an IPv6 SYN to the IPv6 vmac goes to 2001:db8:1::11;
a SYN to the other director's MAC is dropped.""", config_name="keepalived.conf")


README_HEAD = """\
# pcap fixtures

Each folder is one replay case: `in.pcap` (made by `tools/gen-fixtures.py`), the director's
configuration (`fastlb.toml`, or `ipvsadm.rules` for an `ipvsadm -S` file), `expected.pcap` and
`report.json` (what `fastlb replay` wrote, checked by hand when blessed), and, where the frames
can be worked out by hand from the kernel's algorithms, `expect.txt`: one line per output frame
(destination MAC's last byte, addresses, TTL, ports, flags). `routes.txt`, `neigh.txt` and
`links.txt` are the director's `ip route show table all`, `ip neigh show` and `ip link show`,
shared by every case (its one interface, eth0, has MAC 02:00:00:00:00:01: frames to other
MACs are not its, and every frame it sends leaves from that MAC).

`cargo test --test replay` replays every folder, compares bytes and report, checks every output
frame's checksums with etherparse and with tshark where installed, and compares `expect.txt`.
`FASTLB_BLESS=1 cargo test --test replay` rewrites `expected.pcap` and `report.json` from the
current output (any other value of `FASTLB_BLESS` is an error, and CI, where `CI` is set, never
blesses); `expect.txt` is written by hand and never rewritten.

Topology (one-armed director):

    clients 198.51.100.0/24, 203.0.113.0/24, 2001:db8:ff::/64
      -- router 192.0.2.254 / 2001:db8::fe (02:00:00:00:00:fe)
    director 192.0.2.1, 10.0.0.1, 2001:db8::1, 2001:db8:1::1 (02:00:00:00:00:01)
      VIPs 192.0.2.100, 192.0.2.101, 2001:db8::100
    real servers 10.0.0.11-13, 2001:db8:1::11-13 (02:00:00:00:01:11-13)

"""


def write_readme():
    parts = [README_HEAD]
    for name in sorted(os.listdir(ROOT)):
        about = os.path.join(ROOT, name, "ABOUT")
        if os.path.exists(about):
            with open(about) as f:
                parts.append(f"## {name}\n{f.read()}\n")
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write("".join(parts))


if __name__ == "__main__":
    os.makedirs(ROOT, exist_ok=True)
    with open(os.path.join(ROOT, "routes.txt"), "w") as f:
        f.write(ROUTES)
    with open(os.path.join(ROOT, "neigh.txt"), "w") as f:
        f.write(NEIGH)
    with open(os.path.join(ROOT, "links.txt"), "w") as f:
        f.write(LINKS)
    fixtures()
    write_readme()
    print("fixtures written to", os.path.normpath(ROOT))
