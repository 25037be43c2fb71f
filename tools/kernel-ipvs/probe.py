#!/usr/bin/env python3
"""probe: send the frames of a capture one at a time and record what a director answers.

    probe.py IFACE DIRECTOR_MAC IN.pcap SENT.pcap OUT.pcap [--wait S]

Run inside the namespace that holds IFACE (a tap of a kipvs VM, or any interface facing a
director). For each frame of IN.pcap, in order: send it on IFACE, then wait up to S seconds
(default 3) for the frame the director sends on for it: a frame from DIRECTOR_MAC carrying
the same TCP/UDP flow (addresses and ports; the director may rewrite only the MACs, as DR
does). Prints one line per input frame, `INDEX DST-MAC` of that frame or `INDEX -` when
none came, and writes the frames as sent (with the time of sending) to SENT.pcap and the
answers to OUT.pcap. Sending the next frame only after the answer to the last keeps the
director's counters in step, so the sequence is the one a scheduler makes frame by frame.

An answer that comes after its frame was given up, or a second answer to one frame, is
reported on stderr (`late INDEX`, `duplicate INDEX`) and makes the exit status 3: a test
must not mistake a slow director for one that dropped the frame. Needs root (AF_PACKET).
"""

import argparse
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0xA1B2C3D4:
        endian = "<"
    elif magic == 0xD4C3B2A1:
        endian = ">"
    else:
        raise SystemExit(f"{path}: not a pcap file (microsecond, classic format)")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise SystemExit(f"{path}: link type {linktype}, want Ethernet (1)")
    frames, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


class PcapWriter:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

    def write(self, t, frame):
        sec = int(t)
        usec = int(round((t - sec) * 1e6))
        if usec == 1000000:
            sec, usec = sec + 1, 0
        self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)

    def close(self):
        self.f.close()


def flow(frame):
    """(src, dst, proto, sport, dport) of an untagged IPv4/IPv6 TCP/UDP frame, else None."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20:
        ihl = (ip[0] & 0xF) * 4
        proto, src, dst, l4 = ip[9], ip[12:16], ip[16:20], ip[ihl:]
    elif ethertype == 0x86DD and len(ip) >= 40:
        proto, src, dst, l4 = ip[6], ip[8:24], ip[24:40], ip[40:]
    else:
        return None
    if proto not in (6, 17) or len(l4) < 4:
        return None
    sport, dport = struct.unpack("!HH", l4[:4])
    return (src, dst, proto, sport, dport)


def mac_text(b):
    return ":".join(f"{x:02x}" for x in b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("iface")
    ap.add_argument("director_mac")
    ap.add_argument("input")
    ap.add_argument("sent")
    ap.add_argument("output")
    ap.add_argument("--wait", type=float, default=3.0)
    args = ap.parse_args()
    director = bytes(int(x, 16) for x in args.director_mac.split(":"))
    frames = read_pcap(args.input)
    flows = [flow(f) for f in frames]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((args.iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sent, out = PcapWriter(args.sent), PcapWriter(args.output)
    answered = {}
    problems = 0

    def receive(until, want):
        """Reads frames until `until`; returns the answer to input `want` when it comes."""
        nonlocal problems
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            try:
                data, addr = s.recvfrom(65536)
            except socket.timeout:
                return None
            if addr[2] == PACKET_OUTGOING or data[6:12] != director:
                continue
            fl = flow(data)
            if fl is None:
                continue
            for i, f in enumerate(flows):
                if f != fl:
                    continue
                if i in answered:
                    print(f"duplicate {i}", file=sys.stderr)
                    problems += 1
                elif want is not None and i == want:
                    answered[i] = data
                    out.write(time.time(), data)
                    return data
                elif want is None or i < want:
                    print(f"late {i}", file=sys.stderr)
                    problems += 1
                    answered[i] = data
                break

    for i, frame in enumerate(frames):
        sent.write(time.time(), frame)
        s.send(frame)
        got = receive(time.monotonic() + args.wait, i)
        print(f"{i} {mac_text(got[0:6]) if got else '-'}", flush=True)
    receive(time.monotonic() + 0.5, None)
    sent.close()
    out.close()
    return 3 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
